import Foundation
import Yams

/// Reads a YAML definition file node by node, collecting every problem with its
/// line instead of stopping at the first, so that one `validate` run lists them all.
public final class YAMLReader {
    /// The file's path, for problems.
    public let file: String
    /// Problems found so far.
    public private(set) var problems: [DefinitionProblem] = []

    public init(file: String) {
        self.file = file
    }

    /// Parses `text`; on a syntax error records it (with its line) and returns `nil`.
    public func parse(_ text: String) -> Node? {
        do {
            guard let root = try Yams.compose(yaml: text) else {
                report("the file is empty", line: 1)
                return nil
            }
            return root
        } catch let error as YamlError {
            report("invalid YAML: \(Self.summary(of: error))", line: Self.line(of: error))
            return nil
        } catch {
            report("invalid YAML: \(error)", line: 1)
            return nil
        }
    }

    /// Reads and parses the file at ``file``.
    public func parseFile() -> Node? {
        guard let data = FileManager.default.contents(atPath: file) else {
            report("cannot read the file", line: 1)
            return nil
        }
        guard let text = String(data: data, encoding: .utf8) else {
            report("the file is not UTF-8 text", line: 1)
            return nil
        }
        return parse(text)
    }

    /// Records a problem at `node`'s line (line 1 when it has none).
    public func report(_ message: String, at node: Node?) {
        report(message, line: node?.mark?.line ?? 1)
    }

    /// Records a problem at `line`.
    public func report(_ message: String, line: Int) {
        problems.append(DefinitionProblem(file: file, line: line, message: message))
    }

    /// `node` as a mapping reader, or a problem saying what was expected.
    public func mapping(_ node: Node, _ what: String) -> MappingReader? {
        guard case .mapping(let mapping) = node else {
            report("\(what) must be a mapping, not \(Self.kind(of: node))", at: node)
            return nil
        }
        return MappingReader(mapping: mapping, node: node, what: what, reader: self)
    }

    /// `node`'s items, or a problem saying a list was expected.
    public func sequence(_ node: Node, _ what: String) -> [Node]? {
        guard case .sequence(let sequence) = node else {
            report("\(what) must be a list, not \(Self.kind(of: node))", at: node)
            return nil
        }
        return Array(sequence)
    }

    /// `node` as a string, or a problem. Numbers and booleans are not strings here:
    /// quote them when they are meant as text.
    public func string(_ node: Node, _ what: String) -> String? {
        guard case .scalar(let scalar) = node, node.tagName == .str else {
            report("\(what) must be a string, not \(Self.kind(of: node))", at: node)
            return nil
        }
        return scalar.string
    }

    /// `node` as a boolean, or a problem.
    public func bool(_ node: Node, _ what: String) -> Bool? {
        guard case .scalar = node, node.tagName == .bool, let value = node.bool else {
            report("\(what) must be true or false, not \(Self.kind(of: node))", at: node)
            return nil
        }
        return value
    }

    /// `node` as an integer, or a problem.
    public func int(_ node: Node, _ what: String) -> Int? {
        guard case .scalar = node, node.tagName == .int, let value = node.int else {
            report("\(what) must be a whole number, not \(Self.kind(of: node))", at: node)
            return nil
        }
        return value
    }

    /// `node` as a JSON value (aliases are refused).
    public func json(_ node: Node, _ what: String) -> JSONValue? {
        switch node {
        case .scalar(let scalar):
            switch node.tagName {
            case .null: return .null
            case .bool: return node.bool.map(JSONValue.bool)
            case .int: return node.int.map { .int(Int64($0)) }
            case .float: return node.float.map(JSONValue.double)
            default: return .string(scalar.string)
            }
        case .sequence(let sequence):
            var values: [JSONValue] = []
            for item in sequence {
                guard let value = json(item, what) else { return nil }
                values.append(value)
            }
            return .array(values)
        case .mapping(let mapping):
            var object: [String: JSONValue] = [:]
            for (key, value) in mapping {
                guard let name = string(key, "a key in \(what)"), let converted = json(value, what) else { return nil }
                object[name] = converted
            }
            return .object(object)
        case .alias:
            report("\(what) uses a YAML alias; write the value out", at: node)
            return nil
        }
    }

    /// A short name of a node's kind, for messages ("a number", "a list" …).
    static func kind(of node: Node) -> String {
        switch node {
        case .scalar(let scalar):
            switch node.tagName {
            case .null: "null"
            case .bool: "a boolean (\(scalar.string))"
            case .int, .float: "a number (\(scalar.string))"
            default: "a string"
            }
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .alias: "an alias"
        }
    }

    private static func line(of error: YamlError) -> Int {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return mark.line
        case .duplicatedKeysInMapping(_, let context):
            return context.mark.line
        default:
            return 1
        }
    }

    private static func summary(of error: YamlError) -> String {
        switch error {
        case .scanner(let context, let problem, _, _), .parser(let context, let problem, _, _), .composer(let context, let problem, _, _):
            return [context.map { "\($0.text)" }, problem].compactMap { $0 }.joined(separator: ": ")
        case .duplicatedKeysInMapping(let duplicates, _):
            return "duplicate keys \(duplicates.joined(separator: ", "))"
        default:
            return String(describing: error).split(separator: "\n").first.map(String.init) ?? "syntax error"
        }
    }
}

/// One mapping of a YAML file, read key by key; unknown keys are reported.
public struct MappingReader {
    let mapping: Node.Mapping
    /// The mapping's own node (for its line).
    public let node: Node
    let what: String
    let reader: YAMLReader

    /// Reports every key that is not in `allowed`, at the key's line.
    public func rejectUnknownKeys(allowed: [String]) {
        for (key, _) in mapping {
            guard let name = key.string, allowed.contains(name) else {
                let name = key.string ?? "\(key)"
                reader.report("unknown key '\(name)' in \(what) (allowed: \(allowed.joined(separator: ", ")))", at: key)
                continue
            }
        }
    }

    /// The value of `key`, or `nil`; when `required`, its absence is a problem.
    public func value(_ key: String, required: Bool = false) -> Node? {
        if let value = mapping[key] { return value }
        if required { reader.report("\(what) is missing '\(key)'", at: node) }
        return nil
    }

    /// The line of `key`'s value, or of the mapping.
    public func line(of key: String) -> Int {
        mapping[key]?.mark?.line ?? node.mark?.line ?? 1
    }

    public func string(_ key: String, required: Bool = false) -> String? {
        value(key, required: required).flatMap { reader.string($0, "'\(key)' in \(what)") }
    }

    public func bool(_ key: String, required: Bool = false) -> Bool? {
        value(key, required: required).flatMap { reader.bool($0, "'\(key)' in \(what)") }
    }

    public func int(_ key: String, required: Bool = false) -> Int? {
        value(key, required: required).flatMap { reader.int($0, "'\(key)' in \(what)") }
    }

    public func sequence(_ key: String, required: Bool = false) -> [Node]? {
        value(key, required: required).flatMap { reader.sequence($0, "'\(key)' in \(what)") }
    }

    public func mapping(_ key: String, required: Bool = false, what inner: String? = nil) -> MappingReader? {
        value(key, required: required).flatMap { reader.mapping($0, inner ?? "'\(key)' in \(what)") }
    }

    /// A string that must be one of `choices`.
    public func choice(_ key: String, of choices: [String], required: Bool = false) -> String? {
        guard let value = string(key, required: required) else { return nil }
        guard choices.contains(value) else {
            reader.report("'\(key)' in \(what) is '\(value)'; expected one of: \(choices.joined(separator: ", "))", line: line(of: key))
            return nil
        }
        return value
    }
}

extension Node {
    /// The node's resolved tag (`str`, `int`, `bool` …); Yams keeps `Tag.name` internal.
    var tagName: Tag.Name { Tag.Name(rawValue: tag.rawValue) }
}
