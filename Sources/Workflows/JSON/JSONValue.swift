/// A JSON value: step inputs, condition values, run inputs and event data.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    /// An integer outside `Int64`'s range, kept as its decimal literal (no leading
    /// zeros, `-` when negative) so that it is echoed digit for digit.
    case bigInteger(String)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// The value as a string, when it is one.
    public var stringValue: String? {
        if case .string(let string) = self { return string }
        return nil
    }

    /// The value as a number, when it is one.
    public var numberValue: Double? {
        switch self {
        case .int(let int): Double(int)
        case .double(let double): double
        case .bigInteger(let digits): Double(digits)
        default: nil
        }
    }

    /// The value's JSON type name, for messages.
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .int, .double, .bigInteger: "number"
        case .string: "string"
        case .array: "list"
        case .object: "mapping"
        }
    }
}
