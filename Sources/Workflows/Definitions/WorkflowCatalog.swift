import Crypto
import Foundation
import Yams

/// Every workflow definition of every org, read from `WORKFLOWS_DIR`.
///
/// The layout is one folder per org id and one YAML file per workflow, named
/// after the workflow: `workflows/cborg_…/onboard-vendor.yaml`.
public struct WorkflowCatalog: Sendable {
    /// Workflows by org id, then by name.
    public private(set) var workflows: [String: [String: WorkflowDefinition]]

    public init(_ definitions: [WorkflowDefinition]) {
        workflows = [:]
        for definition in definitions { workflows[definition.orgID, default: [:]][definition.name] = definition }
    }

    /// The workflow `name` of `orgID`, enabled or not.
    public func workflow(orgID: String, name: String) -> WorkflowDefinition? {
        workflows[orgID]?[name]
    }

    /// The enabled workflows of `orgID` bound to `event`, by name.
    public func workflows(orgID: String, boundTo event: VendorEventType) -> [WorkflowDefinition] {
        (workflows[orgID] ?? [:]).values
            .filter { $0.enabled && $0.trigger == .event(event) }
            .sorted { $0.name < $1.name }
    }

    /// How many workflows there are in all.
    public var count: Int { workflows.values.reduce(0) { $0 + $1.count } }

    /// Reads and validates every workflow under `directory`.
    /// - Parameter knownOrgs: when given, a folder for an org outside this set is a problem.
    /// - Throws: ``DefinitionProblems`` listing every problem of every file.
    public static func load(directory: String, knownOrgs: Set<String>? = nil) throws(DefinitionProblems) -> WorkflowCatalog {
        var problems: [DefinitionProblem] = []
        var definitions: [WorkflowDefinition] = []
        let files = FileManager.default
        var isDirectory: ObjCBool = false
        guard files.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DefinitionProblems([DefinitionProblem(file: directory, line: 1, message: "the workflows directory does not exist")])
        }
        let entries = ((try? files.contentsOfDirectory(atPath: directory)) ?? []).sorted()
        for entry in entries where !entry.hasPrefix(".") {
            let orgPath = (directory as NSString).appendingPathComponent(entry)
            guard files.fileExists(atPath: orgPath, isDirectory: &isDirectory), isDirectory.boolValue else {
                if Self.isWorkflowFile(entry) {
                    problems.append(DefinitionProblem(file: orgPath, line: 1, message: "workflow files belong in a folder named after their org id (\(directory)/cborg_…/\(entry))"))
                }
                continue
            }
            guard Identifier.isValid(entry, prefix: "cborg") else {
                problems.append(DefinitionProblem(file: orgPath, line: 1, message: "folder name '\(entry)' is not an org id (cborg_ followed by 32 lowercase hex digits)"))
                continue
            }
            if let knownOrgs, !knownOrgs.contains(entry) {
                problems.append(DefinitionProblem(file: orgPath, line: 1, message: "org '\(entry)' has workflows but is not in the orgs file"))
            }
            let workflowFiles = ((try? files.contentsOfDirectory(atPath: orgPath)) ?? []).filter(Self.isWorkflowFile).sorted()
            for fileName in workflowFiles {
                let path = (orgPath as NSString).appendingPathComponent(fileName)
                let reader = YAMLReader(file: path)
                let expectedName = (fileName as NSString).deletingPathExtension
                if let text = files.contents(atPath: path).flatMap({ String(data: $0, encoding: .utf8) }) {
                    if let definition = WorkflowParser(reader: reader, orgID: entry, expectedName: expectedName).parse(text) {
                        definitions.append(definition)
                    }
                } else {
                    reader.report("cannot read the file as UTF-8 text", line: 1)
                }
                problems += reader.problems
            }
        }
        guard problems.isEmpty else { throw DefinitionProblems(problems) }
        return WorkflowCatalog(definitions)
    }

    private static func isWorkflowFile(_ name: String) -> Bool {
        name.hasSuffix(".yaml") || name.hasSuffix(".yml")
    }
}

/// Turns one workflow file into a ``WorkflowDefinition``, reporting every problem.
struct WorkflowParser {
    let reader: YAMLReader
    let orgID: String
    let expectedName: String

    /// The roots a condition field or template path may start with.
    static let contextRoots = ["vendor", "input", "assessment", "steps", "event", "run"]

    func parse(_ text: String) -> WorkflowDefinition? {
        guard let root = reader.parse(text), let top = reader.mapping(root, "the workflow") else { return nil }
        top.rejectUnknownKeys(allowed: ["name", "description", "enabled", "trigger", "conditions", "steps"])
        let name = top.string("name", required: true)
        if let name, name != expectedName {
            reader.report("name '\(name)' does not match the file name '\(expectedName)' (the file name is the workflow's name)", line: top.line(of: "name"))
        }
        _ = top.string("description")
        let enabled = top.bool("enabled") ?? true
        let trigger = top.mapping("trigger", required: true, what: "the trigger").flatMap(parseTrigger)
        let conditions = top.mapping("conditions", what: "the conditions").flatMap(parseConditions)
        let steps = parseSteps(top)

        guard reader.problems.isEmpty, let name, let trigger, let steps else { return nil }
        return WorkflowDefinition(
            orgID: orgID, name: name, id: Identifier.derive(prefix: "cbwd", from: [orgID, name, text]),
            enabled: enabled, trigger: trigger, conditions: conditions, steps: steps, file: reader.file
        )
    }

    private func parseTrigger(_ trigger: MappingReader) -> WorkflowTrigger? {
        trigger.rejectUnknownKeys(allowed: ["type", "event"])
        switch trigger.choice("type", of: ["event", "direct"], required: true) {
        case "event":
            guard let event = trigger.string("event", required: true) else { return nil }
            guard let type = VendorEventType(rawValue: event) else {
                let known = VendorEventType.allCases.map(\.rawValue).joined(separator: ", ")
                reader.report("unknown trigger event '\(event)' (known: \(known))", line: trigger.line(of: "event"))
                return nil
            }
            return .event(type)
        case "direct":
            if trigger.value("event") != nil {
                reader.report("a direct trigger takes no 'event'", line: trigger.line(of: "event"))
            }
            return .direct
        default:
            return nil
        }
    }

    private func parseConditions(_ conditions: MappingReader) -> ConditionSet? {
        conditions.rejectUnknownKeys(allowed: ["match", "rules"])
        let match = conditions.choice("match", of: ConditionSet.Match.allCases.map(\.rawValue)).flatMap(ConditionSet.Match.init) ?? .all
        guard let ruleNodes = conditions.sequence("rules", required: true) else { return nil }
        if ruleNodes.isEmpty { reader.report("'rules' in the conditions is empty; leave out 'conditions' to match everything", at: conditions.node) }
        var rules: [ConditionRule] = []
        for (index, node) in ruleNodes.enumerated() {
            guard let rule = reader.mapping(node, "rule \(index + 1) of the conditions") else { continue }
            rule.rejectUnknownKeys(allowed: ["field", "op", "value"])
            let field = rule.string("field", required: true)
            if let field { checkPath(field, line: rule.line(of: "field"), what: "field") }
            guard let opName = rule.string("op", required: true) else { continue }
            guard let op = ConditionOperator(rawValue: opName) else {
                let known = ConditionOperator.allCases.map(\.rawValue).joined(separator: " ")
                reader.report("unknown condition op '\(opName)' (known: \(known))", line: rule.line(of: "op"))
                continue
            }
            let value = rule.value("value", required: op != .exists).flatMap { reader.json($0, "the value of rule \(index + 1)") }
            if let value { checkValue(value, for: op, line: rule.line(of: "value")) }
            if let field { rules.append(ConditionRule(field: field, op: op, value: value)) }
        }
        return ConditionSet(match: match, rules: rules)
    }

    private func checkValue(_ value: JSONValue, for op: ConditionOperator, line: Int) {
        switch op {
        case .in, .notIn:
            if case .array = value { return }
            reader.report("op '\(op.rawValue)' needs a list as its value, not a \(value.typeName)", line: line)
        case .gt, .gte, .lt, .lte:
            if value.numberValue != nil || value.stringValue != nil { return }
            reader.report("op '\(op.rawValue)' needs a number or a string as its value, not a \(value.typeName)", line: line)
        case .matches:
            guard let pattern = value.stringValue else {
                reader.report("op 'matches' needs a regular expression string as its value", line: line)
                return
            }
            if (try? NSRegularExpression(pattern: pattern)) == nil {
                reader.report("'\(pattern)' is not a valid regular expression", line: line)
            }
        case .exists:
            if case .bool = value { return }
            reader.report("op 'exists' takes true or false as its value (or none)", line: line)
        case .eq, .ne, .contains, .notContains:
            return
        }
    }

    private func parseSteps(_ top: MappingReader) -> [WorkflowStep]? {
        guard let nodes = top.sequence("steps", required: true) else { return nil }
        if nodes.isEmpty { reader.report("a workflow needs at least one step", line: top.line(of: "steps")) }
        if nodes.count > WorkflowDefinition.maxSteps {
            reader.report("a workflow has at most \(WorkflowDefinition.maxSteps) steps, not \(nodes.count)", line: top.line(of: "steps"))
        }
        let steps = parseStepList(nodes, nested: false)
        // `aggregate` reports over an earlier `for_each` of the same workflow.
        for (index, step) in steps.enumerated() where step.action == .aggregate {
            let from = step.with["from"]?.stringValue ?? ""
            if !steps[..<index].contains(where: { $0.id == from && $0.action == .forEach }) {
                reader.report("aggregate 'from' must name an earlier for_each step, not '\(BoundedText.identifier(from))'", line: top.line(of: "steps"))
            }
        }
        return steps
    }

    /// The most steps a `for_each`'s `do` may have.
    static let maxBodySteps = 20

    /// Steps in order: a workflow's, or (`nested`) a `for_each`'s `do`, which may not
    /// hold another `for_each` or an `aggregate`.
    private func parseStepList(_ nodes: [Node], nested: Bool) -> [WorkflowStep] {
        var steps: [WorkflowStep] = []
        var seen: [String: Int] = [:]
        for (index, node) in nodes.enumerated() {
            guard let step = reader.mapping(node, "step \(index + 1)") else { continue }
            step.rejectUnknownKeys(allowed: ["id", "name", "action", "with", "retry", "on_failure"])
            let id = step.string("id", required: true)
            if let id {
                if !Template.isName(id) || id.contains(".") || id.utf8.count > WorkflowDefinition.maxStepIDBytes {
                    reader.report("step id '\(BoundedText.identifier(id))' may hold only letters, digits, '_' and '-', at most \(WorkflowDefinition.maxStepIDBytes) bytes", line: step.line(of: "id"))
                } else if let first = seen[id] {
                    reader.report("duplicate step id '\(id)' (first used on line \(first))", line: step.line(of: "id"))
                } else {
                    seen[id] = step.line(of: "id")
                }
            }
            _ = step.string("name")
            var action: WorkflowAction?
            if let actionName = step.string("action", required: true) {
                action = WorkflowAction(rawValue: actionName)
                if action == nil {
                    let known = WorkflowAction.allCases.map(\.rawValue).joined(separator: ", ")
                    reader.report("unknown action '\(actionName)' (known: \(known))", line: step.line(of: "action"))
                }
            }
            var inputs: [String: JSONValue] = [:]
            if let withNode = step.value("with") {
                if case .object(let object)? = reader.json(withNode, "'with' of step \(index + 1)") {
                    inputs = object
                } else if case .mapping = withNode {
                } else {
                    reader.report("'with' of step \(index + 1) must be a mapping", at: withNode)
                }
                checkTemplates(in: withNode)
            }
            if let action {
                for key in action.requiredInputs where inputs[key] == nil {
                    reader.report("action '\(action.rawValue)' needs '\(key)' under 'with'", line: step.line(of: "action"))
                }
                // Ids written out in the file are checked now (templated ones when they render).
                if action == .createAssessment, let problem = CreateAssessmentAction.problem(inputs.filter { !$0.value.canonicalString.contains("{{") }) {
                    reader.report("create_assessment \(problem)", line: step.line(of: "with"))
                }
                if let known = action.knownInputs {
                    for key in inputs.keys.sorted() where !known.contains(key) {
                        reader.report("action '\(action.rawValue)' takes no '\(key)' under 'with' (it takes: \(known.sorted().joined(separator: ", ")))", line: step.line(of: "with"))
                    }
                }
                if action == .delay {
                    checkDelay(inputs, line: step.line(of: "with"))
                }
                if action == .waitForEvent {
                    checkWait(inputs, line: step.line(of: "with"))
                }
                if nested, action == .forEach || action == .aggregate {
                    reader.report("a for_each's do cannot hold \(action.rawValue)", line: step.line(of: "action"))
                }
                if action == .forEach {
                    checkForEach(inputs, line: step.line(of: "with"))
                }
                if action == .updateWorkflowRun, let status = inputs["status"]?.stringValue, !["completed", "failed", "canceled"].contains(status) {
                    reader.report("update_workflow_run status must be completed, failed or canceled, not '\(status)'", line: step.line(of: "with"))
                }
            }
            let retry = parseRetry(step)
            var onFailure = FailurePolicy.fail
            if let text = step.string("on_failure") {
                if let policy = FailurePolicy(rawValue: text) {
                    onFailure = policy
                } else {
                    reader.report("on_failure must be fail or continue, not '\(BoundedText.identifier(text))'", line: step.line(of: "on_failure"))
                }
            }
            var body: [WorkflowStep] = []
            if action == .forEach, let withNode = step.value("with"), let doNode = withNode["do"] {
                inputs["do"] = nil
                switch doNode {
                case .sequence(let sequence): body = parseStepList(Array(sequence), nested: true)
                case .mapping: body = parseStepList([doNode], nested: true)
                default: reader.report("for_each 'do' must be a step or a list of steps", at: doNode)
                }
                if body.count > Self.maxBodySteps {
                    reader.report("a for_each's do has at most \(Self.maxBodySteps) steps, not \(body.count)", at: doNode)
                }
                if body.isEmpty { reader.report("a for_each's do needs at least one step", at: doNode) }
            }
            if let id, let action { steps.append(WorkflowStep(id: id, action: action, with: inputs, retry: retry, onFailure: onFailure, body: body)) }
        }
        return steps
    }

    /// `for_each`: a `vendor_filter` (a mapping of known keys, or a template that gives
    /// one), `concurrency` 1 to 1000, `fail_on_item_failure` true or false.
    private func checkForEach(_ inputs: [String: JSONValue], line: Int) {
        switch inputs["vendor_filter"] {
        case .object(let filter)?:
            if let problem = VendorFilter.problem(in: .object(filter)) { reader.report("for_each vendor_filter: \(problem)", line: line) }
        case .string(let text)? where text.contains("{{"):
            break
        case nil:
            break
        default:
            reader.report("for_each vendor_filter must be a mapping (tags, tags_all, tier_in, attributes) or a template that gives one", line: line)
        }
        if let concurrency = inputs["concurrency"], !(concurrency.intValue.map { (1...1000).contains($0) } ?? false) {
            reader.report("for_each concurrency must be a whole number from 1 to 1000", line: line)
        }
        if let flag = inputs["fail_on_item_failure"], flag != .bool(true), flag != .bool(false) {
            reader.report("for_each fail_on_item_failure must be true or false", line: line)
        }
    }

    /// A step's `retry: {max_attempts, initial, max}`, each optional (§10's defaults).
    private func parseRetry(_ step: MappingReader) -> RetryPolicy {
        var policy = RetryPolicy()
        guard let node = step.value("retry") else { return policy }
        guard let retry = reader.mapping(node, "'retry'") else { return policy }
        retry.rejectUnknownKeys(allowed: ["max_attempts", "initial", "max"])
        if let attempts = retry.int("max_attempts") {
            if (1...RetryPolicy.attemptsLimit).contains(attempts) {
                policy.maxAttempts = attempts
            } else {
                reader.report("retry.max_attempts must be 1 to \(RetryPolicy.attemptsLimit), not \(attempts)", line: retry.line(of: "max_attempts"))
            }
        }
        for (key, keyPath) in [("initial", \RetryPolicy.initial), ("max", \RetryPolicy.max)] as [(String, WritableKeyPath<RetryPolicy, Duration>)] {
            guard let text = retry.string(key) else { continue }
            if let duration = DurationParser.parse(text), duration > .zero {
                policy[keyPath: keyPath] = duration
            } else {
                reader.report("retry.\(key) must be a duration such as 1s, 5m or 1h, not '\(BoundedText.identifier(text))'", line: retry.line(of: key))
            }
        }
        if policy.initial > policy.max {
            reader.report("retry.initial (\(DurationParser.format(policy.initial))) is longer than retry.max (\(DurationParser.format(policy.max)))", line: step.line(of: "retry"))
        }
        return policy
    }

    /// `delay` takes exactly one of `for` (a duration) and `until` (a time, often a template).
    private func checkDelay(_ inputs: [String: JSONValue], line: Int) {
        switch (inputs["for"], inputs["until"]) {
        case (nil, nil), (.some, .some):
            reader.report("action 'delay' needs exactly one of 'for' (a duration) and 'until' (a time) under 'with'", line: line)
        case (let duration?, nil):
            if let text = duration.stringValue, !text.contains("{{"), DurationParser.parse(text) == nil {
                reader.report("delay 'for' must be a duration such as 30s, 1h or 7d, not '\(BoundedText.identifier(text))'", line: line)
            } else if duration.stringValue == nil {
                reader.report("delay 'for' must be a duration such as 30s, 1h or 7d", line: line)
            }
        case (nil, let time?):
            if let text = time.stringValue, !text.contains("{{"), TimeSpec.parse(.string(text)) == nil {
                reader.report("delay 'until' must be epoch seconds, an RFC 3339 time or a date YYYY-MM-DD, not '\(BoundedText.identifier(text))'", line: line)
            } else if time.stringValue == nil, TimeSpec.parse(time) == nil {
                reader.report("delay 'until' must be epoch seconds, an RFC 3339 time or a date YYYY-MM-DD", line: line)
            }
        }
    }

    /// `wait_for_event`: an event type steps can wait for, an optional `match` mapping,
    /// exactly one deadline (`until` a time or `timeout` a duration), `on_timeout`.
    private func checkWait(_ inputs: [String: JSONValue], line: Int) {
        if let event = inputs["event"] {
            if let name = event.stringValue, !WaitableEvent.all.contains(name) {
                reader.report("wait_for_event 'event' must be one of \(WaitableEvent.all.sorted().joined(separator: ", ")), not '\(BoundedText.identifier(name))'", line: line)
            } else if event.stringValue == nil {
                reader.report("wait_for_event 'event' must be an event type name", line: line)
            }
        }
        if let match = inputs["match"], match.objectValue == nil {
            reader.report("wait_for_event 'match' must be a mapping of data fields to values", line: line)
        }
        switch (inputs["until"], inputs["timeout"]) {
        case (nil, nil), (.some, .some):
            reader.report("wait_for_event needs exactly one deadline: 'until' (a time) or 'timeout' (a duration such as 14d)", line: line)
        case (nil, let timeout?):
            if let text = timeout.stringValue, !text.contains("{{"), DurationParser.parse(text) == nil {
                reader.report("wait_for_event 'timeout' must be a duration such as 1h or 14d, not '\(BoundedText.identifier(text))'", line: line)
            } else if timeout.stringValue == nil {
                reader.report("wait_for_event 'timeout' must be a duration such as 1h or 14d", line: line)
            }
        case (let until?, nil):
            if let text = until.stringValue, !text.contains("{{"), TimeSpec.parse(.string(text)) == nil {
                reader.report("wait_for_event 'until' must be epoch seconds, an RFC 3339 time or a date YYYY-MM-DD, not '\(BoundedText.identifier(text))'", line: line)
            }
        }
        if let policy = inputs["on_timeout"], policy != "fail", policy != "continue" {
            reader.report("wait_for_event 'on_timeout' must be fail or continue", line: line)
        }
    }

    /// Every string under `node` must be a well-formed template over known roots.
    private func checkTemplates(in node: Node) {
        switch node {
        case .scalar(let scalar) where node.tagName == .str:
            do {
                let template = try Template(parsing: scalar.string)
                for path in template.paths { checkPath(path.joined(separator: "."), line: node.mark?.line ?? 1, what: "template path") }
            } catch {
                reader.report("bad template: \(error)", at: node)
            }
        case .sequence(let sequence):
            for item in sequence { checkTemplates(in: item) }
        case .mapping(let mapping):
            for (_, value) in mapping { checkTemplates(in: value) }
        default:
            return
        }
    }

    private func checkPath(_ path: String, line: Int, what: String) {
        let root = path.split(separator: ".").first.map(String.init) ?? ""
        if !Self.contextRoots.contains(root) {
            reader.report("\(what) '\(path)' must start with one of: \(Self.contextRoots.joined(separator: ", "))", line: line)
        }
    }
}

/// Coverbase identifiers: `<prefix>_<32 lowercase hex>`.
public enum Identifier {
    /// Whether `value` is `<prefix>_` followed by 32 lowercase hex digits.
    public static func isValid(_ value: String, prefix: String) -> Bool {
        let expectedPrefix = prefix + "_"
        guard value.hasPrefix(expectedPrefix) else { return false }
        return isLowercaseHex(value.dropFirst(expectedPrefix.count), digits: 32)
    }

    /// Whether `text` is exactly `digits` lowercase hex digits.
    public static func isLowercaseHex(_ text: some StringProtocol, digits: Int) -> Bool {
        text.utf8.count == digits && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// A deterministic id: `<prefix>_` + the first 32 hex digits of ``digest(of:)`` over the parts.
    public static func derive(prefix: String, from parts: [String]) -> String {
        let digest = digest(of: parts)
        var prefix = prefix
        return prefix.withUTF8 { prefix in
            String(unsafeUninitializedCapacity: prefix.count + 33) { text in
                _ = text.initialize(from: prefix)
                text[prefix.count] = UInt8(ascii: "_")
                return digest.withUnsafeBytes { prefix.count + 1 + writeHex(UnsafeRawBufferPointer(rebasing: $0[..<16]), into: text, at: prefix.count + 1) }
            }
        }
    }

    /// SHA-256 over `parts`, each as its UTF-8 length (8 bytes, big-endian) and
    /// then its bytes. Length prefixes make the encoding unambiguous: no choice of
    /// parts (`a|b`, `c` against `a`, `b|c`) can give another list's digest.
    public static func digest(of parts: [String]) -> SHA256.Digest {
        var hasher = SHA256()
        for part in parts {
            var part = part
            part.withUTF8 { bytes in
                withUnsafeBytes(of: UInt64(bytes.count).bigEndian) { hasher.update(bufferPointer: $0) }
                hasher.update(bufferPointer: UnsafeRawBufferPointer(bytes))
            }
        }
        return hasher.finalize()
    }

    /// Lowercase hex of `bytes`.
    public static func hex(_ bytes: some Sequence<UInt8>) -> String {
        hex(Array(bytes))
    }

    /// Lowercase hex of `bytes`, written straight into the string's storage.
    public static func hex(_ bytes: [UInt8]) -> String {
        String(unsafeUninitializedCapacity: bytes.count * 2) { text in
            bytes.withUnsafeBytes { writeHex($0, into: text, at: 0) }
        }
    }

    /// Writes the hex digits of `bytes` into `text` from `start`; returns how many.
    private static func writeHex(_ bytes: UnsafeRawBufferPointer, into text: UnsafeMutableBufferPointer<UInt8>, at start: Int) -> Int {
        func digit(_ nibble: UInt8) -> UInt8 { nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10 }
        var position = start
        for byte in bytes {
            text[position] = digit(byte >> 4)
            text[position + 1] = digit(byte & 0x0F)
            position += 2
        }
        return position - start
    }
}
