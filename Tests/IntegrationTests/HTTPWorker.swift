import Foundation

/// A `trigger-worker run` on fresh topics and a fresh SQLite store of the test run's
/// broker, serving HTTP on a free port, and ready (`/readyz` is 200).
struct HTTPWorker {
    let process: WorkerProcess
    let port: Int
    /// Its topics by variable: `TRIGGER_REQUESTS_TOPIC`, `RUN_STATUS_TOPIC`, …
    let topics: [String: String]
    let suffix: String

    static func start(_ prefix: String) async throws -> HTTPWorker {
        let suffix = TestBroker.uniqueName(prefix)
        let topics = ["VENDOR_EVENTS_TOPIC": "ve-\(suffix)", "TRIGGER_REQUESTS_TOPIC": "tr-\(suffix)", "RUN_STATUS_TOPIC": "rs-\(suffix)", "DLQ_TOPIC": "dl-\(suffix)"]
        let port = try OwnBroker.freePort()
        let process = try WorkerProcess(arguments: ["run"], environment: topics.merging([
            "KAFKA_BROKERS": TestBroker.brokers!, "KAFKA_GROUP_ID": "group-\(suffix)", "TOPIC_PARTITIONS": "2",
            "WORKFLOWS_DIR": "\(WorkerHarness.fixtures)/workflows", "ORGS_FILE": "\(WorkerHarness.fixtures)/orgs.yaml",
            "STORE_URL": "sqlite://\(FileManager.default.temporaryDirectory.path)/\(suffix).sqlite",
            "RDKAFKA_MAX_POLL_INTERVAL_MS": "6000", "RDKAFKA_SESSION_TIMEOUT_MS": "6000", "LOG_FORMAT": "json", "HTTP_PORT": "\(port)",
        ]) { $1 })
        do {
            try await OperationsTests.waitFor("ready", port: port, "/readyz", timeout: .seconds(60)) { status, _ in status == 200 }
        } catch {
            process.kill()
            throw error
        }
        return HTTPWorker(process: process, port: port, topics: topics, suffix: suffix)
    }
}
