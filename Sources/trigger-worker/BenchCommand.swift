import ArgumentParser
import Foundation
import Kafka
import Logging
import ServiceLifecycle
import Store
import Worker
import Workflows
import Synchronization

/// `trigger-worker bench` (run by `make bench`): the worker's throughput as a
/// ratio to a plain consumer reading the same messages, measured in one run.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure throughput: new-run requests and replays, each against a raw consumer baseline (see make bench).",
        shouldDisplay: false
    )

    @Option(help: "How many requests per pass.") var count = 100_000
    @Option(help: "Partitions of the bench topics.") var partitions: Int32 = 6
    @Option(help: "Brokers (default: KAFKA_BROKERS).") var brokers: String?
    @Flag(help: "Only time the pipeline's stages in process (no broker needed).") var stagesOnly = false

    /// How often the raw baseline is measured per pass (its median is the baseline).
    static let rawRepeats = 3

    static let org = "cborg_0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    static let apiKey = "ak_test_demo0000000000000000000000000000000000000000000000000000"

    func run() async throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        var configuration = try loadConfiguration(nil)
        if let brokers { configuration.kafka.brokers = brokers.split(separator: ",").map(String.init) }
        configuration.logLevel = .error
        if stagesOnly {
            try await measureStages(configuration: configuration, logger: logger)
            return
        }
        let suffix = UUID().uuidString.prefix(8).lowercased()
        let storePath = FileManager.default.temporaryDirectory.appendingPathComponent("bench-\(suffix).sqlite").path
        defer { for ext in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: storePath + ext) } }
        let store = try SQLiteStore(path: storePath)

        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; librdkafka \(KafkaAdmin.librdkafkaVersion); \(count) requests per pass, \(partitions) partitions")
        print(Self.row("pass", "raw msg/s", "worker msg/s", "ratio", "publish-only/s", "ratio") + "   (raw: median of \(Self.rawRepeats) runs)")
        for (pass, label) in [(1, "new runs (unique keys)"), (2, "replays (every key seen before)")] {
            var topics = configuration.topics
            topics.vendorEvents = "bench-ve-\(suffix)"
            topics.triggerRequests = "bench-tr\(pass)-\(suffix)"
            topics.runStatus = "bench-rs\(pass)-\(suffix)"
            topics.deadLetter = "bench-dl-\(suffix)"
            _ = try await KafkaAdmin.createTopics(topics.all.map { KafkaTopicSpecification(name: $0, partitions: partitions) }, configuration: configuration.kafka, logger: logger)
            try await produceRequests(topic: topics.triggerRequests, configuration: configuration, logger: logger)
            // The raw rate alone moves by a third between runs on a shared machine: take the median of three.
            var raws: [Double] = []
            for _ in 0..<Self.rawRepeats { raws.append(try await consume(topic: topics.triggerRequests, count: count, configuration: configuration, logger: logger).rate) }
            raws.sort()
            let raw = raws[raws.count / 2]
            var passConfiguration = configuration
            passConfiguration.topics = topics
            passConfiguration.groupID = "bench-worker\(pass)-\(suffix)"
            let (worker, outputs) = try await measureWorker(configuration: passConfiguration, store: store, logger: logger)
            // The worker cannot be faster than publishing what it published: time that alone.
            let published = try await consume(topic: topics.runStatus, count: outputs, configuration: configuration, logger: logger, keep: true).messages
            let ceiling = try await measurePublish(published, topic: "bench-copy\(pass)-\(suffix)", configuration: configuration, logger: logger)
            print(Self.row(
                label, String(Int(raw)), String(Int(worker)), String(format: "%.3f", worker / raw), String(Int(ceiling)), String(format: "%.3f", ceiling / raw)
            ) + "   (raw runs: \(raws.map { String(Int($0)) }.joined(separator: ", ")); \(outputs) messages published)")
        }
        try await measureStages(configuration: configuration, logger: logger)
    }

    static func row(_ label: String, _ raw: String, _ worker: String, _ ratio: String, _ ceiling: String, _ ceilingRatio: String) -> String {
        func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
            let fill = String(repeating: " ", count: max(0, width - text.count))
            return left ? text + fill : fill + text
        }
        return pad(label, 34, left: true) + pad(raw, 12) + pad(worker, 14) + pad(ratio, 8) + pad(ceiling, 16) + pad(ceilingRatio, 8)
    }

    /// The demo org and workflows of `examples/`, which the bench requests use.
    static func demo() throws -> (OrgDirectory, WorkflowCatalog) {
        let orgs = try OrgDirectory.load(path: "examples/orgs.yaml")
        return (orgs, try WorkflowCatalog.load(directory: "examples/workflows", knownOrgs: orgs.ids))
    }

    /// The value of every bench request, and the headers of the `index`-th.
    static let requestValue = (["request_type": "workflow_run", "workflow_name": "quarterly-privacy-sweep", "body": ["input": ["due_date": "2026-06-30"]]] as JSONValue).canonicalBytes
    static func requestHeaders(_ index: Int) -> [KafkaHeader] {
        [KafkaHeader(key: "Authorization", value: "Bearer \(apiKey)"), KafkaHeader(key: "Idempotency-Key", value: "bench-\(index)")]
    }

    /// N `workflow_run` requests with unique keys (the same keys in each pass).
    private func produceRequests(topic: String, configuration: WorkerConfiguration, logger: Logger) async throws {
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(common: configuration.kafka, linger: .milliseconds(20), compression: .none), logger: logger)
        var sent = 0
        while sent < count {
            let chunk = (sent..<min(sent + 10_000, count)).map { index in
                KafkaProducerMessage(topic: topic, key: Array("bench-\(index)".utf8), value: Self.requestValue, headers: Self.requestHeaders(index))
            }
            for result in await producer.send(chunk) { _ = try result.get() }
            sent += chunk.count
        }
        try await producer.shutdown()
    }

    /// A plain consumer: reads `count` messages and commits each batch, nothing else
    /// (keeping them when asked). Timed from its first message to its last.
    private func consume(topic: String, count: Int, configuration: WorkerConfiguration, logger: Logger, keep: Bool = false) async throws -> (rate: Double, messages: [KafkaMessage]) {
        let consumer = try KafkaConsumer(
            configuration: KafkaConsumerConfiguration(common: configuration.kafka, groupID: "bench-raw-\(UUID().uuidString.prefix(8))", topics: [topic]),
            logger: logger
        )
        return try await withThrowingTaskGroup(of: (rate: Double, messages: [KafkaMessage])?.self) { group in
            group.addTask { try await consumer.run(); return nil }
            group.addTask {
                var received = 0
                var kept: [KafkaMessage] = []
                var first: ContinuousClock.Instant?
                for await event in consumer.events {
                    guard case .messages(let batch) = event else { continue }
                    first = first ?? .now
                    received += batch.count
                    if keep { kept += batch }
                    try await consumer.commit(batch.nextOffsets)
                    if received >= count {
                        let seconds = (ContinuousClock.now - first!).seconds
                        consumer.triggerShutdown()
                        return (Double(received) / seconds, kept)
                    }
                }
                return nil
            }
            var outcome: (rate: Double, messages: [KafkaMessage])?
            for try await result in group { outcome = outcome ?? result }
            return outcome ?? (0, [])
        }
    }

    /// Publishes `messages` again as the outbox publisher does (the worker's producer
    /// configuration; rounds of 4,000 messages, each awaited) and returns the rate in
    /// requests per second: the most the worker could reach if all else were free.
    private func measurePublish(_ messages: [KafkaMessage], topic: String, configuration: WorkerConfiguration, logger: Logger) async throws -> Double {
        _ = try await KafkaAdmin.createTopics([KafkaTopicSpecification(name: topic, partitions: partitions)], configuration: configuration.kafka, logger: logger)
        let producer = try KafkaProducer(configuration: configuration.producer, logger: logger)
        let started = ContinuousClock.now
        var position = 0
        while position < messages.count {
            let round = messages[position..<min(position + 4000, messages.count)].map {
                KafkaProducerMessage(topic: topic, key: $0.key, value: $0.value, headers: $0.headers)
            }
            for result in await producer.send(round) { _ = try result.get() }
            position += round.count
        }
        let seconds = (ContinuousClock.now - started).seconds
        try await producer.shutdown()
        return Double(count) / seconds
    }

    /// Where the worker's time goes: the same N requests handed to the pipeline in
    /// process, batch by batch, without Kafka. Prints the time per request of each
    /// step (prepare: decode, store read and decide; write: the batch's transaction)
    /// for new runs and then for replays, against a store of its own.
    private func measureStages(configuration: WorkerConfiguration, logger: Logger) async throws {
        let storePath = FileManager.default.temporaryDirectory.appendingPathComponent("bench-stages-\(UUID().uuidString.prefix(8)).sqlite").path
        defer { for ext in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: storePath + ext) } }
        let store = try SQLiteStore(path: storePath)
        let (orgs, catalog) = try Self.demo()
        let pipeline = Pipeline(configuration: configuration, orgs: orgs, catalog: catalog, store: store, logger: logger) {}
        let batchSize = 500
        print("\nstages in process (\(count) requests, batches of \(batchSize), no Kafka), microseconds per request:")
        print("  pass                               prepare     write     total")
        for (pass, label) in [(0, "new runs"), (1, "replays")] {
            var prepare = Duration.zero, write = Duration.zero
            var start = 0
            while start < count {
                let batch = (start..<min(start + batchSize, count)).map { index in
                    KafkaMessage(
                        topicPartition: KafkaTopicPartition(topic: configuration.topics.triggerRequests, partition: Int32(index % Int(partitions))),
                        offset: Int64(pass * count + index), key: Array("bench-\(index)".utf8), value: Self.requestValue, headers: Self.requestHeaders(index)
                    )
                }
                let clock = ContinuousClock()
                var prepared: Pipeline.Prepared?
                prepare += try await clock.measure { prepared = try await pipeline.prepare(batch, after: nil) }
                write += try await clock.measure { _ = try await pipeline.write(prepared!) }
                start += batch.count
            }
            func micros(_ duration: Duration) -> String { String(format: "%9.1f", duration.seconds * 1e6 / Double(count)) }
            print("  " + label.padding(toLength: 32, withPad: " ", startingAt: 0) + micros(prepare) + " " + micros(write) + " " + micros(prepare + write))
        }
    }

    /// The pipeline as `run` wires it, timed from its first batch until the
    /// response to the N-th request is published.
    /// - Returns: requests per second, and how many messages the worker published.
    private func measureWorker(configuration: WorkerConfiguration, store: SQLiteStore, logger: Logger) async throws -> (rate: Double, published: Int) {
        let (orgs, catalog) = try Self.demo()
        let services = try WorkerServices(configuration: configuration, orgs: orgs, catalog: catalog, store: store, logger: logger)
        let counting = CountingHandler(wrapped: services.pipeline, target: count)
        let group = services.serviceGroup(handler: counting)
        let running = Task { try await group.run() }
        let started = await counting.firstBatch.value
        await counting.reachedTarget.value
        // Done when everything the N requests caused is published.
        while try await !store.pendingOutbox(limit: 1).isEmpty { _ = await services.publisher.drain() }
        let seconds = (ContinuousClock.now - started).seconds
        await group.triggerGracefulShutdown()
        try await running.value
        return (Double(count) / seconds, counting.published)
    }
}

/// Passes batches on and notes when the first arrived and when `target` messages were handled.
private final class CountingHandler: BatchHandler {
    typealias Wrapped = Pipeline
    let wrapped: Wrapped
    let target: Int
    let firstBatch: Task<ContinuousClock.Instant, Never>
    let reachedTarget: Task<Void, Never>
    private let first: AsyncStream<ContinuousClock.Instant>.Continuation
    private let done: AsyncStream<Void>.Continuation
    private let handled = Mutex(0)
    private let outputs = Mutex(0)

    /// How many messages the handled batches published.
    var published: Int { outputs.withLock { $0 } }

    init(wrapped: Wrapped, target: Int) {
        self.wrapped = wrapped
        self.target = target
        let (firstStream, first) = AsyncStream.makeStream(of: ContinuousClock.Instant.self)
        let (doneStream, done) = AsyncStream.makeStream(of: Void.self)
        self.first = first
        self.done = done
        firstBatch = Task { await firstStream.first { _ in true } ?? .now }
        reachedTarget = Task { _ = await doneStream.first { _ in true } }
    }

    func prepare(_ batch: [KafkaMessage], after pending: Wrapped.Prepared?) async throws -> Wrapped.Prepared {
        first.yield(.now)
        first.finish()
        return try await wrapped.prepare(batch, after: pending)
    }

    func partitionsAssigned(_ partitions: [KafkaTopicPartition], consumer: KafkaConsumer) async throws -> [KafkaTopicPartition: Int64] {
        try await wrapped.partitionsAssigned(partitions, consumer: consumer)
    }

    func write(_ prepared: Wrapped.Prepared) async throws -> BatchWriteResult {
        let result = try await wrapped.write(prepared)
        outputs.withLock { $0 += prepared.outputCount }
        if handled.withLock({ $0 += prepared.count; return $0 >= target }) {
            done.yield()
            done.finish()
        }
        return result
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
