import Kafka
import Logging
import ServiceLifecycle
import Store
import Synchronization

/// Publishes outbox entries with the idempotent producer and deletes each entry
/// once the broker confirmed every message in it and in the entries before it.
/// Entries are read oldest first, so messages with one key keep their order; from
/// the first entry with a failed message on, entries stay and are published again
/// (all of them, with the same `event_id`s) with backoff while the broker is
/// unreachable. Every message is published at least once, and for each key the
/// last message published is the latest one.
public final class OutboxPublisher: Service, Sendable {
    private let store: any Store
    private let producer: KafkaProducer
    private let logger: Logger
    private let batchSize: Int
    private let doorbell = Doorbell()
    private let lastFatalError = Mutex<KafkaError?>(nil)

    /// How long to wait without a wake-up before looking at the outbox anyway.
    static let idleInterval: Duration = .seconds(1)

    /// - Parameter batchSize: outbox entries per round (each holds up to a batch's messages).
    public init(store: any Store, producer: KafkaProducer, logger: Logger, batchSize: Int = 4) {
        self.store = store
        self.producer = producer
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
            let (delivered, failure) = Self.deliveredPrefix(of: entries, results: results)
            do {
                try await store.deleteOutbox(ids: delivered)
            } catch {
                // The rows are published again later: consumers drop them by event_id.
                logger.error("Deleting published outbox rows failed", metadata: [LogKey.error: "\(error)"])
                return false
            }
            if let failure {
                if failure.isFatal { lastFatalError.withLock { $0 = failure } }
                logger.warning("Publishing outbox rows failed; retrying with backoff", metadata: [
                    LogKey.error: "\(failure)", "entries_delivered": "\(delivered.count)", "entries_kept": "\(entries.count - delivered.count)",
                ])
                return false
            }
        }
    }
}

extension OutboxPublisher {
    /// The entries that may be deleted after a round: those before the first entry
    /// with a failed message. The failed entry and every entry after it stay, even
    /// those fully delivered, and are published again in order, so that for each key
    /// the last message in the topic is still the latest one (same `event_id`s again).
    static func deliveredPrefix(of entries: [OutboxEntry], results: [Result<KafkaDeliveryReport, KafkaError>]) -> (delivered: [Int64], failure: KafkaError?) {
        var delivered: [Int64] = []
        var position = 0
        for entry in entries {
            let outcome = results[position..<position + entry.messages.count]
            position += entry.messages.count
            for case .failure(let error) in outcome { return (delivered, error) }
            delivered.append(entry.id)
        }
        return (delivered, nil)
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
