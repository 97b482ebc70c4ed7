/// A configuration value that cannot be used, naming the key (never a secret's value).
public struct ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        fileprivate enum Base: String, Sendable, Hashable {
            case invalidValue
            case unreadableFile
        }

        fileprivate let base: Base
        /// A key has a value of the wrong form.
        public static let invalidValue = Code(base: .invalidValue)
        /// The configuration file cannot be read or parsed.
        public static let unreadableFile = Code(base: .unreadableFile)
        public var description: String { base.rawValue }
    }

    public var code: Code
    /// The configuration key, such as `IDEMPOTENCY_TTL`.
    public var key: String
    public var message: String

    public init(code: Code, key: String, message: String) {
        self.code = code
        self.key = key
        self.message = message
    }

    public var description: String { "\(key): \(message)" }
}
