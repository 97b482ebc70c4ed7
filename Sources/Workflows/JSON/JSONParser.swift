/// A strict JSON parser (RFC 8259) straight into ``JSONValue``: several times
/// faster than going through `JSONDecoder` and `Decodable`, which matters
/// because every consumed message is parsed.
struct JSONParser {
    struct Failure: Error, CustomStringConvertible {
        let offset: Int
        let reason: String
        var description: String { "invalid JSON at byte \(offset): \(reason)" }
    }

    private let bytes: UnsafeBufferPointer<UInt8>
    private var index = 0
    private var depth = 0
    /// Deeper nesting is refused rather than risking the stack.
    static let maxDepth = 512

    static func parse(_ input: [UInt8]) throws(Failure) -> JSONValue {
        let result: Result<JSONValue, Failure> = input.withUnsafeBufferPointer { buffer in
            var parser = JSONParser(bytes: buffer)
            do {
                parser.skipWhitespace()
                let value = try parser.value()
                parser.skipWhitespace()
                guard parser.index == buffer.count else { throw parser.failure("trailing characters") }
                return .success(value)
            } catch {
                return .failure(error as! Failure)
            }
        }
        return try result.get()
    }

    init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    func failure(_ reason: String) -> Failure { Failure(offset: index, reason: reason) }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    mutating func skipWhitespace() {
        while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09 { index += 1 }
    }

    mutating func value() throws(Failure) -> JSONValue {
        guard let byte = current else { throw failure("unexpected end") }
        switch byte {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw failure("unexpected character")
        }
    }

    private mutating func literal(_ word: StaticString) throws(Failure) {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw failure("unexpected end") }
        for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] { throw failure("invalid literal") }
        index += count
    }

    private mutating func enter() throws(Failure) {
        depth += 1
        if depth > Self.maxDepth { throw failure("nested too deeply") }
    }

    private mutating func object() throws(Failure) -> JSONValue {
        try openObject()
        var object: [String: JSONValue] = [:]
        var first = true
        while let key = try nextKey(&first) { object[key] = try value() }
        return .object(object)
    }

    private mutating func array() throws(Failure) -> JSONValue {
        try openArray()
        var items: [JSONValue] = []
        var first = true
        while try nextElement(&first) { items.append(try value()) }
        return .array(items)
    }

    private mutating func string() throws(Failure) -> String {
        index += 1  // the opening quote
        let start = index
        // Fast path: no escapes. ASCII (every key, most values) needs no validation:
        // `String(validating:)` was 3.6% of the engine's samples in `make bench`, most of
        // the cost of reading a claimed run's state.
        var bits: UInt8 = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let text = UnsafeBufferPointer(rebasing: bytes[start..<index])
                if bits < 0x80 {
                    index += 1
                    return String(decoding: text, as: UTF8.self)
                }
                guard let valid = String(validating: text, as: UTF8.self) else { throw failure("invalid UTF-8") }
                index += 1
                return valid
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw failure("control character in a string") }
            bits |= byte
            index += 1
        }
        var scalars = Array(bytes[start..<index])
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                guard let text = String(validating: scalars, as: UTF8.self) else { throw failure("invalid UTF-8") }
                return text
            case UInt8(ascii: "\\"):
                index += 1
                guard let escape = current else { throw failure("unexpected end") }
                index += 1
                switch escape {
                case UInt8(ascii: "\""): scalars.append(0x22)
                case UInt8(ascii: "\\"): scalars.append(0x5C)
                case UInt8(ascii: "/"): scalars.append(0x2F)
                case UInt8(ascii: "b"): scalars.append(0x08)
                case UInt8(ascii: "f"): scalars.append(0x0C)
                case UInt8(ascii: "n"): scalars.append(0x0A)
                case UInt8(ascii: "r"): scalars.append(0x0D)
                case UInt8(ascii: "t"): scalars.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800..<0xDC00).contains(code) {
                        guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else { throw failure("lone surrogate") }
                        index += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw failure("invalid surrogate pair") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00..<0xE000).contains(code) {
                        throw failure("lone surrogate")
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw failure("invalid escape") }
                    scalars.append(contentsOf: Array(String(Character(scalar)).utf8))
                default:
                    throw failure("invalid escape")
                }
            default:
                if byte < 0x20 { throw failure("control character in a string") }
                scalars.append(byte)
                index += 1
            }
        }
        throw failure("unterminated string")
    }

    private mutating func hex4() throws(Failure) -> UInt32 {
        guard index + 4 <= bytes.count else { throw failure("unexpected end") }
        var code: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw failure("invalid \\u escape")
            }
            code = code << 4 | UInt32(digit)
            index += 1
        }
        return code
    }

    private mutating func number() throws(Failure) -> JSONValue {
        let start = index
        var isInteger = true
        if current == UInt8(ascii: "-") { index += 1 }
        guard let first = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { throw failure("invalid number") }
        if first == UInt8(ascii: "0") {
            index += 1
        } else {
            while let byte = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { index += 1 }
        }
        if current == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            guard let byte = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { throw failure("invalid number") }
            while let byte = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { index += 1 }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            isInteger = false
            index += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
            guard let byte = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { throw failure("invalid number") }
            while let byte = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { index += 1 }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        if isInteger {
            // Beyond Int64 an integer keeps its literal: a Double would lose digits of an echoed input.
            return Int64(text).map(JSONValue.int) ?? .bigInteger(text)
        }
        guard let double = Double(text), double.isFinite else { throw failure("number out of range") }
        // 1E3 and 1.0 are whole numbers: one representation, as the canonical encoding writes them.
        if double == double.rounded(), abs(double) < 9_007_199_254_740_992 { return .int(Int64(double)) }
        return .double(double)
    }

    // MARK: Reading a document of a known shape in place (no tree for its known objects)

    /// Reads `input` with `body`, which walks it with the methods below, and checks
    /// that nothing but whitespace follows what `body` read.
    static func reading<Value>(_ input: [UInt8], _ body: (inout JSONParser) throws(Failure) -> Value) throws(Failure) -> Value {
        let result: Result<Value, Failure> = input.withUnsafeBufferPointer { buffer in
            var parser = JSONParser(bytes: buffer)
            do throws(Failure) {
                parser.skipWhitespace()
                let value = try body(&parser)
                parser.skipWhitespace()
                guard parser.index == buffer.count else { throw parser.failure("trailing characters") }
                return .success(value)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// Whether the next value is an object.
    var isAtObject: Bool { current == UInt8(ascii: "{") }

    /// Whether the next value is an array.
    var isAtArray: Bool { current == UInt8(ascii: "[") }

    /// Whether the next value is `null` (then read).
    mutating func readNull() throws(Failure) -> Bool {
        guard current == UInt8(ascii: "n") else { return false }
        try literal("null")
        return true
    }

    /// Reads `{`; then ``nextKey(_:)`` until it returns `nil`.
    mutating func openObject() throws(Failure) {
        try open(UInt8(ascii: "{"), "expected an object")
    }

    /// The next key of an object opened by ``openObject()``, its value next to read;
    /// `nil` at the object's end (read). `first` is true before the first key.
    mutating func nextKey(_ first: inout Bool) throws(Failure) -> String? {
        guard try nextMember(&first, closing: UInt8(ascii: "}"), "expected ',' or '}'") else { return nil }
        guard current == UInt8(ascii: "\"") else { throw failure("expected a key") }
        let key = try string()
        skipWhitespace()
        guard current == UInt8(ascii: ":") else { throw failure("expected ':'") }
        index += 1
        skipWhitespace()
        return key
    }

    /// Reads `[`; then ``nextElement(_:)`` until it returns false.
    mutating func openArray() throws(Failure) {
        try open(UInt8(ascii: "["), "expected an array")
    }

    /// Whether an array opened by ``openArray()`` has a next element (then next to
    /// read); false at its end (read). `first` is true before the first element.
    mutating func nextElement(_ first: inout Bool) throws(Failure) -> Bool {
        try nextMember(&first, closing: UInt8(ascii: "]"), "expected ',' or ']'")
    }

    private mutating func open(_ bracket: UInt8, _ expected: String) throws(Failure) {
        guard current == bracket else { throw failure(expected) }
        try enter()
        index += 1
    }

    /// Past the separator before a container's next member: false at its end (read).
    private mutating func nextMember(_ first: inout Bool, closing: UInt8, _ expected: String) throws(Failure) -> Bool {
        skipWhitespace()
        if current == closing {
            index += 1
            depth -= 1
            first = false
            return false
        }
        if first {
            first = false
            return true
        }
        guard current == UInt8(ascii: ",") else { throw failure(expected) }
        index += 1
        skipWhitespace()
        return true
    }

    /// Passes over the next value by its structure alone (brackets and strings), and
    /// returns where its bytes are in the input: the caller either finds them equal to
    /// bytes known to be valid JSON or parses them (``parse(_:)`` checks everything).
    mutating func skipValue() throws(Failure) -> Range<Int> {
        let start = index
        var level = 0
        repeat {
            guard let byte = current else { throw failure("unexpected end") }
            switch byte {
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                level += 1
                if depth + level > Self.maxDepth { throw failure("nested too deeply") }
                index += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                guard level > 0 else { throw failure("unexpected '\(Character(Unicode.Scalar(byte)))'") }
                level -= 1
                index += 1
            case UInt8(ascii: "\""):
                index += 1
                while true {
                    guard let inner = current else { throw failure("unterminated string") }
                    index += inner == UInt8(ascii: "\\") ? 2 : 1
                    if inner == UInt8(ascii: "\"") { break }
                }
            default:
                // A scalar at the top, or anything between a container's brackets.
                if level == 0 {
                    while let next = current, !Self.endsScalar(next) { index += 1 }
                } else {
                    index += 1
                }
            }
        } while level > 0
        guard index <= bytes.count, index > start else { throw failure("unexpected end") }
        return start..<index
    }

    private static func endsScalar(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: ",") || byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]") || byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09
    }
}
