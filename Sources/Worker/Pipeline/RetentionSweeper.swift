import Logging
import Metrics
import ServiceLifecycle
import Store

/// Deletes what the store no longer needs, in bounded batches, so that it holds
/// only what is live: expired idempotency records (lookups already treat them as
/// absent; this reclaims their space), and runs, assessments, kept events and
/// for_each item results older than `RUN_RETENTION` (runs counted from when they
/// finished; an event older than that no longer counts for a wait that begins later).
public struct RetentionSweeper: Service {
    private let store: any Store
    private let clock: any WallClock
    private let retention: Duration
    private let interval: Duration
    private let batchSize: Int
    private let logger: Logger
    private let pruned = (
        records: Counter(label: "trigger_worker_pruned_total", dimensions: [("kind", "idempotency_record")]),
        runs: Counter(label: "trigger_worker_pruned_total", dimensions: [("kind", "run")]),
        assessments: Counter(label: "trigger_worker_pruned_total", dimensions: [("kind", "assessment")]),
        engine: Counter(label: "trigger_worker_pruned_total", dimensions: [("kind", "engine_history")])
    )

    /// What one sweep deleted.
    public struct Swept: Sendable, Equatable {
        public var records = 0
        public var runs = 0
        public var assessments = 0
        /// Kept events and for_each item results past `RUN_RETENTION`.
        public var engineHistory = 0
    }

    /// - Parameters:
    ///   - ttl: `IDEMPOTENCY_TTL`; sweeps run every tenth of it, between 1 s and 60 s.
    ///   - retention: `RUN_RETENTION`.
    public init(store: any Store, ttl: Duration, retention: Duration, clock: any WallClock = SystemWallClock(), batchSize: Int = 1000, logger: Logger) {
        self.store = store
        self.clock = clock
        self.retention = retention
        self.interval = min(max(ttl / 10, .seconds(1)), .seconds(60))
        self.batchSize = batchSize
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await sweep()
            let interval = self.interval
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }

    /// One sweep: for each kind, batches of `batchSize` until fewer than that were due.
    @discardableResult
    public func sweep() async -> Swept {
        let now = clock.now()
        let cutoff = (now - retention.milliseconds) / 1000
        var swept = Swept()
        swept.records = await sweep("expired idempotency records", pruned.records) { try await store.deleteExpiredIdempotencyRecords(now: now, limit: $0) }
        swept.runs = await sweep("finished runs past RUN_RETENTION", pruned.runs) { try await store.pruneRuns(finishedBefore: cutoff, limit: $0) }
        swept.assessments = await sweep("assessments past RUN_RETENTION", pruned.assessments) { try await store.pruneAssessments(createdBefore: cutoff, limit: $0) }
        swept.engineHistory = await sweep("engine events and item results past RUN_RETENTION", pruned.engine) { try await store.pruneEngineHistory(before: cutoff, limit: $0) }
        return swept
    }

    private func sweep(_ what: String, _ counter: Counter, _ delete: (Int) async throws -> Int) async -> Int {
        var total = 0
        do {
            while true {
                let deleted = try await delete(batchSize)
                total += deleted
                counter.increment(by: Int64(deleted))
                // A long backlog (the first sweep after an upgrade) does not hold up a shutdown.
                if deleted < batchSize || Task.isShuttingDownGracefully || Task.isCancelled { break }
            }
        } catch {
            // Retried at the next sweep; nothing depends on it meanwhile.
            logger.warning("Sweeping \(what) failed", metadata: [LogKey.error: "\(error)"])
        }
        if total > 0 { logger.debug("Swept \(what)", metadata: [LogKey.count: "\(total)"]) }
        return total
    }
}
