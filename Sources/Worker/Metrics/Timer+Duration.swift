import Metrics

extension Timer {
    /// Records `duration` (a `ContinuousClock` difference), in nanoseconds.
    func record(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

/// Histogram buckets for the worker's own histograms, for a Prometheus factory: batch
/// sizes in messages, store transactions from a millisecond (SQLite's are that short).
public enum MetricBuckets {
    public static let values: [String: [Double]] = [
        "trigger_worker_batch_messages": [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000],
        "trigger_worker_engine_steps_per_transaction": [1, 5, 10, 25, 50, 100, 250, 500, 1000],
    ]
    public static let durations: [String: [Duration]] = [
        "trigger_worker_store_transaction_seconds": [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000].map { Duration.microseconds(Int64($0 * 1000)) },
    ]
}
