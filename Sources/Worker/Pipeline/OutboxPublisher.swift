import Kafka
import Logging
import ServiceLifecycle
import Store
import Synchronization

/// Publishes outbox entries with the idempotent producer and deletes each entry
/// once the broker confirmed every message in it. Entries are read oldest first,
/// so messages with one key keep their order; an entry with a failed message
/// stays and is published again (all of it, with the same `event_id`s) with
/// backoff while the broker is unreachable. Every message is published at least once.
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
            var delivered: [Int64] = []
            var failure: KafkaError?
            var position = 0
            for entry in entries {
                let outcome = results[position..<position + entry.messages.count]
                position += entry.messages.count
                if let error = outcome.lazy.compactMap({ result -> KafkaError? in
                    if case .failure(let error) = result { return error }
                    return nil
                }).first {
                    failure = failure ?? error
                } else {
                    delivered.append(entry.id)
                }
            }
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
                    LogKey.error: "\(failure)", "entries_delivered": "\(delivered.count)", "entries_failed": "\(entries.count - delivered.count)",
                ])
                return false
            }
        }
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
