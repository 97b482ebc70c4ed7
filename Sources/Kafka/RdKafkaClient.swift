import CRdKafka
import Foundation
import Synchronization
import Logging

/// Callbacks from librdkafka into Swift. librdkafka calls C function pointers
/// that cannot capture, so every handle's `opaque` points at one of these.
///
/// Its closures are set before the handle is created and never change after,
/// so reading them from librdkafka's threads is safe.
final class RdKafkaCallbacks: @unchecked Sendable {
    let logger: Logger
    /// Called on the poll thread for each rebalance event (consumers only).
    let rebalance: (@Sendable (OpaquePointer, rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) -> Void)?

    init(
        logger: Logger,
        rebalance: (@Sendable (OpaquePointer, rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) -> Void)? = nil
    ) {
        self.logger = logger
        self.rebalance = rebalance
    }

    static func of(_ handle: OpaquePointer?) -> RdKafkaCallbacks? {
        guard let handle, let opaque = rd_kafka_opaque(handle) else { return nil }
        return Unmanaged<RdKafkaCallbacks>.fromOpaque(opaque).takeUnretainedValue()
    }
}

/// Owns one `rd_kafka_t` handle and destroys it in `deinit`.
///
/// This is the only place that turns a property dictionary into an
/// `rd_kafka_conf_t`; every client of the `Kafka` module is built through it.
final class RdKafkaClient: @unchecked Sendable {
    enum Kind {
        case producer
        case consumer
    }

    /// The librdkafka handle. Valid until `deinit`.
    let handle: OpaquePointer
    let kind: Kind
    private let callbacks: RdKafkaCallbacks

    init(kind: Kind, properties: [String: String], callbacks: RdKafkaCallbacks) throws(KafkaError) {
        let conf = try Self.makeConfiguration(properties)
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(callbacks).toOpaque())
        rd_kafka_conf_set_log_cb(conf) { handle, level, facility, message in
            guard let callbacks = RdKafkaCallbacks.of(handle) else { return }
            let text = message.map { String(cString: $0) } ?? ""
            let facility = facility.map { String(cString: $0) } ?? ""
            callbacks.logger.log(level: Logger.Level(syslog: level), "librdkafka: \(text)", metadata: ["facility": "\(facility)"])
        }
        rd_kafka_conf_set_error_cb(conf) { handle, error, reason, _ in
            guard let callbacks = RdKafkaCallbacks.of(handle) else { return }
            let reason = reason.map { String(cString: $0) } ?? ""
            let name = String(cString: rd_kafka_err2name(rd_kafka_resp_err_t(error)))
            // Broker connection errors are retried by librdkafka; they are worth a
            // warning, not an error, unless librdkafka says the client is dead.
            let level: Logger.Level = rd_kafka_resp_err_t(error) == RD_KAFKA_RESP_ERR__FATAL ? .critical : .warning
            callbacks.logger.log(level: level, "Kafka client error", metadata: ["error": "\(name)", "reason": "\(reason)"])
        }
        if kind == .consumer {
            // Results of background commits: only failures are worth a line.
            rd_kafka_conf_set_offset_commit_cb(conf) { handle, error, partitions, _ in
                guard error != RD_KAFKA_RESP_ERR_NO_ERROR, error != RD_KAFKA_RESP_ERR__NO_OFFSET, let callbacks = RdKafkaCallbacks.of(handle) else { return }
                let failed = partitions.map { $0.elements.filter { $0.error != RD_KAFKA_RESP_ERR_NO_ERROR }.map(\.topicPartition.description) } ?? []
                callbacks.logger.warning("Offset commit failed; the messages may be redelivered (the store deduplicates them)", metadata: [
                    "error": "\(String(cString: rd_kafka_err2name(error)))", "partitions": "\(failed.joined(separator: ","))",
                ])
            }
        }
        if callbacks.rebalance != nil {
            rd_kafka_conf_set_rebalance_cb(conf) { handle, error, partitions, _ in
                guard let handle, let partitions, let callbacks = RdKafkaCallbacks.of(handle) else { return }
                callbacks.rebalance?(handle, error, partitions)
            }
        }
        if kind == .producer {
            rd_kafka_conf_set_dr_msg_cb(conf) { _, message, _ in
                guard let message else { return }
                DeliveryToken.complete(message)
            }
        }

        var errorText = [CChar](repeating: 0, count: 512)
        let type = kind == .producer ? RD_KAFKA_PRODUCER : RD_KAFKA_CONSUMER
        // On success rd_kafka_new takes ownership of conf; on failure we still own it.
        guard let handle = rd_kafka_new(type, conf, &errorText, errorText.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError(code: .clientCreation, message: "could not create a Kafka \(kind) client: \(String(errorBuffer: errorText))")
        }
        self.handle = handle
        self.kind = kind
        self.callbacks = callbacks
        if kind == .consumer {
            // Serve every callback (errors, rebalances, logs) from rd_kafka_consumer_poll.
            rd_kafka_poll_set_consumer(handle)
        }
    }

    /// Set once the client failed fatally: it is destroyed without closing the
    /// consumer, which cannot be done for a client in that state.
    private let fatallyFailed = Atomic<Bool>(false)

    /// Marks the client as failed for good (see ``fatallyFailed``).
    func markFatallyFailed() { fatallyFailed.store(true, ordering: .releasing) }

    deinit {
        // The handle is used by this one thread from here on.
        nonisolated(unsafe) let handle = self.handle
        let callbacks = self.callbacks
        let flags: Int32 = fatallyFailed.load(ordering: .acquiring) ? Int32(RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE) : 0
        // Destroying waits for librdkafka's threads (and, for a consumer, for its group
        // coordinator): never on a thread of Swift's cooperative pool.
        Thread.detachNewThread {
            rd_kafka_destroy_flags(handle, flags)
            withExtendedLifetime(callbacks) {}
        }
    }

    /// The version of the librdkafka library loaded at run time, for example `2.8.0`.
    static var libraryVersion: String { String(cString: rd_kafka_version_str()) }

    /// Builds an `rd_kafka_conf_t` from `properties`, naming the property that librdkafka refuses.
    static func makeConfiguration(_ properties: [String: String]) throws(KafkaError) -> OpaquePointer {
        let conf = rd_kafka_conf_new()!
        var errorText = [CChar](repeating: 0, count: 512)
        for (key, value) in properties.sorted(by: { $0.key < $1.key }) {
            if rd_kafka_conf_set(conf, key, value, &errorText, errorText.count) != RD_KAFKA_CONF_OK {
                rd_kafka_conf_destroy(conf)
                // The value may be a secret (sasl.password): name the property only.
                throw KafkaError(code: .configuration, message: "librdkafka refused property '\(key)': \(String(errorBuffer: errorText))")
            }
        }
        return conf
    }
}

extension Logger.Level {
    /// Maps a syslog level (librdkafka's log levels) to a swift-log level.
    init(syslog level: Int32) {
        switch level {
        case ...2: self = .critical
        case 3: self = .error
        case 4: self = .warning
        case 5: self = .notice
        case 6: self = .info
        default: self = .debug
        }
    }
}

// MARK: - Topic partition lists

extension UnsafeMutablePointer where Pointee == rd_kafka_topic_partition_list_t {
    /// The list's elements as Swift values.
    var elements: [(topicPartition: KafkaTopicPartition, offset: Int64, error: rd_kafka_resp_err_t)] {
        (0..<Int(pointee.cnt)).map { index in
            let element = pointee.elems[index]
            return (KafkaTopicPartition(topic: String(cString: element.topic), partition: element.partition), element.offset, element.err)
        }
    }

    /// The list's topic-partitions.
    var topicPartitions: [KafkaTopicPartition] { elements.map(\.topicPartition) }

    /// A new list (to be destroyed by the caller) of the given partitions and offsets.
    static func make(_ offsets: [KafkaTopicPartition: Int64]) -> Self {
        let list = rd_kafka_topic_partition_list_new(Int32(offsets.count))!
        for (topicPartition, offset) in offsets.sorted(by: { $0.key < $1.key }) {
            let element = rd_kafka_topic_partition_list_add(list, topicPartition.topic, topicPartition.partition)!
            element.pointee.offset = offset
        }
        return list
    }
}

extension String {
    /// Decodes a NUL-terminated C string that librdkafka wrote into `buffer`.
    init(errorBuffer buffer: [CChar]) {
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        self.init(decoding: bytes, as: UTF8.self)
    }
}
