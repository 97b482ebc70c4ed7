import Kafka
import Logging
import ServiceLifecycle
import Store
import Synchronization

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
/// flight is finished and the partitions' offsets committed (and awaited) before
/// the reader asks for the next event (which lets librdkafka hand the partitions
/// over), so nothing handled is left uncommitted.
public struct BatchConsumerService<Handler: BatchHandler>: Service {
    private let consumer: KafkaConsumer
    private let handler: Handler
    private let owners: [any PartitionOwner]
    private let logger: Logger

    /// - Parameter owners: told of each assignment and revocation (after the
    ///   revoked partitions' offsets are committed).
    public init(consumer: KafkaConsumer, handler: Handler, owners: [any PartitionOwner] = [], logger: Logger) {
        self.consumer = consumer
        self.handler = handler
        self.owners = owners
        self.logger = logger
    }

    /// Runs the consumer and handles its events until it is shut down.
    public func run() async throws {
        // Nothing is consumed before the handler can decide: an assignment waits on it
        // only so long (librdkafka's rebalance), and must not fall back to committed offsets.
        try await handler.ready()
        let writeFailure = FirstFailure()
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await consumer.run() }
            tasks.addTask {
                defer { writeFailure.finish() }
                try await handleEvents(writeFailure)
            }
            // A batch that cannot be written fails the service now, not when the next
            // batch arrives (which may be much later, or never).
            tasks.addTask { if let error = await writeFailure.wait() { throw error } }
            do {
                // next(), not waitForAll(): the first failure must be seen when it happens,
                // not once every other child has ended too.
                while try await tasks.next() != nil {}
            } catch {
                // Either side failed for good: stop the consumer, and do not wait for it to
                // leave the group (a broker that does not answer would hold the failure back
                // from the service group, which bounds the rest with SHUTDOWN_GRACE).
                consumer.triggerShutdown()
                tasks.cancelAll()
                throw error
            }
        }
    }

    /// The batch being written and committed, and what it was prepared as.
    private struct InFlight {
        var prepared: Handler.Prepared
        /// How it was written (see ``BatchHandler/write(_:)``).
        var written: Task<BatchWriteResult, any Error>
    }

    private func handleEvents(_ writeFailure: FirstFailure) async throws {
        let group = consumer.configuration.groupID
        var inFlight: InFlight?
        /// Where each partition resumes after the batches started so far.
        var positions: [KafkaTopicPartition: Int64] = [:]
        // On an error the batch in flight is not waited for: its transaction is all or
        // nothing and its offsets follow it, so the process may go down at any point.
        for await event in consumer.events {
            switch event {
            case .partitionsAssigned(let partitions):
                // Nothing of these partitions is fetched until this returns.
                let starts = try await handler.partitionsAssigned(partitions, consumer: consumer)
                consumer.startAt(starts)
                catchUpCommittedOffsets(to: starts)
                for owner in owners { owner.partitionsAssigned(partitions.map(\.id)) }
                logger.info("Joined the consumer group; partitions assigned", metadata: [
                    LogKey.group: "\(group)",
                    LogKey.partitions: "\(partitions.map(\.description).joined(separator: ","))",
                ])
            case .messages(let batch):
                var prepared = try await handler.prepare(batch, after: inFlight?.prepared)
                if try await !settle(&inFlight, positions: &positions) {
                    // The previous batch was decided again: what this one saw of it is stale.
                    handler.discard(prepared)
                    prepared = try await handler.prepare(batch, after: nil)
                }
                let offsets = batch.nextOffsets
                positions.merge(offsets) { max($0, $1) }
                inFlight = InFlight(prepared: prepared, written: start(prepared, offsets: offsets, writeFailure: writeFailure))
            case .partitionsRevoked(let partitions, let lost):
                _ = try await settle(&inFlight, positions: &positions)
                // The background commits may still be on their way: the next owner starts where this one ended.
                let revoked = positions.filter { partitions.contains($0.key) }
                for partition in partitions { positions.removeValue(forKey: partition) }
                if !lost {
                    do {
                        try await consumer.commit(revoked)
                    } catch {
                        logger.warning("Offset commit at revocation failed; the next owner may see some messages again (the store deduplicates them)", metadata: [LogKey.error: "\(error)"])
                    }
                }
                for owner in owners { await owner.partitionsRevoked(partitions.map(\.id)) }
                logger.info("Partitions revoked; their offsets are committed", metadata: [
                    LogKey.group: "\(group)",
                    LogKey.partitions: "\(partitions.map(\.description).joined(separator: ","))",
                    "lost": "\(lost)",
                ])
            }
        }
        _ = try await settle(&inFlight, positions: &positions)
        logger.info("Consumer stopped; offsets committed and the group left", metadata: [LogKey.group: "\(group)"])
    }

    /// Moves the group's offsets up to the store's marks where they are behind: a
    /// partition handled to its end by an instance that died before its commit went out
    /// would otherwise show a lag until new messages arrive. Never moves one back (a
    /// store behind the group is logged: it lost commits, or is not the group's store).
    private func catchUpCommittedOffsets(to starts: [KafkaTopicPartition: Int64]) {
        guard !starts.isEmpty else { return }
        let consumer = self.consumer
        let logger = self.logger
        Task {
            guard let committed = try? await consumer.committedOffsets(for: Array(starts.keys), timeout: .seconds(10)) else { return }
            var behind: [KafkaTopicPartition: Int64] = [:]
            for (partition, start) in starts {
                let offset = committed[partition] ?? nil
                if let offset, offset > start {
                    logger.warning("The group has committed past the store's mark: the store lost commits, or is not the one the group used (reading from the store's mark)", metadata: [
                        LogKey.topic: "\(partition.topic)", LogKey.partition: "\(partition.partition)", "committed": "\(offset)", "store_next_offset": "\(start)",
                    ])
                } else if offset != start {
                    behind[partition] = start
                }
            }
            consumer.commitInBackground(behind)
        }
    }

    /// Waits until the batch in flight (if any) is written (its offsets then go to the
    /// consumer to commit). A partition the batch found handled further on by another
    /// instance leaves `positions`: this instance commits nothing more of it.
    /// - Returns: whether it was written as prepared.
    private func settle(_ inFlight: inout InFlight?, positions: inout [KafkaTopicPartition: Int64]) async throws -> Bool {
        guard let batch = inFlight else { return true }
        inFlight = nil
        let result = try await batch.written.value
        if !result.superseded.isEmpty { positions = positions.filter { !result.superseded.contains($0.key.id) } }
        return result.asPrepared
    }

    /// Writes a batch, then commits its offsets in the background: a broker that is
    /// slow to answer holds up neither this batch nor the next (a lost commit only
    /// means redelivery, which the store deduplicates).
    private func start(_ prepared: Handler.Prepared, offsets: [KafkaTopicPartition: Int64], writeFailure: FirstFailure) -> Task<BatchWriteResult, any Error> {
        Task {
            let result: BatchWriteResult
            do {
                result = try await handler.write(prepared)
            } catch {
                logger.critical("A batch could not be written to the store; stopping", metadata: [LogKey.error: "\(error)"])
                writeFailure.raise(error)
                throw error
            }
            // A superseded partition's offsets stay as its new owner commits them.
            let committed = result.superseded.isEmpty ? offsets : offsets.filter { !result.superseded.contains($0.key.id) }
            consumer.commitInBackground(committed)
            logger.debug("Committing", metadata: [LogKey.partitions: "\(Self.describe(committed))"])
            return result
        }
    }

    static func describe(_ offsets: [KafkaTopicPartition: Int64]) -> String {
        offsets.sorted { $0.key < $1.key }.map { "\($0.key)@\($0.value)" }.joined(separator: ",")
    }
}

/// Told which partitions this instance owns: what it does for a partition (such as
/// publishing its outputs) it does only while it owns it.
public protocol PartitionOwner: Sendable {
    /// The partitions are this instance's now.
    func partitionsAssigned(_ partitions: [PartitionID])
    /// The partitions are no longer this instance's: returns once nothing of theirs is under way.
    func partitionsRevoked(_ partitions: [PartitionID]) async
}

extension KafkaTopicPartition {
    /// The partition as the store names it.
    var id: PartitionID { PartitionID(topic: topic, partition: partition) }
}

/// Handles consumed batches in two steps, so that one batch can be prepared
/// while the one before it is written.
public protocol BatchHandler: Sendable {
    associatedtype Prepared: Sendable

    /// Decodes and decides `batch`. `pending` is the batch before it, whose write
    /// may still be in flight: its effects are to be taken as done.
    func prepare(_ batch: [KafkaMessage], after pending: Prepared?) async throws -> Prepared

    /// Writes a prepared batch; when it returns, the batch is done and its offsets
    /// may be committed (but those of its superseded partitions). Called in batch
    /// order, each after the previous returned.
    func write(_ prepared: Prepared) async throws -> BatchWriteResult

    /// Drops a prepared batch that will not be written (it is prepared again).
    func discard(_ prepared: Prepared)

    /// Returns once batches can be handled (the store is migrated).
    func ready() async throws

    /// Looks at partitions being assigned, before any of their messages is fetched.
    /// - Returns: where to start reading partitions (the others start at the group's
    ///   committed offsets).
    func partitionsAssigned(_ partitions: [KafkaTopicPartition], consumer: KafkaConsumer) async throws -> [KafkaTopicPartition: Int64]
}

extension BatchHandler {
    public func ready() async throws {}

    public func discard(_ prepared: Prepared) {}

    /// Prepares and writes one batch (no overlap).
    public func handle(_ batch: [KafkaMessage]) async throws {
        _ = try await write(prepare(batch, after: nil))
    }
}

/// How a batch was written.
public struct BatchWriteResult: Sendable, Hashable {
    /// `true` when written as prepared; `false` when the handler had to decide it
    /// again, so the batch prepared after it must be prepared again.
    public var asPrepared: Bool
    /// Partitions of the batch that another instance had handled past the batch's
    /// end (they were handed over while it was in flight): nothing of theirs was
    /// written, and their offsets are not to be committed by this instance.
    public var superseded: Set<PartitionID>

    public init(asPrepared: Bool, superseded: Set<PartitionID> = []) {
        self.asPrepared = asPrepared
        self.superseded = superseded
    }
}

/// The first error raised, for one waiter; or `nil` once finished without one.
final class FirstFailure: Sendable {
    private struct State {
        var outcome: (any Error)??
        var waiter: CheckedContinuation<(any Error)?, Never>?
    }

    private let state = Mutex(State())

    func raise(_ error: any Error) { settle(error) }

    func finish() { settle(nil) }

    private func settle(_ outcome: (any Error)?) {
        let waiter = state.withLock { state -> CheckedContinuation<(any Error)?, Never>? in
            guard state.outcome == nil else { return nil }
            state.outcome = .some(outcome)
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: outcome)
    }

    /// The error, once one is raised; `nil` when finished without one, or when cancelled.
    func wait() async -> (any Error)? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> (any Error)?? in
                    if let outcome = state.outcome { return .some(outcome) }
                    if Task.isCancelled { return .some(nil) }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            state.withLock { state in defer { state.waiter = nil }; return state.waiter }?.resume(returning: nil)
        }
    }
}
