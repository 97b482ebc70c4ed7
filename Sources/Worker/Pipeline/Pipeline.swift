import Kafka
import Logging
import Metrics
import Store
import Workflows

/// Handles consumed batches: decode, decide, and write everything a batch
/// changes in one store transaction. When the transaction commits, the batch is
/// done and its offsets may be committed to Kafka.
///
/// A batch is handled in two steps (see ``BatchHandler``), so that the next batch
/// is decoded and decided while this one's transaction is being written. The
/// next batch is decided on the store's state plus the writes of the batch in
/// flight; it is written only once those writes committed exactly as decided,
/// and decided again when they did not.
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

    /// A decoded and decided batch, ready to be written.
    public struct Prepared: Sendable {
        var items: [(Source, Input)]
        var query: BatchQuery
        var decision: BatchDecider.Decision
        /// How many messages the batch has.
        public var count: Int { items.count }
        /// How many messages the batch publishes (responses, events, dead letters), as prepared.
        public var outputCount: Int { decision.writes.outbox.count }
    }

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

    /// Decodes `batch` and decides it on the store's state, seen as if `pending`
    /// (the batch whose write may still be in flight) were already written.
    public func prepare(_ batch: [KafkaMessage], after pending: Prepared?) async throws -> Prepared {
        let items = decoder.decode(batch)
        let query = decider.query(for: items)
        let decision = try await decide(items, query, after: pending?.decision.writes)
        return Prepared(items: items, query: query, decision: decision)
    }

    /// Writes a prepared batch in one transaction. After a conflict (another writer
    /// got there first: a concurrent claim of a key, or a partition handled
    /// elsewhere after a rebalance) the batch is decided again on fresh state.
    /// - Returns: `true` when the batch was written as prepared; `false` when it had
    ///   to be decided again, so a batch prepared after it must be prepared again.
    public func write(_ prepared: Prepared) async throws -> Bool {
        var decision = prepared.decision
        var attempt = 1
        while true {
            do {
                try await store.apply(decision.writes)
                record(decision, count: prepared.items.count)
                if !decision.writes.outbox.isEmpty { outboxReady() }
                return attempt == 1
            } catch let error as StoreError where error.code == .conflict && attempt < Self.maxAttempts {
                conflicts.increment()
                logger.info("Store conflict; deciding the batch again", metadata: [LogKey.error: "\(error)", "attempt": "\(attempt)"])
                attempt += 1
                decision = try await decide(prepared.items, prepared.query, after: nil)
            }
        }
    }

    private func decide(_ items: [(Source, Input)], _ query: BatchQuery, after pending: BatchWrites?) async throws -> BatchDecider.Decision {
        let now = clock.now()
        var snapshot = try await store.load(query, now: now)
        if let pending { snapshot.overlay(pending, now: now) }
        return decider.decide(items, snapshot: snapshot, now: now)
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

extension BatchSnapshot {
    /// The state once `writes` are committed, as far as a batch decided now can see it:
    /// their watermarks, their vendors where newer, and their records still live at `now`.
    mutating func overlay(_ writes: BatchWrites, now: Timestamp) {
        for (partition, watermark) in writes.watermarks {
            watermarks[partition] = Swift.max(watermarks[partition] ?? watermark.next, watermark.next)
        }
        for record in writes.records where record.expiresAt > now {
            records[record.scope] = record
        }
        for vendor in writes.vendors {
            let key = VendorKey(orgID: vendor.orgID, vendorID: vendor.id)
            if (vendors[key]?.occurredAt ?? .min) <= vendor.occurredAt { vendors[key] = vendor }
        }
    }
}
