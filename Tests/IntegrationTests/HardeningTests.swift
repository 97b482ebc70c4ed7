import Foundation
import Kafka
import Store
import Synchronization
import Testing
import Worker
import Workflows

/// No input may wedge the worker or be skipped silently, against a real broker:
/// outputs that cannot be published, logs that were reset, deliveries that never
/// come back.
@Suite("Hardening", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason), .serialized)
struct HardeningTests {
    typealias H = WorkerHarness

    @Test("an unauthenticated request with a huge Request-Id is answered once and holds back nothing after it")
    func hugeEchoedHeader() async throws {
        let worker = try await H()
        worker.start()
        let huge = try await worker.request(H.workflowRun("quarterly-privacy-sweep"), apiKey: nil, headers: [KafkaHeader(key: "Request-Id", value: String(repeating: "r", count: 600_000))])
        var valid: [KafkaDeliveryReport] = []
        for index in 0..<5 {
            valid.append(try await worker.request(H.workflowRun("quarterly-privacy-sweep"), idempotencyKey: "after-huge-\(index)"))
        }
        for report in valid {
            #expect(try await worker.response(to: report)[path: ["data", "response", "status"]] == 201)
        }
        let answer = try await worker.response(to: huge)
        #expect([400, 401].contains(answer[path: ["data", "response", "status"]]?.intValue ?? 0))
        #expect(answer[path: ["data", "request", "request_id"]] == .null, "an invalid Request-Id is not echoed")
        try await worker.stop()
        #expect(worker.responses(to: huge).count == 1, "answered once, not re-published in a loop")
        #expect(try await worker.store.pendingOutbox(limit: 1).isEmpty, "the outbox drained")
    }

    @Test("a 2 MiB request is answered 413 and dead-lettered without its value; a value just under MAX_MESSAGE_BYTES (above librdkafka's default limit) is dead-lettered whole")
    func oversizedValues() async throws {
        let worker = try await H()  // MAX_MESSAGE_BYTES: the default 1 MiB
        worker.start()
        let twoMiB = try await worker.request(Array(repeating: UInt8(ascii: "x"), count: 2 << 20), idempotencyKey: "two-mib")
        let underLimit = Array(repeating: UInt8(ascii: "y"), count: worker.configuration.maxMessageBytes - 10)
        let justUnder = try await worker.request(underLimit, idempotencyKey: "just-under")
        let after = try await worker.request(H.workflowRun("quarterly-privacy-sweep"), idempotencyKey: "after-big")

        #expect(try await worker.response(to: twoMiB)[path: ["data", "response", "status"]] == 413)
        #expect(try await worker.response(to: justUnder)[path: ["data", "response", "status"]] == 400)
        #expect(try await worker.response(to: after)[path: ["data", "response", "status"]] == 201)
        let letters = try await worker.waitForDeadLetters(2, timeout: .seconds(60))
        let byOffset = Dictionary(uniqueKeysWithValues: letters.map { ($0.header("source-offset") ?? "", $0) })
        let big = try #require(byOffset[String(twoMiB.offset!)])
        #expect(big.header("error-code") == "message_too_large")
        #expect((big.value ?? []).isEmpty, "a value over MAX_MESSAGE_BYTES is left out")
        #expect(big.header("source-value-bytes") == String(2 << 20))
        let whole = try #require(byOffset[String(justUnder.offset!)])
        #expect(whole.header("error-code") == "invalid_json")
        #expect(whole.value == underLimit, "a value within MAX_MESSAGE_BYTES is kept byte for byte")
        try await worker.stop()
        #expect(try await worker.store.pendingOutbox(limit: 1).isEmpty)
    }

    @Test("a store that outlives its broker: the new log, grown past the store's mark, is read from its start, nothing is skipped")
    func logReset() async throws {
        let broker = try OwnBroker()
        try await broker.start()
        let common = KafkaConfiguration(brokers: ["127.0.0.1:\(broker.port)"], clientID: "reset-test")
        let storePath = FileManager.default.temporaryDirectory.appendingPathComponent("reset-\(UUID().uuidString.prefix(8)).sqlite").path

        let first = try await H(common: common, storePath: storePath)
        first.start()
        for index in 0..<6 {
            let report = try await first.request(H.workflowRun("quarterly-privacy-sweep"), idempotencyKey: "before-\(index)", partition: 0)
            #expect(try await first.response(to: report)[path: ["data", "response", "status"]] == 201)
        }
        try await first.stop()

        // `make run`, Ctrl-C, `make run`: a new, empty broker on the same port; the same store.
        // Before the worker is back, the new log grows past the store's mark: only the
        // record at the mark can tell it is not the log the store handled.
        await broker.stop()
        try await broker.start()
        let second = try await H(common: common, reusing: first.configuration, storePath: storePath)
        var reports: [KafkaDeliveryReport] = []
        for index in 0..<8 {
            reports.append(try await second.request(H.workflowRun("quarterly-privacy-sweep"), idempotencyKey: "after-\(index)", partition: 0))
        }
        #expect(reports.map(\.offset) == (0..<8).map { Int64($0) }, "the new log starts again at 0")
        second.start()
        for report in reports {
            let response = try await second.response(to: report, timeout: .seconds(40))
            #expect(response[path: ["data", "response", "status"]] == 201)
            #expect(response[path: ["data", "replayed"]] == false)
        }
        try await second.stop()
        await broker.stop()
    }

    @Test("a message the broker refuses for good, in the middle of a stream, is set aside; every other output is published once, in order")
    func permanentFailureMidStream() async throws {
        let topic = TestBroker.uniqueName("parked")
        try await TestBroker.createTopic(topic, partitions: 1)
        let store = try SQLiteStore(path: FileManager.default.temporaryDirectory.appendingPathComponent("\(topic).sqlite").path)
        func message(_ index: Int, size: Int = 20) -> OutboxMessage {
            OutboxMessage(topic: topic, key: Array("k\(index % 3)".utf8), value: Array("m-\(index)-".utf8) + Array(repeating: UInt8(ascii: "."), count: size), headers: [])
        }
        // Three batches; the second holds one message over the producer's (lowered) limit.
        for range in [0..<10, 10..<20, 20..<30] {
            var writes = BatchWrites()
            writes.outbox = range.map { $0 == 15 ? message($0, size: 5000) : message($0) }
            try await store.apply(writes)
        }
        var common = TestBroker.common
        common.overrides["message.max.bytes"] = "2000"
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(common: common), logger: TestBroker.logger)
        let publisher = OutboxPublisher(store: store, producer: producer, logger: TestBroker.logger, inputTopics: [])
        #expect(await publisher.drain(), "a permanent refusal does not hold back the round")
        #expect(try await store.pendingOutbox(limit: 10).isEmpty)
        let parked = try await store.parkedOutputs(limit: 10)
        #expect(parked.map { String(decoding: $0.message.value.prefix(5), as: UTF8.self) } == ["m-15-"], "the refused message is parked, with its error")
        #expect(parked.first?.errorCode == "MSG_SIZE_TOO_LARGE")
        try await producer.shutdown()

        let reader = try TestMember(group: "reader-\(topic)", topics: [topic])
        reader.start()
        try await reader.waitUntil("the 29 publishable messages", timeout: .seconds(30)) { $0.received.count >= 29 }
        await reader.stop()
        let values = reader.snapshot.received.map { String(decoding: ($0.value ?? []).prefix { $0 != UInt8(ascii: ".") }, as: UTF8.self) }
        #expect(values.count == 29, "each published once: \(values)")
        #expect(values == (0..<30).filter { $0 != 15 }.map { "m-\($0)-" }, "in order")
    }

    @Test("a fatal consumer error ends the worker with that error, promptly and without a crash")
    func fatalConsumerError() async throws {
        let worker = try await H()
        worker.start()
        let report = try await worker.request(H.workflowRun("quarterly-privacy-sweep"), idempotencyKey: "before-fatal")
        #expect(try await worker.response(to: report)[path: ["data", "response", "status"]] == 201)
        worker.services.consumer.raiseFatalErrorForTesting("fenced by a newer member (test)")
        let outcome = try await withDeadline(.seconds(20), "the worker to stop") { await worker.ended() }
        guard case .failure(let error) = outcome else {
            Issue.record("the service group ended without an error")
            return
        }
        let kafkaError = try #require(error as? KafkaError, "\(error)")
        #expect(kafkaError.isFatal || kafkaError.code == .broker, "\(kafkaError)")
        #expect(kafkaError.message.contains("fatal"), "\(kafkaError)")
        await worker.outputs.stop()
        try await worker.client.shutdown()
    }

    @Test("a send waiting on a paused broker returns when the producer shuts down: no wait on delivery reports is unbounded")
    func deliveryDeadline() async throws {
        let broker = try OwnBroker()
        try await broker.start()
        let common = KafkaConfiguration(brokers: ["127.0.0.1:\(broker.port)"], clientID: "deadline-test")
        let producer = try KafkaProducer(
            configuration: KafkaProducerConfiguration(common: common, deliveryTimeout: .seconds(3), flushTimeout: .seconds(1)), logger: TestBroker.logger
        )
        // Warm up so the producer knows the broker, then freeze the broker.
        _ = await producer.send([KafkaProducerMessage(topic: "deadline-warmup", key: nil, value: Array("w".utf8))])
        broker.pause()
        let sending = Task { await producer.send((0..<10).map { KafkaProducerMessage(topic: "deadline-warmup", key: nil, value: Array("m\($0)".utf8)) }) }
        try? await producer.shutdown()
        let results = try await withDeadline(.seconds(20), "the send to return") { await sending.value }
        #expect(results.count == 10)
        #expect(results.allSatisfy { if case .failure = $0 { true } else { false } }, "nothing was delivered to a frozen broker")
        await broker.stop()
    }
}

@Suite("Faults end the process cleanly", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason), .serialized)
struct FaultExitTests {
    typealias H = WorkerHarness

    @Test("the store fails (no file may grow) as the broker freezes: the worker exits non-zero within SHUTDOWN_GRACE, committing only what the store holds")
    func storeFailureExitsWithinGrace() async throws {
        let broker = try OwnBroker()
        try await broker.start()
        let common = KafkaConfiguration(brokers: ["127.0.0.1:\(broker.port)"], clientID: "grace-test")
        let suffix = TestBroker.uniqueName("grace")
        let topics = ["VENDOR_EVENTS_TOPIC": "ve-\(suffix)", "TRIGGER_REQUESTS_TOPIC": "tr-\(suffix)", "RUN_STATUS_TOPIC": "rs-\(suffix)", "DLQ_TOPIC": "dl-\(suffix)"]
        let storePath = FileManager.default.temporaryDirectory.appendingPathComponent("\(suffix).sqlite").path
        let group = "group-\(suffix)"
        let grace = 4
        let environment = topics.merging([
            "KAFKA_BROKERS": common.brokers[0], "KAFKA_GROUP_ID": group, "TOPIC_PARTITIONS": "3",
            "WORKFLOWS_DIR": "\(H.fixtures)/workflows", "ORGS_FILE": "\(H.fixtures)/orgs.yaml", "STORE_URL": "sqlite://\(storePath)",
            "RDKAFKA_MAX_POLL_INTERVAL_MS": "6000", "RDKAFKA_SESSION_TIMEOUT_MS": "6000", "HTTP_PORT": "0", "SHUTDOWN_GRACE": "\(grace)s",
            "LOG_LEVEL": "debug",
        ]) { $1 }
        _ = try await KafkaAdmin.createTopics(topics.values.map { KafkaTopicSpecification(name: $0, partitions: 3) }, configuration: common, logger: TestBroker.logger)
        // Far more requests than the worker handles before the fault: it is busy when the disk goes.
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: common), logger: TestBroker.logger)
        let requests = (0..<20_000).map { index in
            KafkaProducerMessage(topic: topics["TRIGGER_REQUESTS_TOPIC"]!, key: Array("key-\(index)".utf8), value: H.workflowRun("quarterly-privacy-sweep").canonicalBytes,
                                 headers: [KafkaHeader(key: "Authorization", value: "Bearer \(H.keyA)"), KafkaHeader(key: "Idempotency-Key", value: "key-\(index)")])
        }
        for result in await client.send(requests) { _ = try result.get() }
        try await client.shutdown()

        let worker = try WorkerProcess(arguments: ["run"], environment: environment)
        defer { worker.crash() }
        // The worker prefetches far more than one batch: after its first, it has thousands to go.
        _ = try await worker.waitForLine("the first batch", timeout: .seconds(60)) { $0.contains("Batch committed") }

        // From now on no file of the worker's may grow by a byte (as on a full disk), and the broker answers nothing.
        let limit = Process()
        limit.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
        limit.arguments = ["--pid", String(worker.pid), "--fsize=1"]
        try limit.run()
        limit.waitUntilExit()
        try #require(limit.terminationStatus == 0, "prlimit failed")
        broker.pause()
        let faulted = ContinuousClock.now

        let status: Int32
        do {
            status = try await worker.waitForExit(timeout: .seconds(grace + 10))
        } catch {
            print("the worker's last log lines:\n" + worker.output.suffix(40).joined(separator: "\n"))
            throw error
        }
        let took = ContinuousClock.now - faulted
        #expect(status != 0)
        #expect(worker.exitedNormally, "exited, not killed by a signal")
        #expect(took < .seconds(grace + 3), "exited after \(took)")
        let log = worker.output.joined(separator: "\n")
        #expect(log.contains("A batch could not be written to the store"), "the fatal error is logged")
        #expect(log.contains("\"level\":\"critical\""))

        // Every offset the group committed is covered by the store.
        broker.resume()
        let store = try SQLiteStore(path: storePath)
        let partitions = (0..<3).map { KafkaTopicPartition(topic: topics["TRIGGER_REQUESTS_TOPIC"]!, partition: Int32($0)) }
        let committed = try await KafkaConsumer(configuration: TestBroker.consumerConfiguration(group: group, topics: [], common: common), logger: TestBroker.logger)
            .committedOffsets(for: partitions)
        var query = BatchQuery()
        query.partitions = Set(partitions.map { PartitionID(topic: $0.topic, partition: $0.partition) })
        let marks = try await store.load(query, now: 0).watermarks
        for partition in partitions {
            let done = marks[PartitionID(topic: partition.topic, partition: partition.partition)] ?? 0
            let commit = committed[partition] ?? nil
            #expect((commit ?? 0) <= done, "\(partition): committed \(String(describing: commit)), the store holds up to \(done)")
        }
        await broker.stop()
    }
}

/// Runs `body`, failing with ``TimedOut`` when it has not returned after `deadline`.
/// A body that never returns is left behind (a task group would wait for it).
func withDeadline<T: Sendable>(_ deadline: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        let once = Once(continuation)
        let work = Task { do { once.resume(.success(try await body())) } catch { once.resume(.failure(error)) } }
        Task {
            try? await Task.sleep(for: deadline)  // a deadline, not a synchronisation
            once.resume(.failure(TimedOut(what: what)))
            work.cancel()
        }
    }
}

/// Resumes a continuation with the first result it is given.
private final class Once<T: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<T, any Error>?>
    init(_ continuation: CheckedContinuation<T, any Error>) { self.continuation = Mutex(continuation) }
    func resume(_ result: Result<T, any Error>) {
        continuation.withLock { $0.take() }?.resume(with: result)
    }
}
