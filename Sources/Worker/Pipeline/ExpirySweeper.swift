import Logging
import ServiceLifecycle
import Store

/// Deletes expired idempotency records in bounded batches, so the table holds
/// only live keys. Lookups already treat expired records as absent; this only
/// reclaims their space.
public struct ExpirySweeper: Service {
    private let store: any Store
    private let clock: any WallClock
    private let interval: Duration
    private let batchSize: Int
    private let logger: Logger

    /// - Parameter interval: time between sweeps; default a tenth of the TTL, between 1 s and 60 s.
    public init(store: any Store, ttl: Duration, clock: any WallClock = SystemWallClock(), batchSize: Int = 1000, logger: Logger) {
        self.store = store
        self.clock = clock
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

    /// One sweep: batches of `batchSize` until fewer than that expired. Returns how many were deleted.
    @discardableResult
    public func sweep() async -> Int {
        var total = 0
        do {
            while true {
                let deleted = try await store.deleteExpiredIdempotencyRecords(now: clock.now(), limit: batchSize)
                total += deleted
                if deleted < batchSize { break }
            }
        } catch {
            logger.warning("Sweeping expired idempotency records failed", metadata: [LogKey.error: "\(error)"])
        }
        if total > 0 { logger.debug("Swept expired idempotency records", metadata: [LogKey.count: "\(total)"]) }
        return total
    }
}
