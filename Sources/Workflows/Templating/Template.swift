import Foundation

/// A string with `{{ path }}` placeholders, such as `"Onboarding {{ vendor.name }}"`.
///
/// Paths are dotted names into the run context (`vendor.owner_email`,
/// `steps.assess.id`); there are no expressions and nothing is evaluated.
public struct Template: Sendable, Hashable {
    public enum Segment: Sendable, Hashable {
        case literal(String)
        case path([String])
    }

    public struct ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        public var description: String
    }

    public let segments: [Segment]

    /// Parses `text`. Throws for an unclosed `{{` or a placeholder that is not a dotted path.
    public init(parsing text: String) throws(ParseError) {
        var segments: [Segment] = []
        var rest = Substring(text)
        while let open = rest.range(of: "{{") {
            if open.lowerBound > rest.startIndex { segments.append(.literal(String(rest[..<open.lowerBound]))) }
            guard let close = rest[open.upperBound...].range(of: "}}") else {
                throw ParseError(description: "'{{' without a closing '}}'")
            }
            let inner = rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            let parts = inner.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard !inner.isEmpty, parts.allSatisfy(Self.isName) else {
                throw ParseError(description: "'{{ \(inner) }}' is not a dotted path such as {{ vendor.name }}")
            }
            segments.append(.path(parts))
            rest = rest[close.upperBound...]
        }
        if !rest.isEmpty { segments.append(.literal(String(rest))) }
        self.segments = segments
    }

    /// Whether the text has any placeholder.
    public var hasPlaceholders: Bool {
        segments.contains { if case .path = $0 { true } else { false } }
    }

    /// The paths the template reads.
    public var paths: [[String]] {
        segments.compactMap { if case .path(let path) = $0 { path } else { nil } }
    }

    static func isName(_ part: String) -> Bool {
        !part.isEmpty && part.unicodeScalars.allSatisfy { $0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_" || $0 == "-" }
    }
}

extension Template {
    /// Fills the placeholders from `context`. A template that is exactly one
    /// placeholder yields the value itself (a list stays a list); otherwise
    /// values are written into the text, and a missing value leaves it empty.
    public func render(_ context: JSONValue) -> JSONValue {
        if segments.count == 1, case .path(let path) = segments[0] {
            return context[path: path] ?? .null
        }
        var text = ""
        for segment in segments {
            switch segment {
            case .literal(let literal): text += literal
            case .path(let path): text += context[path: path].map { $0 == .null ? "" : $0.templateText } ?? ""
            }
        }
        return .string(text)
    }
}

/// A step's inputs with their templates parsed once, when the workflow is loaded,
/// instead of on every run.
public indirect enum TemplateValue: Sendable, Hashable {
    /// A value without placeholders, used as it is.
    case literal(JSONValue)
    case template(Template)
    case array([TemplateValue])
    case object([String: TemplateValue])

    /// Compiles `value`. A string whose placeholders do not parse stays a literal
    /// (validation reports it before a workflow is ever loaded).
    public init(_ value: JSONValue) {
        switch value {
        case .string(let string) where string.contains("{{"):
            if let template = try? Template(parsing: string) {
                self = .template(template)
            } else {
                self = .literal(value)
            }
        case .array(let items):
            let compiled = items.map(TemplateValue.init)
            self = compiled.allSatisfy(\.isLiteral) ? .literal(value) : .array(compiled)
        case .object(let object):
            let compiled = object.mapValues(TemplateValue.init)
            self = compiled.values.allSatisfy(\.isLiteral) ? .literal(value) : .object(compiled)
        default:
            self = .literal(value)
        }
    }

    private var isLiteral: Bool {
        if case .literal = self { return true }
        return false
    }

    /// The value with every placeholder filled from `context`.
    public func render(_ context: JSONValue) -> JSONValue {
        switch self {
        case .literal(let value): value
        case .template(let template): template.render(context)
        case .array(let items): .array(items.map { $0.render(context) })
        case .object(let object): .object(object.mapValues { $0.render(context) })
        }
    }
}
