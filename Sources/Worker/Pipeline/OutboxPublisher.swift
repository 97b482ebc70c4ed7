import Kafka
import Logging
import Metrics
import ServiceLifecycle
import Store
import Synchronization
import Workflows

/// Publishes outbox entries with the idempotent producer and deletes each entry
/// once every message in it, and in the entries before it, was delivered or set
/// aside. Entries are read oldest first, so messages with one key keep their order.
///
/// Each failed message is classified:
/// - **refused for good** (too large, invalid topic, not authorized): *parked*,
///   that is kept in the store with its error, counted, logged once at error level,
///   and skipped, so that it holds back nothing after it (`trigger-worker outbox`);
/// - **retriable** (the broker unreachable, a time-out): from the first entry with
///   such a failure on, entries stay and are published again (all of them, with the
///   same `event_id`s) with backoff, so that for each key the last message published
///   is the latest one;
/// - **unclassified** (neither known retriable nor known permanent, such as an
///   unknown topic): retried like a retriable one, and parked once its entry failed
///   so for ``unclassifiedPatience`` and ``roundsBeforeParking`` rounds in a row;
/// - **fatal** (the producer cannot go on): the publisher stops and the process
///   exits; the outbox still holds every message.
public final class OutboxPublisher: Service, Sendable {
    private let store: any Store
    private let producer: KafkaProducer
    private let clock: any WallClock
    private let logger: Logger
    private let batchSize: Int
    private let doorbell = Doorbell()
    private let lastFatalError = Mutex<KafkaError?>(nil)
    private let parked = Counter(label: "trigger_worker_outbox_parked_total")
    /// Per entry that fails with an unclassified error: since when, and how many rounds in a row.
    private let unclassified = Mutex<[Int64: (since: ContinuousClock.Instant, rounds: Int)]>([:])
    private let ownership: Mutex<Ownership>
    private let inputTopics: Set<String>

    /// Which entries this instance publishes. On a shared store, those of the source
    /// partitions it owns (and those of none): the owner of a partition publishes its
    /// outputs in order, and a partition's new owner publishes what the old one left.
    private struct Ownership {
        /// `nil`: every entry (a store of this instance alone).
        var partitions: Set<PartitionID>?
        /// How many publishing rounds are under way, and who waits for them to end.
        var rounds = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    /// How many rounds in a row, and for how long, an unclassified error may fail an
    /// entry before its messages that fail so are parked (a topic being created again
    /// is back well within this).
    static let roundsBeforeParking = 5
    static let unclassifiedPatience: Duration = .seconds(600)

    /// How long to wait without a wake-up before looking at the outbox anyway.
    static let idleInterval: Duration = .seconds(1)
    /// How often a shared store's outbox is searched for entries no instance owns.
    static let orphanInterval: Duration = .seconds(60)

    /// - Parameters:
    ///   - batchSize: outbox entries per round (each holds up to a batch's messages of
    ///     one source partition, at most 16 MiB: a round holds at most 128 MiB).
    ///   - inputTopics: the topics the worker consumes. On a shared store, entries of other
    ///     source topics (left by an earlier configuration: no instance owns their partitions)
    ///     are looked for every ``orphanInterval`` and published by whoever finds them.
    public init(store: any Store, producer: KafkaProducer, clock: any WallClock = SystemWallClock(), logger: Logger, batchSize: Int = 8, inputTopics: Set<String>) {
        self.inputTopics = inputTopics
        self.store = store
        self.producer = producer
        self.clock = clock
        self.logger = logger
        self.batchSize = batchSize
        ownership = Mutex(Ownership(partitions: store.isShared ? [] : nil))
    }

    /// Tells the publisher there are new rows.
    public func notify() { doorbell.ring() }

    /// Publishes until graceful shutdown, then publishes what is left once more.
    /// - Throws: ``KafkaError`` when the producer failed fatally (it cannot recover;
    ///   the process should restart, and the outbox still holds every message).
    public func run() async throws {
        try await withGracefulShutdownHandler {
            var backoff = Duration.milliseconds(100)
            var orphansDue = ContinuousClock.now
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                if let fatal = lastFatalError.withLock({ $0 }) { throw fatal }
                if store.isShared, orphansDue <= .now {
                    orphansDue = .now + Self.orphanInterval
                    await drain(.orphaned(inputTopics: inputTopics))
                }
                if await drain() {
                    backoff = .milliseconds(100)
                    await doorbell.wait(timeout: Self.idleInterval)
                } else {
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, .seconds(5))
                }
            }
        } onGracefulShutdown: {
            self.doorbell.ring()
        }
        if let fatal = lastFatalError.withLock({ $0 }) { throw fatal }
        // The consumer has stopped by now (it shuts down first): publish the rest. On a
        // shared store, the rest of the partitions this instance owned is their next
        // owner's to publish (publishing it here too would race with that owner).
        _ = await drain()
    }

    /// Publishes every row there is (of the partitions this instance owns, on a shared
    /// store). Returns false when a delivery failed (retry later).
    @discardableResult
    public func drain() async -> Bool {
        await drain(nil)
    }

    /// - Parameter fixed: what to read; `nil` for what this instance publishes now.
    @discardableResult
    private func drain(_ fixed: OutboxSelection?) async -> Bool {
        while true {
            let entries: [OutboxEntry]
            let selection = ownership.withLock { ownership -> OutboxSelection in
                ownership.rounds += 1
                return fixed ?? ownership.partitions.map { .owned($0) } ?? .all
            }
            defer { endRound() }
            do {
                entries = try await store.pendingOutbox(limit: batchSize, selection: selection)
            } catch {
                logger.error("Reading the outbox failed", metadata: [LogKey.error: "\(error)"])
                return false
            }
            guard !entries.isEmpty else { return true }
            let messages = entries.flatMap(\.messages)
            let results = await producer.send(messages.map { message in
                KafkaProducerMessage(topic: message.topic, key: message.key, value: message.publishedValue, headers: message.headers.map { KafkaHeader(key: $0.name, value: $0.value) })
            })
            let giveUp = unclassified.withLock { failing in
                Set(failing.filter { $0.value.rounds >= Self.roundsBeforeParking && $0.value.since.duration(to: .now) >= Self.unclassifiedPatience }.keys)
            }
            let round = Self.settle(entries, results: results, now: clock.now(), giveUp: giveUp)
            unclassified.withLock { failing in
                for id in round.done { failing.removeValue(forKey: id) }
                if let failed = round.failedEntry, let failure = round.failure, !failure.isRetriable, !failure.isFatal {
                    let previous = failing[failed] ?? (since: .now, rounds: 0)
                    failing[failed] = (previous.since, previous.rounds + 1)
                }
            }
            do {
                try await store.finishOutbox(done: round.done, park: round.parked)
            } catch {
                // The rows are published again later: consumers drop them by event_id.
                logger.error("Finishing a publishing round in the store failed", metadata: [LogKey.error: "\(error)"])
                return false
            }
            for output in round.parked {
                parked.increment()
                logger.error("Output refused for good by the broker; parked (see trigger-worker outbox list)", metadata: [
                    LogKey.topic: "\(output.message.topic)", LogKey.error: "\(output.errorCode)", "bytes": "\(output.message.byteCount)",
                ])
            }
            if let failure = round.failure {
                if failure.isFatal { lastFatalError.withLock { $0 = failure } }
                logger.warning("Publishing outbox rows failed; retrying with backoff", metadata: [
                    LogKey.error: "\(failure)", "entries_done": "\(round.done.count)", "entries_kept": "\(entries.count - round.done.count)",
                ])
                return false
            }
        }
    }
}

extension OutboxPublisher: PartitionOwner {
    public func partitionsAssigned(_ partitions: [PartitionID]) {
        let changed = ownership.withLock { ownership in
            guard ownership.partitions != nil else { return false }
            ownership.partitions!.formUnion(partitions)
            return true
        }
        // What the partitions' previous owner left in the outbox is published now.
        if changed { notify() }
    }

    /// Stops publishing the partitions' entries, and returns once a round that may
    /// still be publishing some has ended: the next owner starts after this one.
    public func partitionsRevoked(_ partitions: [PartitionID]) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let waits = ownership.withLock { ownership in
                guard ownership.partitions != nil else { return false }
                ownership.partitions!.subtract(partitions)
                guard ownership.rounds > 0 else { return false }
                ownership.waiters.append(continuation)
                return true
            }
            if !waits { continuation.resume() }
        }
    }

    private func endRound() {
        let waiters = ownership.withLock { ownership -> [CheckedContinuation<Void, Never>] in
            ownership.rounds -= 1
            guard ownership.rounds == 0 else { return [] }
            defer { ownership.waiters = [] }
            return ownership.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

extension OutboxPublisher {
    /// What a round did: the entries that are done (every message delivered or
    /// parked), the messages to park, and the first failure that is not a refusal
    /// for good. From the first entry with such a failure on, entries stay whole
    /// (their refused messages too: they are parked once their entry is done), and
    /// are published again in order, so that for each key the last message in the
    /// topic is still the latest one (same `event_id`s again).
    /// - Parameter giveUp: entries whose unclassified failures are parked this round.
    static func settle(
        _ entries: [OutboxEntry], results: [Result<KafkaDeliveryReport, KafkaError>], now: Timestamp, giveUp: Set<Int64> = []
    ) -> (done: [Int64], parked: [ParkedOutput], failure: KafkaError?, failedEntry: Int64?) {
        var done: [Int64] = []
        var parked: [ParkedOutput] = []
        var position = 0
        for entry in entries {
            let outcome = results[position..<position + entry.messages.count]
            position += entry.messages.count
            var refused: [ParkedOutput] = []
            for (message, result) in zip(entry.messages, outcome) {
                guard case .failure(let error) = result else { continue }
                let givenUp = giveUp.contains(entry.id) && !error.isRetriable && !error.isFatal
                guard error.isPermanent || givenUp else { return (done, parked, error, entry.id) }
                var message = message
                message.source = entry.source  // put back to the same owner if retried
                refused.append(ParkedOutput(message: message, errorCode: error.rdKafkaName ?? "\(error.code)", error: BoundedText.message(error.message), parkedAt: now))
            }
            parked += refused
            done.append(entry.id)
        }
        return (done, parked, nil, nil)
    }
}

/// Wakes one waiting task, or the next one to wait when none is waiting yet.
final class Doorbell: Sendable {
    private struct State {
        var rung = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    func ring() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.rung = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Whether a ring is waiting for the next ``wait(timeout:)``.
    var isRung: Bool { state.withLock { $0.rung } }

    /// Returns when rung, or after `timeout`.
    func wait(timeout: Duration) async {
        let timer = Task { [weak self] in
            // Cancelled (the bell rang first): no ring of its own, or the next wait would
            // return at once, and the one after it, polling the store in a hot loop.
            guard (try? await Task.sleep(for: timeout)) != nil else { return }
            self?.ring()
        }
        // Cancelled (the service group ends after another service failed): return at once.
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> Bool in
                    if state.rung {
                        state.rung = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            ring()
        }
        timer.cancel()
        await timer.value
    }
}
