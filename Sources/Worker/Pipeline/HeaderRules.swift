import Kafka
import Workflows

/// The rules of §4 for the headers a trigger request may carry, checked on their
/// bytes: `Idempotency-Key` (1–255 bytes of UTF-8, no control characters, once),
/// `Request-Id` (at most 255 bytes of printable ASCII, once) and `traceparent`
/// (W3C trace context, else ignored).
enum HeaderRules {
    /// The longest `Idempotency-Key` and `Request-Id`, in bytes (as Stripe's keys).
    static let maxBytes = 255

    /// A header that must appear at most once.
    enum Lookup: Equatable {
        case absent
        /// Present once, with its value (`nil` for a header without a value).
        case one([UInt8]?)
        case repeated
    }

    static func lookup(_ headers: [KafkaHeader], _ name: String) -> Lookup {
        var found: Lookup = .absent
        for header in headers where header.key.caseInsensitiveEquals(name) {
            if found != .absent { return .repeated }
            found = .one(header.value)
        }
        return found
    }

    // MARK: Idempotency-Key

    /// An `Idempotency-Key` as §4 has it.
    enum Key: Equatable {
        case absent
        case valid(String)
        /// Answered 422: the key is never treated as absent.
        case invalid(Responses.ValidationIssue)
    }

    static func idempotencyKey(_ headers: [KafkaHeader]) -> Key {
        func invalid(_ message: String, _ type: String) -> Key {
            .invalid(Responses.ValidationIssue(location: ["header", "Idempotency-Key"], message: message, type: type))
        }
        switch lookup(headers, "Idempotency-Key") {
        case .absent:
            return .absent
        case .repeated:
            return invalid("Idempotency-Key should be given once", "value_error")
        case .one(let value):
            let bytes = value ?? []
            guard !bytes.isEmpty else { return invalid("String should have at least 1 byte", "string_too_short") }
            guard bytes.count <= maxBytes else { return invalid("String should have at most \(maxBytes) bytes", "string_too_long") }
            guard let key = String(validating: bytes, as: UTF8.self) else { return invalid("Input should be a valid UTF-8 string", "string_unicode") }
            guard !key.unicodeScalars.contains(where: BoundedText.isControl) else {
                return invalid("String should not contain control characters", "string_pattern_mismatch")
            }
            return .valid(key)
        }
    }

    // MARK: Request-Id

    /// The `Request-Id` when it is valid; the reason it is not, when it is present and invalid.
    static func requestID(_ headers: [KafkaHeader]) -> (value: String?, problem: String?) {
        switch lookup(headers, "Request-Id") {
        case .absent:
            return (nil, nil)
        case .repeated:
            return (nil, "Request-Id must be given once.")
        case .one(let value):
            let bytes = value ?? []
            if bytes.isEmpty { return (nil, nil) }
            guard bytes.count <= maxBytes, bytes.allSatisfy({ (0x20...0x7E).contains($0) }) else {
                return (nil, "Request-Id must be at most \(maxBytes) bytes of printable ASCII.")
            }
            return (String(decoding: bytes, as: UTF8.self), nil)
        }
    }

    // MARK: traceparent

    /// The `traceparent` value when it is valid W3C trace context (version 00, or a
    /// later version's first four fields), at most 255 bytes; else `nil`.
    static func traceparent(_ headers: [KafkaHeader]) -> [UInt8]? {
        guard case .one(let value?) = lookup(headers, "traceparent") else { return nil }
        return isValidTraceparent(value) ? value : nil
    }

    /// The `traceparent` of the span that handles an input whose (valid) `traceparent`
    /// is `parent`: the same trace id and flags, and a span id of its own, derived from
    /// `seed` (what identifies the input: an output published again is identical).
    /// Written as version 00, whatever version the parent had.
    static func child(of parent: [UInt8], seed: [String]) -> [UInt8] {
        var span = Array(Digest.sha256(Array(seed.joined(separator: "\u{1F}").utf8)).prefix(8))
        if span.allSatisfy({ $0 == 0 }) { span[7] = 1 }  // an all-zero span id is invalid
        let hex = Array(Identifier.hex(span).utf8)
        return Array("00-".utf8) + parent[3..<35] + [UInt8(ascii: "-")] + hex + [UInt8(ascii: "-")] + parent[53..<55]
    }

    /// `version "-" trace-id "-" parent-id "-" flags`: 2, 32, 16 and 2 lowercase hex
    /// digits; version `ff`, an all-zero trace id or an all-zero parent id is invalid.
    static func isValidTraceparent(_ value: [UInt8]) -> Bool {
        guard value.count >= 55, value.count <= maxBytes else { return false }
        func isHex(_ range: Range<Int>) -> Bool {
            value[range].allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
        }
        func isZero(_ range: Range<Int>) -> Bool { value[range].allSatisfy { $0 == 0x30 } }
        let dash = UInt8(ascii: "-")
        guard isHex(0..<2), value[2] == dash, isHex(3..<35), value[35] == dash, isHex(36..<52), value[52] == dash, isHex(53..<55) else { return false }
        guard !(value[0] == UInt8(ascii: "f") && value[1] == UInt8(ascii: "f")), !isZero(3..<35), !isZero(36..<52) else { return false }
        // Version 00 has exactly these fields; a later version may add more after a dash.
        if value[0] == 0x30 && value[1] == 0x30 { return value.count == 55 }
        return value.count == 55 || value[55] == dash
    }
}
