import Kafka
import Logging
import Metrics
import Store
import Workflows

/// Handles consumed batches: decode, decide, and write everything a batch
/// changes in one store transaction. When the transaction commits, the batch is
/// done and its offsets may be committed to Kafka.
public final class Pipeline: BatchHandler {
    private let decoder: InputDecoder
    private let decider: BatchDecider
    private let store: any Store
    private let clock: any WallClock
    private let logger: Logger
    private let outboxReady: @Sendable () -> Void

    /// How often a batch is decided again after a conflict before the error is raised.
    static let maxAttempts = 10

    private let processed = Counter(label: "trigger_worker_messages_total")
    private let runsStarted = Counter(label: "trigger_worker_runs_started_total")
    private let replays = Counter(label: "trigger_worker_idempotent_replays_total")
    private let mismatches = Counter(label: "trigger_worker_fingerprint_mismatches_total")
    private let deadLetters = Counter(label: "trigger_worker_dead_letters_total")
    private let ignoredEvents = Counter(label: "trigger_worker_events_ignored_total")
    private let conflicts = Counter(label: "trigger_worker_store_conflicts_total")

    /// - Parameter outboxReady: called after each committed batch that wrote outbox rows.
    public init(
        configuration: WorkerConfiguration, orgs: OrgDirectory, catalog: WorkflowCatalog, store: any Store,
        executor: any RunExecutor = SynchronousRunExecutor(), clock: any WallClock = SystemWallClock(),
        logger: Logger, outboxReady: @escaping @Sendable () -> Void
    ) {
        decoder = InputDecoder(topics: configuration.topics, maxMessageBytes: configuration.maxMessageBytes, orgs: orgs)
        decider = BatchDecider(
            catalog: catalog, executor: executor, outputs: Outputs(topics: configuration.topics),
            idempotencyTTL: configuration.idempotencyTTL, mismatchPolicy: configuration.idempotencyMismatch, logger: logger
        )
        self.store = store
        self.clock = clock
        self.logger = logger
        self.outboxReady = outboxReady
    }

    public func handle(_ batch: [KafkaMessage]) async throws {
        let items = batch.map { (Source($0), decoder.decode($0)) }
        let query = decider.query(for: items)
        var attempt = 1
        while true {
            let now = clock.now()
            let snapshot = try await store.load(query, now: now)
            let decision = decider.decide(items, snapshot: snapshot, now: now)
            do {
                try await store.apply(decision.writes)
                record(decision, count: batch.count)
                if !decision.writes.outbox.isEmpty { outboxReady() }
                return
            } catch let error as StoreError where error.code == .conflict && attempt < Self.maxAttempts {
                // Another writer got there first (a concurrent claim of a key, or a
                // partition handled elsewhere after a rebalance): decide again on fresh state.
                conflicts.increment()
                logger.info("Store conflict; deciding the batch again", metadata: [LogKey.error: "\(error)", "attempt": "\(attempt)"])
                attempt += 1
            }
        }
    }

    private func record(_ decision: BatchDecider.Decision, count: Int) {
        let tally = decision.tally
        processed.increment(by: Int64(count))
        runsStarted.increment(by: Int64(tally.runsStarted))
        replays.increment(by: Int64(tally.replays))
        mismatches.increment(by: Int64(tally.mismatches))
        deadLetters.increment(by: Int64(tally.deadLetters))
        ignoredEvents.increment(by: Int64(tally.ignored))
        logger.debug("Batch committed", metadata: [
            LogKey.count: "\(count)", "runs_started": "\(tally.runsStarted)", "responses": "\(tally.responses)",
            "replays": "\(tally.replays)", "dead_letters": "\(tally.deadLetters)", "already_done": "\(tally.alreadyDone)",
        ])
    }
}
