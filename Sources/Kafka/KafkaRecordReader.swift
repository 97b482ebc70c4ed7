import CRdKafka
import Foundation
import Logging

/// Reads single records by offset, outside any consumer group: to look at what a
/// partition's log holds at a given offset (for example, whether the record the
/// store last handled is still there).
public enum KafkaRecordReader {
    /// What a partition's log holds at an offset, as far as reading from a start shows.
    public enum Lookup: Sendable, Equatable {
        /// The record at the offset.
        case found(KafkaMessage)
        /// The log ends before the offset: records up to `lastOffset` (or none at all
        /// from the start) and then nothing, or the broker says the offset is out of range.
        case endsBefore(lastOffset: Int64?)
        /// The first record read lies past the offset, or the records jump over it: the
        /// offset's record batch may begin before the start (some brokers, Tansu among
        /// them, return only batches that begin at or after the fetch offset), or the
        /// record is gone (compaction). Nothing can be said.
        case passed(firstOffset: Int64)
    }

    /// Looks up the record at `target` of `partition`, reading from `start` (at most
    /// `target`) onwards, outside any consumer group. A log that yields records below
    /// `target` and then nothing for `quiet` ends there: this finds the end of a log
    /// even on brokers that report neither an offset past the end as out of range nor
    /// the end offset itself correctly.
    /// - Throws: ``KafkaError`` when nothing at all is read within `timeout`.
    public static func lookup(
        at target: Int64, of partition: KafkaTopicPartition, startingAt start: Int64, configuration: KafkaConfiguration,
        quiet: Duration = .seconds(1), timeout: Duration = .seconds(5), logger: Logger
    ) async throws(KafkaError) -> Lookup {
        var properties = configuration.baseProperties
        properties.merge(configuration.overrides) { _, override in override }
        // Only this partition, from this offset; no commits, and an offset outside the
        // log is reported, not reset. The end is told by silence, not by partition EOF
        // (a broker that under-reports its end offset would signal EOF too early).
        properties["enable.auto.commit"] = "false"
        properties["enable.partition.eof"] = "false"
        properties["auto.offset.reset"] = "error"
        properties["fetch.wait.max.ms"] = "50"
        // A group id lets librdkafka serve the consumer queue; assigning (not
        // subscribing) never joins the group, and nothing is committed to it.
        properties["group.id"] = "trigger-worker-record-reader"
        for key in ["max.poll.interval.ms", "session.timeout.ms", "group.instance.id", "partition.assignment.strategy", "enable.auto.offset.store"] {
            properties.removeValue(forKey: key)
        }
        let client = try RdKafkaClient(kind: .consumer, properties: properties, callbacks: RdKafkaCallbacks(logger: logger))
        let result: Result<Lookup, KafkaError> = await runBlocking {
            let list = UnsafeMutablePointer<rd_kafka_topic_partition_list_t>.make([partition: min(start, target)])
            defer { rd_kafka_topic_partition_list_destroy(list) }
            let error = rd_kafka_assign(client.handle, list)
            guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
                return .failure(KafkaError(code: .broker, rdKafkaError: error, context: "cannot read \(partition) from \(start)"))
            }
            defer { _ = rd_kafka_assign(client.handle, nil) }
            let began = Date()
            var lastRead: (offset: Int64, at: Date)?
            while true {
                let now = Date()
                if let lastRead, now.timeIntervalSince(lastRead.at) > Double(quiet.milliseconds) / 1000 { return .success(.endsBefore(lastOffset: lastRead.offset)) }
                if lastRead == nil, now.timeIntervalSince(began) > Double(timeout.milliseconds) / 1000 {
                    return .failure(KafkaError(code: .broker, message: "no answer reading \(partition) from \(start) within \(timeout)", isRetriable: true))
                }
                guard let message = rd_kafka_consumer_poll(client.handle, 100) else { continue }
                defer { rd_kafka_message_destroy(message) }
                switch message.pointee.err {
                case RD_KAFKA_RESP_ERR_NO_ERROR:
                    let offset = message.pointee.offset
                    if offset < target {
                        lastRead = (offset, Date())
                        continue
                    }
                    guard offset == target else { return .success(.passed(firstOffset: offset)) }
                    return .success(.found(KafkaMessage(copying: message)))
                case RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET, RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE:
                    return .success(.endsBefore(lastOffset: lastRead?.offset))
                case let other where KafkaError(code: .broker, rdKafkaError: other, context: "").isRetriable:
                    continue
                case let other:
                    return .failure(KafkaError(code: .broker, rdKafkaError: other, context: "reading \(partition) from \(start) failed"))
                }
            }
        }
        return try result.get()
    }
}
