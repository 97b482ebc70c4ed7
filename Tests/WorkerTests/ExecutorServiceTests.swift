import Foundation
import Kafka
import Logging
import ServiceLifecycle
import Store
import Synchronization
import Testing
import Workflows
@testable import Worker

/// The engine's service against a real SQLite store, with a clock the test moves:
/// runs created by intake execute after the commit, timers fire when their time
/// comes (and after a restart), and a claim whose lease ran out is taken over
/// without its late outcome being written.
@Suite("Engine executor")
struct ExecutorServiceTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures").path

    final class TestClock: WallClock {
        private let time: Mutex<Timestamp>
        init(_ time: Timestamp) { self.time = Mutex(time) }
        func now() -> Timestamp { time.withLock { $0 } }
        func advance(by milliseconds: Int64) { time.withLock { $0 += milliseconds } }
    }

    let configuration = WorkerConfiguration()
    let store: SQLiteStore
    let catalog: WorkflowCatalog
    let clock = TestClock(1_750_000_000_000)
    let logger = Logger(label: "test")

    init() throws {
        store = try SQLiteStore(path: FileManager.default.temporaryDirectory.appendingPathComponent("engine-\(UUID().uuidString).sqlite").path)
        catalog = try WorkflowCatalog.load(directory: "\(Self.fixtures)/engine/workflows")
    }

    func executor() -> ExecutorService {
        ExecutorService(configuration: configuration, catalog: catalog, store: store, clock: clock, logger: logger)
    }

    /// Starts runs of `workflow` through intake (decode, decide, write), one per key.
    func start(_ workflow: String, keys: [String], partition: Int32 = 0) async throws -> [String] {
        let orgs = try OrgDirectory.load(path: "\(Self.fixtures)/pipeline/orgs.yaml")
        let pipeline = Pipeline(configuration: configuration, orgs: orgs, catalog: catalog, store: store, clock: clock, logger: logger, outboxReady: {})
        let messages = keys.enumerated().map { offset, key in
            let value: JSONValue = ["request_type": "workflow_run", "workflow_name": .string(workflow), "body": ["input": ["due_date": "2026-06-30"]]]
            return KafkaMessage(
                topicPartition: .init(topic: configuration.topics.triggerRequests, partition: partition), offset: Int64(offset), key: nil, value: value.canonicalBytes,
                headers: [KafkaHeader(key: "Authorization", value: "Bearer ak_test_alpha_key"), KafkaHeader(key: "Idempotency-Key", value: key), KafkaHeader(key: "Request-Id", value: "req-\(key)")]
            )
        }
        let prepared = try await pipeline.prepare(messages, after: nil)
        #expect(try await pipeline.write(prepared).asPrepared)
        return prepared.decision.writes.runs.map(\.id)
    }

    /// Runs `executor` as a service until `run` completed or `deadline` passed (the store
    /// is the only witness: polled), then stops it gracefully.
    /// - Returns: how long it ran.
    func runUntilCompleted(_ run: String, _ executor: ExecutorService, deadline: Duration = .seconds(120)) async throws -> Duration {
        let group = ServiceGroup(services: [executor], logger: logger)
        let started = ContinuousClock.now
        let running = Task { try await group.run() }
        defer { running.cancel() }
        while try await store.run(id: run)?.status != "completed", ContinuousClock.now < started + deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let took = ContinuousClock.now - started
        await group.triggerGracefulShutdown()
        try await running.value
        return took
    }

    /// Every published message, in outbox order, as (event type, run key, data).
    func published() async throws -> [(type: String, key: String, event: JSONValue, headers: [String: String])] {
        try await store.pendingOutbox(limit: 1000).flatMap(\.messages).map { message in
            let event = try JSONValue.parse(message.value)
            let headers = Dictionary(message.headers.map { ($0.name, String(decoding: $0.value, as: UTF8.self)) }) { $1 }
            return (event["event_type"]?.stringValue ?? "", String(decoding: message.key ?? [], as: UTF8.self), event, headers)
        }
    }

    @Test("intake creates the run and its Started only; the executor performs the steps and commits their events after it")
    func executesAfterIntake() async throws {
        let runs = try await start("two-steps", keys: ["a", "b"])
        #expect(runs.count == 2)
        #expect(try await store.run(id: runs[0])?.status == "started")
        #expect(try await published().filter { $0.type != "TriggerRequest.Responded" }.map(\.type) == ["WorkflowRun.Started", "WorkflowRun.Started"])

        let claimed = try await executor().round()
        #expect(claimed == 2)
        for run in runs {
            #expect(try await store.run(id: run)?.status == "completed")
            #expect(try await store.task(runID: run) == nil, "a finished run leaves no engine work")
            let events = try await published().filter { $0.key == run }
            #expect(events.map(\.type) == ["WorkflowRun.Started", "Questionnaire.SendRequested", "WorkflowRun.StepUpdated", "WorkflowRun.StepUpdated", "WorkflowRun.Completed"])
            #expect(events.allSatisfy { $0.headers["request-id"]?.hasPrefix("req-") == true && $0.headers["idempotency-key"] != nil }, "the input's headers travel to the engine's events")
            #expect(Set(events.map { $0.event["event_id"] }).count == events.count)
            let questionnaire = try #require(events.first { $0.type == "Questionnaire.SendRequested" })
            #expect(questionnaire.event[path: ["data", "due_date"]] == "2026-06-30")
            #expect(questionnaire.event[path: ["data", "delivery_id"]]?.stringValue?.hasPrefix("cbevt_") == true)
        }
        #expect(try await executor().round() == 0, "nothing is left to do")
        // Each engine entry keeps the source partition of the run's input (its owner publishes it).
        #expect(try await store.pendingOutbox(limit: 100).allSatisfy { $0.source?.topic == configuration.topics.triggerRequests })
    }

    @Test("a delay is a durable timer: the run waits, nothing happens early, and a new executor (a restart) fires it at its time")
    func delaySurvivesRestart() async throws {
        let runs = try await start("wait-an-hour", keys: ["d"])
        let run = try #require(runs.first)
        #expect(try await executor().round() == 1)
        #expect(try await store.run(id: run)?.status == "waiting")
        let task = try #require(try await store.task(runID: run))
        #expect(task.dueAt == clock.now() + 3_600_000)
        #expect(task.leaseOwner == nil, "the lease is released at the commit")
        #expect(try await published().filter { $0.key == run }.map(\.type) == ["WorkflowRun.Started", "WorkflowRun.StepUpdated"])
        #expect(try await store.engineQueue(now: clock.now()).waiting == 1)

        clock.advance(by: 3_599_999)
        #expect(try await executor().round() == 0)
        clock.advance(by: 1)
        let restarted = executor()  // another process: state comes only from the store
        #expect(try await restarted.round() == 1)
        #expect(try await store.run(id: run)?.status == "completed")
        #expect(try await published().filter { $0.key == run }.map(\.type) == [
            "WorkflowRun.Started", "WorkflowRun.StepUpdated", "WorkflowRun.StepUpdated", "Questionnaire.SendRequested", "WorkflowRun.StepUpdated", "WorkflowRun.Completed",
        ])
    }

    @Test("a timer committed while the executor idles fires at its time, not at the idle interval")
    func timerCommittedWhileIdle() async throws {
        // The executor's first claim takes the run while an idle wait begins (the store's
        // next due time is then the claim's lease, 10 minutes away, as is the idle
        // interval); the delay's commit must cut that wait short.
        let run = try #require(try await start("wait-a-second", keys: ["w"]).first)
        var configuration = configuration
        configuration.stepLease = .seconds(600)
        let executor = ExecutorService(configuration: configuration, catalog: catalog, store: store, idleInterval: .seconds(600), logger: logger)
        let took = try await runUntilCompleted(run, executor)
        #expect(try await store.run(id: run)?.status == "completed", "the delay of 1 s fired within 2 minutes (it took \(took))")
        #expect(took >= .seconds(1), "nothing happens before the delay ends")
    }

    @Test("a store that answers reads and refuses claims is claimed from at the backoff's pace, and the run completes once it accepts them")
    func claimsBackOff() async throws {
        let run = try #require(try await start("two-steps", keys: ["b"]).first)
        let flaky = FlakyStore(base: store, failures: [])
        flaky.claimsFail.withLock { $0 = true }
        let executor = ExecutorService(configuration: configuration, catalog: catalog, store: flaky, logger: logger)
        let group = ServiceGroup(services: [executor], logger: logger)
        let running = Task { try await group.run() }
        defer { running.cancel() }
        // The first claim, awaited (a loaded machine may take a while to start the executor).
        let start = ContinuousClock.now + .seconds(60)
        while flaky.claims.withLock({ $0 }) == 0, ContinuousClock.now < start { try await Task.sleep(for: .milliseconds(10)) }
        let first = flaky.claims.withLock { $0 }
        #expect(first >= 1, "the executor claimed")
        // Then a window measured, not a wait for an event: backoffs of 0.2, 0.4 and 0.8 s
        // allow 4 more claims in 1.5 s (a loaded machine, fewer); an idle wait of 5 ms (a
        // run is due) would allow hundreds.
        try await Task.sleep(for: .milliseconds(1500))
        let tried = flaky.claims.withLock { $0 } - first
        #expect(tried <= 6, "claims tried in 1.5 s after the first: \(tried)")
        flaky.claimsFail.withLock { $0 = false }
        let deadline = ContinuousClock.now + .seconds(60)
        while try await store.run(id: run)?.status != "completed", ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(try await store.run(id: run)?.status == "completed", "claimed once the store accepts claims")
        await group.triggerGracefulShutdown()
        try await running.value
    }

    @Test("a claimed run whose check before it is performed fails is handed back and performed on a later claim, not left to its lease")
    func uncheckedClaimHandedBack() async throws {
        let run = try #require(try await start("two-steps", keys: ["u"]).first)
        let flaky = FlakyStore(base: store, failures: [])
        flaky.taskReadsFail.withLock { $0 = 2 }
        // Leases and idle waits of 10 minutes, and an idle wait that cannot see the run due
        // again: a claim left to its lease, or a hand-back that does not ring the doorbell,
        // shows as a stall past the 2-minute deadline.
        flaky.hidesNextDue.withLock { $0 = true }
        var configuration = configuration
        configuration.stepLease = .seconds(600)
        // Every claimed run is checked before it is performed (as one that waited a second for a slot).
        let executor = ExecutorService(configuration: configuration, catalog: catalog, store: flaky, idleInterval: .seconds(600), queueRecheck: .zero, logger: logger)
        let took = try await runUntilCompleted(run, executor)
        #expect(try await store.run(id: run)?.status == "completed", "performed after two failed checks, within 2 minutes (took \(took))")
        #expect(flaky.taskReads.withLock { $0 } >= 3, "checked three times: two failed, then one that held")
        #expect(flaky.claims.withLock { $0 } >= 3, "claimed again after each hand-back")
        #expect(try await published().filter { $0.key == run }.map(\.type).filter { $0 == "WorkflowRun.Completed" }.count == 1, "the run completed once")
    }

    @Test("a claim the store holds open does not hold back the runs claimed before it: they are performed and committed meanwhile")
    func claimHeldOpen() async throws {
        let runs = try await start("two-steps", keys: (0..<5).map { "held-\($0)" })
        let flaky = FlakyStore(base: store, failures: [])
        flaky.holdClaims(after: 1)
        // One slot: claims of at most four. The first takes four of the five runs; the
        // second is made when two are left to perform, and the store holds it open.
        var configuration = configuration
        configuration.engineConcurrency = 1
        let executor = ExecutorService(configuration: configuration, catalog: catalog, store: flaky, idleInterval: .seconds(600), logger: logger)
        let group = ServiceGroup(services: [executor], logger: logger)
        let running = Task { try await group.run() }
        // Opened first on every way out: a claim held in the store ignores cancellation.
        defer {
            flaky.openClaims()
            running.cancel()
        }
        func completed() async throws -> Int {
            var count = 0
            for run in runs where try await store.run(id: run)?.status == "completed" { count += 1 }
            return count
        }
        // The store is the only witness: polled, up to a minute.
        let deadline = ContinuousClock.now + .seconds(60)
        while try await completed() < 4 || flaky.heldClaims == 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(flaky.heldClaims == 1, "the second claim is held open")
        #expect(try await completed() == 4, "the first claim's four runs completed while the second claim was held open")
        flaky.openClaims()
        while try await completed() < 5, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(try await completed() == 5, "the fifth, claimed once the store answered")
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(try await published().filter { $0.type == "WorkflowRun.Completed" }.map(\.key).sorted() == runs.sorted(), "each run completed once")
    }

    @Test("an instance that dies mid-claim: its lease runs out, another takes the run over, and the dead claim's late outcome writes nothing")
    func leaseTakeOver() async throws {
        let run = try #require(try await start("two-steps", keys: ["l"]).first)
        // An instance claims the run and stops (killed): it never commits.
        let dead = try await store.claimTasks(owner: "dead", now: clock.now(), leaseUntil: clock.now() + configuration.stepLease.wholeMilliseconds, limit: 10)
        #expect(dead.count == 1)
        #expect(try await executor().round() == 0, "leased: not claimed again yet")
        clock.advance(by: configuration.stepLease.wholeMilliseconds)
        #expect(try await executor().round() == 1)
        #expect(try await store.run(id: run)?.status == "completed")
        let late = TaskOutcome(runID: run, fence: dead[0].fence, status: "failed", finishedAt: 1, document: Array("{}".utf8), next: nil, assessments: [],
                               outbox: [OutboxMessage(topic: "workflow-run-status", key: nil, value: Array("late".utf8), headers: [])])
        #expect(try await store.commitTasks([late], now: clock.now()).isEmpty)
        #expect(try await store.run(id: run)?.status == "completed")
        #expect(try await published().filter { $0.key == run }.map(\.type).filter { $0 == "WorkflowRun.Completed" }.count == 1, "the run completed once")
    }
}
