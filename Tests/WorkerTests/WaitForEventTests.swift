import Foundation
import Kafka
import Logging
import Store
import Synchronization
import Testing
import Workflows
@testable import Worker

/// `wait_for_event` through intake and the engine, on a real SQLite store with a clock
/// the test moves: responses wake only the runs they may match, an event that came
/// before the wait began counts, deadlines fail or skip, a re-published event counts once.
@Suite("Waiting for events")
struct WaitForEventTests {
    typealias TestClock = ExecutorServiceTests.TestClock
    static let org = "cborg_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    static let vendor = "cbvndr_11111111111111111111111111111111"
    static let otherVendor = "cbvndr_22222222222222222222222222222222"

    let configuration = WorkerConfiguration()
    let store: SQLiteStore
    let catalog: WorkflowCatalog
    let clock = TestClock(1_750_000_000_000)
    let logger = Logger(label: "test")
    let pipeline: Pipeline
    final class Offsets: Sendable {
        let next = Mutex<[String: Int64]>([:])
    }
    let offsets = Offsets()

    init() throws {
        store = try SQLiteStore(path: FileManager.default.temporaryDirectory.appendingPathComponent("wait-\(UUID().uuidString).sqlite").path)
        catalog = try WorkflowCatalog.load(directory: "\(ExecutorServiceTests.fixtures)/engine/workflows")
        let orgs = try OrgDirectory.load(path: "\(ExecutorServiceTests.fixtures)/pipeline/orgs.yaml")
        pipeline = Pipeline(configuration: configuration, orgs: orgs, catalog: catalog, store: store, clock: clock, logger: logger, outboxReady: {})
    }

    func executor() -> ExecutorService {
        ExecutorService(configuration: configuration, catalog: catalog, store: store, clock: clock, engine: RunEngine(actions: [.waitForEvent: WaitForEventAction(store: store)]), logger: logger)
    }

    func nextOffset(_ topic: String) -> Int64 { offsets.next.withLock { offsets in defer { offsets[topic, default: 0] += 1 }; return offsets[topic, default: 0] } }

    func handle(_ message: KafkaMessage) async throws -> Pipeline.Prepared {
        let prepared = try await pipeline.prepare([message], after: nil)
        #expect(try await pipeline.write(prepared).asPrepared)
        return prepared
    }

    /// A trigger request of org A, through intake.
    func request(_ value: JSONValue) async throws -> Pipeline.Prepared {
        let topic = configuration.topics.triggerRequests
        return try await handle(KafkaMessage(
            topicPartition: .init(topic: topic, partition: 0), offset: nextOffset(topic), key: nil, value: value.canonicalBytes,
            headers: [KafkaHeader(key: "Authorization", value: "Bearer ak_test_alpha_key")]
        ))
    }

    /// Starts a run of `workflow` through intake; returns its id.
    func startRun(_ workflow: String, input: JSONValue) async throws -> String {
        let prepared = try await request(["request_type": "workflow_run", "workflow_name": .string(workflow), "body": ["input": input]])
        return try #require(prepared.decision.writes.runs.first?.id)
    }

    func start(_ workflow: String, vendorID: String = Self.vendor) async throws -> String {
        try await startRun(workflow, input: ["vendor_id": .string(vendorID)])
    }

    @discardableResult
    func respond(vendorID: String = Self.vendor, runID: String? = nil, answers: JSONValue = ["ok": true], eventID: String = Identifier.derive(prefix: "cbevt", from: [UUID().uuidString])) async throws -> Pipeline.Prepared {
        var data: [String: JSONValue] = [
            "questionnaire_id": .string(Identifier.derive(prefix: "cbqst", from: [eventID])), "vendor_id": .string(vendorID),
            "submitted_at": .int(clock.now() / 1000), "answers": answers,
        ]
        if let runID { data["workflow_run_id"] = .string(runID) }
        let event: JSONValue = [
            "event_id": .string(eventID), "event_type": "QuestionnaireResponse.Submitted", "occurred_at": .int(clock.now() / 1000),
            "org_id": .string(Self.org), "data": .object(data),
        ]
        let topic = configuration.topics.vendorEvents
        return try await handle(KafkaMessage(topicPartition: .init(topic: topic, partition: 0), offset: nextOffset(topic), key: nil, value: event.canonicalBytes, headers: []))
    }

    func status(_ run: String) async throws -> String? { try await store.run(id: run)?.status }


    @Test("a run waits; another vendor's response and one for another run do not wake it; its vendor's response resumes it and is the step's output")
    func resumedByItsResponse() async throws {
        let run = try await start("await-response")
        #expect(try await executor().round() == 1)
        #expect(try await status(run) == "waiting")
        let due = try #require(try await store.task(runID: run)?.dueAt)
        #expect(due == clock.now() + 3_600_000, "due at its deadline")

        clock.advance(by: 1000)
        try await respond(vendorID: Self.otherVendor)
        try await respond(runID: "cbwr_99999999999999999999999999999999")
        #expect(try await store.task(runID: run)?.dueAt == due, "not woken: another vendor's, another run's")
        let other = try await executor().round()
        #expect(other == 0)

        clock.advance(by: 1000)
        try await respond(answers: ["ok": true, "score": 7])
        #expect(try await store.task(runID: run)?.dueAt == clock.now(), "woken")
        #expect(try await executor().round() == 1)
        #expect(try await status(run) == "completed")
        let document = try JSONValue.parse(try #require(try await store.run(id: run)).document)
        #expect(document[path: ["steps", "0", "status"]] == "success")
        #expect(document[path: ["steps", "0", "artifacts", "0", "artifact_type"]] == "event")
        let outbox = try await store.pendingOutbox(limit: 100).flatMap(\.messages).compactMap { try? JSONValue.parse($0.value) }
        let item = try #require(outbox.first { $0["event_type"] == "WorkQueueItem.Created" })
        #expect(item[path: ["data", "answers"]] == ["ok": true, "score": 7], "the event is the step's output")
    }

    @Test("a response that came after the run started but before its wait began counts; one that does not match (answers.ok false) does not")
    func earlierEventCounts() async throws {
        let run = try await start("late-wait")
        #expect(try await executor().round() == 1)  // delaying
        try await respond(answers: ["ok": false])
        try await respond(answers: ["ok": true])
        clock.advance(by: 60_000)
        #expect(try await executor().round() == 1)
        #expect(try await status(run) == "completed")
        let document = try JSONValue.parse(try #require(try await store.run(id: run)).document)
        #expect(document[path: ["steps", "1", "status"]] == "success")
    }

    @Test("at the deadline: on_timeout fail fails the run 'timed out'; continue skips the step and goes on")
    func deadlines() async throws {
        let failing = try await start("await-response")
        let skipping = try await start("late-wait", vendorID: Self.otherVendor)
        #expect(try await executor().round() == 2)
        clock.advance(by: 60_000)
        #expect(try await executor().round() == 1)  // late-wait's delay ends; its wait begins
        clock.advance(by: 3_600_000)
        #expect(try await executor().round() == 2)
        #expect(try await status(failing) == "failed")
        let failed = try JSONValue.parse(try #require(try await store.run(id: failing)).document)
        #expect(failed[path: ["steps", "0", "message"]]?.stringValue?.contains("timed out") == true)
        #expect(try await status(skipping) == "completed")
        let skipped = try JSONValue.parse(try #require(try await store.run(id: skipping)).document)
        #expect(skipped[path: ["steps", "1", "status"]] == "skipped")
        #expect(skipped[path: ["steps", "2", "status"]] == "success")
    }

    @Test("a re-published response is a duplicate: kept once; a response that arrives while the run is being performed keeps it due")
    func onceAndRace() async throws {
        let eventID = Identifier.derive(prefix: "cbevt", from: ["once"])
        try await respond(vendorID: Self.otherVendor, eventID: eventID)
        let again = try await respond(vendorID: Self.otherVendor, eventID: eventID)
        #expect(again.decision.tally.duplicateEvents == 1)
        #expect(try await store.events(orgID: Self.org, type: "QuestionnaireResponse.Submitted", vendorID: nil, since: 0, afterSequence: 0, limit: 10).count == 1)

        // The engine claims a new run and looks for events (none yet); the response arrives
        // before its commit, when the run has no subscription to be woken through.
        let run = try await start("await-response")
        let claimedAt = clock.now()
        let claim = try #require(try await store.claimTasks(owner: "engine", now: claimedAt, leaseUntil: claimedAt + 30_000, limit: 10).first)
        let advance = await RunEngine(actions: [.waitForEvent: NoMatch()]).advance(try RunState(decoding: claim.state), now: claimedAt)
        clock.advance(by: 10)
        try await respond()
        #expect(try await store.task(runID: run)?.dueAt == claimedAt, "nothing to wake yet: still due from its start")
        let written = try await store.commitTasks([TaskOutcome(
            runID: run, fence: claim.fence, status: "waiting", finishedAt: nil, document: advance.document, next: (advance.state.encoded, try #require(advance.dueAt)),
            assessments: [], outbox: [],
            subscription: EventSubscription(orgID: Self.org, eventType: "QuestionnaireResponse.Submitted", vendorID: Self.vendor, seenSequence: 0)
        )], now: clock.now())
        #expect(written == [run])
        #expect(try await store.task(runID: run)?.dueAt == clock.now(), "an event came during the claim: due now, not at the deadline")
        #expect(try await executor().round() == 1)
        #expect(try await status(run) == "completed")

        // Woken while being performed (subscribed already): the commit keeps it due.
        let thirdVendor = "cbvndr_33333333333333333333333333333333"
        let second = try await start("await-response", vendorID: thirdVendor)
        #expect(try await executor().round() == 1)  // waiting, subscribed
        clock.advance(by: 3_600_000)  // its deadline: due again
        let reclaimed = try #require(try await store.claimTasks(owner: "engine", now: clock.now(), leaseUntil: clock.now() + 30_000, limit: 10).first)
        #expect(reclaimed.runID == second)
        try await respond(vendorID: thirdVendor)  // wakes it: woken while claimed
        let later = clock.now() + 3_600_000
        #expect(try await store.commitTasks([TaskOutcome(
            runID: second, fence: reclaimed.fence, status: "waiting", finishedAt: nil, document: nil, next: (reclaimed.state, later), assessments: [], outbox: [],
            subscription: EventSubscription(orgID: Self.org, eventType: "QuestionnaireResponse.Submitted", vendorID: thirdVendor, seenSequence: 1_000_000)
        )], now: clock.now()) == [second])
        #expect(try await store.task(runID: second)?.dueAt == clock.now(), "woken during its claim: due now")
    }

    /// A wait that saw no event (as if performed just before the response arrived).
    struct NoMatch: StepAction {
        func perform(_ context: StepContext) async -> StepOutcome {
            .waits(until: context.state.wakeAt ?? context.now + 3_600_000, waitingFor: ["event": "QuestionnaireResponse.Submitted"], subscription: WaitSubscription(eventType: "QuestionnaireResponse.Submitted", vendorID: context.inputFields["match"]?["vendor_id"]?.stringValue))
        }
    }

    @Test("a run started by an event does not take that event for the one it waits for; the next such event resumes it")
    func notItsOwnTrigger() async throws {
        func updated(_ eventID: String) async throws -> Pipeline.Prepared {
            let event: JSONValue = [
                "event_id": .string(eventID), "event_type": "Vendor.Updated", "occurred_at": .int(clock.now() / 1000), "org_id": .string(Self.org),
                "data": ["vendor": ["id": .string(Self.vendor), "name": "Acme", "tier": "high", "tags": [], "attributes": [:]]],
            ]
            let topic = configuration.topics.vendorEvents
            return try await handle(KafkaMessage(topicPartition: .init(topic: topic, partition: 0), offset: nextOffset(topic), key: nil, value: event.canonicalBytes, headers: []))
        }
        let started = try await updated(Identifier.derive(prefix: "cbevt", from: ["update", "1"]))
        let run = try #require(started.decision.writes.runs.first?.id)
        #expect(try await executor().round() == 1)
        #expect(try await status(run) == "waiting", "not resumed by the event that started it")
        clock.advance(by: 1000)
        _ = try await updated(Identifier.derive(prefix: "cbevt", from: ["update", "2"]))
        // That event starts a run of its own too; both are claimed, and the first resumes.
        _ = try await executor().round()
        #expect(try await status(run) == "completed")
    }
}
