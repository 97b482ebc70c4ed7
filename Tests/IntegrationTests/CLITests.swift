import Foundation
import Testing
import Workflows

/// `send` and `watch` as people use them, against a running worker: a summary line per
/// event by default, raw JSON with `--json`, and `watch --run` showing one run only.
@Suite("send and watch", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason), .serialized)
struct CLITests {
    typealias H = WorkerHarness

    @Test("send prints one summary line per event (response, steps with marks, the run's end); watch --run shows only that run; --json prints the raw events")
    func summaries() async throws {
        let suffix = TestBroker.uniqueName("cli")
        let environment = [
            "KAFKA_BROKERS": TestBroker.brokers!, "KAFKA_GROUP_ID": "group-\(suffix)", "TOPIC_PARTITIONS": "2",
            "VENDOR_EVENTS_TOPIC": "ve-\(suffix)", "TRIGGER_REQUESTS_TOPIC": "tr-\(suffix)", "RUN_STATUS_TOPIC": "rs-\(suffix)", "DLQ_TOPIC": "dl-\(suffix)",
            "WORKFLOWS_DIR": "\(H.fixtures)/workflows", "ORGS_FILE": "\(H.fixtures)/orgs.yaml",
            "STORE_URL": "sqlite://\(FileManager.default.temporaryDirectory.path)/\(suffix).sqlite",
            "RDKAFKA_MAX_POLL_INTERVAL_MS": "6000", "RDKAFKA_SESSION_TIMEOUT_MS": "6000", "LOG_FORMAT": "json", "HTTP_PORT": "0",
            "TRIGGER_WORKER_API_KEY": H.keyA,
        ]
        let worker = try WorkerProcess(arguments: ["run"], environment: environment)
        defer { worker.kill() }
        try await worker.waitForOutput("the group join", timeout: .seconds(60)) { lines in lines.contains { $0.contains("Joined the consumer group") } }

        // Two runs: the watch below must show the second one's events only.
        var runIDs: [String] = []
        for key in ["cli-1", "cli-2"] {
            let send = try WorkerProcess(arguments: ["send", "workflow-run", "--workflow", "early-stop", "--idempotency-key", key], environment: environment)
            defer { send.kill() }
            #expect(try await send.waitForExit(timeout: .seconds(60)) == 0, "\(send.output.suffix(10).joined(separator: "\n"))")
            let output = send.output
            let responded = try #require(output.first { $0.hasPrefix("TriggerRequest.Responded") }, "\(output)")
            #expect(responded.contains("  201  key=\(key)  run=cbwr_"), "\(responded)")
            let runID = try #require(responded.split(separator: " ").first { $0.hasPrefix("run=") }.map { String($0.dropFirst(4)) })
            runIDs.append(runID)
            // The run's end, with its steps and their marks: the first ended it, the second was skipped.
            #expect(output.contains("WorkflowRun.Canceled  \(runID)  early-stop  canceled  [✓ stop  – never]"), "\(output)")
            let eventLines = output.filter { $0.hasPrefix("WorkflowRun.") || $0.hasPrefix("TriggerRequest.") }
            #expect(eventLines.count >= 3 && !eventLines.contains { $0.contains("{\"") }, "no raw JSON events without --json: \(eventLines)")
        }

        let watch = try WorkerProcess(arguments: ["watch", "--from-beginning", "--run", runIDs[1]], environment: environment)
        defer { watch.kill() }
        try await watch.waitForOutput("the second run's end", timeout: .seconds(60)) { lines in lines.contains { $0.hasPrefix("WorkflowRun.Canceled") } }
        let watched = watch.output.filter { $0.hasPrefix("WorkflowRun.") || $0.hasPrefix("TriggerRequest.") }
        #expect(!watched.isEmpty && watched.allSatisfy { $0.contains(runIDs[1]) && !$0.contains(runIDs[0]) }, "\(watched)")
        #expect(watched.contains { $0.hasPrefix("TriggerRequest.Responded") }, "the response that started it")

        let raw = try WorkerProcess(arguments: ["watch", "--from-beginning", "--json", "--run", runIDs[0]], environment: environment)
        defer { raw.kill() }
        try await raw.waitForOutput("the first run's end", timeout: .seconds(60)) { lines in lines.contains { $0.hasPrefix("WorkflowRun.Canceled ") } }
        let events = raw.output.filter { $0.hasPrefix("WorkflowRun.") }
        for line in events {
            let json = try JSONValue.parse(Array(line.drop { $0 != " " }.dropFirst().utf8))
            #expect(json["data"]?["workflow_run_id"]?.stringValue == runIDs[0])
        }
        // Many at once: --count with a progress line, and a file of requests (one with headers of its own).
        let reader = try TestMember(group: "reader-\(suffix)", topics: ["rs-\(suffix)"])
        reader.start()
        defer { Task { await reader.stop() } }
        let many = try WorkerProcess(arguments: ["send", "workflow-run", "--workflow", "early-stop", "--count", "40", "--idempotency-key", "bulk"], environment: environment)
        defer { many.kill() }
        #expect(try await many.waitForExit(timeout: .seconds(60)) == 0, "\(many.output.suffix(5))")
        #expect(many.output.contains { $0.contains("sent 40/40") } && many.output.contains { $0.hasPrefix("sent 40 of 40 requests") }, "\(many.output.suffix(5))")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("\(suffix).ndjson").path
        try """
        {"request_type": "workflow_run", "workflow_name": "early-stop"}

        {"headers": {"Idempotency-Key": "from-file", "Request-Id": "file-req"}, "value": {"request_type": "workflow_run", "workflow_name": "early-stop"}}
        {"request_type": "workflow_run", "workflow_name": "nope"}
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let fromFile = try WorkerProcess(arguments: ["send", "requests", file], environment: environment)
        defer { fromFile.kill() }
        #expect(try await fromFile.waitForExit(timeout: .seconds(60)) == 0, "\(fromFile.output.suffix(5))")
        let keys: @Sendable () -> [String: Int] = {
            var statuses: [String: Int] = [:]
            for data in reader.responded() {
                guard let key = data[path: ["request", "idempotency_key"]]?.stringValue, let status = data[path: ["response", "status"]]?.intValue else { continue }
                statuses[key] = Int(status)
            }
            return statuses
        }
        try await reader.waitUntil("40 + 1 keyed answers", timeout: .seconds(60)) { _ in keys().count >= 41 }
        let answered = keys()
        #expect((1...40).allSatisfy { answered["bulk-\($0)"] == 201 }, "\(answered.keys.sorted().prefix(5))")
        #expect(answered["from-file"] == 201)
        try await reader.waitUntil("the file's two keyless answers", timeout: .seconds(30)) { _ in reader.responded().count >= 2 + 41 + 2 }

        // What send published is what trigger-request.schema.json describes, headers included.
        let published = try TestMember(group: "requests-\(suffix)", topics: ["tr-\(suffix)"])
        published.start()
        defer { Task { await published.stop() } }
        try await published.waitUntil("every request send published", timeout: .seconds(30)) { $0.received.count >= 2 + 40 + 3 }
        await SchemaCheck.checkRequests(published.snapshot.received)

        worker.interrupt()
        #expect(try await worker.waitForExit(timeout: .seconds(15)) == 0)
    }
}
