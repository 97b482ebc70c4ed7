import CRdKafka
import Logging

/// A topic to create when it is missing.
public struct KafkaTopicSpecification: Sendable, Hashable {
    /// The topic's name.
    public var name: String
    /// How many partitions it gets. Default: 6, enough for six consumers in a group.
    public var partitions: Int32
    /// How many copies of each partition; `-1` for the broker's default. Default: `-1`.
    public var replicationFactor: Int32
    /// Topic settings (`max.message.bytes` …); the broker's defaults for the rest.
    public var settings: [String: String]

    public init(name: String, partitions: Int32 = 6, replicationFactor: Int32 = -1, settings: [String: String] = [:]) {
        self.name = name
        self.partitions = partitions
        self.replicationFactor = replicationFactor
        self.settings = settings
    }
}

/// Administrative requests: creating the topics the worker needs.
public enum KafkaAdmin {
    /// What ``createTopics(_:configuration:timeout:logger:)`` did with a topic.
    public enum TopicCreation: Sendable, Hashable {
        /// The topic was created.
        case created
        /// The topic existed already; it was left as it is.
        case alreadyExisted
    }

    /// Creates every topic in `topics` that does not exist yet.
    /// - Returns: what happened to each topic, by name.
    /// - Throws: ``KafkaError`` with code ``KafkaError/Code/admin`` naming the first topic that could not be created.
    public static func createTopics(
        _ topics: [KafkaTopicSpecification],
        configuration: KafkaConfiguration,
        timeout: Duration = .seconds(30),
        logger: Logger
    ) async throws(KafkaError) -> [String: TopicCreation] {
        guard !topics.isEmpty else { return [:] }
        let properties = KafkaProducerConfiguration(common: configuration, idempotent: false).properties
        let client = try RdKafkaClient(kind: .producer, properties: properties, callbacks: RdKafkaCallbacks(logger: logger))
        let result: Result<[String: TopicCreation], KafkaError> = await runBlocking {
            createTopics(topics, handle: client.handle, timeout: timeout)
        }
        let outcome = try result.get()
        for (name, creation) in outcome.sorted(by: { $0.key < $1.key }) {
            logger.info(creation == .created ? "Created topic" : "Topic exists", metadata: ["topic": "\(name)"])
        }
        return outcome
    }

    /// The blocking part of ``createTopics(_:configuration:timeout:logger:)``.
    private static func createTopics(
        _ topics: [KafkaTopicSpecification],
        handle: OpaquePointer,
        timeout: Duration
    ) -> Result<[String: TopicCreation], KafkaError> {
        var errorText = [CChar](repeating: 0, count: 512)
        var newTopics: [OpaquePointer?] = []
        defer { for topic in newTopics { rd_kafka_NewTopic_destroy(topic) } }
        for topic in topics {
            guard let newTopic = rd_kafka_NewTopic_new(topic.name, topic.partitions, topic.replicationFactor, &errorText, errorText.count) else {
                return .failure(KafkaError(code: .admin, message: "invalid topic '\(topic.name)': \(String(errorBuffer: errorText))"))
            }
            newTopics.append(newTopic)
            for (key, value) in topic.settings.sorted(by: { $0.key < $1.key }) {
                let error = rd_kafka_NewTopic_set_config(newTopic, key, value)
                guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
                    return .failure(KafkaError(code: .admin, rdKafkaError: error, context: "invalid setting '\(key)' for topic '\(topic.name)'"))
                }
            }
        }
        let queue = rd_kafka_queue_new(handle)
        defer { rd_kafka_queue_destroy(queue) }
        let options = rd_kafka_AdminOptions_new(handle, RD_KAFKA_ADMIN_OP_CREATETOPICS)
        defer { rd_kafka_AdminOptions_destroy(options) }
        _ = rd_kafka_AdminOptions_set_request_timeout(options, Int32(clamping: timeout.milliseconds), &errorText, errorText.count)
        _ = rd_kafka_AdminOptions_set_operation_timeout(options, Int32(clamping: timeout.milliseconds), &errorText, errorText.count)

        newTopics.withUnsafeMutableBufferPointer { buffer in
            rd_kafka_CreateTopics(handle, buffer.baseAddress, buffer.count, options, queue)
        }
        guard let event = rd_kafka_queue_poll(queue, Int32(clamping: timeout.milliseconds + 1000)) else {
            return .failure(KafkaError(code: .admin, message: "no answer to CreateTopics within \(timeout)", isRetriable: true))
        }
        defer { rd_kafka_event_destroy(event) }
        let eventError = rd_kafka_event_error(event)
        guard eventError == RD_KAFKA_RESP_ERR_NO_ERROR else {
            return .failure(KafkaError(code: .admin, rdKafkaError: eventError, context: "CreateTopics failed"))
        }
        guard let result = rd_kafka_event_CreateTopics_result(event) else {
            return .failure(KafkaError(code: .admin, message: "CreateTopics answered with an unexpected event"))
        }
        var count = 0
        guard let results = rd_kafka_CreateTopics_result_topics(result, &count) else {
            return .failure(KafkaError(code: .admin, message: "CreateTopics answered without topics"))
        }
        var outcome: [String: TopicCreation] = [:]
        for index in 0..<count {
            let topicResult = results[index]
            let name = String(cString: rd_kafka_topic_result_name(topicResult))
            switch rd_kafka_topic_result_error(topicResult) {
            case RD_KAFKA_RESP_ERR_NO_ERROR:
                outcome[name] = .created
            case RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS:
                outcome[name] = .alreadyExisted
            case let error:
                let reason = rd_kafka_topic_result_error_string(topicResult).map { String(cString: $0) } ?? ""
                return .failure(KafkaError(code: .admin, rdKafkaError: error, context: "cannot create topic '\(name)' (\(reason))"))
            }
        }
        return .success(outcome)
    }

    /// The version of the librdkafka library loaded at run time, for example `2.8.0`.
    public static var librdkafkaVersion: String { RdKafkaClient.libraryVersion }

    /// Waits until every librdkafka client of the process is destroyed (each is destroyed
    /// on a thread of its own once released), for at most `timeout`. A process that
    /// exits before then tears down the runtime under librdkafka's threads, which still
    /// log through Swift: call this before exiting.
    /// - Returns: whether all were destroyed in time.
    @discardableResult
    public static func waitUntilClientsDestroyed(timeout: Duration) async -> Bool {
        await runBlocking { rd_kafka_wait_destroyed(Int32(clamping: timeout.milliseconds)) == 0 }
    }
}
