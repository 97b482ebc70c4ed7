#if canImport(Glibc)
@preconcurrency import Glibc
#endif
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
    @Flag(help: "Only the engine's passes (intake with execution on and paused, the fan-out).") var engineOnly = false
    @Option(help: "Stores to measure, comma-separated: sqlite, postgres.") var stores = "sqlite"
    @Option(help: "A PostgreSQL server for the postgres passes (a database of its own is created per pass); default BENCH_POSTGRES_URL.")
    var postgresURL: String?

    /// How often the raw baseline is measured per pass (its median is the baseline).
    static let rawRepeats = 3

    static let org = "cborg_0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    static let apiKey = "ak_test_demo0000000000000000000000000000000000000000000000000000"

    /// A store the bench measures: SQLite in a file, or PostgreSQL in a database of its own.
    enum Kind: String, CaseIterable {
        case sqlite
        case postgres
    }

    func run() async throws {
        // Lines as they are printed: a pass that crashes keeps the figures before it.
        setvbuf(stdout, nil, _IOLBF, 0)
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        var configuration = try loadConfiguration(nil)
        if let brokers { configuration.kafka.brokers = brokers.split(separator: ",").map(String.init) }
        configuration.logLevel = .error
        let kinds = try stores.split(separator: ",").map { name in
            guard let kind = Kind(rawValue: name.trimmingCharacters(in: .whitespaces)) else { throw ValidationError("--stores takes sqlite and postgres") }
            return kind
        }
        let server = postgresURL ?? ProcessInfo.processInfo.environment["BENCH_POSTGRES_URL"]
        if kinds.contains(.postgres), server == nil { throw ValidationError("the postgres passes need --postgres-url or BENCH_POSTGRES_URL (make bench BENCH_STORE=postgres starts one)") }
        let suffix = UUID().uuidString.prefix(8).lowercased()
        if stagesOnly {
            for kind in kinds { try await measureStages(kind, server: server, configuration: configuration, logger: logger) }
            return
        }
        if engineOnly {
            for kind in kinds {
                try await measureEngine(kind, server: server, configuration: configuration, suffix: suffix, logger: logger)
                try await measureFanOut(kind, server: server, configuration: configuration, logger: logger)
            }
            return
        }
        let sqlitePath = FileManager.default.temporaryDirectory.appendingPathComponent("bench-\(suffix).sqlite").path
        defer { for ext in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: sqlitePath + ext) } }

        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; librdkafka \(KafkaAdmin.librdkafkaVersion); \(count) requests per pass, \(partitions) partitions")
        print(Self.row("pass", "raw msg/s", "worker msg/s", "ratio", "publish-only/s", "ratio", "worker/publish-only") + "   (raw: median of \(Self.rawRepeats) runs)")
        var rates: [Kind: [Double]] = [:]
        for kind in kinds {
            // One database per store kind: the replay pass finds the keys of the first.
            let database = kind == .postgres ? try await PostgresStore.createDatabase(named: "bench_\(suffix)", serverURL: server!, logger: logger) : ""
            for (pass, label) in [(1, "new runs (unique keys)"), (2, "replays (every key seen before)")] {
                let topics = try await createTopics(pass: "\(pass)-\(kind)", suffix: suffix, configuration: configuration, logger: logger)
                try await produceRequests(topic: topics.triggerRequests, configuration: configuration, logger: logger)
                // The raw rate alone moves by a third between runs on a shared machine: take the median of three.
                var raws: [Double] = []
                for _ in 0..<Self.rawRepeats { raws.append(try await consume(topic: topics.triggerRequests, count: count, configuration: configuration, logger: logger).rate) }
                raws.sort()
                let raw = raws[raws.count / 2]
                var passConfiguration = configuration
                passConfiguration.topics = topics
                passConfiguration.groupID = "bench-worker\(pass)-\(kind)-\(suffix)"
                let store: any Store = kind == .postgres
                    ? try PostgresStore(url: database, poolSize: configuration.storePoolSize, logger: logger)
                    : try SQLiteStore(path: sqlitePath)
                let cpu = CPUSplit()
                let worker = try await measureWorker(configuration: passConfiguration, store: store, logger: logger)
                let spent = cpu.since()
                rates[kind, default: []].append(worker.rate)
                // The worker cannot be faster than publishing what it published: time that alone.
                let published = try await consume(topic: topics.runStatus, count: worker.published, configuration: configuration, logger: logger, keep: true).messages
                let ceiling = try await measurePublish(published, topic: "bench-copy\(pass)-\(kind)-\(suffix)", configuration: configuration, logger: logger)
                print(Self.row(
                    "\(label) [\(kind)]", String(Int(raw)), String(Int(worker.rate)), String(format: "%.3f", worker.rate / raw), String(Int(ceiling)), String(format: "%.3f", ceiling / raw),
                    String(format: "%.3f", worker.rate / ceiling)
                ) + "   (raw runs: \(raws.map { String(Int($0)) }.joined(separator: ", ")); \(worker.published) messages published)")
                var details = "      \(worker.batches) batches; CPU \(spent)"
                if let postgres = store as? PostgresStore {
                    details += String(format: "; %.2f store round trips per batch (load, write, and the publisher's reads and deletes)", Double(postgres.roundTrips) / Double(max(1, worker.batches)))
                }
                print(details)
            }
        }
        if let sqlite = rates[.sqlite], let postgres = rates[.postgres] {
            print(String(format: "\npostgres / sqlite, same run: new runs %.2f, replays %.2f", postgres[0] / sqlite[0], postgres[1] / sqlite[1]))
        }
        if kinds.contains(.postgres) {
            try await measureInstances(server: server!, configuration: configuration, suffix: suffix, logger: logger)
        }
        for kind in kinds { try await measureStages(kind, server: server, configuration: configuration, logger: logger) }
        for kind in kinds {
            try await measureEngine(kind, server: server, configuration: configuration, suffix: suffix, logger: logger)
            try await measureFanOut(kind, server: server, configuration: configuration, logger: logger)
        }
        if let server, kinds.contains(.postgres) {
            await Self.dropDatabases(["bench_\(suffix)", "bench_\(suffix)_x1", "bench_\(suffix)_x2"], server: server, logger: logger)
        }
    }

    /// Drops the databases a run created on a PostgreSQL server (a run that failed
    /// midway leaves its databases, named bench_…, for inspection).
    static func dropDatabases(_ names: [String], server: String, logger: Logger) async {
        for name in names {
            do {
                try await PostgresStore.dropDatabase(named: name, serverURL: server, logger: logger)
            } catch {
                print("bench: could not drop the database \(name): \(error)")
            }
        }
    }

    /// A row of the table: rates, each ratio to raw, and the worker's ratio to the
    /// publish-only ceiling (how much of what publishing alone allows the worker reaches).
    static func row(_ label: String, _ raw: String, _ worker: String, _ ratio: String, _ ceiling: String, _ ceilingRatio: String, _ ofCeiling: String) -> String {
        func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
            let fill = String(repeating: " ", count: max(0, width - text.count))
            return left ? text + fill : fill + text
        }
        return pad(label, 34, left: true) + pad(raw, 12) + pad(worker, 14) + pad(ratio, 8) + pad(ceiling, 16) + pad(ceilingRatio, 8) + pad(ofCeiling, 21)
    }

    /// The demo org and workflows of `examples/`, which the bench requests use.
    static func demo() throws -> (OrgDirectory, WorkflowCatalog) {
        let orgs = try OrgDirectory.load(path: "examples/orgs.yaml")
        return (orgs, try WorkflowCatalog.load(directory: "examples/workflows", knownOrgs: orgs.ids))
    }

    /// The value of every bench request, and the headers of the `index`-th.
    static let requestValue = (["request_type": "workflow_run", "workflow_name": "annual-reassessment-flow", "body": ["input": ["vendor_id": .string(vendorID)]]] as JSONValue).canonicalBytes
    /// The vendor the bench's runs are about (the engine passes put it in the directory).
    static let vendorID = "cbvndr_be0c4be0c4be0c4be0c4be0c4be0c4be"
    static func requestHeaders(_ index: Int) -> [KafkaHeader] {
        [KafkaHeader(key: "Authorization", value: "Bearer \(apiKey)"), KafkaHeader(key: "Idempotency-Key", value: "bench-\(index)")]
    }

    /// A pass's topics, created: its own requests and status topics, the run's shared
    /// vendor-events and dead-letter topics.
    private func createTopics(pass: String, suffix: String, configuration: WorkerConfiguration, logger: Logger) async throws -> WorkerConfiguration.Topics {
        var topics = configuration.topics
        topics.vendorEvents = "bench-ve-\(suffix)"
        topics.triggerRequests = "bench-tr\(pass)-\(suffix)"
        topics.runStatus = "bench-rs\(pass)-\(suffix)"
        topics.deadLetter = "bench-dl-\(suffix)"
        _ = try await KafkaAdmin.createTopics(topics.all.map { KafkaTopicSpecification(name: $0, partitions: partitions) }, configuration: configuration.kafka, logger: logger)
        return topics
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
    private func measureStages(_ kind: Kind, server: String?, configuration: WorkerConfiguration, logger: Logger) async throws {
        let storePath = FileManager.default.temporaryDirectory.appendingPathComponent("bench-stages-\(UUID().uuidString.prefix(8)).sqlite").path
        defer { for ext in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: storePath + ext) } }
        let store: any Store
        var pool: Task<Void, any Error>?
        var database: String?
        if kind == .postgres {
            let name = "bench_stages_\(UUID().uuidString.prefix(8).lowercased())"
            database = name
            let database = try await PostgresStore.createDatabase(named: name, serverURL: server!, logger: logger)
            let postgres = try PostgresStore(url: database, poolSize: 2, logger: logger)
            pool = Task { try await postgres.run() }
            store = postgres
        } else {
            store = try SQLiteStore(path: storePath)
        }
        defer { pool?.cancel() }
        let (orgs, catalog) = try Self.demo()
        let pipeline = Pipeline(configuration: configuration, orgs: orgs, catalog: catalog, store: store, logger: logger) {}
        let batchSize = 500
        print("\nstages in process [\(kind)] (\(count) requests, batches of \(batchSize), no Kafka), microseconds per request:")
        print("  pass                               prepare     write     total   CPU here")
        for (pass, label) in [(0, "new runs"), (1, "replays")] {
            var prepare = Duration.zero, write = Duration.zero
            var start = 0
            let cpu = CPUSplit.processSeconds(getpid())
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
            let cpuHere = CPUSplit.processSeconds(getpid()) - cpu
            func micros(_ duration: Duration) -> String { String(format: "%9.1f", duration.seconds * 1e6 / Double(count)) }
            print("  " + label.padding(toLength: 32, withPad: " ", startingAt: 0) + micros(prepare) + " " + micros(write) + " " + micros(prepare + write) + String(format: " %9.1f", cpuHere * 1e6 / Double(count)))
        }
        if kind == .postgres {
            print("  (CPU here: this process, i.e. decoding, deciding and the store client; PostgreSQL's own CPU is in its processes)")
        }
        if let database, let server {
            pool?.cancel()
            await Self.dropDatabases([database], server: server, logger: logger)
        }
    }

    /// The pipeline as `run` wires it, timed from its first batch until the
    /// response to the N-th request is published.
    /// - Returns: requests per second, how many messages the worker published, and in how many batches.
    private func measureWorker(configuration: WorkerConfiguration, store: any Store, logger: Logger) async throws -> (rate: Double, published: Int, batches: Int) {
        let (orgs, catalog) = try Self.demo()
        // Intake alone (the engine's passes measure it with execution on and paused).
        let services = try WorkerServices(configuration: configuration, orgs: orgs, catalog: catalog, store: store, enginePaused: true, logger: logger)
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
        return (Double(count) / seconds, counting.published, counting.batches)
    }

    /// A store for one engine pass, with the bench's vendor in its directory.
    /// - Parameter runsPool: whether to run a PostgreSQL store's pool here (wiring that runs
    ///   its service group runs it there: a client runs once).
    private func engineStore(_ kind: Kind, name: String, server: String?, runsPool: Bool, logger: Logger) async throws -> (store: any Store, pool: Task<Void, any Error>?, cleanUp: @Sendable () -> Void, reopen: @Sendable () throws -> any Store) {
        let store: any Store
        var pool: Task<Void, any Error>?
        var cleanUp: @Sendable () -> Void = {}
        let reopen: @Sendable () throws -> any Store
        if kind == .postgres {
            let url = try await PostgresStore.createDatabase(named: name, serverURL: server!, logger: logger)
            let postgres = try PostgresStore(url: url, poolSize: 8, logger: logger)
            if runsPool { pool = Task { try await postgres.run() } }
            store = postgres
            reopen = { try PostgresStore(url: url, poolSize: 8, logger: logger) }
        } else {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(name).sqlite").path
            store = try SQLiteStore(path: path)
            reopen = { try SQLiteStore(path: path) }
            cleanUp = { for ext in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + ext) } }
        }
        // A store run by a service group is used once it runs: its vendor goes in then.
        guard runsPool || kind == .sqlite else { return (store, pool, cleanUp, reopen) }
        try await Self.addBenchVendor(store)
        return (store, pool, cleanUp, reopen)
    }

    static func addBenchVendor(_ store: any Store) async throws {
        var writes = BatchWrites()
        writes.vendors = [VendorRecord(
            id: Self.vendorID, orgID: Self.org,
            document: (["id": .string(Self.vendorID), "name": "Bench Vendor", "tier": "high", "tags": ["bench"], "owner_email": "owner@example.com", "attributes": [:]] as JSONValue).canonicalBytes,
            occurredAt: 1
        )]
        try await store.apply(writes)
    }

    /// The engine (§10): intake with execution on and paused (a switch of the bench), for
    /// the demo annual-reassessment-flow (three steps), and how fast the engine completes
    /// what intake accepted: runs completed per second against runs accepted per second.
    private func measureEngine(_ kind: Kind, server: String?, configuration: WorkerConfiguration, suffix: String, logger: Logger) async throws {
        print("\nthe engine [\(kind)] (\(count) runs of annual-reassessment-flow, 3 steps each; in process):")
        let (orgs, catalog) = try Self.demo()
        var accepted: [Bool: Double] = [:]
        var alone: Double?
        for paused in [true, false] {
            let name = "bench_\(suffix)_\(paused ? "paused" : "on")"
            let topics = try await createTopics(pass: "engine-\(paused ? "paused" : "on")-\(kind)", suffix: suffix, configuration: configuration, logger: logger)
            try await produceRequests(topic: topics.triggerRequests, configuration: configuration, logger: logger)
            var passConfiguration = configuration
            passConfiguration.topics = topics
            passConfiguration.groupID = "bench-engine-\(paused)-\(kind)-\(suffix)"
            let (store, pool, cleanUp, reopen) = try await engineStore(kind, name: name, server: server, runsPool: false, logger: logger)
            defer { cleanUp() }
            let services = try WorkerServices(configuration: passConfiguration, orgs: orgs, catalog: catalog, store: store, enginePaused: paused, logger: logger)
            let counting = CountingHandler(wrapped: services.pipeline, target: count)
            let group = services.serviceGroup(handler: counting)
            let running = Task { try await group.run() }
            if kind == .postgres { try await Self.addBenchVendor(store) }
            let started = await counting.firstBatch.value
            // From the first batch, as the rates are.
            let cpu = CPUSplit()
            await counting.reachedTarget.value
            let intake = (ContinuousClock.now - started).seconds
            accepted[paused] = Double(count) / intake
            var line = String(format: "  engine %@: %8.0f requests accepted/s (%.0f messages per batch)", paused ? "paused" : "on    ", Double(count) / intake, Double(count) / Double(max(1, counting.batches)))
            if paused { line += String(format: "; CPU %.0f µs per request", cpu.since().microseconds(per: count)) }
            if !paused {
                // Every run ended when no engine work is left (polled: the store is the only witness).
                while try await store.nextTaskDue() != nil { try await Task.sleep(for: .milliseconds(20)) }
                let done = (ContinuousClock.now - started).seconds
                // Until the last run ended, as the rate (the publisher may still publish its events).
                let spent = cpu.since()
                // The last commit's tally is recorded after its transaction (which emptied the
                // queue): read once the executor has stopped.
                await group.triggerGracefulShutdown()
                try await running.value
                let stats = services.executor.committed
                line += String(format: "; %8.0f runs completed/s (all %d in %.1f s); %.0f step transactions/s, %.1f steps per transaction",
                               Double(count) / done, count, done, Double(stats.transactions) / done, Double(stats.steps) / Double(max(1, stats.transactions)))
                if stats.rests > 0 { line += "; \(stats.rests) rests yielding to intake" }
                line += String(format: "; CPU %.0f µs per request and its run", spent.microseconds(per: count))
                line += String(format: "\n  runs completed/s ÷ requests accepted/s, same pass: %.2f", (Double(count) / done) / (Double(count) / intake))
            } else {
                await group.triggerGracefulShutdown()
                try await running.value
            }
            print(line)
            pool?.cancel()
            if paused {
                // The runs intake left: the engine alone on them (and the publisher on its outputs).
                alone = try await measureEngineAlone(store: try reopen(), configuration: passConfiguration, orgs: orgs, catalog: catalog, logger: logger)
            }
        }
        if let paused = accepted[true], let on = accepted[false] {
            print(String(format: "  intake with the engine on ÷ paused, same run: %.2f", on / paused))
        }
        if let paused = accepted[true], let alone {
            print(String(format: "  the engine alone ÷ intake alone (engine paused), same run: %.2f", alone / paused))
        }
        if kind == .postgres, let server { await Self.dropDatabases(["bench_\(suffix)_paused", "bench_\(suffix)_on"], server: server, logger: logger) }
    }

    /// Runs left by an intake pass with the engine paused, executed by the engine with
    /// nothing else to do: runs completed per second (until no task is left).
    private func measureEngineAlone(store: any Store, configuration: WorkerConfiguration, orgs: OrgDirectory, catalog: WorkflowCatalog, logger: Logger) async throws -> Double {
        // The same group and topics: its offsets are committed, so nothing is consumed again.
        let services = try WorkerServices(configuration: configuration, orgs: orgs, catalog: catalog, store: store, logger: logger)
        let group = services.serviceGroup(handler: services.pipeline)
        let cpu = CPUSplit()
        let started = ContinuousClock.now
        let running = Task { try await group.run() }
        while try await store.nextTaskDue() != nil { try await Task.sleep(for: .milliseconds(20)) }
        let seconds = (ContinuousClock.now - started).seconds
        let spent = cpu.since()
        await group.triggerGracefulShutdown()
        try await running.value
        // Read once the executor stopped: the last commit's tally follows its transaction.
        let stats = services.executor.committed
        print(String(format: "  engine alone: %8.0f runs completed/s (%d runs left by the paused pass, in %.1f s); %.1f steps per transaction; CPU %.0f µs per run",
                     Double(stats.outcomes) / seconds, stats.outcomes, seconds, Double(stats.steps) / Double(max(1, stats.transactions)), spent.microseconds(per: stats.outcomes)))
        return Double(stats.outcomes) / seconds
    }

    /// A fan-out of 10,000 vendors (`for_each`, one step per item) in process: time, the
    /// engine's transactions and items per transaction, and the process's peak RSS.
    private func measureFanOut(_ kind: Kind, server: String?, configuration: WorkerConfiguration, logger: Logger) async throws {
        let vendors = 10_000
        let name = "bench_fanout_\(UUID().uuidString.prefix(8).lowercased())"
        let (store, pool, cleanUp, _) = try await engineStore(kind, name: name, server: server, runsPool: true, logger: logger)
        defer { cleanUp() }
        defer { pool?.cancel() }
        for start in stride(from: 0, to: vendors, by: 1000) {
            var writes = BatchWrites()
            writes.vendors = (start..<min(start + 1000, vendors)).map { index in
                let id = Identifier.derive(prefix: "cbvndr", from: ["fan-out", String(index)])
                return VendorRecord(id: id, orgID: Self.org, document: (["id": .string(id), "name": .string("Vendor \(index)"), "tier": "low", "tags": ["fan-out"], "attributes": [:]] as JSONValue).canonicalBytes, occurredAt: 1)
            }
            try await store.apply(writes)
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bench-fan-out-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: "\(directory)/\(Self.org)", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try """
        name: fan-out
        trigger: { type: direct }
        steps:
          - id: sweep
            action: for_each
            with: { vendor_filter: { tags: [fan-out] }, concurrency: 200, do: { id: ask, action: send_questionnaire, with: { template: bench } } }
        """.write(toFile: "\(directory)/\(Self.org)/fan-out.yaml", atomically: true, encoding: .utf8)
        let orgs = try OrgDirectory.load(path: "examples/orgs.yaml")
        let catalog = try WorkflowCatalog.load(directory: directory, knownOrgs: orgs.ids)
        let services = try WorkerServices(configuration: configuration, orgs: orgs, catalog: catalog, store: store, logger: logger)
        let request = KafkaMessage(
            topicPartition: KafkaTopicPartition(topic: configuration.topics.triggerRequests, partition: 0), offset: 0, key: nil,
            value: (["request_type": "workflow_run", "workflow_name": "fan-out"] as JSONValue).canonicalBytes, headers: Self.requestHeaders(0)
        )
        let rssBefore = Self.peakRSS()
        let started = ContinuousClock.now
        _ = try await services.pipeline.write(try await services.pipeline.prepare([request], after: nil))
        let engine = Task { try await services.executor.run() }
        while try await store.nextTaskDue() != nil { try await Task.sleep(for: .milliseconds(20)) }
        let seconds = (ContinuousClock.now - started).seconds
        engine.cancel()
        _ = try? await engine.value
        let stats = services.executor.committed
        let status = try await store.runs(statuses: [], limit: 1, offset: 0).first?.status ?? "?"
        print(String(format: "\nfan-out [%@]: %d items in %.1f s (%.0f items/s), run %@; %d engine transactions (%.0f outcomes each); peak RSS %d MiB (%d before)",
                     kind.rawValue, vendors, seconds, Double(vendors) / seconds, status, stats.transactions,
                     Double(stats.outcomes) / Double(max(1, stats.transactions)), Self.peakRSS() >> 20, rssBefore >> 20))
        pool?.cancel()
        _ = await pool?.result  // closed before its database is dropped
        if kind == .postgres, let server { await Self.dropDatabases([name], server: server, logger: logger) }
    }

    /// The process's peak resident set so far, in bytes.
    static func peakRSS() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024
    }

    /// New runs handled by one and then two `trigger-worker run` processes in one group
    /// on one PostgreSQL database each time, timed the same way for both: from the first
    /// run in the store until all N are there and the outbox is empty (the store is
    /// looked at every 20 ms).
    private func measureInstances(server: String, configuration: WorkerConfiguration, suffix: String, logger: Logger) async throws {
        print("\nseveral instances on one PostgreSQL (new runs; processes started by the bench, timed by the store):")
        var rates: [Int: Double] = [:]
        for instances in [1, 2] {
            let database = try await PostgresStore.createDatabase(named: "bench_\(suffix)_x\(instances)", serverURL: server, logger: logger)
            let topics = try await createTopics(pass: "x\(instances)", suffix: suffix, configuration: configuration, logger: logger)
            var environment = ProcessInfo.processInfo.environment
            environment.merge([
                "KAFKA_BROKERS": configuration.kafka.brokers.joined(separator: ","), "KAFKA_GROUP_ID": "bench-x\(instances)-\(suffix)",
                "VENDOR_EVENTS_TOPIC": topics.vendorEvents, "TRIGGER_REQUESTS_TOPIC": topics.triggerRequests,
                "RUN_STATUS_TOPIC": topics.runStatus, "DLQ_TOPIC": topics.deadLetter, "TOPIC_PARTITIONS": "\(partitions)",
                "STORE_URL": database, "WORKFLOWS_DIR": "examples/workflows", "ORGS_FILE": "examples/orgs.yaml",
                "LOG_FORMAT": "json", "LOG_LEVEL": "info", "HTTP_PORT": "0",
            ]) { $1 }
            let workers = try (0..<instances).map { _ in try BenchWorkerProcess(environment: environment) }
            defer { for worker in workers { worker.stop() } }
            try await BenchWorkerProcess.waitForSplit(workers, topic: topics.triggerRequests, partitions: Int(partitions))
            let cpu = CPUSplit(workers: workers.map(\.pid))
            try await produceRequests(topic: topics.triggerRequests, configuration: configuration, logger: logger)
            let seconds = try await StoreWatch.timeUntilDone(url: database, count: count, topic: topics.triggerRequests, partitions: partitions, logger: logger)
            let spent = cpu.since()
            rates[instances] = Double(count) / seconds
            print("  \(instances) instance\(instances == 1 ? " " : "s"): \(String(format: "%8.0f", Double(count) / seconds)) requests/s   CPU \(spent)")
        }
        if let one = rates[1], let two = rates[2] {
            print(String(format: "  two instances / one instance, same run: %.2f", two / one))
        }
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
    private let batchCount = Mutex(0)

    /// How many batches were written.
    var batches: Int { batchCount.withLock { $0 } }

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

    func ready() async throws { try await wrapped.ready() }

    func discard(_ prepared: Wrapped.Prepared) { wrapped.discard(prepared) }

    func partitionsAssigned(_ partitions: [KafkaTopicPartition], consumer: KafkaConsumer) async throws -> [KafkaTopicPartition: Int64] {
        try await wrapped.partitionsAssigned(partitions, consumer: consumer)
    }

    func write(_ prepared: Wrapped.Prepared) async throws -> BatchWriteResult {
        let result = try await wrapped.write(prepared)
        outputs.withLock { $0 += prepared.outputCount }
        batchCount.withLock { $0 += 1 }
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
