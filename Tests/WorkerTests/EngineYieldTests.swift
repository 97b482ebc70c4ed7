import Foundation
import Kafka
import Logging
import PostgresTestSupport
import ServiceLifecycle
import Store
import Testing
import Workflows
@testable import Worker

/// Intake first (§10): while intake has a backlog the engine yields, and it must still
/// finish every run, exactly once, without waiting for the backlog to end (the tests
/// would stall otherwise). It yields in rounds with rests between them, on either store.
@Suite("Engine executor: yielding to intake's backlog")
struct EngineYieldTests {
    static let fixtures = ExecutorServiceTests.fixtures
    static let runs = 600
    let logger: Logger = {
        var logger = Logger(label: "engine-yield")
        logger.logLevel = .warning
        return logger
    }()

    /// Starts `Self.runs` runs through intake, then runs the executor while intake has a
    /// backlog until no engine work is left.
    /// - Returns: the executor, the runs, and how long they took.
    func executeWhileIntakeBusy(_ store: any Store, yieldFactor: Double, longestRest: Duration) async throws -> (ExecutorService, [String], Duration) {
        let (executor, runs) = try await backlog(store, yieldFactor: yieldFactor, longestRest: longestRest)
        let group = ServiceGroup(services: [executor], logger: logger)
        let started = ContinuousClock.now
        let running = Task { try await group.run() }
        // Whatever happens below, the engine does not outlive the test.
        defer { running.cancel() }
        // The store is the only witness of the work left: looked at until empty, within a deadline.
        let deadline = started + .seconds(120)
        while try await store.nextTaskDue() != nil, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let took = ContinuousClock.now - started
        #expect(ContinuousClock.now < deadline, "the engine stalled while intake had a backlog")
        await group.triggerGracefulShutdown()
        try await running.value
        return (executor, runs, took)
    }

    /// Starts `Self.runs` runs through intake; returns them and an executor (not running)
    /// that sees intake's backlog for as long as the process lives.
    func backlog(_ store: any Store, yieldFactor: Double, longestRest: Duration) async throws -> (ExecutorService, [String]) {
        let configuration = WorkerConfiguration()
        let catalog = try WorkflowCatalog.load(directory: "\(Self.fixtures)/engine/workflows")
        let orgs = try OrgDirectory.load(path: "\(Self.fixtures)/pipeline/orgs.yaml")
        let pipeline = Pipeline(configuration: configuration, orgs: orgs, catalog: catalog, store: store, logger: logger, outboxReady: {})
        let messages = (0..<Self.runs).map { offset in
            let value: JSONValue = ["request_type": "workflow_run", "workflow_name": "two-steps", "body": ["input": ["due_date": "2026-06-30"]]]
            return KafkaMessage(
                topicPartition: .init(topic: configuration.topics.triggerRequests, partition: 0), offset: Int64(offset), key: nil, value: value.canonicalBytes,
                headers: [KafkaHeader(key: "Authorization", value: "Bearer ak_test_alpha_key"), KafkaHeader(key: "Idempotency-Key", value: "yield-\(offset)")]
            )
        }
        let prepared = try await pipeline.prepare(messages, after: nil)
        #expect(try await pipeline.write(prepared).asPrepared)
        let runs = prepared.decision.writes.runs.map(\.id)
        #expect(runs.count == Self.runs)

        let executor = ExecutorService(configuration: configuration, catalog: catalog, store: store, yieldFactor: yieldFactor, longestRest: longestRest, logger: logger)
        // A backlog that lasts the whole test: not a task that must refresh it in time,
        // which a loaded machine may hold back past the busy window.
        executor.holdIntakeBusy()
        return (executor, runs)
    }

    func expectEveryRunCompletedOnce(_ executor: ExecutorService, _ runs: [String], in store: any Store) async throws {
        #expect(executor.committed.outcomes == Self.runs, "each run's outcome written once")
        for run in runs {
            #expect(try await store.run(id: run)?.status == "completed")
        }
    }

    /// Rests as long as they may be (a huge factor) and longer than the 600 runs take
    /// without them (under a second): claims of at most 256 runs (ENGINE_CONCURRENCY × 4),
    /// so 600 runs take three rounds and two full rests at least.
    func expectRests(in store: any Store) async throws {
        let longestRest = Duration.seconds(2)
        let (executor, runs, took) = try await executeWhileIntakeBusy(store, yieldFactor: 1000, longestRest: longestRest)
        try await expectEveryRunCompletedOnce(executor, runs, in: store)
        #expect(executor.committed.rests >= 2)
        #expect(took >= longestRest * 2, "a claim was made during a rest")
    }

    @Test("on PostgreSQL the engine rests between rounds while intake has a backlog (each rest holds the next claim back), and completes every run once",
          .enabled(if: TestPostgres.url != nil, TestPostgres.skipReason))
    func postgresRests() async throws {
        let url = try await TestPostgres.freshDatabase()
        try await TestPostgres.withStore(url) { store in try await expectRests(in: store) }
        let name = String(try #require(URLComponents(string: url)).path.dropFirst())
        try await PostgresStore.dropDatabase(named: name, serverURL: try #require(TestPostgres.url), logger: logger)
    }

    @Test("a graceful shutdown during a rest ends it at once: the engine stops without waiting for its next round")
    func shutdownDuringRest() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("yield-\(UUID().uuidString).sqlite").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let store = try SQLiteStore(path: path)
        // Rests of 30 s: one that outlived the shutdown shows against the bound of 10 s.
        let (executor, runs) = try await backlog(store, yieldFactor: 1000, longestRest: .seconds(30))
        let group = ServiceGroup(services: [executor], logger: logger)
        let running = Task { try await group.run() }
        defer { running.cancel() }
        // The first round (one full claim) committed and its rest began (a rest counts once
        // it holds a claim back).
        let round = min(runs.count, WorkerConfiguration().engineConcurrency * ExecutorService.claimAhead)
        let deadline = ContinuousClock.now + .seconds(120)
        while executor.committed.rests == 0 || executor.committed.outcomes < round, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(executor.committed.rests >= 1 && executor.committed.outcomes == round, "resting after the first round")
        // Past the round's hold (a timer of its own, at most a second after the claim, that
        // the rest's timer follows): from then on only the rest's timer is left to end it.
        try await Task.sleep(for: ExecutorService.longestRoundHold + .milliseconds(500))
        let asked = ContinuousClock.now
        await group.triggerGracefulShutdown()
        try await running.value
        let took = ContinuousClock.now - asked
        #expect(took < .seconds(10), "stopped \(took) after the shutdown began")
        let done = executor.committed.outcomes
        #expect(done > 0 && done < runs.count, "one round done, the rest of the runs left for later: \(done) of \(runs.count)")
    }

    @Test("by default the engine rests half a round on an embedded store, unless told otherwise")
    func defaultRestEmbedded() throws {
        let configuration = WorkerConfiguration()
        let catalog = try WorkflowCatalog.load(directory: "\(Self.fixtures)/engine/workflows")
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("yield-\(UUID().uuidString).sqlite").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let store = try SQLiteStore(path: path)
        #expect(ExecutorService(configuration: configuration, catalog: catalog, store: store, logger: logger).yieldFactor == 0.5)
        #expect(ExecutorService(configuration: configuration, catalog: catalog, store: store, yieldFactor: 2, logger: logger).yieldFactor == 2, "a chosen rest stands")
    }

    @Test("by default the engine rests three rounds on a shared store (whose server intake needs too), unless told otherwise",
          .enabled(if: TestPostgres.url != nil, TestPostgres.skipReason))
    func defaultRestShared() async throws {
        let configuration = WorkerConfiguration()
        let catalog = try WorkflowCatalog.load(directory: "\(Self.fixtures)/engine/workflows")
        let url = try await TestPostgres.freshDatabase()
        try await TestPostgres.withStore(url) { store in
            #expect(ExecutorService(configuration: configuration, catalog: catalog, store: store, logger: logger).yieldFactor == 3)
            #expect(ExecutorService(configuration: configuration, catalog: catalog, store: store, yieldFactor: 1, logger: logger).yieldFactor == 1, "a chosen rest stands")
        }
        let name = String(try #require(URLComponents(string: url)).path.dropFirst())
        try await PostgresStore.dropDatabase(named: name, serverURL: try #require(TestPostgres.url), logger: logger)
    }

    @Test("on SQLite the engine rests between rounds while intake has a backlog (each rest holds the next claim back), and completes every run once")
    func sqliteRests() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("yield-\(UUID().uuidString).sqlite").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        try await expectRests(in: try SQLiteStore(path: path))
    }
}
