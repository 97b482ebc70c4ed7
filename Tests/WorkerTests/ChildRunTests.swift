import Foundation
import Kafka
import Logging
import Store
import Testing
import Workflows
@testable import Worker

/// `run_workflow` through the engine on a real SQLite store with a moved clock: a
/// child run of the same org, waited for or not, its status ending the step.
@Suite("Child runs")
struct ChildRunTests {
    let wait = try! WaitForEventTests()
    var store: SQLiteStore { wait.store }

    func executor() -> ExecutorService {
        ExecutorService(configuration: wait.configuration, catalog: wait.catalog, store: store, clock: wait.clock, engine: RunEngine(actions: [
            .runWorkflow: RunWorkflowAction(catalog: wait.catalog, store: store),
        ]), logger: wait.logger)
    }

    func start(child: String, wait waits: Bool) async throws -> String {
        try await wait.startRun("parent-flow", input: ["child": .string(child), "n": 7, "wait": .bool(waits)])
    }

    func child(of parent: String) async throws -> RunRecord {
        let runs = try await store.runs(statuses: [], limit: 100, offset: 0)
        return try #require(runs.first { (try? JSONValue.parse($0.document))?[path: ["trigger", "parent_run_id"]] == .string(parent) })
    }

    @Test("with wait: the parent waits for its child (a run of its own, trigger kind workflow), and goes on when it completes")
    func waitsForChild() async throws {
        let parent = try await start(child: "child-flow", wait: true)
        let engine = executor()
        #expect(try await engine.round() == 1)
        #expect(try await wait.status(parent) == "waiting")
        let child = try await child(of: parent)
        let trigger = try JSONValue.parse(child.document)["trigger"]
        #expect(trigger?["kind"] == "workflow")
        #expect(trigger?["step_id"]?.stringValue?.hasPrefix("cbwrs_") == true)
        #expect(try JSONValue.parse(child.document)["input"] == ["n": 7])
        #expect(try await engine.round() == 1)  // the child begins its delay
        #expect(try await wait.status(child.id) == "waiting")
        #expect(try await engine.round() == 0)
        wait.clock.advance(by: 60_000)
        #expect(try await engine.round() == 1)  // the child completes, and wakes its parent
        #expect(try await wait.status(child.id) == "completed")
        #expect(try await engine.round() == 1)
        #expect(try await wait.status(parent) == "completed")
        let outbox = try await store.pendingOutbox(limit: 100).flatMap(\.messages).compactMap { try? JSONValue.parse($0.value) }
        let item = try #require(outbox.first { $0["event_type"] == "WorkQueueItem.Created" && $0[path: ["data", "workflow_run_id"]] == .string(parent) })
        #expect(item[path: ["data", "child"]] == .string(child.id))
        #expect(outbox.filter { $0["event_type"] == "WorkflowRun.Started" }.count == 2, "the parent's and the child's")
    }

    @Test("a child that fails fails the waiting step; without wait the parent goes on at once; the same step never starts a second child")
    func failsOrGoesOn() async throws {
        let parent = try await start(child: "child-fails", wait: true)
        let engine = executor()
        while try await engine.round() > 0 {}
        #expect(try await wait.status(parent) == "failed")
        let document = try JSONValue.parse(try #require(try await store.run(id: parent)).document)
        #expect(document[path: ["steps", "0", "message"]]?.stringValue?.contains("failed") == true)

        let other = try await start(child: "child-flow", wait: false)
        #expect(try await engine.round() >= 1)
        #expect(try await wait.status(other) == "completed", "it did not wait")
        #expect(try await wait.status(try await child(of: other).id) == "started")
        let missing = try await start(child: "no-such-flow", wait: true)
        while try await engine.round() > 0 {}
        #expect(try await wait.status(missing) == "failed")
        let children = try await store.runs(statuses: [], limit: 100, offset: 0).filter { (try? JSONValue.parse($0.document))?[path: ["trigger", "kind"]] == "workflow" }
        #expect(children.count == 2, "one child per started step")
    }

    @Test("cancelling a child run wakes the parent waiting for it: its step fails, saying the child was canceled")
    func canceledChild() async throws {
        let parent = try await start(child: "child-flow", wait: true)
        let engine = executor()
        #expect(try await engine.round() == 1)
        let child = try await child(of: parent)
        #expect(try await engine.round() == 1)  // the child waits on its delay
        _ = try await wait.request(["request_type": "workflow_run_cancel", "body": ["workflow_run_id": .string(child.id)]])
        #expect(try await wait.status(child.id) == "canceled")
        #expect(try await engine.round() == 1, "the parent was woken")
        #expect(try await wait.status(parent) == "failed")
        let document = try JSONValue.parse(try #require(try await store.run(id: parent)).document)
        #expect(document[path: ["steps", "0", "message"]]?.stringValue?.contains("canceled") == true)
    }
}
