import Foundation
import Kafka
import Testing
import Workflows

/// The HTTP API's writes over real HTTP against a running worker (contract §8): one
/// decision path with Kafka (a key used over HTTP then Kafka, and the reverse, answers
/// the original body and starts one run), the §4 rows, no `TriggerRequest.Responded`
/// for an HTTP request but its run's events, an assessment, and cancel.
@Suite("The HTTP API's writes", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason), .serialized)
struct HTTPWriteTests {
    typealias H = WorkerHarness
    typealias O = OperationsTests

    static func bytes(_ value: JSONValue) -> [UInt8] { value.canonicalBytes }

    @Test("HTTP then Kafka and Kafka then HTTP with one key: one run, the original body; the §4 rows; run events without a Responded; an assessment; cancel 200/404/409")
    func writes() async throws {
        let http = try await HTTPWorker.start("apiw")
        let (worker, port, topics, suffix) = (http.process, http.port, http.topics, http.suffix)
        defer { worker.kill() }
        let reader = try http.statusReader()
        defer { Task { await reader.stop() } }
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        func kafka(_ value: JSONValue, key: String) async throws {
            _ = try await client.send(KafkaProducerMessage(
                topic: topics["TRIGGER_REQUESTS_TOPIC"]!, key: Array(key.utf8), value: value.canonicalBytes,
                headers: [KafkaHeader(key: "Authorization", value: "Bearer \(H.keyA)"), KafkaHeader(key: "Idempotency-Key", value: key)]
            ))
        }
        let keyA = ["Authorization": "Bearer \(H.keyA)"]
        let run: [UInt8] = Self.bytes(["input": ["n": 1]])

        // HTTP first, then Kafka with the same key: the original body, replayed, one run.
        let first = try await O.post(port, "/v1/workflows/early-stop/run", body: run, headers: keyA.merging(["Idempotency-Key": "one", "Request-Id": "req-1"]) { $1 })
        #expect(first.status == 201, "\(first.body)")
        #expect(first.headers["request-id"] == "req-1" && first.headers["idempotent-replayed"] == nil)
        let firstBody = try HTTPWorker.json(first.body)
        let runID = try #require(firstBody["workflow_run_id"]?.stringValue)
        #expect(firstBody["status"] == "started" && firstBody["input"] == ["n": 1])
        try await kafka(H.workflowRun("early-stop", input: ["n": 1]), key: "one")
        try await reader.waitUntil("Kafka's answer to key one") { _ in !reader.responded(key: "one").isEmpty }
        let overKafka = try #require(reader.responded(key: "one").first)
        #expect(overKafka[path: ["response", "status"]] == 201 && overKafka["replayed"] == true)
        #expect(overKafka[path: ["response", "body"]] == firstBody, "the body HTTP answered")
        let again = try await O.post(port, "/v1/workflows/early-stop/run", body: run, headers: keyA.merging(["Idempotency-Key": "one"]) { $1 })
        #expect(again.status == 201 && again.body == first.body && again.headers["idempotent-replayed"] == "true")
        let changed = try await O.post(port, "/v1/workflows/early-stop/run", body: Self.bytes(["input": ["n": 2]]), headers: keyA.merging(["Idempotency-Key": "one"]) { $1 })
        #expect(changed.body == first.body && changed.headers["idempotency-fingerprint-mismatch"] == "true", "another body: the original answer, flagged")

        // Kafka first, then HTTP.
        try await kafka(H.workflowRun("early-stop", input: ["n": 3]), key: "two")
        try await reader.waitUntil("Kafka's answer to key two") { _ in !reader.responded(key: "two").isEmpty }
        let kafkaBody = try #require(reader.responded(key: "two").first?[path: ["response", "body"]])
        let overHTTP = try await O.post(port, "/v1/workflows/early-stop/run", body: Self.bytes(["input": ["n": 3]]), headers: keyA.merging(["Idempotency-Key": "two"]) { $1 })
        #expect(overHTTP.status == 201 && overHTTP.headers["idempotent-replayed"] == "true")
        try #expect(try HTTPWorker.json(overHTTP.body) == kafkaBody)
        try await O.waitFor("two early-stop runs, not four", port: port, "/v1/workflows/runs?workflow_name=early-stop&status=canceled", headers: keyA, timeout: .seconds(30)) { _, body in
            (try? HTTPWorker.json(body))?["total"] == 2
        }

        // The HTTP run's events are published, its trigger says HTTP; no Responded for HTTP requests.
        try await reader.waitUntil("the HTTP run's end") { _ in
            reader.snapshot.received.contains { (try? JSONValue.parse($0.value ?? []))?[path: ["data", "workflow_run_id"]] == .string(runID) && (try? JSONValue.parse($0.value ?? []))?["event_type"] == "WorkflowRun.Canceled" }
        }
        let started = reader.snapshot.received.compactMap { try? JSONValue.parse($0.value ?? []) }.first { $0["event_type"] == "WorkflowRun.Started" && $0[path: ["data", "workflow_run_id"]] == .string(runID) }
        #expect(started?[path: ["data", "trigger", "source"]] == ["http": "POST /v1/workflows/early-stop/run"])
        #expect(started?[path: ["data", "trigger", "request_id"]] == "req-1")
        #expect(reader.responded(key: "one").count == 1, "only Kafka's request was answered on the topic")

        // The §4 rows over HTTP.
        let noKey = try await O.post(port, "/v1/workflows/early-stop/run", body: run)
        try #expect(noKey.status == 401 && (try HTTPWorker.json(noKey.body)) == ["detail": ["code": "unauthorized", "message": "Invalid or expired API key."]])
        let unknown = try await O.post(port, "/v1/workflows/nope/run", body: run, headers: keyA)
        try #expect(unknown.status == 404 && (try HTTPWorker.json(unknown.body))[path: ["detail", "code"]] == "workflow_not_found")
        let disabled = try await O.post(port, "/v1/workflows/paused-flow/run", body: run, headers: keyA)
        try #expect(disabled.status == 409 && (try HTTPWorker.json(disabled.body))[path: ["detail", "code"]] == "workflow_disabled")
        let invalid = try await O.post(port, "/v1/workflows/early-stop/run", body: Self.bytes(["input": 5]), headers: keyA)
        try #expect(invalid.status == 422 && (try HTTPWorker.json(invalid.body))["detail"]?.arrayValue?.first?["loc"] == ["body", "input"], "\(invalid.body)")
        let notJSON = try await O.post(port, "/v1/workflows/early-stop/run", body: Array("{oops".utf8), headers: keyA)
        try #expect(notJSON.status == 400 && (try HTTPWorker.json(notJSON.body))[path: ["detail", "code"]] == "invalid_request")
        let tooLarge = try await O.post(port, "/v1/workflows/early-stop/run", body: Array(repeating: UInt8(ascii: " "), count: 1_048_577) + run, headers: keyA)
        try #expect(tooLarge.status == 413 && (try HTTPWorker.json(tooLarge.body))[path: ["detail", "code"]] == "payload_too_large")
        let badKey = try await O.post(port, "/v1/workflows/early-stop/run", body: run, headers: keyA.merging(["Idempotency-Key": String(repeating: "k", count: 256)]) { $1 })
        #expect(badKey.status == 422)
        let smuggled = try await O.post(port, "/v1/assessments", body: Array(#"{},"request_type":"workflow_run","workflow_name":"early-stop""#.utf8), headers: keyA)
        #expect(smuggled.status == 400, "a body cannot reach the request's other fields: \(smuggled.body)")
        let escaped = try await O.post(port, "/v1/workflows/early%2Dstop/run", body: run, headers: keyA)
        #expect(escaped.status == 201, "path parameters are percent-decoded: \(escaped.body)")
        let garbage = try await O.post(port, "/v1/workflows/runs/not-a-run/cancel", body: [], headers: keyA)
        try #expect(garbage.status == 404 && HTTPWorker.json(garbage.body)[path: ["detail", "code"]] == "workflow_run_not_found")
        #expect(try await O.post(port, "/v1/workflows/runs/not-a-run/cancel", body: []).status == 401, "the key first")

        // An assessment over HTTP (its vendor known from an event), then its run read back.
        let vendorID = try await http.addVendor(client: client, reader: reader)
        let create = Self.bytes(["vendor_id": .string(vendorID), "control_set_ids": []])
        let assessment = try await O.post(port, "/v1/assessments", body: create, headers: keyA.merging(["Idempotency-Key": "assess-http"]) { $1 })
        #expect(assessment.status == 201, "\(assessment.body)")
        let assessmentID = try #require(try HTTPWorker.json(assessment.body)["id"]?.stringValue)
        #expect(try await O.get(port, "/v1/assessments/\(assessmentID)", headers: keyA).body == assessment.body)

        // Cancel over HTTP: a waiting run (long-delay) → 200; again → 409; another org → 404.
        let waiting = try await O.post(port, "/v1/workflows/long-delay/run", body: Array("{}".utf8), headers: keyA.merging(["Idempotency-Key": "wait-1"]) { $1 })
        let waitingID = try #require(try HTTPWorker.json(waiting.body)["workflow_run_id"]?.stringValue)
        let otherOrg = try await O.post(port, "/v1/workflows/runs/\(waitingID)/cancel", body: [], headers: ["Authorization": "Bearer \(H.keyB)"])
        try #expect(otherOrg.status == 404 && (try HTTPWorker.json(otherOrg.body))[path: ["detail", "code"]] == "workflow_run_not_found")
        let canceled = try await O.post(port, "/v1/workflows/runs/\(waitingID)/cancel", body: [], headers: keyA)
        try #expect(canceled.status == 200 && (try HTTPWorker.json(canceled.body))["status"] == "canceled", "\(canceled.body)")
        let twice = try await O.post(port, "/v1/workflows/runs/\(waitingID)/cancel", body: [], headers: keyA)
        try #expect(twice.status == 409 && (try HTTPWorker.json(twice.body))[path: ["detail", "code"]] == "workflow_run_finished")

        try await client.shutdown()
        worker.interrupt()
        #expect(try await worker.waitForExit(timeout: .seconds(15)) == 0)
    }

    /// A connection that sent a write's head and holds its body back: the worker answers
    /// it only once the body comes, so it holds one of the API's in-flight places.
    static func heldWrite(port: Int) throws -> Int32 {
        guard let socket = OwnBroker.connected(to: port) else { throw TimedOut(what: "a connection to the worker's HTTP port") }
        let head = "POST /v1/assessments HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(H.keyA)\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        guard Array(head.utf8).withUnsafeBytes({ send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == head.utf8.count else {
            close(socket)
            throw TimedOut(what: "the head of a write sent to the worker's HTTP port")
        }
        return socket
    }

    @Test("more requests than the API takes at once: 429 with Retry-After and the Request-Id echoed, and answers again once they end")
    func busy() async throws {
        let http = try await HTTPWorker.start("apib")
        defer { http.process.kill() }
        let keyA = ["Authorization": "Bearer \(H.keyA)"]
        // As many writes as the API answers at once, each waiting for its body.
        var held: [Int32] = []
        defer { for socket in held { close(socket) } }
        for _ in 0..<32 { held.append(try Self.heldWrite(port: http.port)) }
        // The worker takes their heads in its own time: asked until the limit answers. A
        // held write that came while a probe held a place was refused and holds none: one
        // more is held after each probe answered, so the places fill whatever the order.
        let ask = keyA.merging(["Request-Id": "busy-1"]) { $1 }
        var answer = try await O.get(http.port, "/v1/workflows/runs", headers: ask)
        let deadline = ContinuousClock.now + .seconds(30)
        while answer.status != 429, ContinuousClock.now < deadline {
            if held.count < 64 { held.append(try Self.heldWrite(port: http.port)) }
            try await Task.sleep(for: .milliseconds(50))
            answer = try await O.get(http.port, "/v1/workflows/runs", headers: ask)
        }
        #expect(answer.status == 429, "\(answer.status) \(answer.body)")
        #expect(answer.headers["request-id"] == "busy-1" && answer.headers["retry-after"] == "1")
        #expect(try HTTPWorker.json(answer.body)[path: ["detail", "code"]] == "too_many_requests", "\(answer.body)")
        // A write over the limit too (its body is not read).
        let write = try await O.post(http.port, "/v1/assessments", body: Array(#"{"vendor_id":"x"}"#.utf8), headers: keyA.merging(["Request-Id": "busy-2"]) { $1 })
        #expect(write.status == 429 && write.headers["request-id"] == "busy-2" && write.headers["retry-after"] == "1", "\(write.status) \(write.headers)")
        let invalid = try await O.get(http.port, "/v1/workflows/runs", headers: keyA.merging(["Request-Id": String(repeating: "x", count: 256)]) { $1 })
        #expect(invalid.status == 429 && invalid.headers["request-id"] == nil, "an invalid Request-Id is not echoed")
        // The held requests end (their connections close): the API answers again.
        for socket in held { close(socket) }
        held = []
        try await O.waitFor("the API answering again", port: http.port, "/v1/workflows/runs", headers: keyA, timeout: .seconds(30)) { status, _ in status == 200 }
    }
}
