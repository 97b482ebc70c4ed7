/// What the store's "done up to" mark of a partition says about its log, read
/// when the partition is assigned (§3: log resets).
enum PartitionLog: Equatable {
    /// The mark lies within the log: go on from the committed offset.
    case continues
    /// The mark is beyond the log's end: the log was reset (the topic deleted and
    /// created again, a new broker with an old store). Its offsets are new messages,
    /// to be read from the start, in a new epoch.
    case reset
    /// The log starts after the mark: `count` messages left the log (retention)
    /// before they were handled. Nothing can bring them back; it is reported.
    case gap(count: Int64)

    /// - Parameters:
    ///   - next: the store's mark, the next offset to handle.
    ///   - low: the oldest offset still in the log.
    ///   - high: the offset the next record will get.
    static func classify(next: Int64, low: Int64, high: Int64) -> PartitionLog {
        if next > high { return .reset }
        if next < low { return .gap(count: low - next) }
        return .continues
    }
}
