import Foundation
import Kafka
import Testing
import Workflows

/// A `trigger-worker run` on fresh topics and a fresh SQLite store of the test run's
/// broker, serving HTTP on a free port, and ready (`/readyz` is 200).
struct HTTPWorker {
    let process: WorkerProcess
    let port: Int
    /// Its topics by variable: `TRIGGER_REQUESTS_TOPIC`, `RUN_STATUS_TOPIC`, …
    let topics: [String: String]
    let suffix: String

    /// - Parameter extra: more environment variables for the worker (they win).
    static func start(_ prefix: String, environment extra: [String: String] = [:]) async throws -> HTTPWorker {
        let suffix = TestBroker.uniqueName(prefix)
        let topics = ["VENDOR_EVENTS_TOPIC": "ve-\(suffix)", "TRIGGER_REQUESTS_TOPIC": "tr-\(suffix)", "RUN_STATUS_TOPIC": "rs-\(suffix)", "DLQ_TOPIC": "dl-\(suffix)"]
        let port = try OwnBroker.freePort()
        let process = try WorkerProcess(arguments: ["run"], environment: topics.merging([
            "KAFKA_BROKERS": TestBroker.brokers!, "KAFKA_GROUP_ID": "group-\(suffix)", "TOPIC_PARTITIONS": "2",
            "WORKFLOWS_DIR": "\(WorkerHarness.fixtures)/workflows", "ORGS_FILE": "\(WorkerHarness.fixtures)/orgs.yaml",
            "STORE_URL": "sqlite://\(FileManager.default.temporaryDirectory.path)/\(suffix).sqlite",
            "RDKAFKA_MAX_POLL_INTERVAL_MS": "6000", "RDKAFKA_SESSION_TIMEOUT_MS": "6000", "LOG_FORMAT": "json", "HTTP_PORT": "\(port)",
        ]) { $1 }.merging(extra) { $1 })
        do {
            try await OperationsTests.waitFor("ready", port: port, "/readyz", timeout: .seconds(60)) { status, _ in status == 200 }
        } catch {
            process.kill()
            throw error
        }
        return HTTPWorker(process: process, port: port, topics: topics, suffix: suffix)
    }
}

extension HTTPWorker {
    /// A reader of the worker's status topic, started.
    func statusReader() throws -> TestMember {
        let reader = try TestMember(group: "reader-\(suffix)", topics: [topics["RUN_STATUS_TOPIC"]!])
        reader.start()
        return reader
    }

    /// An HTTP answer's body as JSON.
    static func json(_ text: String) throws -> JSONValue { try JSONValue.parse(Array(text.utf8)) }

    /// Publishes a `Vendor.Created` of org A and returns its vendor id once the worker
    /// has handled it: the vendor enters the directory in the batch that starts its
    /// onboarding run, which `reader` (on the status topic) sees.
    func addVendor(client: KafkaProducer, reader: TestMember) async throws -> String {
        let vendor = WorkerHarness.vendor()
        let vendorID = try #require(vendor["id"]?.stringValue)
        let eventID = JSONValue.string(Identifier.derive(prefix: "cbevt", from: [suffix, vendorID]))
        let event: JSONValue = [
            "event_id": eventID, "event_type": "Vendor.Created", "occurred_at": .int(Int64(Date().timeIntervalSince1970)),
            "org_id": .string(WorkerHarness.orgA), "data": ["vendor": vendor],
        ]
        _ = try await client.send(KafkaProducerMessage(topic: topics["VENDOR_EVENTS_TOPIC"]!, key: Array(vendorID.utf8), value: event.canonicalBytes, headers: []))
        try await reader.waitUntil("the vendor's onboarding run") { state in
            state.received.contains { (try? JSONValue.parse($0.value ?? []))?[path: ["data", "trigger", "event_id"]] == eventID }
        }
        return vendorID
    }
}

extension TestMember {
    /// The `data` of each `TriggerRequest.Responded` received for the `Idempotency-Key`
    /// `key` (every one when `nil`), in order.
    func responded(key: String? = nil) -> [JSONValue] {
        snapshot.received.compactMap { message -> JSONValue? in
            guard let json = try? JSONValue.parse(message.value ?? []), json["event_type"] == "TriggerRequest.Responded",
                  key == nil || json[path: ["data", "request", "idempotency_key"]] == key.map(JSONValue.string)
            else { return nil }
            return json["data"]
        }
    }
}
