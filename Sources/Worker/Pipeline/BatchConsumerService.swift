import Kafka
import Logging
import ServiceLifecycle

/// Reads the consumer's events, hands each batch to a ``BatchHandler`` and
/// commits the batch's offsets once the handler returns.
///
/// A revocation arrives after every batch of the revoked partitions, and those
/// batches' offsets are committed as each one finishes, so by the time the reader
/// asks for the next event (which lets librdkafka hand the partitions over)
/// nothing handled is left uncommitted.
public struct BatchConsumerService<Handler: BatchHandler>: Service {
    private let consumer: KafkaConsumer
    private let handler: Handler
    private let logger: Logger

    public init(consumer: KafkaConsumer, handler: Handler, logger: Logger) {
        self.consumer = consumer
        self.handler = handler
        self.logger = logger
    }

    /// Runs until the consumer's events end (the consumer was shut down).
    public func run() async throws {
        let group = consumer.configuration.groupID
        for await event in consumer.events {
            switch event {
            case .partitionsAssigned(let partitions):
                logger.info("Joined the consumer group; partitions assigned", metadata: [
                    LogKey.group: "\(group)",
                    LogKey.partitions: "\(partitions.map(\.description).joined(separator: ","))",
                ])
            case .messages(let batch):
                try await handler.handle(batch)
                let offsets = Self.nextOffsets(after: batch)
                do {
                    try await consumer.commit(offsets)
                    logger.debug("Committed", metadata: [LogKey.partitions: "\(Self.describe(offsets))"])
                } catch {
                    // Not fatal: the messages are redelivered and the store deduplicates them.
                    logger.warning("Offset commit failed; the batch may be redelivered", metadata: [LogKey.error: "\(error)"])
                }
            case .partitionsRevoked(let partitions, let lost):
                logger.info("Partitions revoked; their offsets are committed", metadata: [
                    LogKey.group: "\(group)",
                    LogKey.partitions: "\(partitions.map(\.description).joined(separator: ","))",
                    "lost": "\(lost)",
                ])
            }
        }
        logger.info("Consumer stopped; offsets committed and the group left", metadata: [LogKey.group: "\(group)"])
    }

    /// One past the highest offset of each partition in `batch`: where to resume.
    public static func nextOffsets(after batch: [KafkaMessage]) -> [KafkaTopicPartition: Int64] {
        batch.reduce(into: [:]) { offsets, message in
            offsets[message.topicPartition] = max(offsets[message.topicPartition] ?? 0, message.offset + 1)
        }
    }

    static func describe(_ offsets: [KafkaTopicPartition: Int64]) -> String {
        offsets.sorted { $0.key < $1.key }.map { "\($0.key)@\($0.value)" }.joined(separator: ",")
    }
}

/// Handles one batch of consumed messages. When it returns, the batch counts as done.
public protocol BatchHandler: Sendable {
    func handle(_ batch: [KafkaMessage]) async throws
}

/// The handler until the pipeline exists: logs a summary of each batch per partition.
public struct LoggingBatchHandler: BatchHandler {
    private let logger: Logger

    public init(logger: Logger) {
        self.logger = logger
    }

    public func handle(_ batch: [KafkaMessage]) async throws {
        let byPartition = Dictionary(grouping: batch, by: \.topicPartition)
        for (partition, messages) in byPartition.sorted(by: { $0.key < $1.key }) {
            logger.info("Consumed batch", metadata: [
                LogKey.topic: "\(partition.topic)",
                LogKey.partition: "\(partition.partition)",
                LogKey.count: "\(messages.count)",
                LogKey.firstOffset: "\(messages.first!.offset)",
                LogKey.lastOffset: "\(messages.last!.offset)",
            ])
        }
    }
}
