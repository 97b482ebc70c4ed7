import Testing
import Workflows

/// The schema checks of the integration tests are not vacuous: the validator they use
/// rejects what the schemas forbid, and accepts what they allow.
@Suite("Schema checks")
struct SchemaCheckTests {
    static let org = "cborg_0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    static let runFields: [String: JSONValue] = [
        "workflow_run_id": "cbwr_4f1d2c3b4a5968778695a4b3c2d1e0f9", "workflow_name": "onboard-vendor",
        "workflow_definition_id": "cbwd_0a1b2c3d4e5f60718293a4b5c6d7e8f9", "status": "started", "started_at": 1746576000,
        "completed_at": .null, "input": [:], "steps": [],
        "trigger": ["kind": "request", "idempotency_key": "k", "request_id": .null, "source": ["topic": "t", "partition": 0, "offset": 3]],
    ]
    static let run = JSONValue.object(runFields)

    static func event(_ type: String, data: JSONValue, org: JSONValue = .string(org)) -> JSONValue {
        ["event_id": "cbevt_2b3c4d5e6f708192a3b4c5d6e7f80912", "event_type": .string(type), "occurred_at": 1746576000, "org_id": org, "data": data]
    }

    @Test("a run event is accepted; one with a field too many, a wrong status or a wrong id is rejected")
    func statusEvents() async {
        func run(_ key: String, _ value: JSONValue) -> JSONValue { .object(Self.runFields.merging([key: value]) { $1 }) }
        let extra = run("secret", "leaked"), badStatus = run("status", "running"), badID = run("workflow_run_id", "cbwr_XYZ")
        let answers = await SchemaCheck.errors([
            ["message": "status-event", "instance": Self.event("WorkflowRun.Started", data: Self.run)],
            ["message": "status-event", "instance": Self.event("WorkflowRun.Started", data: extra)],
            ["message": "status-event", "instance": Self.event("WorkflowRun.Started", data: badStatus)],
            ["message": "status-event", "instance": Self.event("WorkflowRun.Started", data: badID)],
            ["message": "status-event", "instance": Self.event("WorkflowRun.Started", data: Self.run, org: .null)],
        ])
        #expect(answers.count == 5)
        #expect(answers.first == [])
        for (index, problems) in answers.dropFirst().enumerated() { #expect(!problems.isEmpty, "broken event \(index + 1) was accepted") }
    }

    @Test("a dead letter that carries Authorization, or has no error-code, is rejected")
    func deadLetters() async {
        let good: [String: JSONValue] = ["error-code": "invalid_json", "error-message": "not JSON", "source-topic": "t", "source-partition": "0", "source-offset": "7"]
        let secret = good.merging(["authorization": "Bearer ak_live_x"]) { $1 }
        let noCode = good.filter { $0.key != "error-code" }
        let answers = await SchemaCheck.errors([good, secret, noCode].map { ["message": "dead-letter", "instance": .object($0)] })
        #expect(answers.map(\.isEmpty) == [true, false, false], "\(answers)")
    }

    @Test("an HTTP answer with an undocumented status, a wrong body or an unknown path is rejected")
    func httpAnswers() async {
        func answer(_ method: String, _ path: String, _ status: Int, _ body: JSONValue) -> JSONValue {
            ["http": ["method": .string(method), "path": .string(path), "status": .int(Int64(status)), "content_type": "application/json", "headers": [:]],
             "body": .string(body.canonicalString)]
        }
        let notFound: JSONValue = ["detail": ["code": "workflow_run_not_found", "message": "Workflow run 'x' not found."]]
        let answers = await SchemaCheck.errors([
            answer("GET", "/v1/workflows/runs/cbwr_4f1d2c3b4a5968778695a4b3c2d1e0f9", 200, Self.run),
            answer("GET", "/v1/workflows/runs/cbwr_4f1d2c3b4a5968778695a4b3c2d1e0f9", 404, notFound),
            answer("GET", "/v1/workflows/runs/cbwr_4f1d2c3b4a5968778695a4b3c2d1e0f9", 418, notFound),
            answer("GET", "/v1/workflows/runs/cbwr_4f1d2c3b4a5968778695a4b3c2d1e0f9", 200, notFound),
            answer("GET", "/v1/workflows/runs", 200, ["items": [Self.run], "total": 1, "limit": 100]),
            answer("DELETE", "/v1/workflows/runs/cbwr_4f1d2c3b4a5968778695a4b3c2d1e0f9", 200, Self.run),
        ])
        #expect(answers.map(\.isEmpty) == [true, true, false, false, false, false], "\(answers)")
    }
}
