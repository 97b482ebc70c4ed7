import Kafka
import Logging
import ServiceLifecycle

/// Runs a consumer, hands each of its batches to a ``BatchHandler`` and commits
/// the batch's offsets once the handler returns.
///
/// The consumer runs as a child task, so it sees this service's graceful shutdown:
/// it stops fetching, the final revocation is handled here, the group is left and
/// the events end, and then this service returns.
///
/// A revocation arrives after every batch of the revoked partitions, and those
/// batches' offsets are committed as each one finishes, so by the time the reader
/// asks for the next event (which lets librdkafka hand the partitions over)
/// nothing handled is left uncommitted.
public struct BatchConsumerService: Service {
    private let consumer: KafkaConsumer
    private let handler: any BatchHandler
    private let logger: Logger

    public init(consumer: KafkaConsumer, handler: any BatchHandler, logger: Logger) {
        self.consumer = consumer
        self.handler = handler
        self.logger = logger
    }

    /// Runs the consumer and handles its events until it is shut down.
    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await consumer.run() }
            tasks.addTask { try await handleEvents() }
            do {
                try await tasks.waitForAll()
            } catch {
                // Either side failed: stop the consumer so the other side ends too.
                consumer.triggerShutdown()
                throw error
            }
        }
    }

    private func handleEvents() async throws {
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
                let offsets = batch.nextOffsets
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

    static func describe(_ offsets: [KafkaTopicPartition: Int64]) -> String {
        offsets.sorted { $0.key < $1.key }.map { "\($0.key)@\($0.value)" }.joined(separator: ",")
    }
}

/// Handles one batch of consumed messages. When it returns, the batch counts as done.
public protocol BatchHandler: Sendable {
    func handle(_ batch: [KafkaMessage]) async throws
}
