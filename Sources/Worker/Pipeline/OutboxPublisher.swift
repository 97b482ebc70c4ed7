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

    /// How long to wait without a wake-up before looking at the outbox anyway.
    static let idleInterval: Duration = .seconds(1)

    /// - Parameter batchSize: outbox entries per round (each holds up to a batch's messages).
    public init(store: any Store, producer: KafkaProducer, clock: any WallClock = SystemWallClock(), logger: Logger, batchSize: Int = 4) {
        self.store = store
        self.producer = producer
        self.clock = clock
        self.logger = logger
        self.batchSize = batchSize
    }

    /// Tells the publisher there are new rows.
    public func notify() { doorbell.ring() }

    /// Publishes until graceful shutdown, then publishes what is left once more.
    /// - Throws: ``KafkaError`` when the producer failed fatally (it cannot recover;
    ///   the process should restart, and the outbox still holds every message).
    public func run() async throws {
        try await withGracefulShutdownHandler {
            var backoff = Duration.milliseconds(100)
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                if let fatal = lastFatalError.withLock({ $0 }) { throw fatal }
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
        // The consumer has stopped by now (it shuts down first): publish the rest.
        _ = await drain()
    }

    /// Publishes every row there is. Returns false when a delivery failed (retry later).
    @discardableResult
    public func drain() async -> Bool {
        while true {
            let entries: [OutboxEntry]
            do {
                entries = try await store.pendingOutbox(limit: batchSize)
            } catch {
                logger.error("Reading the outbox failed", metadata: [LogKey.error: "\(error)"])
                return false
            }
            guard !entries.isEmpty else { return true }
            let messages = entries.flatMap(\.messages)
            let results = await producer.send(messages.map { message in
                KafkaProducerMessage(topic: message.topic, key: message.key, value: message.value, headers: message.headers.map { KafkaHeader(key: $0.name, value: $0.value) })
            })
            let round = Self.settle(entries, results: results, now: clock.now())
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

extension OutboxPublisher {
    /// What a round did: the entries that are done (every message delivered or
    /// parked), the messages to park, and the first failure that is not a refusal
    /// for good. From the first entry with such a failure on, entries stay whole
    /// (their refused messages too: they are parked once their entry is done), and
    /// are published again in order, so that for each key the last message in the
    /// topic is still the latest one (same `event_id`s again).
    static func settle(_ entries: [OutboxEntry], results: [Result<KafkaDeliveryReport, KafkaError>], now: Timestamp) -> (done: [Int64], parked: [ParkedOutput], failure: KafkaError?) {
        var done: [Int64] = []
        var parked: [ParkedOutput] = []
        var position = 0
        for entry in entries {
            let outcome = results[position..<position + entry.messages.count]
            position += entry.messages.count
            var refused: [ParkedOutput] = []
            for (message, result) in zip(entry.messages, outcome) {
                guard case .failure(let error) = result else { continue }
                guard error.isPermanent else { return (done, parked, error) }
                refused.append(ParkedOutput(message: message, errorCode: error.rdKafkaName ?? "\(error.code)", error: BoundedText.message(error.message), parkedAt: now))
            }
            parked += refused
            done.append(entry.id)
        }
        return (done, parked, nil)
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

    /// Returns when rung, or after `timeout`.
    func wait(timeout: Duration) async {
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            self?.ring()
        }
        defer { timer.cancel() }
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
    }
}
