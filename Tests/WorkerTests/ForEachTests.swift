import Foundation
import Kafka
import Logging
import Store
import Synchronization
import Testing
import Workflows
@testable import Worker

/// `for_each` and `aggregate` through intake and the engine on a real SQLite store,
/// with a clock the test moves: the seed's quarterly privacy sweep.
@Suite("Fan-out")
struct ForEachTests {
    let wait = try! WaitForEventTests()
    var store: SQLiteStore { wait.store }
    var clock: ExecutorServiceTests.TestClock { wait.clock }

    func executor() -> ExecutorService {
        ExecutorService(configuration: wait.configuration, catalog: wait.catalog, store: store, clock: clock, engine: RunEngine(actions: [
            .waitForEvent: WaitForEventAction(store: store), .forEach: ForEachAction(store: store), .aggregate: AggregateAction(store: store),
        ]), logger: wait.logger)
    }

    /// Rounds until the engine has nothing due; returns how many runs and items it claimed.
    @discardableResult
    func drain(_ executor: ExecutorService) async throws -> Int {
        var claimed = 0
        while true {
            let round = try await executor.round()
            if round == 0 { return claimed }
            claimed += round
        }
    }

    func vendorCreated(_ id: String, tags: [String]) async throws {
        let event: JSONValue = [
            "event_id": .string(Identifier.derive(prefix: "cbevt", from: ["vendor", id])), "event_type": "Vendor.Created",
            "occurred_at": .int(clock.now() / 1000), "org_id": .string(WaitForEventTests.org),
            "data": ["vendor": ["id": .string(id), "name": .string("Vendor \(id.suffix(4))"), "tier": "high", "tags": .array(tags.map(JSONValue.string)), "attributes": [:]]],
        ]
        let topic = wait.configuration.topics.vendorEvents
        _ = try await wait.handle(KafkaMessage(topicPartition: .init(topic: topic, partition: 0), offset: wait.nextOffset(topic), key: nil, value: event.canonicalBytes, headers: []))
    }

    func published(_ type: String) async throws -> [JSONValue] {
        try await store.pendingOutbox(limit: 10_000).flatMap(\.messages).compactMap { try? JSONValue.parse($0.value) }.filter { $0["event_type"]?.stringValue == type }
    }

    @Test("40 vendors of 50 match; 30 respond before the due date (one response re-published): 40 questionnaires, the report {total 40, responses 30}")
    func quarterlySweep() async throws {
        let vendors = (0..<50).map { Identifier.derive(prefix: "cbvndr", from: ["sweep", String($0)]) }
        for (index, vendor) in vendors.enumerated() { try await vendorCreated(vendor, tags: index < 40 ? ["processes_pii"] : ["other"]) }
        let run = try await wait.startRun("privacy-sweep", input: ["vendor_filter": ["tags": ["processes_pii"]], "due_date": "2025-06-30"])
        let engine = executor()

        // One round at a time: at most 5 items execute at once (waiting ones hold no slot).
        var rounds = 0
        while true {
            let executing = try await store.engineQueue(now: clock.now())
            #expect(executing.runnable <= 5 + 1, "at most concurrency items (and the run) are due at once: \(executing.runnable)")
            guard try await engine.round() > 0 else { break }
            rounds += 1
        }
        #expect(rounds >= 8, "40 items, 5 at a time: several rounds (\(rounds))")
        #expect(try await wait.status(run) == "waiting")
        let questionnaires = try await published("Questionnaire.SendRequested")
        #expect(questionnaires.count == 40)
        #expect(Set(questionnaires.compactMap { $0[path: ["data", "vendor_id"]]?.stringValue }) == Set(vendors.prefix(40)))
        #expect(Set(questionnaires.compactMap { $0[path: ["data", "delivery_id"]] }).count == 40, "a delivery id per item")
        #expect(try await store.pendingItems(runID: run) == 40)

        let republished = Identifier.derive(prefix: "cbevt", from: ["response", "0"])
        for index in 0..<30 {
            try await wait.respond(vendorID: vendors[index], eventID: Identifier.derive(prefix: "cbevt", from: ["response", String(index)]))
        }
        try await wait.respond(vendorID: vendors[0], eventID: republished)
        try await drain(engine)
        #expect(try await store.pendingItems(runID: run) == 10, "30 items resumed")
        #expect(try await wait.status(run) == "waiting")

        clock.advance(by: TimeSpec.parse("2025-06-30")! - clock.now())  // the end of the due date
        try await drain(engine)
        #expect(try await wait.status(run) == "completed")
        let document = try JSONValue.parse(try #require(try await store.run(id: run)).document)
        #expect(document[path: ["steps", "0", "artifacts", "0"]] == ["artifact_type": "for_each", "total": 40, "succeeded": 40, "failed": 0, "skipped": 0])
        let report = try #require(document[path: ["steps", "1", "artifacts", "0"]])
        #expect(report["artifact_type"] == "report")
        #expect(report["total"] == 40)
        #expect(report["responses"] == 30, "a re-published response is counted once")
        #expect(report["items"]?.arrayValue?.count == 40)
        let items = report["items"]?.arrayValue ?? []
        #expect(items.filter { $0["response"] != .null }.count == 30)
        #expect(items.allSatisfy { $0["status"] == "success" })
        let updates = try await published("WorkflowRun.StepUpdated").filter { $0[path: ["data", "workflow_run_id"]] == .string(run) }
        #expect(updates.map { $0[path: ["data", "step", "component_id"]] } == ["sweep", "sweep", "report"], "the sweep waiting, the sweep done, the report done; no item's own steps")
        #expect(updates.first?[path: ["data", "step", "waiting_for", "items"]] == 40)
        #expect(try await published("WorkflowRun.Completed").count == 1)
    }

    @Test("cancelling a sweep removes its items: none of them runs on")
    func cancelSweep() async throws {
        for index in 0..<12 { try await vendorCreated(Identifier.derive(prefix: "cbvndr", from: ["cancel", String(index)]), tags: ["processes_pii"]) }
        let run = try await wait.startRun("privacy-sweep", input: ["vendor_filter": ["tags": ["processes_pii"]], "due_date": "2025-06-30"])
        let engine = executor()
        _ = try await engine.round()  // the run creates its 12 items; 5 are started
        #expect(try await store.pendingItems(runID: run) == 12)
        let canceled = try await wait.request(["request_type": "workflow_run_cancel", "body": ["workflow_run_id": .string(run)]])
        #expect(canceled.decision.tally.runsCanceled == 1)
        #expect(try await store.pendingItems(runID: run) == 0)
        #expect(try await drain(engine) == 0, "nothing of the run is left to perform")
        #expect(try await published("Questionnaire.SendRequested").isEmpty)
    }
}
