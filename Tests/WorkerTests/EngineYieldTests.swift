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
/// finish every run, exactly once, without waiting for the backlog to end. On a shared
/// store it yields in rounds with rests between them; an embedded store's one writer
/// already queues its claims behind intake's, so it never rests.
@Suite("Engine executor: yielding to intake's backlog")
struct EngineYieldTests {
    static let fixtures = ExecutorServiceTests.fixtures
    static let runs = 600
    let logger: Logger = {
        var logger = Logger(label: "engine-yield")
        logger.logLevel = .warning
        return logger
    }()

    /// Starts `Self.runs` runs through intake, then runs the executor while intake says it
    /// has a backlog (a batch of 500 every 50 ms) until no engine work is left.
    func executeWhileIntakeBusy(_ store: any Store) async throws -> (ExecutorService, [String]) {
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

        let executor = ExecutorService(configuration: configuration, catalog: catalog, store: store, logger: logger)
        executor.intakeWrote(messages: 500, startedRuns: true)
        let backlog = Task {
            while !Task.isCancelled {
                executor.intakeWrote(messages: 500, startedRuns: false)
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
        defer { backlog.cancel() }
        let group = ServiceGroup(services: [executor], logger: logger)
        let running = Task { try await group.run() }
        // The store is the only witness of the work left: looked at until empty, within a deadline.
        let deadline = ContinuousClock.now + .seconds(120)
        while try await store.nextTaskDue() != nil {
            #expect(ContinuousClock.now < deadline, "the engine stalled while intake had a backlog")
            if ContinuousClock.now >= deadline { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        await group.triggerGracefulShutdown()
        try await running.value
        return (executor, runs)
    }

    func expectEveryRunCompletedOnce(_ executor: ExecutorService, _ runs: [String], in store: any Store) async throws {
        #expect(executor.committed.outcomes == Self.runs, "each run's outcome written once")
        for run in runs {
            #expect(try await store.run(id: run)?.status == "completed")
        }
    }

    @Test("on PostgreSQL the engine works in rounds with rests while intake has a backlog, and completes every run once",
          .enabled(if: TestPostgres.url != nil, TestPostgres.skipReason))
    func sharedStoreRests() async throws {
        let url = try await TestPostgres.freshDatabase()
        try await TestPostgres.withStore(url) { store in
            let (executor, runs) = try await executeWhileIntakeBusy(store)
            try await expectEveryRunCompletedOnce(executor, runs, in: store)
            // Claims of at most ENGINE_CONCURRENCY × 4 (256): 600 runs take three rounds or more.
            #expect(executor.committed.rests >= 2)
        }
    }

    @Test("on SQLite the engine yields without resting, and completes every run once")
    func embeddedStoreDoesNotRest() async throws {
        let store = try SQLiteStore(path: FileManager.default.temporaryDirectory.appendingPathComponent("yield-\(UUID().uuidString).sqlite").path)
        let (executor, runs) = try await executeWhileIntakeBusy(store)
        try await expectEveryRunCompletedOnce(executor, runs, in: store)
        #expect(executor.committed.rests == 0)
    }
}
