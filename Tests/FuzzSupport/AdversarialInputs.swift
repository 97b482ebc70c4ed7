import Foundation
import Kafka
import Workflows

/// A deterministic generator of malformed and adversarial inputs (seeded, so a
/// failure can be replayed): truncated and deeply nested JSON, huge numbers and
/// strings, duplicate keys, invalid UTF-8, NUL bytes, wrong types in every field,
/// oversized and repeated headers, and valid messages among them.
public struct AdversarialInputs: Sendable {
    /// One generated input, before it gets a topic partition and an offset.
    public struct Input: Sendable {
        public init(toVendorEvents: Bool, key: [UInt8]?, value: [UInt8]?, headers: [KafkaHeader], recipe: String) {
            self.toVendorEvents = toVendorEvents
            self.key = key
            self.value = value
            self.headers = headers
            self.recipe = recipe
        }

        public var toVendorEvents: Bool
        public var key: [UInt8]?
        public var value: [UInt8]?
        public var headers: [KafkaHeader]
        /// What was done to it, for a failure's message.
        public var recipe: String
    }

    public let apiKey: String
    public let orgID: String
    public let workflowName: String
    /// Values about this size and more are generated to be too large.
    public let maxMessageBytes: Int
    private var state: UInt64

    public init(seed: UInt64, apiKey: String, orgID: String, workflowName: String, maxMessageBytes: Int) {
        state = seed
        self.apiKey = apiKey
        self.orgID = orgID
        self.workflowName = workflowName
        self.maxMessageBytes = maxMessageBytes
    }

    // MARK: Randomness (SplitMix64)

    private mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    private mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
    private mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
    private mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) } }
    private mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }

    // MARK: Inputs

    /// The next input: about one in eight is valid, the rest broken in one or more ways.
    public mutating func next() -> Input {
        let toVendorEvents = chance(35)
        var recipe: [String] = []
        var value: [UInt8]? = toVendorEvents ? validEvent(&recipe) : validRequest(&recipe)
        if !chance(12) { value = breakValue(value!, &recipe) }
        let headers = headers(forEvent: toVendorEvents, &recipe)
        let key: [UInt8]? = switch below(6) {
        case 0: nil
        case 1: bytes(below(40))
        case 2: Array(repeating: 0x6B, count: 2000 + below(3000))
        default: Array("k-\(below(1000))".utf8)
        }
        return Input(toVendorEvents: toVendorEvents, key: key, value: value, headers: headers, recipe: recipe.joined(separator: ", "))
    }

    /// A valid `workflow_run` request (answered 201), with headers a well-behaved client sends.
    public func validRequest(idempotencyKey: String) -> Input {
        let value = (["request_type": "workflow_run", "workflow_name": .string(workflowName), "body": ["input": ["after": true]]] as JSONValue).canonicalBytes
        return Input(toVendorEvents: false, key: Array(idempotencyKey.utf8), value: value, headers: [
            KafkaHeader(key: "Authorization", value: "Bearer \(apiKey)"), KafkaHeader(key: "Idempotency-Key", value: idempotencyKey),
        ], recipe: "valid")
    }

    private mutating func validRequest(_ recipe: inout [String]) -> [UInt8] {
        if chance(30) {
            recipe.append("assessment_create")
            return (["request_type": "assessment_create", "body": ["vendor_id": "cbvndr_e448ba62882143f3ba0c140bb2e30162", "control_set_ids": []]] as JSONValue).canonicalBytes
        }
        recipe.append("workflow_run")
        return (["request_type": "workflow_run", "workflow_name": .string(workflowName), "body": ["input": ["n": .int(Int64(below(100)))]]] as JSONValue).canonicalBytes
    }

    private mutating func validEvent(_ recipe: inout [String]) -> [UInt8] {
        recipe.append("vendor event")
        let value: JSONValue = [
            "event_id": .string(Identifier.derive(prefix: "cbevt", from: [String(next())])), "event_type": "Vendor.Created",
            "occurred_at": .int(Int64(Date().timeIntervalSince1970)), "org_id": .string(orgID),
            "data": ["vendor": ["id": .string(Identifier.derive(prefix: "cbvndr", from: [String(next())])), "name": "Fuzz Co", "tier": "low", "tags": []]],
        ]
        return value.canonicalBytes
    }

    private mutating func breakValue(_ value: [UInt8], _ recipe: inout [String]) -> [UInt8]? {
        switch below(16) {
        case 0:
            recipe.append("truncated")
            return Array(value.prefix(below(value.count)))
        case 1:
            let depth = 200 + below(2000)
            recipe.append("nested \(depth) deep")
            return Array(String(repeating: "[", count: depth).utf8) + Array(String(repeating: "]", count: chance(50) ? depth : depth / 2).utf8)
        case 2:
            recipe.append("huge number")
            return replacing(value, with: pick(["1e999", "-1e999", String(repeating: "9", count: 400), "123456789012345678901234567890", "0.000000000000000000000001", "-0", "1.5e308"]))
        case 3:
            recipe.append("huge string")
            return replacing(value, with: "\"" + String(repeating: pick(["x", "é", "\\u0000", "\\n"]), count: 1000 + below(maxMessageBytes)) + "\"")
        case 4:
            recipe.append("duplicate keys")
            return Array("{\"request_type\":\"workflow_run\",\"request_type\":\"assessment_create\",\"workflow_name\":\"\(workflowName)\",\"body\":{},\"body\":[1]}".utf8)
        case 5:
            recipe.append("invalid UTF-8")
            var broken = value
            broken.insert(contentsOf: pick([[0xFF], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xE2, 0x82]]), at: below(broken.count))
            return broken
        case 6:
            recipe.append("NUL bytes")
            var broken = value
            broken.insert(0, at: below(broken.count))
            return broken
        case 7:
            recipe.append("wrong type")
            let field = pick(["request_type", "workflow_name", "body", "input", "vendor_id", "control_set_ids", "event_id", "event_type", "occurred_at",
                              "org_id", "data", "vendor", "id", "tags", "name", "attributes", "owner_email", "trigger_workflow"])
            let wrong = pick(["null", "1", "true", "[]", "{}", "\"s\"", "-5", "1.5", "[\"cbvndr_x\"]"])
            return retype(value, field: field, to: wrong)
        case 8:
            recipe.append("over MAX_MESSAGE_BYTES")
            return value + Array(repeating: 0x20, count: maxMessageBytes + below(4096))
        case 9:
            recipe.append("empty")
            return chance(50) ? [] : nil
        case 10:
            recipe.append("random bytes")
            return bytes(below(300))
        case 11:
            recipe.append("not an object")
            return Array(pick(["[]", "\"text\"", "42", "null", "true", "[{}]"]).utf8)
        case 12:
            recipe.append("bad ids")
            let id = pick(["cbvndr_", "cbvndr_E448BA62882143F3BA0C140BB2E30162", "cborg_\u{0}", "x\nINJECTED log line", String(repeating: "cbevt_", count: 5000)])
            return retype(value, field: pick(["vendor_id", "org_id", "event_id", "id", "workflow_name"]), to: JSONValue.string(id).canonicalString)
        case 13:
            recipe.append("time")
            return retype(value, field: "occurred_at", to: pick(["0", "-1", "99999999999999", "9223372036854775807", "1746576000"]))
        case 14:
            recipe.append("unknown request_type")
            return retype(value, field: "request_type", to: pick(["\"vendor_delete\"", "\"\"", "\"\(String(repeating: "t", count: 5000))\""]))
        default:
            recipe.append("trailing garbage")
            return value + Array(pick([" x", "}", ",", "\u{0}"]).utf8)
        }
    }

    /// `value` with its first `"field":<value>` member's value replaced by `replacement`, or
    /// the whole value replaced when there is no such field.
    private func retype(_ value: [UInt8], field: String, to replacement: String) -> [UInt8] {
        guard var json = try? JSONValue.parse(value) else { return Array(replacement.utf8) }
        json = Self.replaceFirst(field, in: json, with: (try? JSONValue.parse(Array(replacement.utf8))) ?? .string(replacement)) ?? json
        return json.canonicalBytes
    }

    private static func replaceFirst(_ field: String, in value: JSONValue, with replacement: JSONValue) -> JSONValue? {
        guard case .object(var object) = value else { return nil }
        if object[field] != nil {
            object[field] = replacement
            return .object(object)
        }
        for (key, member) in object.sorted(by: { $0.key < $1.key }) {
            if let replaced = replaceFirst(field, in: member, with: replacement) {
                object[key] = replaced
                return .object(object)
            }
        }
        return nil
    }

    private func replacing(_ value: [UInt8], with literal: String) -> [UInt8] {
        retype(value, field: pick2(value), to: literal)
    }

    /// A field of the value to carry a number or string literal.
    private func pick2(_ value: [UInt8]) -> String {
        (try? JSONValue.parse(value))?["request_type"] != nil ? "input" : "name"
    }

    private mutating func headers(forEvent: Bool, _ recipe: inout [String]) -> [KafkaHeader] {
        var headers: [KafkaHeader] = []
        switch below(8) {
        case 0: recipe.append("no Authorization")
        case 1: headers.append(KafkaHeader(key: "Authorization", value: "Bearer ak_test_wrong"))
        case 2:
            recipe.append("two Authorization")
            headers += [KafkaHeader(key: "Authorization", value: "Bearer \(apiKey)"), KafkaHeader(key: "authorization", value: "Bearer \(apiKey)")]
        case 3: headers.append(KafkaHeader(key: "Authorization", value: bytes(below(100))))
        default: headers.append(KafkaHeader(key: "Authorization", value: "Bearer \(apiKey)"))
        }
        if chance(60) {
            let key: [UInt8]? = switch below(8) {
            case 0: []
            case 1: nil
            case 2: [0x6B, 0xFF, 0xFE]
            case 3: Array(String(repeating: "é", count: 128).utf8)
            case 4: Array("a\u{0}b".utf8)
            case 5: Array("line\nINJECTED".utf8)
            default: Array("fuzz-key-\(below(50))".utf8)
            }
            headers.append(KafkaHeader(key: pick(["Idempotency-Key", "idempotency-key"]), value: key))
            if chance(10) { headers.append(KafkaHeader(key: "Idempotency-Key", value: "second")) }
        }
        if chance(40) {
            headers.append(KafkaHeader(key: "Request-Id", value: pick([
                "req-\(below(100))", String(repeating: "r", count: 256 + below(200_000)), "café", "a\nINJECTED", "",
            ])))
        }
        if chance(30) {
            headers.append(KafkaHeader(key: "traceparent", value: pick([
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-x", String(repeating: "0", count: 100_000), "garbage\u{0}",
            ])))
        }
        if chance(15) {
            recipe.append("many headers")
            headers += (0..<(1 + below(300))).map { KafkaHeader(key: "X-Fuzz-\($0)", value: bytes(below(64))) }
        }
        if chance(8) {
            recipe.append("huge header")
            headers.append(KafkaHeader(key: String(repeating: "N", count: below(2000)), value: Array(repeating: 0x41, count: 100_000 + below(200_000))))
        }
        if forEvent, chance(30) { headers.append(KafkaHeader(key: "Coverbase-Signature", value: bytes(64))) }
        return headers
    }
}
