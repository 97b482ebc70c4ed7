import CRdKafka
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// A consumer-group member that delivers batches of messages and commits only
/// the offsets it is told to.
///
/// A dedicated poll thread fetches and hands ``KafkaConsumerEvent``s to one
/// reader through ``events``. Rebalances are reported in order with the batches:
/// ``KafkaConsumerEvent/partitionsRevoked(_:lost:)`` arrives after every batch of
/// the revoked partitions, and the partitions are let go only once the reader
/// asks for the next event, so it can commit their offsets first.
///
/// As a `Service`, ``run()`` subscribes and polls until graceful shutdown or
/// cancellation; then it stops fetching, lets the reader handle the final
/// revocation, leaves the group and ends ``events``.
///
/// ```swift
/// for await event in consumer.events {
///     switch event {
///     case .messages(let batch): try await handle(batch); try await consumer.commit(next(after: batch))
///     case .partitionsRevoked(let partitions, _): try await finish(partitions)
///     case .partitionsAssigned: break
///     }
/// }
/// ```
public final class KafkaConsumer: Service, Sendable {
    /// The consumer's settings.
    public let configuration: KafkaConsumerConfiguration
    /// The events from the poll thread, for one reader.
    public let events: KafkaConsumerEvents

    private let client: RdKafkaClient
    private let loop: PollLoop
    private let logger: Logger
    private let state = Mutex(KafkaConsumerStateMachine())
    private let pollThread = Mutex<PollThread?>(nil)
    private let exited = OneShotSignal()

    /// Creates the consumer. It joins the group when ``run()`` is called.
    public init(configuration: KafkaConsumerConfiguration, logger: Logger) throws(KafkaError) {
        self.configuration = configuration
        self.logger = logger
        let channel = ConsumerEventChannel()
        self.events = KafkaConsumerEvents(channel: channel)
        let loop = PollLoop(configuration: configuration, channel: channel, logger: logger)
        self.loop = loop
        self.client = try RdKafkaClient(
            kind: .consumer,
            properties: configuration.properties,
            callbacks: RdKafkaCallbacks(logger: logger) { handle, error, partitions in
                loop.rebalance(handle, error, partitions)
            }
        )
    }

    // MARK: Lifecycle

    /// Subscribes, then polls until graceful shutdown or cancellation, then closes.
    /// - Throws: ``KafkaError`` when subscribing fails or librdkafka reports a fatal error.
    public func run() async throws {
        switch state.withLock({ $0.run() }) {
        case .failAlreadyRunning:
            throw KafkaError(code: .shutdown, message: "KafkaConsumer.run() was called twice or after shutdown")
        case .finishWithoutPolling:
            loop.channel.finish()
            return
        case .startPolling:
            break
        }
        try subscribe()
        let client = self.client
        let loop = self.loop
        let exited = self.exited
        let stopped = OneShotSignal()
        let thread = PollThread(
            name: "kafka-consumer-poll",
            body: { loop.pollOnce(client.handle) },
            onExit: {
                if loop.fatalError != nil {
                    // A client with a fatal error gives nothing more and cannot leave its
                    // group: the reader may stop now, and the client is destroyed as it is.
                    client.markFatallyFailed()
                    loop.channel.finish()
                    stopped.signal()
                    exited.signal()
                    return
                }
                stopped.signal()
                loop.close(client.handle)
                exited.signal()
            }
        )
        pollThread.withLock { $0 = thread }
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await stopped.wait()
            } onCancel: {
                self.triggerShutdown()
            }
        } onGracefulShutdown: {
            self.triggerShutdown()
        }
        // A fatal error is reported at once; leaving the group may wait on a broker
        // that does not answer, and the poll thread goes on closing meanwhile.
        if let error = loop.fatalError { throw error }
        // A clean stop waits until the group is left (the final revocation handled),
        // unless the task is cancelled: then the process is going down anyway.
        await exited.wait()
        state.withLock { $0.pollThreadExited() }
    }

    /// Stops fetching; the poll thread then closes the consumer (leaving the group) and ends ``events``.
    public func triggerShutdown() {
        switch state.withLock({ $0.triggerShutdown() }) {
        case .stopPolling:
            pollThread.withLock { $0?.requestStop() }
        case .none:
            break
        }
    }

    private func subscribe() throws(KafkaError) {
        let list = rd_kafka_topic_partition_list_new(Int32(configuration.topics.count))!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for topic in configuration.topics {
            rd_kafka_topic_partition_list_add(list, topic, RD_KAFKA_PARTITION_UA)
        }
        let error = rd_kafka_subscribe(client.handle, list)
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
            loop.channel.finish()
            throw KafkaError(code: .subscription, rdKafkaError: error, context: "cannot subscribe to \(configuration.topics.joined(separator: ", "))")
        }
        logger.info("Subscribed", metadata: ["topics": "\(configuration.topics.joined(separator: ","))", "group": "\(configuration.groupID)"])
    }

    // MARK: Offsets

    /// Commits `offsets` to the group coordinator and waits for its answer.
    ///
    /// Each offset is the position to resume from: the offset of the last handled
    /// message plus one.
    /// - Throws: ``KafkaError`` with code ``KafkaError/Code/commit`` when the commit
    ///   or one partition's commit fails (for example after the partition was revoked).
    public func commit(_ offsets: [KafkaTopicPartition: Int64]) async throws(KafkaError) {
        guard !offsets.isEmpty else { return }
        let client = self.client
        let failure: KafkaError? = await runBlocking {
            let list = UnsafeMutablePointer<rd_kafka_topic_partition_list_t>.make(offsets)
            defer { rd_kafka_topic_partition_list_destroy(list) }
            let error = rd_kafka_commit(client.handle, list, 0)
            if error != RD_KAFKA_RESP_ERR_NO_ERROR {
                return KafkaError(code: .commit, rdKafkaError: error, context: "commit of \(offsets.count) partition(s) failed")
            }
            if let failed = list.elements.first(where: { $0.error != RD_KAFKA_RESP_ERR_NO_ERROR }) {
                return KafkaError(code: .commit, rdKafkaError: failed.error, context: "commit of \(failed.topicPartition) failed")
            }
            return nil
        }
        if let failure { throw failure }
        logger.debug("Committed offsets", metadata: ["offsets": "\(offsets.sorted { $0.key < $1.key }.map { "\($0.key)@\($0.value)" })"])
    }

    /// Hands `offsets` to librdkafka to commit in the background, without waiting for
    /// the broker: a batch's commit does not hold up the next batch. A failure is
    /// logged (the offsets are committed again with the next batch, or at revocation).
    public func commitInBackground(_ offsets: [KafkaTopicPartition: Int64]) {
        guard !offsets.isEmpty else { return }
        let list = UnsafeMutablePointer<rd_kafka_topic_partition_list_t>.make(offsets)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let error = rd_kafka_commit(client.handle, list, 1)
        if error != RD_KAFKA_RESP_ERR_NO_ERROR {
            logger.warning("Offset commit not started", metadata: ["error": "\(KafkaError(code: .commit, rdKafkaError: error, context: "commit"))"])
        }
    }

    /// The offsets this group has committed for `partitions` (`nil` where none).
    public func committedOffsets(for partitions: [KafkaTopicPartition], timeout: Duration = .seconds(10)) async throws(KafkaError) -> [KafkaTopicPartition: Int64?] {
        let client = self.client
        let result: Result<[KafkaTopicPartition: Int64?], KafkaError> = await runBlocking {
            let list = UnsafeMutablePointer<rd_kafka_topic_partition_list_t>.make(Dictionary(uniqueKeysWithValues: partitions.map { ($0, Int64(RD_KAFKA_OFFSET_INVALID)) }))
            defer { rd_kafka_topic_partition_list_destroy(list) }
            let error = rd_kafka_committed(client.handle, list, Int32(clamping: timeout.milliseconds))
            guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
                return .failure(KafkaError(code: .commit, rdKafkaError: error, context: "reading committed offsets failed"))
            }
            return .success(Dictionary(uniqueKeysWithValues: list.elements.map { ($0.topicPartition, $0.offset >= 0 ? $0.offset : nil) }))
        }
        return try result.get()
    }

    /// The low and high watermarks of `partition`: the first offset still in the log
    /// and the offset the next record will get. Asks the partition's leader.
    public func watermarks(of partition: KafkaTopicPartition, timeout: Duration = .seconds(10)) async throws(KafkaError) -> (low: Int64, high: Int64) {
        let client = self.client
        let result: Result<(low: Int64, high: Int64), KafkaError> = await runBlocking {
            var low: Int64 = -1
            var high: Int64 = -1
            let error = rd_kafka_query_watermark_offsets(client.handle, partition.topic, partition.partition, &low, &high, Int32(clamping: timeout.milliseconds))
            guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
                return .failure(KafkaError(code: .broker, rdKafkaError: error, context: "reading the watermarks of \(partition) failed"))
            }
            return .success((low, high))
        }
        return try result.get()
    }

    /// How many partitions each of `topics` has (topics the broker does not know are left out).
    public func partitionCounts(of topics: [String], timeout: Duration = .seconds(10)) async throws(KafkaError) -> [String: Int] {
        let client = self.client
        let wanted = Set(topics)
        let result: Result<[String: Int], KafkaError> = await runBlocking {
            var metadata: UnsafePointer<rd_kafka_metadata>?
            // The topics this client knows (its subscriptions), not the whole cluster's.
            let error = rd_kafka_metadata(client.handle, 0, nil, &metadata, Int32(clamping: timeout.milliseconds))
            guard error == RD_KAFKA_RESP_ERR_NO_ERROR, let metadata else {
                return .failure(KafkaError(code: .broker, rdKafkaError: error, context: "reading the topics' metadata failed"))
            }
            defer { rd_kafka_metadata_destroy(metadata) }
            var counts: [String: Int] = [:]
            for index in 0..<Int(metadata.pointee.topic_cnt) {
                let topic = metadata.pointee.topics[index]
                let name = String(cString: topic.topic)
                if wanted.contains(name), topic.err == RD_KAFKA_RESP_ERR_NO_ERROR { counts[name] = Int(topic.partition_cnt) }
            }
            return .success(counts)
        }
        return try result.get()
    }

    /// Whether a broker answers a metadata request for the topics this client knows
    /// (its subscriptions), not the whole cluster's: cheap enough for a readiness probe.
    public func brokerAnswers(timeout: Duration) async -> Bool {
        (try? await partitionCounts(of: [], timeout: timeout)) != nil
    }

    /// Makes partitions of the ``KafkaConsumerEvent/partitionsAssigned(_:)`` being
    /// handled start at the given offsets, whatever offsets the group committed. Call
    /// it while handling that event (before asking for the next one).
    public func startAt(_ offsets: [KafkaTopicPartition: Int64]) {
        loop.startAt(offsets)
    }

    /// Raises a fatal error in librdkafka, as a fenced or otherwise dead client would
    /// report one: for tests of what happens then (librdkafka offers no other way).
    public func raiseFatalErrorForTesting(_ reason: String) {
        _ = rd_kafka_test_fatal_error(client.handle, RD_KAFKA_RESP_ERR__FENCED, reason)
    }

    /// Per assigned partition, how many records are in the log past what this consumer
    /// has read: the high watermark librdkafka last saw (from fetch replies, no request
    /// is made) minus its position (the offset after the last record polled). Partitions
    /// read nothing from since their assignment are left out.
    public func lag() throws(KafkaError) -> [KafkaTopicPartition: Int64] {
        let list = try assignmentList()
        defer { rd_kafka_topic_partition_list_destroy(list) }
        _ = rd_kafka_position(client.handle, list)
        var lags: [KafkaTopicPartition: Int64] = [:]
        for element in list.elements {
            var low: Int64 = -1
            var high: Int64 = -1
            guard rd_kafka_get_watermark_offsets(client.handle, element.topicPartition.topic, element.topicPartition.partition, &low, &high) == RD_KAFKA_RESP_ERR_NO_ERROR,
                  high >= 0 else { continue }
            // No position yet (nothing read since the assignment): not known, left out
            // (the high watermark alone would count the whole log as lag).
            guard element.offset >= 0 else { continue }
            lags[element.topicPartition] = max(0, high - element.offset)
        }
        return lags
    }

    /// The partitions currently assigned to this consumer.
    public func assignment() throws(KafkaError) -> [KafkaTopicPartition] {
        let list = try assignmentList()
        defer { rd_kafka_topic_partition_list_destroy(list) }
        return list.topicPartitions.sorted()
    }

    /// The assignment as librdkafka gives it (the caller destroys the list).
    private func assignmentList() throws(KafkaError) -> UnsafeMutablePointer<rd_kafka_topic_partition_list_t> {
        var list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?
        let error = rd_kafka_assignment(client.handle, &list)
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR, let list else {
            throw KafkaError(code: .broker, rdKafkaError: error, context: "reading the assignment failed")
        }
        return list
    }
}

extension KafkaMessage {
    /// A copy of a record librdkafka handed out (without error): the caller still destroys it.
    init(copying message: UnsafeMutablePointer<rd_kafka_message_t>) {
        var timestampType = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let timestamp = rd_kafka_message_timestamp(message, &timestampType)
        self.init(
            topicPartition: KafkaTopicPartition(topic: String(cString: rd_kafka_topic_name(message.pointee.rkt)), partition: message.pointee.partition),
            offset: message.pointee.offset,
            key: message.pointee.key.map { Array(UnsafeRawBufferPointer(start: $0, count: message.pointee.key_len)) },
            value: message.pointee.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: message.pointee.len)) },
            headers: Self.headers(of: message),
            timestampMilliseconds: timestampType == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? nil : timestamp
        )
    }

    private static func headers(of message: UnsafeMutablePointer<rd_kafka_message_t>) -> [KafkaHeader] {
        var headers: OpaquePointer?
        guard rd_kafka_message_headers(message, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR, let headers else { return [] }
        let count = rd_kafka_header_cnt(headers)
        var result: [KafkaHeader] = []
        result.reserveCapacity(count)
        for index in 0..<count {
            var name: UnsafePointer<CChar>?
            var value: UnsafeRawPointer?
            var size = 0
            guard rd_kafka_header_get_all(headers, index, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR, let name else { continue }
            result.append(KafkaHeader(key: String(cString: name), value: value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) }))
        }
        return result
    }
}

// MARK: - The poll loop

/// Everything the poll thread does. Its mutable state is touched only on the poll
/// thread (librdkafka calls the rebalance callback from inside our poll calls).
private final class PollLoop: @unchecked Sendable {
    let configuration: KafkaConsumerConfiguration
    let channel: ConsumerEventChannel
    let logger: Logger
    /// Messages polled but not yet handed over (poll thread only).
    private var pending: [KafkaMessage] = []
    /// The bytes of `pending` (keys, values and headers).
    private var pendingBytes = 0
    private let fatal = Mutex<KafkaError?>(nil)
    /// Where partitions being assigned are to start (set by the reader).
    private let starts = Mutex<[KafkaTopicPartition: Int64]>([:])

    init(configuration: KafkaConsumerConfiguration, channel: ConsumerEventChannel, logger: Logger) {
        self.configuration = configuration
        self.channel = channel
        self.logger = logger
        pending.reserveCapacity(configuration.maxBatchSize)
    }

    var fatalError: KafkaError? { fatal.withLock { $0 } }

    /// One round: wait up to the poll timeout for a message, then take whatever
    /// else is already fetched, up to the batch size, and hand it over. Returns
    /// false after a fatal error: the client is unusable and must be closed.
    func pollOnce(_ handle: OpaquePointer) -> Bool {
        var timeout = Int32(clamping: configuration.pollTimeout.milliseconds)
        while pending.count < configuration.maxBatchSize, pendingBytes < configuration.maxBatchBytes, let message = rd_kafka_consumer_poll(handle, timeout) {
            timeout = 0
            take(message, handle)
        }
        flushPending()
        return fatalError == nil
    }

    func startAt(_ offsets: [KafkaTopicPartition: Int64]) {
        starts.withLock { $0.merge(offsets) { $1 } }
    }

    private func take(_ message: UnsafeMutablePointer<rd_kafka_message_t>, _ handle: OpaquePointer) {
        defer { rd_kafka_message_destroy(message) }
        let error = message.pointee.err
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
            handleConsumerError(error, message, handle)
            return
        }
        let record = KafkaMessage(copying: message)
        pendingBytes += record.byteCount
        pending.append(record)
    }

    private func handleConsumerError(_ error: rd_kafka_resp_err_t, _ message: UnsafeMutablePointer<rd_kafka_message_t>, _ handle: OpaquePointer) {
        let topic = message.pointee.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? "-"
        if error == RD_KAFKA_RESP_ERR__FATAL {
            var text = [CChar](repeating: 0, count: 512)
            let cause = rd_kafka_fatal_error(handle, &text, text.count)
            let failure = KafkaError(code: .broker, rdKafkaError: cause, context: "fatal consumer error: \(String(errorBuffer: text))")
            logger.critical("Kafka consumer failed fatally; stopping", metadata: ["error": "\(failure)"])
            fatal.withLock { $0 = failure }
            return
        }
        let level: Logger.Level = error == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || error == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ? .warning : .error
        logger.log(level: level, "Kafka consumer error", metadata: [
            "error": "\(String(cString: rd_kafka_err2name(error)))",
            "reason": "\(String(cString: rd_kafka_err2str(error)))",
            "topic": "\(topic)", "partition": "\(message.pointee.partition)",
        ])
    }

    private func flushPending() {
        guard !pending.isEmpty else { return }
        let batch = pending
        pending.removeAll(keepingCapacity: true)
        pendingBytes = 0
        channel.send(.messages(batch))
    }

    // MARK: Rebalances

    /// librdkafka's rebalance callback, on the poll thread.
    func rebalance(_ handle: OpaquePointer, _ error: rd_kafka_resp_err_t, _ partitions: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) {
        let cooperative = String(cString: rd_kafka_rebalance_protocol(handle)) == "COOPERATIVE"
        let topicPartitions = partitions.topicPartitions.sorted()
        switch error {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            // Whatever was fetched before goes first; then the reader looks at the new
            // partitions (and may say where to start them) before a single message of
            // theirs is fetched.
            flushPending()
            starts.withLock { $0.removeAll() }
            if !channel.sendAndWaitUntilHandled(.partitionsAssigned(topicPartitions), timeout: configuration.revocationTimeout) {
                logger.warning("Assignment not handled within the revocation timeout; assigning as committed", metadata: ["timeout": "\(configuration.revocationTimeout)"])
            }
            let offsets = starts.withLock { offsets in defer { offsets.removeAll() }; return offsets }
            for index in 0..<Int(partitions.pointee.cnt) {
                let element = partitions.pointee.elems[index]
                if let offset = offsets[KafkaTopicPartition(topic: String(cString: element.topic), partition: element.partition)] {
                    partitions.pointee.elems[index].offset = offset
                }
            }
            if cooperative {
                if let failure = rd_kafka_incremental_assign(handle, partitions) {
                    logger.error("Assigning partitions failed", metadata: ["error": "\(KafkaError(code: .broker, consuming: failure, context: "incremental assign"))"])
                }
            } else {
                let failure = rd_kafka_assign(handle, partitions)
                if failure != RD_KAFKA_RESP_ERR_NO_ERROR {
                    logger.error("Assigning partitions failed", metadata: ["error": "\(KafkaError(code: .broker, rdKafkaError: failure, context: "assign"))"])
                }
            }
            logger.info("Partitions assigned", metadata: ["partitions": "\(topicPartitions.map(\.description).joined(separator: ","))", "group": "\(configuration.groupID)"])

        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
            let lost = rd_kafka_assignment_lost(handle) != 0
            // Whatever we fetched from these partitions goes to the application first.
            flushPending()
            logger.info("Partitions revoked; waiting for in-flight work", metadata: [
                "partitions": "\(topicPartitions.map(\.description).joined(separator: ","))", "lost": "\(lost)",
            ])
            if !channel.sendAndWaitUntilHandled(.partitionsRevoked(topicPartitions, lost: lost), timeout: configuration.revocationTimeout) {
                logger.warning("Revocation not handled within the revocation timeout; letting the partitions go", metadata: [
                    "timeout": "\(configuration.revocationTimeout)",
                ])
            }
            if cooperative {
                if let failure = rd_kafka_incremental_unassign(handle, partitions) {
                    logger.error("Unassigning partitions failed", metadata: ["error": "\(KafkaError(code: .broker, consuming: failure, context: "incremental unassign"))"])
                }
            } else {
                _ = rd_kafka_assign(handle, nil)
            }

        default:
            logger.error("Rebalance failed", metadata: ["error": "\(String(cString: rd_kafka_err2name(error)))"])
            _ = rd_kafka_assign(handle, nil)
        }
    }

    /// Leaves the group (librdkafka calls the revocation callback first) and ends the events.
    func close(_ handle: OpaquePointer) {
        flushPending()
        let error = rd_kafka_consumer_close(handle)
        if error == RD_KAFKA_RESP_ERR_NO_ERROR {
            logger.info("Left the consumer group", metadata: ["group": "\(configuration.groupID)"])
        } else {
            logger.warning("Closing the consumer failed", metadata: ["error": "\(String(cString: rd_kafka_err2name(error)))"])
        }
        channel.finish()
    }
}

/// A signal that is raised once and can be awaited by any number of tasks. A
/// waiting task that is cancelled stops waiting.
final class OneShotSignal: Sendable {
    private struct State {
        var raised = false
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
    }

    private let state = Mutex(State())

    func signal() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.raised = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once the signal is raised, or at once when the task is cancelled.
    func wait() async {
        let id = state.withLock { state -> Int in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> Bool in
                    if state.raised || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}
