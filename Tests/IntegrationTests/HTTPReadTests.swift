import Foundation
import Kafka
import Testing
import Workflows

/// The HTTP API's reads over real HTTP against a running worker (contract §8 with
/// api-facts.md): a run, an org's runs with filters and paging, an assessment; Bearer
/// keys, org isolation (another org's id answers exactly what an unknown id answers),
/// the 401 and 422 bodies, and the `Request-Id` echoed.
@Suite("The HTTP API's reads", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason), .serialized)
struct HTTPReadTests {
    typealias H = WorkerHarness
    typealias O = OperationsTests

    static let keyA = ["Authorization": "Bearer \(H.keyA)"]
    static let keyB = ["Authorization": "Bearer \(H.keyB)"]


    @Test("250 runs paged 100 at a time, newest first, filtered by name and status; a run and an assessment by id; 401, 404 across orgs, 422; 404 not_found for what no route takes")
    func reads() async throws {
        let http = try await HTTPWorker.start("api")
        let (worker, port, topics, suffix) = (http.process, http.port, http.topics, http.suffix)
        defer { worker.kill() }
        let reader = try http.statusReader()
        defer { Task { await reader.stop() } }

        // 250 runs of early-stop (each ends canceled at once) and 3 of long-delay (waiting an hour), org A.
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        func request(_ value: JSONValue, key: String) -> KafkaProducerMessage {
            KafkaProducerMessage(
                topic: topics["TRIGGER_REQUESTS_TOPIC"]!, key: Array(key.utf8), value: value.canonicalBytes,
                headers: [KafkaHeader(key: "Authorization", value: "Bearer \(H.keyA)"), KafkaHeader(key: "Idempotency-Key", value: key)]
            )
        }
        let requests = (0..<250).map { request(H.workflowRun("early-stop", input: ["n": .int(Int64($0))]), key: "stop-\($0)") }
            + (0..<3).map { request(H.workflowRun("long-delay"), key: "delay-\($0)") }
        for result in await client.send(requests) { _ = try result.get() }
        try await O.waitFor("253 runs listed", port: port, "/v1/workflows/runs?limit=1", headers: Self.keyA, timeout: .seconds(60)) { status, body in
            status == 200 && (try? HTTPWorker.json(body))?["total"] == 253
        }

        // Paging: three pages of at most 100, 250 distinct early-stop runs, newest first.
        var ids: [String] = []
        var starts: [Int64] = []
        for offset in [0, 100, 200] {
            let page = try await O.get(port, "/v1/workflows/runs?workflow_name=early-stop&limit=100&offset=\(offset)", headers: Self.keyA)
            #expect(page.status == 200)
            let body = try HTTPWorker.json(page.body)
            #expect(body["total"] == 250 && body["limit"] == 100 && body["offset"] == .int(Int64(offset)))
            let items = try #require(body["items"]?.arrayValue)
            #expect(items.count == (offset == 200 ? 50 : 100))
            for item in items {
                ids.append(try #require(item["workflow_run_id"]?.stringValue))
                #expect(item["workflow_name"] == "early-stop")
                starts.append(try #require(item["started_at"]?.intValue))
            }
        }
        #expect(Set(ids).count == 250)
        #expect(starts.count == 250 && zip(starts, starts.dropFirst()).allSatisfy { $0 >= $1 }, "newest first")
        let beyond = try HTTPWorker.json(try await O.get(port, "/v1/workflows/runs?offset=300", headers: Self.keyA).body)
        #expect(beyond["items"] == [] && beyond["total"] == 253)

        // Filters: status (repeated), name, time bounds.
        try await O.waitFor("the early-stop runs ended", port: port, "/v1/workflows/runs?status=canceled&limit=1", headers: Self.keyA, timeout: .seconds(30)) { _, body in
            (try? HTTPWorker.json(body))?["total"] == 250
        }
        let delays = try HTTPWorker.json(try await O.get(port, "/v1/workflows/runs?workflow_name=long-delay&status=started&status=waiting", headers: Self.keyA).body)
        #expect(delays["total"] == 3, "\(delays)")
        let future = try HTTPWorker.json(try await O.get(port, "/v1/workflows/runs?created_at_after=2999-01-01T00:00:00Z", headers: Self.keyA).body)
        #expect(future["total"] == 0)
        let past = try HTTPWorker.json(try await O.get(port, "/v1/workflows/runs?created_at_before=2999-01-01&created_at_after=2000-01-01T00:00:00%2B02:00", headers: Self.keyA).body)
        #expect(past["total"] == 253)
        let epoch = try HTTPWorker.json(try await O.get(port, "/v1/workflows/runs?created_at_after=946684800&created_at_before=2999-01-01T00:00:00", headers: Self.keyA).body)
        #expect(epoch["total"] == 253, "epoch seconds, and a date-time without a zone (UTC)")

        // One run by id: the list's item; another org's key gets what an unknown id gets.
        let one = try await O.get(port, "/v1/workflows/runs/\(ids[0])", headers: Self.keyA.merging(["Request-Id": "req-42"]) { $1 })
        #expect(one.status == 200 && one.headers["request-id"] == "req-42")
        #expect(try HTTPWorker.json(one.body)["workflow_run_id"] == .string(ids[0]))
        #expect(try HTTPWorker.json(one.body)["status"] == "canceled")
        let otherOrg = try await O.get(port, "/v1/workflows/runs/\(ids[0])", headers: Self.keyB)
        let unknown = try await O.get(port, "/v1/workflows/runs/cbwr_00000000000000000000000000000000", headers: Self.keyB)
        #expect(otherOrg.status == 404 && unknown.status == 404)
        #expect(try HTTPWorker.json(otherOrg.body) == ["detail": ["code": "workflow_run_not_found", "message": .string("Workflow run '\(ids[0])' not found.")]])
        #expect(try HTTPWorker.json(unknown.body)["detail"]?["code"] == "workflow_run_not_found")
        let listB = try HTTPWorker.json(try await O.get(port, "/v1/workflows/runs", headers: Self.keyB).body)
        #expect(listB["total"] == 0 && listB["items"] == [], "org B sees none of org A's runs")

        // Keys: none, wrong, another scheme.
        for headers in [[:], ["Authorization": "Bearer ak_test_wrong"], ["Authorization": "Basic \(H.keyA)"]] {
            let denied = try await O.get(port, "/v1/workflows/runs", headers: headers)
            #expect(denied.status == 401)
            #expect(try HTTPWorker.json(denied.body) == ["detail": ["code": "unauthorized", "message": "Invalid or expired API key."]])
        }

        // 422 in FastAPI's list form, every bad parameter at once.
        let invalid = try await O.get(port, "/v1/workflows/runs?limit=0&offset=-1&status=done&created_at_after=yesterday", headers: Self.keyA)
        #expect(invalid.status == 422)
        let details = try #require(try HTTPWorker.json(invalid.body)["detail"]?.arrayValue)
        #expect(Set(details.compactMap { $0["loc"]?.arrayValue?.last?.stringValue }) == ["limit", "offset", "status", "created_at_after"])
        #expect(details.allSatisfy { $0["loc"]?.arrayValue?.first == "query" && $0["msg"]?.stringValue != nil && $0["type"]?.stringValue != nil })
        #expect(try await O.get(port, "/v1/workflows/runs?limit=501", headers: Self.keyA).status == 422)
        #expect(try await O.get(port, "/v1/workflows/runs?limit=500", headers: Self.keyA).status == 200)
        let longID = try await O.get(port, "/v1/workflows/runs?limit=1", headers: Self.keyA.merging(["Request-Id": String(repeating: "r", count: 256)]) { $1 })
        #expect(longID.status == 400 && longID.headers["request-id"] == nil)
        // A workflow named `runs` is a workflow's path, not a run's.
        let runsWorkflow = try await O.post(port, "/v1/workflows/runs/run", body: Array("{}".utf8), headers: Self.keyA)
        let runsCode = try HTTPWorker.json(runsWorkflow.body)["detail"]?["code"]
        #expect(runsWorkflow.status == 404 && runsCode == "workflow_not_found", "\(runsWorkflow.body)")
        // What no route takes: 404 in the error envelope, the path not echoed, the Request-Id echoed.
        for (method, path) in [("GET", "/v1/nowhere/<script>"), ("GET", "/v1/assessments"), ("DELETE", "/v1/workflows/runs"), ("GET", "/nowhere")] {
            let lost = try await O.get(port, path.replacingOccurrences(of: "<", with: "%3C").replacingOccurrences(of: ">", with: "%3E"), headers: Self.keyA.merging(["Request-Id": "req-lost"]) { $1 }, method: method)
            #expect(lost.status == 404 && lost.headers["content-type"] == "application/json", "\(method) \(path): \(lost.status)")
            #expect(lost.headers["request-id"] == "req-lost", "\(method) \(path): the Request-Id echoed")
            #expect(try HTTPWorker.json(lost.body)["detail"]?["code"] == "not_found" && !lost.body.contains("script"), "\(lost.body)")
        }

        // An assessment created over Kafka, read over HTTP; another org's key gets 404.
        let vendorID = try await http.addVendor(client: client, reader: reader)
        _ = try await client.send(request(H.assessmentCreate(["vendor_id": .string(vendorID), "control_set_ids": []]), key: "assess-1"))
        try await reader.waitUntil("the answer to assess-1") { _ in !reader.responded(key: "assess-1").isEmpty }
        let answer = try #require(reader.responded(key: "assess-1").first?["response"])
        #expect(answer["status"] == 201, "\(answer)")
        let assessment = answer["body"]
        try await client.shutdown()
        let assessmentID = try #require(assessment?["id"]?.stringValue)
        let read = try await O.get(port, "/v1/assessments/\(assessmentID)", headers: Self.keyA)
        #expect(read.status == 200)
        #expect(try HTTPWorker.json(read.body) == assessment, "the body the request was answered with")
        let hidden = try await O.get(port, "/v1/assessments/\(assessmentID)", headers: Self.keyB)
        #expect(hidden.status == 404)
        #expect(try HTTPWorker.json(hidden.body)["detail"]?["code"] == "assessment_not_found")

        worker.interrupt()
        #expect(try await worker.waitForExit(timeout: .seconds(15)) == 0)
    }
}
