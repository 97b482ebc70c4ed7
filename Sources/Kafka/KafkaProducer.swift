import CRdKafka
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// An idempotent Kafka producer with per-message delivery results.
///
/// A dedicated thread serves librdkafka's delivery reports from the moment the
/// producer is created until ``shutdown()``; callers never block Swift's
/// cooperative thread pool. As a `Service`, it runs until graceful shutdown and
/// then flushes what is still in flight.
///
/// ```swift
/// let producer = try KafkaProducer(configuration: .init(common: kafka), logger: logger)
/// let results = await producer.send(messages)   // one result per message, in order
/// try await producer.shutdown()
/// ```
public final class KafkaProducer: Service, Sendable {
    /// The producer's settings.
    public let configuration: KafkaProducerConfiguration
    private let client: RdKafkaClient
    private let logger: Logger
    private let pollThread: PollThread
    /// The sends waiting for delivery reports, to fail when the producer shuts down.
    private let outstanding = Mutex<[ObjectIdentifier: DeliveryBatch]>([:])

    /// How long past the delivery timeout a send waits for reports that librdkafka
    /// owes it before it fails them itself: no wait on a delivery report is unbounded.
    static let reportMargin: Duration = .seconds(5)

    /// Creates the producer and starts its delivery-report thread.
    public init(configuration: KafkaProducerConfiguration, logger: Logger) throws(KafkaError) {
        self.configuration = configuration
        self.logger = logger
        self.client = try RdKafkaClient(kind: .producer, properties: configuration.properties, callbacks: RdKafkaCallbacks(logger: logger))
        let client = self.client
        self.pollThread = PollThread(name: "kafka-producer-poll") {
            // Serves delivery reports and errors; returns early when there are events.
            _ = rd_kafka_poll(client.handle, 100)
            return true
        }
    }

    deinit {
        pollThread.stop()
    }

    // MARK: Sending

    /// Sends `messages` and waits until every one of them is delivered or has failed.
    ///
    /// Returns one result per message, in the order given. Messages with one key
    /// keep their order in their partition. A message librdkafka refuses outright
    /// (too large, producer shut down) fails at once without holding up the rest.
    public func send(_ messages: [KafkaProducerMessage]) async -> [Result<KafkaDeliveryReport, KafkaError>] {
        guard !messages.isEmpty else { return [] }
        let batch = DeliveryBatch(count: messages.count)
        let id = ObjectIdentifier(batch)
        outstanding.withLock { $0[id] = batch }
        defer { _ = outstanding.withLock { $0.removeValue(forKey: id) } }
        for (index, message) in messages.enumerated() {
            while true {
                let error = enqueue(message, token: DeliveryToken(batch: batch, index: index))
                if error == RD_KAFKA_RESP_ERR__QUEUE_FULL, !pollThread.isStopped, !Task.isCancelled {
                    // librdkafka's local queue is full: give the poll thread time to drain it.
                    // (Cancelled, the message fails as queue-full instead of spinning.)
                    try? await Task.sleep(for: .milliseconds(2))
                    continue
                }
                if error != RD_KAFKA_RESP_ERR_NO_ERROR {
                    batch.complete(index, .failure(KafkaError(code: .produce, rdKafkaError: error, context: "cannot produce to \(message.topic)")))
                }
                break
            }
        }
        if pollThread.isStopped { batch.abandon(Self.shutDownError) }
        return await batch.results(deadline: deliveryTimeout + Self.reportMargin)
    }

    /// The delivery timeout librdkafka uses: the configured one, or an override's
    /// (`message.timeout.ms` or its alias `delivery.timeout.ms`; 0 means none, and a
    /// send then waits until shutdown).
    private var deliveryTimeout: Duration {
        let properties = configuration.properties
        guard let milliseconds = (properties["message.timeout.ms"] ?? properties["delivery.timeout.ms"]).flatMap(Int64.init) else {
            return configuration.deliveryTimeout
        }
        return milliseconds == 0 ? .seconds(365 * 86400) : .milliseconds(milliseconds)
    }

    /// What a message that was sent but never reported on fails with at shutdown.
    static let shutDownError = KafkaError(code: .shutdown, message: "the producer shut down before the broker confirmed delivery", isRetriable: true)

    /// Sends one message and waits for its delivery.
    /// - Throws: ``KafkaError`` when the message was refused or not delivered.
    @discardableResult
    public func send(_ message: KafkaProducerMessage) async throws(KafkaError) -> KafkaDeliveryReport {
        try await send([message])[0].get()
    }

    /// Hands one message to librdkafka; on success the token is released by the delivery report.
    private func enqueue(_ message: KafkaProducerMessage, token: DeliveryToken) -> rd_kafka_resp_err_t {
        if pollThread.isStopped { return RD_KAFKA_RESP_ERR__DESTROY }
        var headers: OpaquePointer?
        if !message.headers.isEmpty {
            headers = rd_kafka_headers_new(message.headers.count)
            for header in message.headers {
                if let value = header.value {
                    value.withUnsafeBytes { _ = rd_kafka_header_add(headers, header.key, -1, $0.baseAddress, $0.count) }
                } else {
                    _ = rd_kafka_header_add(headers, header.key, -1, nil, 0)
                }
            }
        }
        let opaque = Unmanaged.passRetained(token).toOpaque()
        let error = message.key.withOptionalBytes { key in
            message.value.withOptionalBytes { value in
                trw_produce(
                    client.handle, message.topic, message.partition ?? RD_KAFKA_PARTITION_UA,
                    key.baseAddress, key.count, value.baseAddress, value.count, headers, opaque
                )
            }
        }
        if error != RD_KAFKA_RESP_ERR_NO_ERROR {
            // librdkafka did not take the message: we still own the headers and the token.
            if let headers { rd_kafka_headers_destroy(headers) }
            Unmanaged<DeliveryToken>.fromOpaque(opaque).release()
        }
        return error
    }

    // MARK: Lifecycle

    /// Waits until every message handed to the producer is delivered or failed.
    /// - Throws: ``KafkaError`` with code ``KafkaError/Code/delivery`` when messages are still outstanding after `timeout`.
    public func flush(timeout: Duration) async throws(KafkaError) {
        let client = self.client
        let error = await runBlocking { rd_kafka_flush(client.handle, Int32(clamping: timeout.milliseconds)) }
        if error != RD_KAFKA_RESP_ERR_NO_ERROR {
            let outstanding = rd_kafka_outq_len(client.handle)
            throw KafkaError(code: .delivery, rdKafkaError: error, context: "flush left \(outstanding) messages undelivered")
        }
    }

    /// Flushes outstanding messages (up to the configured flush timeout) and stops
    /// the delivery-report thread. Later sends fail with `_DESTROY`.
    public func shutdown() async throws(KafkaError) {
        guard !pollThread.isStopped else { return }
        defer {
            pollThread.stop()
            // No report comes once nothing polls: fail what still waits for one.
            for batch in outstanding.withLock({ Array($0.values) }) { batch.abandon(Self.shutDownError) }
        }
        try await flush(timeout: configuration.flushTimeout)
        logger.info("Kafka producer flushed")
    }

    /// Runs until graceful shutdown or cancellation, then flushes and stops.
    public func run() async throws {
        // Returns on graceful shutdown; throws on cancellation, when we flush all the same.
        try? await gracefulShutdown()
        try await shutdown()
    }
}

// MARK: - Delivery bookkeeping

/// The results of one ``KafkaProducer/send(_:)-(array)`` call, filled in by delivery
/// reports, or by ``abandon(_:)`` for the slots no report filled in time. A report
/// that comes after that is ignored.
final class DeliveryBatch: Sendable {
    typealias Results = [Result<KafkaDeliveryReport, KafkaError>]

    private struct State {
        var results: [Result<KafkaDeliveryReport, KafkaError>?]
        var remaining: Int
        var waiter: CheckedContinuation<Results, Never>?

        /// Fills slot `index` unless it is filled; returns the waiter to resume when that was the last one.
        mutating func fill(_ index: Int, _ result: Result<KafkaDeliveryReport, KafkaError>) -> (CheckedContinuation<Results, Never>, Results)? {
            guard results[index] == nil else { return nil }
            results[index] = result
            remaining -= 1
            guard remaining == 0, let waiter else { return nil }
            self.waiter = nil
            return (waiter, results.map { $0! })
        }
    }

    private let state: Mutex<State>

    init(count: Int) {
        state = Mutex(State(results: Array(repeating: nil, count: count), remaining: count))
    }

    func complete(_ index: Int, _ result: Result<KafkaDeliveryReport, KafkaError>) {
        if let (waiter, results) = state.withLock({ $0.fill(index, result) }) { waiter.resume(returning: results) }
    }

    /// Fails every slot not filled yet with `error`.
    func abandon(_ error: KafkaError) {
        let finished = state.withLock { state -> (CheckedContinuation<Results, Never>, Results)? in
            var finished: (CheckedContinuation<Results, Never>, Results)?
            for index in state.results.indices where state.results[index] == nil {
                finished = state.fill(index, .failure(error)) ?? finished
            }
            return finished
        }
        if let (waiter, results) = finished { waiter.resume(returning: results) }
    }

    /// Every slot's result, once all are filled; slots still empty after `deadline`,
    /// or when the waiting task is cancelled, fail.
    func results(deadline: Duration) async -> Results {
        let timer = Task { [weak self] in
            try await Task.sleep(for: deadline)
            self?.abandon(KafkaError(code: .delivery, message: "no delivery report within \(deadline)", isRetriable: true))
        }
        defer { timer.cancel() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready: Results? = state.withLock { state in
                    if state.remaining == 0 { return state.results.map { $0! } }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            self.abandon(KafkaError(code: .delivery, message: "stopped waiting for delivery reports (cancelled)", isRetriable: true))
        }
    }
}

/// The per-message opaque pointer handed to librdkafka: which batch, which slot.
final class DeliveryToken: Sendable {
    let batch: DeliveryBatch
    let index: Int

    init(batch: DeliveryBatch, index: Int) {
        self.batch = batch
        self.index = index
    }

    /// Called from librdkafka's delivery-report callback; releases the token.
    static func complete(_ message: UnsafePointer<rd_kafka_message_t>) {
        guard let opaque = message.pointee._private else { return }
        let token = Unmanaged<DeliveryToken>.fromOpaque(opaque).takeRetainedValue()
        let topic = message.pointee.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
        let topicPartition = KafkaTopicPartition(topic: topic, partition: message.pointee.partition)
        if message.pointee.err == RD_KAFKA_RESP_ERR_NO_ERROR {
            let offset = message.pointee.offset
            token.batch.complete(token.index, .success(KafkaDeliveryReport(topicPartition: topicPartition, offset: offset >= 0 ? offset : nil)))
        } else {
            let error = KafkaError(code: .delivery, rdKafkaError: message.pointee.err, context: "delivery to \(topic) failed")
            token.batch.complete(token.index, .failure(error))
        }
    }
}

extension Optional where Wrapped == [UInt8] {
    /// Calls `body` with the bytes, or with an empty buffer at `nil` for `nil`.
    func withOptionalBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        switch self {
        case .some(let bytes): bytes.withUnsafeBytes(body)
        case .none: body(UnsafeRawBufferPointer(start: nil, count: 0))
        }
    }
}
