import Foundation
import Kafka
import Logging
import Store
import Testing
import Workflows
@testable import Worker

/// `workflow_run_cancel` decided without a broker: its rows (200, 404, 409, 422), its
/// writes (the task deleted at the fence read), and what it never does (store a key).
@Suite("Cancel decisions")
struct CancelDecisionTests {
    let base = try! BatchDeciderTests()

    func cancel(offset: Int64, runID: JSONValue, key: String = BatchDeciderTests.key, idempotencyKey: String? = nil, partition: Int32 = 1) -> KafkaMessage {
        var headers = [KafkaHeader(key: "Authorization", value: "Bearer \(key)")]
        if let idempotencyKey { headers.append(KafkaHeader(key: "Idempotency-Key", value: idempotencyKey)) }
        let value: JSONValue = ["request_type": "workflow_run_cancel", "body": ["workflow_run_id": runID]]
        return KafkaMessage(topicPartition: .init(topic: base.configuration.topics.triggerRequests, partition: partition), offset: offset, key: nil, value: value.canonicalBytes, headers: headers)
    }

    /// The responses' (status, body) in order.
    func responses(_ writes: BatchWrites) throws -> [(status: Int, body: JSONValue)] {
        try writes.outbox.compactMap { message in
            let event = try JSONValue.parse(message.value)
            guard event["event_type"] == "TriggerRequest.Responded" else { return nil }
            return (Int(event[path: ["data", "response", "status"]]!.intValue!), event[path: ["data", "response", "body"]]!)
        }
    }

    @Test("a run started earlier in the batch is canceled: 200 with the run object, steps skipped, Canceled after them, the task deleted at its fence")
    func cancelsAStartedRun() throws {
        let started = base.decide([base.request(offset: 0, key: "k")], now: 1_000_000)
        let run = try #require(started.writes.runs.first)
        var snapshot = base.snapshot(after: started.writes, now: 1_000_000)
        snapshot.runs[run.id] = RunSnapshot(record: run, task: started.writes.tasks.first)
        let decision = base.decide([cancel(offset: 0, runID: .string(run.id), idempotencyKey: "ignored")], snapshot: snapshot, now: 1_005_000)
        let answers = try responses(decision.writes)
        #expect(answers.map(\.status) == [200])
        #expect(answers[0].body["status"] == "canceled")
        #expect(answers[0].body["workflow_run_id"] == .string(run.id))
        #expect(answers[0].body["completed_at"] == 1005)
        #expect(answers[0].body[path: ["steps", "0", "status"]] == "skipped")
        #expect(decision.writes.cancels.map(\.runID) == [run.id])
        #expect(decision.writes.cancels.first?.fence == 0)
        #expect(decision.writes.records.isEmpty, "a cancel stores nothing under its key")
        let runEvents = try decision.writes.outbox.map { try JSONValue.parse($0.value) }.filter { $0["event_type"] != "TriggerRequest.Responded" }
        #expect(runEvents.map { $0["event_type"] } == ["WorkflowRun.StepUpdated", "WorkflowRun.Canceled"])
        #expect(runEvents.allSatisfy { $0[path: ["data", "workflow_run_id"]] == .string(run.id) })
        let runMessages = decision.writes.outbox.filter { (try? JSONValue.parse($0.value))?["event_type"] != "TriggerRequest.Responded" }
        #expect(runMessages.allSatisfy { $0.key == Array(run.id.utf8) && $0.source == PartitionID(topic: base.configuration.topics.triggerRequests, partition: 0) },
                "a run's events keep its key and go with its other events (its input's partition), not the cancel's")
        #expect(decision.tally.runsCanceled == 1)
    }

    @Test("404 for an unknown run and for another org's run (existence never leaks); 409 once finished; 422 without a run id")
    func rows() throws {
        let started = base.decide([base.request(offset: 0, key: "k")], now: 1_000_000)
        let run = try #require(started.writes.runs.first)
        var snapshot = BatchSnapshot()
        snapshot.runs[run.id] = RunSnapshot(record: run, task: started.writes.tasks.first)
        var finished = run
        finished.id = "cbwr_ffffffffffffffffffffffffffffffff"
        finished.status = "completed"
        snapshot.runs[finished.id] = RunSnapshot(record: finished, task: nil)
        let decision = base.decide([
            cancel(offset: 0, runID: "cbwr_00000000000000000000000000000000"),
            cancel(offset: 1, runID: .string(run.id), key: "ak_test_beta_key"),
            cancel(offset: 2, runID: .string(finished.id)),
            cancel(offset: 3, runID: "not-a-run"),
            cancel(offset: 4, runID: .string(run.id)),
            cancel(offset: 5, runID: .string(run.id)),
        ], snapshot: snapshot, now: 1_001_000)
        let answers = try responses(decision.writes)
        #expect(answers.map(\.status) == [404, 404, 409, 422, 200, 409])
        #expect(answers[0].body[path: ["detail", "code"]] == "workflow_run_not_found")
        #expect(answers[1].body == answers[0].body.replacing("cbwr_00000000000000000000000000000000", with: run.id), "another org's run answers as an unknown one")
        #expect(answers[2].body[path: ["detail", "code"]] == "workflow_run_finished")
        #expect(answers[3].body[path: ["detail", "0", "loc"]] == ["body", "workflow_run_id"])
        #expect(answers[5].body[path: ["detail", "code"]] == "workflow_run_finished", "canceled once, the second is too late")
        #expect(decision.writes.cancels.count == 1)
    }
}

extension JSONValue {
    /// The value with every string equal to `old` replaced.
    func replacing(_ old: String, with new: String) -> JSONValue {
        switch self {
        case .string(let text): .string(text.replacingOccurrences(of: old, with: new))
        case .array(let items): .array(items.map { $0.replacing(old, with: new) })
        case .object(let object): .object(object.mapValues { $0.replacing(old, with: new) })
        default: self
        }
    }
}
