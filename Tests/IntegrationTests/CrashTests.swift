import Foundation
import Kafka
import Store
import Testing
import Workflows

@Suite("Crash safety", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason), .serialized)
struct CrashTests {
    typealias H = WorkerHarness

    @Test("SIGKILL in the middle of thousands of requests, then a restart: one run per key, one response per request, stable event ids")
    func killAndRestart() async throws {
        let suffix = TestBroker.uniqueName("crash")
        let topics = ["VENDOR_EVENTS_TOPIC": "ve-\(suffix)", "TRIGGER_REQUESTS_TOPIC": "tr-\(suffix)", "RUN_STATUS_TOPIC": "rs-\(suffix)", "DLQ_TOPIC": "dl-\(suffix)"]
        let storePath = FileManager.default.temporaryDirectory.appendingPathComponent("\(suffix).sqlite").path
        let environment = topics.merging([
            "KAFKA_BROKERS": TestBroker.brokers!, "KAFKA_GROUP_ID": "group-\(suffix)", "TOPIC_PARTITIONS": "3",
            "WORKFLOWS_DIR": "\(H.fixtures)/workflows", "ORGS_FILE": "\(H.fixtures)/orgs.yaml", "STORE_URL": "sqlite://\(storePath)",
            "RDKAFKA_MAX_POLL_INTERVAL_MS": "6000", "RDKAFKA_SESSION_TIMEOUT_MS": "6000", "LOG_LEVEL": "warning", "HTTP_PORT": "0",
        ]) { $1 }
        let requestTopic = topics["TRIGGER_REQUESTS_TOPIC"]!
        let statusTopic = topics["RUN_STATUS_TOPIC"]!
        _ = try await KafkaAdmin.createTopics(topics.values.map { KafkaTopicSpecification(name: $0, partitions: 3) }, configuration: TestBroker.common, logger: TestBroker.logger)

        // 2,000 distinct keys, 500 replays of some of them, 500 requests without a key.
        var requests: [KafkaProducerMessage] = []
        for index in 0..<3000 {
            let key: String? = index < 2000 ? "key-\(index)" : (index < 2500 ? "key-\(index % 400)" : nil)
            var headers = [KafkaHeader(key: "Authorization", value: "Bearer \(H.keyA)")]
            if let key { headers.append(KafkaHeader(key: "Idempotency-Key", value: key)) }
            let value = H.workflowRun("quarterly-privacy-sweep", input: ["n": .int(Int64(index % 2500 < 2000 ? index % 2500 : index % 400))])
            requests.append(KafkaProducerMessage(topic: requestTopic, key: Array((key ?? "none-\(index)").utf8), value: value.canonicalBytes, headers: headers))
        }
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        let reader = try TestMember(group: "reader-\(suffix)", topics: [statusTopic])
        reader.start()

        // Everything is published first; SIGKILL comes as soon as the first outputs appear.
        for result in await client.send(requests) { _ = try result.get() }
        let first = try WorkerProcess(arguments: ["run"], environment: environment)
        try await reader.waitUntil("the first outputs", timeout: .seconds(60)) { !$0.received.isEmpty }
        first.crash()
        _ = try await first.waitForExit(timeout: .seconds(10))
        let seenBeforeCrash = reader.snapshot.received.count

        // A restart on the same store finishes the work.
        let second = try WorkerProcess(arguments: ["run"], environment: environment)
        try await reader.waitUntil("a response to each of the 3,000 requests", timeout: .seconds(120)) { state in
            Set(state.received.compactMap(Self.respondedSource)).count == 3000
        }
        second.interrupt()
        #expect(try await second.waitForExit(timeout: .seconds(10)) == 0)
        // The broker may report an end offset short of the log's (Tansu does): the
        // restart must not take that for a reset log and handle keyless requests twice.
        #expect(!second.output.contains { $0.contains("log was reset") }, "a restart on the same log is not a reset")
        await reader.stop()
        try await client.shutdown()

        let events = reader.snapshot.received.compactMap { try? JSONValue.parse($0.value ?? []) }
        // One response per request: one distinct event_id per source, whatever was re-published.
        let responses = events.filter { $0["event_type"] == "TriggerRequest.Responded" }
        let idsBySource = Dictionary(grouping: responses) { $0[path: ["data", "request", "source"]]!.canonicalString }.mapValues { Set($0.map { $0["event_id"]! }) }
        #expect(idsBySource.count == 3000)
        #expect(idsBySource.values.allSatisfy { $0.count == 1 }, "a re-published response must carry the same event_id")
        #expect(responses.allSatisfy { $0[path: ["data", "response", "status"]] == 201 })

        // One run per key: every response to one key names the same run.
        let runsByKey = Dictionary(grouping: responses.filter { $0[path: ["data", "request", "idempotency_key"]] != .null }) {
            $0[path: ["data", "request", "idempotency_key"]]!.stringValue!
        }.mapValues { Set($0.compactMap { $0[path: ["data", "response", "body", "workflow_run_id"]] }) }
        #expect(runsByKey.count == 2000)
        #expect(runsByKey.values.allSatisfy { $0.count == 1 }, "a key started more than one run")

        // Each run was started once, with one Started event id, and stored once.
        let started = events.filter { $0["event_type"] == "WorkflowRun.Started" }
        let startedIDs = Dictionary(grouping: started) { $0[path: ["data", "workflow_run_id"]]!.stringValue! }.mapValues { Set($0.map { $0["event_id"]! }) }
        #expect(startedIDs.count == 2500, "2,000 keys and 500 keyless requests")
        #expect(startedIDs.values.allSatisfy { $0.count == 1 })
        let store = try SQLiteStore(path: storePath)
        #expect(try await store.runs(statuses: [], limit: 500, offset: 2499).count == 1, "2,500 runs in the store")
        #expect(try await store.runs(statuses: [], limit: 500, offset: 2500).isEmpty, "and no more")
        #expect(try await store.pendingOutbox(limit: 1).isEmpty, "everything was published")
        print("crash test: \(seenBeforeCrash) status events before SIGKILL; \(events.count) in all, \(events.count - Set(events.map { $0["event_id"]! }).count) re-published")
    }

    static func respondedSource(_ message: KafkaMessage) -> String? {
        guard let event = try? JSONValue.parse(message.value ?? []), event["event_type"] == "TriggerRequest.Responded" else { return nil }
        return event[path: ["data", "request", "source"]]?.canonicalString
    }
}
