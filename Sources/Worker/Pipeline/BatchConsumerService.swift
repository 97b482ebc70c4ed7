import Kafka
import Logging
import ServiceLifecycle

/// Runs a consumer, hands each of its batches to a ``BatchHandler`` and commits
/// the batch's offsets once the handler wrote it.
///
/// Batches overlap by one: while a batch is written (and its offsets committed),
/// the next one is prepared. Writes and commits stay in batch order.
///
/// The consumer runs as a child task, so it sees this service's graceful shutdown:
/// it stops fetching, the final revocation is handled here, the group is left and
/// the events end, and then this service returns.
///
/// A revocation arrives after every batch of the revoked partitions. The batch in
/// flight is finished and committed before the reader asks for the next event
/// (which lets librdkafka hand the partitions over), so nothing handled is left
/// uncommitted.
public struct BatchConsumerService<Handler: BatchHandler>: Service {
    private let consumer: KafkaConsumer
    private let handler: Handler
    private let logger: Logger

    public init(consumer: KafkaConsumer, handler: Handler, logger: Logger) {
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

    /// The batch being written and committed, and what it was prepared as.
    private struct InFlight {
        var prepared: Handler.Prepared
        /// Whether it was written as prepared (see ``BatchHandler/write(_:)``).
        var written: Task<Bool, any Error>
    }

    private func handleEvents() async throws {
        let group = consumer.configuration.groupID
        var inFlight: InFlight?
        do {
            for await event in consumer.events {
                switch event {
                case .partitionsAssigned(let partitions):
                    logger.info("Joined the consumer group; partitions assigned", metadata: [
                        LogKey.group: "\(group)",
                        LogKey.partitions: "\(partitions.map(\.description).joined(separator: ","))",
                    ])
                case .messages(let batch):
                    var prepared = try await handler.prepare(batch, after: inFlight?.prepared)
                    if try await !settle(&inFlight) {
                        // The previous batch was decided again: what this one saw of it is stale.
                        prepared = try await handler.prepare(batch, after: nil)
                    }
                    inFlight = InFlight(prepared: prepared, written: start(prepared, offsets: batch.nextOffsets))
                case .partitionsRevoked(let partitions, let lost):
                    _ = try await settle(&inFlight)
                    logger.info("Partitions revoked; their offsets are committed", metadata: [
                        LogKey.group: "\(group)",
                        LogKey.partitions: "\(partitions.map(\.description).joined(separator: ","))",
                        "lost": "\(lost)",
                    ])
                }
            }
            _ = try await settle(&inFlight)
        } catch {
            // Let the batch in flight finish (its transaction is all or nothing) before failing.
            _ = try? await inFlight?.written.value
            throw error
        }
        logger.info("Consumer stopped; offsets committed and the group left", metadata: [LogKey.group: "\(group)"])
    }

    /// Waits until the batch in flight (if any) is written and committed.
    /// - Returns: whether it was written as prepared.
    private func settle(_ inFlight: inout InFlight?) async throws -> Bool {
        guard let batch = inFlight else { return true }
        inFlight = nil
        return try await batch.written.value
    }

    /// Writes a batch, then commits its offsets.
    private func start(_ prepared: Handler.Prepared, offsets: [KafkaTopicPartition: Int64]) -> Task<Bool, any Error> {
        Task {
            let asPrepared = try await handler.write(prepared)
            do {
                try await consumer.commit(offsets)
                logger.debug("Committed", metadata: [LogKey.partitions: "\(Self.describe(offsets))"])
            } catch {
                // Not fatal: the messages are redelivered and the store deduplicates them.
                logger.warning("Offset commit failed; the batch may be redelivered", metadata: [LogKey.error: "\(error)"])
            }
            return asPrepared
        }
    }

    static func describe(_ offsets: [KafkaTopicPartition: Int64]) -> String {
        offsets.sorted { $0.key < $1.key }.map { "\($0.key)@\($0.value)" }.joined(separator: ",")
    }
}

/// Handles consumed batches in two steps, so that one batch can be prepared
/// while the one before it is written.
public protocol BatchHandler: Sendable {
    associatedtype Prepared: Sendable

    /// Decodes and decides `batch`. `pending` is the batch before it, whose write
    /// may still be in flight: its effects are to be taken as done.
    func prepare(_ batch: [KafkaMessage], after pending: Prepared?) async throws -> Prepared

    /// Writes a prepared batch; when it returns, the batch is done and its offsets
    /// may be committed. Called in batch order, each after the previous returned.
    /// - Returns: `true` when written as prepared; `false` when the handler had to
    ///   decide it again, so the batch prepared after it must be prepared again.
    func write(_ prepared: Prepared) async throws -> Bool
}

extension BatchHandler {
    /// Prepares and writes one batch (no overlap).
    public func handle(_ batch: [KafkaMessage]) async throws {
        _ = try await write(prepare(batch, after: nil))
    }
}
