/// Writes canonical JSON (as ``JSONValue/canonicalBytes`` gives it) straight into
/// one buffer, for the documents the worker writes per message: no intermediate
/// dictionaries, arrays or strings.
///
/// The caller gives each object's keys in canonical (sorted) order; debug builds
/// check that they do, so the tests catch a key out of order.
public struct CanonicalJSONWriter {
    /// The JSON written so far.
    public private(set) var bytes: [UInt8] = []
    /// Per open container (innermost in bit 0): whether it has a member yet.
    private var hasMembers: UInt64 = 0
    private var depth = 0
    #if DEBUG
    private var lastKeys: [String?] = []
    #endif

    public init(capacity: Int = 512) {
        bytes.reserveCapacity(capacity)
    }

    /// Writes `{`, then `members` (keys in sorted order), then `}`.
    public mutating func object(_ members: (inout CanonicalJSONWriter) -> Void) {
        open(UInt8(ascii: "{"))
        members(&self)
        close(UInt8(ascii: "}"))
    }

    /// Writes `[`, then `elements` (one value each), then `]`.
    public mutating func array(_ elements: (inout CanonicalJSONWriter) -> Void) {
        open(UInt8(ascii: "["))
        elements(&self)
        close(UInt8(ascii: "]"))
    }

    /// Starts the member `key` of the innermost object; write its value next.
    public mutating func key(_ key: String) {
        #if DEBUG
        if let last = lastKeys[lastKeys.count - 1] {
            assert(last < key, "canonical JSON needs sorted keys: \"\(key)\" after \"\(last)\"")
        }
        lastKeys[lastKeys.count - 1] = key
        #endif
        separate()
        JSONValue.writeString(key, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        // The value that follows belongs to this member: no comma before it.
        hasMembers &= ~1
    }

    public mutating func string(_ value: String) {
        separate()
        JSONValue.writeString(value, to: &bytes)
    }

    /// A string, or `null`.
    public mutating func string(_ value: String?) {
        if let value { string(value) } else { null() }
    }

    public mutating func int(_ value: Int64) {
        separate()
        JSONValue.writeInteger(value, to: &bytes)
    }

    public mutating func bool(_ value: Bool) {
        separate()
        bytes.append(contentsOf: (value ? "true" : "false").utf8)
    }

    public mutating func null() {
        separate()
        bytes.append(contentsOf: "null".utf8)
    }

    /// Any value, encoded canonically.
    public mutating func value(_ value: JSONValue) {
        separate()
        value.write(to: &bytes)
    }

    /// A value that is already canonical JSON (a stored document spliced in unparsed).
    public mutating func encoded(_ json: [UInt8]) {
        separate()
        bytes.append(contentsOf: json)
    }

    private mutating func open(_ bracket: UInt8) {
        separate()
        bytes.append(bracket)
        precondition(depth < 64, "JSON nested deeper than 64 levels")
        depth += 1
        hasMembers <<= 1
        #if DEBUG
        lastKeys.append(nil)
        #endif
    }

    private mutating func close(_ bracket: UInt8) {
        bytes.append(bracket)
        depth -= 1
        hasMembers >>= 1
        #if DEBUG
        lastKeys.removeLast()
        #endif
    }

    /// A comma before every value after the first in a container (a member's
    /// value follows its key directly).
    private mutating func separate() {
        guard depth > 0 else { return }
        if hasMembers & 1 == 1 { bytes.append(UInt8(ascii: ",")) }
        hasMembers |= 1
    }
}
