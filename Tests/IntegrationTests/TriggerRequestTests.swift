import Foundation
import Kafka
import Testing
import Workflows

/// Every row of the contract's response table (§4), against a real broker.
@Suite("Trigger requests: every row of the response table", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason))
struct TriggerRequestTests {
    typealias H = WorkerHarness

    @Test("201 run started: the response, the run's events in order, the run in the store")
    func runStarted() async throws {
        let worker = try await H()
        worker.start()
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        let report = try await worker.request(
            H.workflowRun("quarterly-privacy-sweep", input: ["vendor_filter": ["tags": ["processes_pii"]], "due_date": "2026-06-30"]),
            idempotencyKey: "sweep-2026-q2",
            headers: [KafkaHeader(key: "Request-Id", value: "req-77"), KafkaHeader(key: "traceparent", value: traceparent)]
        )
        let response = try await worker.response(to: report)
        #expect(response["org_id"] == .string(H.orgA))
        #expect(Identifier.isValid(response["event_id"]?.stringValue ?? "", prefix: "cbevt"))
        #expect(response[path: ["data", "response", "status"]] == 201)
        let body = try #require(response[path: ["data", "response", "body"]])
        let runID = try #require(body["workflow_run_id"]?.stringValue)
        #expect(Identifier.isValid(runID, prefix: "cbwr"))
        #expect(body["workflow_name"] == "quarterly-privacy-sweep")
        #expect(body["status"] == "started")
        #expect(body["started_at"]?.intValue != nil)
        #expect(body["input"] == ["vendor_filter": ["tags": ["processes_pii"]], "due_date": "2026-06-30"])
        #expect(response[path: ["data", "request"]] == [
            "request_type": "workflow_run", "workflow_name": "quarterly-privacy-sweep", "idempotency_key": "sweep-2026-q2",
            "request_id": "req-77", "source": H.source(report),
        ])
        #expect(response[path: ["data", "replayed"]] == false)
        #expect(response[path: ["data", "fingerprint_mismatch"]] == false)

        let events = try await worker.runEvents(runID)
        // Started goes out with the response; the engine then performs the step after the
        // commit: its effect, its StepUpdated, and the terminal event, in that order.
        #expect(events.map { $0["event_type"]!.stringValue! } == ["WorkflowRun.Started", "Questionnaire.SendRequested", "WorkflowRun.StepUpdated", "WorkflowRun.Completed"])
        let stepUpdated = events[2]["data"]!
        #expect(stepUpdated["workflow_run_id"] == .string(runID))
        #expect(stepUpdated["workflow_name"] == "quarterly-privacy-sweep")
        #expect(stepUpdated[path: ["step", "component_id"]] == "questionnaire")
        #expect(stepUpdated[path: ["step", "status"]] == "success")
        let started = events[0]["data"]!
        #expect(started["status"] == "started")
        #expect(started["completed_at"] == .null)
        #expect(started[path: ["trigger"]] == ["kind": "request", "idempotency_key": "sweep-2026-q2", "request_id": "req-77", "source": H.source(report)])
        let completed = events[3]["data"]!
        #expect(completed["status"] == "completed")
        #expect(completed["completed_at"]?.intValue != nil)
        #expect(completed["workflow_definition_id"]?.stringValue.map { Identifier.isValid($0, prefix: "cbwd") } == true)
        #expect(completed[path: ["steps", "0", "status"]] == "success")
        #expect(events[1][path: ["data", "vendor_filter"]] == ["tags": ["processes_pii"]], "a whole-value template keeps the value's type")

        // All of a run's events share its key; every output carries the input's headers.
        let runMessages = worker.outputs.snapshot.received.filter { (try? JSONValue.parse($0.value ?? []))?[path: ["data", "workflow_run_id"]]?.stringValue == runID }
        #expect(Set(runMessages.map { $0.key ?? [] }) == [Array(runID.utf8)])
        for message in runMessages {
            #expect(message.header("request-id") == "req-77")
            #expect(message.header("idempotency-key") == "sweep-2026-q2")
            // The caller's trace, under the worker's span for this request: same trace id, a new span id.
            let carried = try #require(message.header("traceparent"))
            #expect(carried.hasPrefix("00-4bf92f3577b34da6a3ce929d0e0e4736-") && carried.hasSuffix("-01") && carried.count == traceparent.count)
            #expect(carried != traceparent)
            #expect(carried == runMessages.first?.header("traceparent"), "one span for the request: the engine's events too")
            #expect(message.header("event-type") == (try JSONValue.parse(message.value ?? []))["event_type"]?.stringValue)
        }
        let responseMessage = try #require(worker.responses(to: report).first)
        #expect(responseMessage.key == Array("sweep-2026-q2".utf8), "a response is keyed by its idempotency key")

        let stored = try #require(try await worker.store.run(id: runID))
        #expect(stored.status == "completed")
        #expect(try JSONValue.parse(stored.document) == completed)
        try await worker.stop()
    }

    @Test("201 assessment created, with and without trigger_workflow; 404 for an unknown vendor")
    func assessmentCreated() async throws {
        let worker = try await H()
        worker.start()
        let vendor = H.vendor()
        let vendorID = vendor["id"]!.stringValue!
        let created = try await worker.vendorEvent(vendor: vendor)
        // Wait until the directory knows the vendor (its onboarding run has ended).
        let onboarding = try await waitForRun(worker, startedBy: created)
        _ = try await worker.runEvents(onboarding)

        let plain = try await worker.request(H.assessmentCreate(["vendor_id": .string(vendorID), "control_set_ids": ["cbctst_9f4a1c0d7b2e4e9f8c1d2b3a4e5f6071"]]), idempotencyKey: "grc-1")
        let withFlow = try await worker.request(H.assessmentCreate([
            "vendor_id": .string(vendorID), "control_set_ids": [], "service_ids": ["cbsvc_3c2b1a098f7e6d5c4b3a2918374655ab"],
            "trigger_workflow": "annual-reassessment-flow", "name": "Annual 2026",
        ]), idempotencyKey: "grc-2")
        let unknownVendor = try await worker.request(H.assessmentCreate(["vendor_id": "cbvndr_00000000000000000000000000000000", "control_set_ids": []]))

        let plainBody = try #require(try await worker.response(to: plain)[path: ["data", "response", "body"]])
        #expect(try await worker.response(to: plain)[path: ["data", "response", "status"]] == 201)
        #expect(Identifier.isValid(plainBody["id"]?.stringValue ?? "", prefix: "cbqsrw"))
        #expect(plainBody["vendor_id"] == .string(vendorID))
        #expect(plainBody["status"] == "created")
        #expect(plainBody["control_set_ids"] == ["cbctst_9f4a1c0d7b2e4e9f8c1d2b3a4e5f6071"])
        #expect(plainBody["workflow_run_id"] == .null)
        #expect(plainBody["created_at"]?.intValue != nil)
        #expect(try await worker.store.assessment(id: plainBody["id"]!.stringValue!) != nil)

        let flowResponse = try await worker.response(to: withFlow)
        #expect(flowResponse[path: ["data", "request", "workflow_name"]] == "annual-reassessment-flow")
        let flowBody = try #require(flowResponse[path: ["data", "response", "body"]])
        #expect(flowBody["name"] == "Annual 2026")
        #expect(flowBody["service_ids"] == ["cbsvc_3c2b1a098f7e6d5c4b3a2918374655ab"])
        let runID = try #require(flowBody["workflow_run_id"]?.stringValue)
        let events = try await worker.runEvents(runID)
        #expect(events.last?["event_type"] == "WorkflowRun.Completed")
        let email = try #require(events.first { $0["event_type"] == "Email.SendRequested" })
        #expect(email[path: ["data", "to"]] == "risk-owner@example.com", "the vendor comes from the directory")
        #expect(email[path: ["data", "subject"]] == .string("Annual reassessment of Acme Payroll (\(flowBody["id"]!.stringValue!))"))

        let notFound = try await worker.response(to: unknownVendor)
        #expect(notFound[path: ["data", "response"]] == ["status": 404, "body": ["detail": [
            "code": "vendor_not_found", "message": "Vendor 'cbvndr_00000000000000000000000000000000' not found.",
        ]]])
        try await worker.stop()
    }

    @Test("401 without or with a wrong API key; 404 unknown workflow (both request types); 409 disabled")
    func rejections() async throws {
        let worker = try await H()
        worker.start()
        let noKey = try await worker.request(H.workflowRun("quarterly-privacy-sweep"), apiKey: nil)
        let wrongKey = try await worker.request(H.workflowRun("quarterly-privacy-sweep"), apiKey: "ak_live_not_a_key")
        let notBearer = try await worker.request(H.workflowRun("quarterly-privacy-sweep"), apiKey: nil, headers: [KafkaHeader(key: "authorization", value: "Basic \(H.keyA)")])
        let unknownRun = try await worker.request(H.workflowRun("no-such-flow"), idempotencyKey: "k-404")
        let unknownAssessmentFlow = try await worker.request(H.assessmentCreate(["vendor_id": "cbvndr_00000000000000000000000000000000", "control_set_ids": [], "trigger_workflow": "no-such-flow"]))
        let disabled = try await worker.request(H.workflowRun("paused-flow"))
        let otherOrgsFlow = try await worker.request(H.workflowRun("vendor-updated-audit"), apiKey: H.keyB)

        for report in [noKey, wrongKey, notBearer] {
            let response = try await worker.response(to: report)
            #expect(response[path: ["data", "response"]] == ["status": 401, "body": ["detail": ["code": "unauthorized", "message": "Invalid or expired API key."]]])
            #expect(response["org_id"] == .null)
        }
        for report in [unknownRun, unknownAssessmentFlow] {
            let response = try await worker.response(to: report)
            #expect(response[path: ["data", "response"]] == ["status": 404, "body": ["detail": ["code": "workflow_not_found", "message": "Workflow 'no-such-flow' not found."]]])
            #expect(response["org_id"] == .string(H.orgA))
        }
        #expect(try await worker.response(to: disabled)[path: ["data", "response"]] == ["status": 409, "body": ["detail": ["code": "workflow_disabled", "message": "Workflow 'paused-flow' is disabled."]]])
        #expect(try await worker.response(to: otherOrgsFlow)[path: ["data", "response", "status"]] == 404, "an org sees only its own workflows")
        #expect(worker.events.filter { $0["event_type"] == "WorkflowRun.Started" }.isEmpty, "a rejected request starts nothing")
        #expect(worker.deadLetters.isEmpty, "rejections are responses, not dead letters")
        try await worker.stop()
    }

    @Test("422 for an invalid body, in FastAPI's list form; and for an idempotency key over 255 characters")
    func validation() async throws {
        let worker = try await H()
        worker.start()
        let missing = try await worker.request(H.assessmentCreate(["name": 7, "service_ids": "cbsvc_x"]))
        let badInput = try await worker.request(["request_type": "workflow_run", "workflow_name": "quarterly-privacy-sweep", "body": ["input": [1, 2]]])
        let notObject = try await worker.request(H.assessmentCreate(["not", "an", "object"]))
        let longKey = try await worker.request(H.workflowRun("quarterly-privacy-sweep"), idempotencyKey: String(repeating: "k", count: 256))

        let detail = try await worker.response(to: missing)[path: ["data", "response", "body", "detail"]]
        #expect(try await worker.response(to: missing)[path: ["data", "response", "status"]] == 422)
        let issues = try #require(detail?.arrayValue)
        #expect(issues.contains(["loc": ["body", "vendor_id"], "msg": "Field required", "type": "missing"]))
        #expect(issues.contains(["loc": ["body", "control_set_ids"], "msg": "Field required", "type": "missing"]))
        #expect(issues.contains(["loc": ["body", "name"], "msg": "Input should be a valid string", "type": "string_type"]))
        #expect(issues.contains(["loc": ["body", "service_ids"], "msg": "Input should be a valid list", "type": "list_type"]))
        #expect(issues.count == 4)
        #expect(try await worker.response(to: badInput)[path: ["data", "response", "body", "detail", "0", "loc"]] == ["body", "input"])
        #expect(try await worker.response(to: notObject)[path: ["data", "response", "body", "detail", "0", "type"]] == "model_attributes_type")
        let long = try await worker.response(to: longKey)
        #expect(long[path: ["data", "response", "status"]] == 422)
        #expect(long[path: ["data", "response", "body", "detail", "0", "loc"]] == ["header", "Idempotency-Key"])
        try await worker.stop()
    }

    @Test("400 for a value that is not JSON, not an object, or of an unknown request_type; 413 over MAX_MESSAGE_BYTES; each also dead-lettered, and later messages still handled")
    func unreadable() async throws {
        let worker = try await H { $0.maxMessageBytes = 4096 }
        worker.start()
        let notJSON = try await worker.request(Array("{not json".utf8), idempotencyKey: "bad-1")
        let notObject = try await worker.request(Array("[1,2,3]".utf8))
        let unknownType = try await worker.request(["request_type": "vendor_delete", "body": [:]])
        var big = H.workflowRun("quarterly-privacy-sweep", input: ["blob": .string(String(repeating: "x", count: 5000))]).canonicalBytes
        let tooLarge = try await worker.request(big)
        big = []
        let valid = try await worker.request(H.workflowRun("quarterly-privacy-sweep"), idempotencyKey: "after-the-bad-ones")

        for (report, status, code) in [(notJSON, 400, "invalid_request"), (notObject, 400, "invalid_request"), (unknownType, 400, "invalid_request"), (tooLarge, 413, "payload_too_large")] {
            let response = try await worker.response(to: report)
            #expect(response[path: ["data", "response", "status"]] == .int(Int64(status)))
            #expect(response[path: ["data", "response", "body", "detail", "code"]] == .string(code))
        }
        #expect(try await worker.response(to: valid)[path: ["data", "response", "status"]] == 201)

        let letters = try await worker.waitForDeadLetters(4)
        let byOffset = Dictionary(uniqueKeysWithValues: letters.map { ($0.header("source-offset") ?? "", $0) })
        for (report, code) in [(notJSON, "invalid_json"), (notObject, "invalid_request"), (unknownType, "invalid_request"), (tooLarge, "message_too_large")] {
            let letter = try #require(byOffset[String(report.offset!)], "no dead letter for offset \(report.offset!)")
            #expect(letter.header("error-code") == code)
            #expect(letter.header("source-topic") == worker.configuration.topics.triggerRequests)
            #expect(letter.header("source-partition") == String(report.topicPartition.partition))
            #expect(letter.header("error-message")?.isEmpty == false)
            #expect(letter.header("Authorization") == nil, "the API key never travels to the dead-letter topic")
            #expect(letter.header("Idempotency-Key") == (report == notJSON ? "bad-1" : nil), "the other original headers are kept")
        }
        #expect(byOffset[String(notJSON.offset!)]?.value == Array("{not json".utf8), "the value is kept byte for byte")
        #expect(byOffset[String(notJSON.offset!)]?.key == Array("bad-1".utf8), "the key is kept")
        try await worker.stop()
    }

    @Test("a run that cannot do a step fails with the step's message; update_workflow_run cancels and skips the rest")
    func runOutcomes() async throws {
        let worker = try await H()
        worker.start()
        let failing = try await worker.request(H.workflowRun("needs-vendor"))
        let canceled = try await worker.request(H.workflowRun("early-stop"))
        let failedRun = try #require(try await worker.response(to: failing)[path: ["data", "response", "body", "workflow_run_id"]]?.stringValue)
        let canceledRun = try #require(try await worker.response(to: canceled)[path: ["data", "response", "body", "workflow_run_id"]]?.stringValue)

        let failedEvents = try await worker.runEvents(failedRun)
        #expect(failedEvents.map { $0["event_type"] } == ["WorkflowRun.Started", "WorkflowRun.StepUpdated", "WorkflowRun.Failed"])
        #expect(failedEvents[1][path: ["data", "step", "status"]] == "failed")
        #expect(failedEvents[1][path: ["data", "status"]] == "failed", "the run's status as the step left it")
        #expect(failedEvents[2][path: ["data", "steps", "0", "status"]] == "failed")
        #expect(failedEvents[2][path: ["data", "steps", "0", "message"]]?.stringValue?.contains("needs a vendor") == true)

        let canceledEvents = try await worker.runEvents(canceledRun)
        #expect(canceledEvents.map { $0["event_type"] } == ["WorkflowRun.Started", "WorkflowRun.StepUpdated", "WorkflowRun.StepUpdated", "WorkflowRun.Canceled"])
        #expect(canceledEvents[2][path: ["data", "step", "status"]] == "skipped")
        #expect(canceledEvents[2][path: ["data", "status"]] == "canceled")
        #expect(canceledEvents[3][path: ["data", "steps", "1", "status"]] == "skipped")
        try await worker.stop()
    }

    @Test("workflow_run_cancel: a waiting run is canceled (200, steps skipped, Canceled after its other events); 404 unknown or another org's; 409 finished")
    func cancelRun() async throws {
        let worker = try await H()
        worker.start()
        let waiting = try await worker.request(H.workflowRun("long-wait"), idempotencyKey: "wait-1")
        let runID = try #require(try await worker.response(to: waiting)[path: ["data", "response", "body", "workflow_run_id"]]?.stringValue)
        try await worker.outputs.waitUntil("the run to wait", timeout: .seconds(30)) { _ in
            worker.events.contains { $0["event_type"] == "WorkflowRun.StepUpdated" && $0[path: ["data", "workflow_run_id"]]?.stringValue == runID && $0[path: ["data", "status"]] == "waiting" }
        }
        func cancel(_ id: String, apiKey: String = H.keyA) -> JSONValue { ["request_type": "workflow_run_cancel", "body": ["workflow_run_id": .string(id)]] }

        let otherOrg = try await worker.response(to: try await worker.request(cancel(runID), apiKey: H.keyB))
        #expect(otherOrg[path: ["data", "response", "status"]] == 404)
        #expect(otherOrg[path: ["data", "response", "body", "detail", "code"]] == "workflow_run_not_found")
        let unknown = try await worker.response(to: try await worker.request(cancel("cbwr_00000000000000000000000000000000")))
        #expect(unknown[path: ["data", "response", "status"]] == 404)

        let canceled = try await worker.response(to: try await worker.request(cancel(runID), idempotencyKey: "cancel-1"))
        #expect(canceled[path: ["data", "response", "status"]] == 200)
        #expect(canceled[path: ["data", "request", "request_type"]] == "workflow_run_cancel")
        let body = try #require(canceled[path: ["data", "response", "body"]])
        #expect(body["status"] == "canceled")
        #expect(body["workflow_run_id"] == .string(runID))
        #expect(body[path: ["steps", "0", "status"]] == "skipped")
        #expect(body[path: ["steps", "1", "status"]] == "skipped")

        let events = try await worker.runEvents(runID)
        #expect(events.map { $0["event_type"]!.stringValue! } == [
            "WorkflowRun.Started", "WorkflowRun.StepUpdated", "WorkflowRun.StepUpdated", "WorkflowRun.StepUpdated", "WorkflowRun.Canceled",
        ])
        #expect(events.last?["data"] == body, "the Canceled event carries the run object the response had")
        let stored = try #require(try await worker.store.run(id: runID))
        #expect(stored.status == "canceled")
        #expect(try await worker.store.task(runID: runID) == nil, "nothing of the run is left for the engine")

        let again = try await worker.response(to: try await worker.request(cancel(runID), idempotencyKey: "cancel-1"))
        #expect(again[path: ["data", "response", "status"]] == 409, "the same key again is no replay: cancel has no Idempotency-Key semantics")
        #expect(again[path: ["data", "response", "body", "detail", "code"]] == "workflow_run_finished")
        #expect(again[path: ["data", "replayed"]] == false)
        try await worker.stop()
    }
}

/// Waits for the first run the input at `report` started.
func waitForRun(_ worker: WorkerHarness, startedBy report: KafkaDeliveryReport) async throws -> String {
    try await worker.outputs.waitUntil("a run started by \(report.topicPartition)@\(report.offset!)") { _ in !worker.runsStarted(by: report).isEmpty }
    return worker.runsStarted(by: report).first!
}
