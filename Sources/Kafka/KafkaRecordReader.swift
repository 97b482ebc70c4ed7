import CRdKafka
import Foundation
import Logging

/// Reads single records by offset, outside any consumer group: to look at what a
/// partition's log holds at a given offset (for example, whether the record the
/// store last handled is still there).
public enum KafkaRecordReader {
    /// The record at `target` of `partition`, read from `start` (at most `target`)
    /// onwards, or `nil` when the log holds no record there: the log ends before it,
    /// or skips it. Reading from an earlier offset that is known to exist finds the
    /// end of the log even on brokers that neither report an offset past the end as
    /// out of range nor report the end itself correctly: a log that yields records
    /// up to some offset and then nothing for `quiet` ends there.
    /// - Throws: ``KafkaError`` when nothing at all is read within `timeout`.
    public static func record(
        at target: Int64, of partition: KafkaTopicPartition, startingAt start: Int64, configuration: KafkaConfiguration,
        quiet: Duration = .seconds(2), timeout: Duration = .seconds(10), logger: Logger
    ) async throws(KafkaError) -> KafkaMessage? {
        var properties = configuration.baseProperties
        properties.merge(configuration.overrides) { _, override in override }
        // Only this partition, only this offset; no group, no commits, and an
        // offset outside the log is reported, not reset.
        properties["enable.auto.commit"] = "false"
        properties["enable.partition.eof"] = "true"
        properties["auto.offset.reset"] = "error"
        properties["fetch.wait.max.ms"] = "50"
        // A group id lets librdkafka serve the consumer queue; assigning (not
        // subscribing) never joins the group, and nothing is committed to it.
        properties["group.id"] = "trigger-worker-record-reader"
        for key in ["max.poll.interval.ms", "session.timeout.ms", "group.instance.id", "partition.assignment.strategy", "enable.auto.offset.store"] {
            properties.removeValue(forKey: key)
        }
        let client = try RdKafkaClient(kind: .consumer, properties: properties, callbacks: RdKafkaCallbacks(logger: logger))
        let result: Result<KafkaMessage?, KafkaError> = await runBlocking {
            let list = UnsafeMutablePointer<rd_kafka_topic_partition_list_t>.make([partition: min(start, target)])
            defer { rd_kafka_topic_partition_list_destroy(list) }
            let error = rd_kafka_assign(client.handle, list)
            guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
                return .failure(KafkaError(code: .broker, rdKafkaError: error, context: "cannot read \(partition) from \(start)"))
            }
            defer { _ = rd_kafka_assign(client.handle, nil) }
            let deadline = Date().addingTimeInterval(Double(timeout.milliseconds) / 1000)
            var lastRead: Date?
            while Date() < deadline {
                if let lastRead, Date().timeIntervalSince(lastRead) > Double(quiet.milliseconds) / 1000 { return .success(nil) }
                guard let message = rd_kafka_consumer_poll(client.handle, 100) else { continue }
                defer { rd_kafka_message_destroy(message) }
                switch message.pointee.err {
                case RD_KAFKA_RESP_ERR_NO_ERROR:
                    let offset = message.pointee.offset
                    if offset < target {
                        lastRead = Date()
                        continue
                    }
                    guard offset == target else { return .success(nil) }
                    return .success(KafkaMessage(
                        topicPartition: partition, offset: offset,
                        key: message.pointee.key.map { Array(UnsafeRawBufferPointer(start: $0, count: message.pointee.key_len)) },
                        value: message.pointee.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: message.pointee.len)) }
                    ))
                case RD_KAFKA_RESP_ERR__PARTITION_EOF, RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET, RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE:
                    return .success(nil)
                case let other where KafkaError(code: .broker, rdKafkaError: other, context: "").isRetriable:
                    continue
                case let other:
                    return .failure(KafkaError(code: .broker, rdKafkaError: other, context: "reading \(partition) from \(start) failed"))
                }
            }
            return .failure(KafkaError(code: .broker, message: "no answer reading \(partition) from \(start) within \(timeout)", isRetriable: true))
        }
        return try result.get()
    }
}
