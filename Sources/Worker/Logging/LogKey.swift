import Logging

/// The metadata keys of the worker's log lines, in one place so that every line
/// about a message carries the same names (and never an API key or a payload).
public enum LogKey {
    public static let topic = "topic"
    public static let partition = "partition"
    public static let offset = "offset"
    public static let firstOffset = "first_offset"
    public static let lastOffset = "last_offset"
    public static let count = "count"
    public static let org = "org"
    public static let idempotencyKey = "idempotency_key"
    public static let requestID = "request_id"
    public static let group = "group"
    public static let partitions = "partitions"
    public static let error = "error"
    public static let runID = "run_id"
}
