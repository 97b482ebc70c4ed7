import CRdKafka

/// An error from the Kafka layer.
///
/// Errors carry a ``Code`` and a human-readable message that names the operation
/// and, where known, the topic and partition. They never carry message keys,
/// values or configuration secrets.
public struct KafkaError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        fileprivate enum Base: String, Sendable, Hashable {
            case configuration
            case clientCreation
            case subscription
            case commit
            case produce
            case delivery
            case admin
            case shutdown
            case broker
        }

        fileprivate let base: Base

        /// A configuration property was unknown or had an invalid value.
        public static let configuration = Code(base: .configuration)
        /// librdkafka could not create a client handle.
        public static let clientCreation = Code(base: .clientCreation)
        /// Subscribing to topics failed.
        public static let subscription = Code(base: .subscription)
        /// Committing offsets failed.
        public static let commit = Code(base: .commit)
        /// librdkafka refused to enqueue a message (size, unknown topic, queue full …).
        public static let produce = Code(base: .produce)
        /// The broker, or the client's delivery timeout, failed a message.
        public static let delivery = Code(base: .delivery)
        /// An admin request (create topics) failed.
        public static let admin = Code(base: .admin)
        /// The client was already shut down.
        public static let shutdown = Code(base: .shutdown)
        /// The client reported a broker or protocol error.
        public static let broker = Code(base: .broker)

        public var description: String { base.rawValue }
    }

    /// What kind of failure this is.
    public let code: Code
    /// librdkafka's error code, when the failure came from librdkafka.
    public let rdKafkaCode: Int32?
    /// The librdkafka name of ``rdKafkaCode`` (for example `MSG_SIZE_TOO_LARGE`).
    public let rdKafkaName: String?
    /// What went wrong, for logs.
    public let message: String
    /// Whether retrying the same operation later can succeed.
    public let isRetriable: Bool
    /// Whether the client is unusable after this error and must be recreated.
    public let isFatal: Bool

    /// Creates an error that did not come from a librdkafka error code.
    public init(code: Code, message: String, isRetriable: Bool = false, isFatal: Bool = false) {
        self.code = code
        self.rdKafkaCode = nil
        self.rdKafkaName = nil
        self.message = message
        self.isRetriable = isRetriable
        self.isFatal = isFatal
    }

    /// Wraps a librdkafka error code.
    init(code: Code, rdKafkaError: rd_kafka_resp_err_t, context: String) {
        self.code = code
        self.rdKafkaCode = rdKafkaError.rawValue
        self.rdKafkaName = String(cString: rd_kafka_err2name(rdKafkaError))
        self.message = "\(context): \(String(cString: rd_kafka_err2str(rdKafkaError)))"
        self.isRetriable = Self.retriableCodes.contains(rdKafkaError)
        self.isFatal = rdKafkaError == RD_KAFKA_RESP_ERR__FATAL
    }

    /// Wraps librdkafka's error code `rdKafkaCode` (its number), as a delivery report would give it.
    init(code: Code, rdKafkaCode: Int32, context: String) {
        self.init(code: code, rdKafkaError: rd_kafka_resp_err_t(rawValue: rdKafkaCode), context: context)
    }

    /// Wraps an `rd_kafka_error_t`, which knows whether it is retriable and fatal. Destroys it.
    init(code: Code, consuming error: OpaquePointer, context: String) {
        self.code = code
        let err = rd_kafka_error_code(error)
        self.rdKafkaCode = err.rawValue
        self.rdKafkaName = String(cString: rd_kafka_error_name(error))
        self.message = "\(context): \(String(cString: rd_kafka_error_string(error)))"
        self.isRetriable = rd_kafka_error_is_retriable(error) != 0 || Self.retriableCodes.contains(err)
        self.isFatal = rd_kafka_error_is_fatal(error) != 0
        rd_kafka_error_destroy(error)
    }

    public var description: String {
        var text = "KafkaError(\(code)"
        if let rdKafkaName { text += ", \(rdKafkaName)" }
        text += "): \(message)"
        return text
    }

    /// Whether the broker or the client refuses this message for good: sending the
    /// same message again cannot succeed (too large, invalid topic, not authorized,
    /// an invalid record). Such a message is set aside, not retried.
    public var isPermanent: Bool {
        guard let rdKafkaCode, !isFatal else { return false }
        return Self.permanentCodes.contains(rd_kafka_resp_err_t(rdKafkaCode))
    }

    private static let permanentCodes: Set<rd_kafka_resp_err_t> = [
        RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
        RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE,
        RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE,
        RD_KAFKA_RESP_ERR_INVALID_RECORD,
        RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT,
        RD_KAFKA_RESP_ERR_POLICY_VIOLATION,
        RD_KAFKA_RESP_ERR__INVALID_ARG,
    ]

    private static let retriableCodes: Set<rd_kafka_resp_err_t> = [
        RD_KAFKA_RESP_ERR__TRANSPORT,
        RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN,
        RD_KAFKA_RESP_ERR__TIMED_OUT,
        RD_KAFKA_RESP_ERR__MSG_TIMED_OUT,
        RD_KAFKA_RESP_ERR__QUEUE_FULL,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
        RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
        RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION,
    ]
}

extension rd_kafka_resp_err_t: @retroactive Hashable {}
