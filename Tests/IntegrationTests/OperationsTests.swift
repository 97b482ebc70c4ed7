import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Kafka
import Synchronization
import Testing
import Workflows

/// The operations surface of a running worker over real HTTP (contract §8): health,
/// readiness that follows the broker, and Prometheus metrics that move.
@Suite("The HTTP operations surface", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason), .serialized)
struct OperationsTests {
    typealias H = WorkerHarness

    /// A POST on the worker: status, body and response headers.
    static func post(_ port: Int, _ path: String, body: [UInt8], headers: [String: String] = [:]) async throws -> (status: Int, body: String, headers: [String: String]) {
        try await get(port, path, headers: headers, method: "POST", body: body)
    }

    /// A GET on the worker: status, body and response headers.
    static func get(_ port: Int, _ path: String, headers: [String: String] = [:], method: String = "GET", body: [UInt8]? = nil) async throws -> (status: Int, body: String, headers: [String: String]) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.timeoutInterval = 10
        request.httpMethod = method
        if let body { request.httpBody = Data(body) }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        // A connection of its own each time: a kept-alive one may be stale after the
        // worker's broker went away and came back.
        request.setValue("close", forHTTPHeaderField: "Connection")
        let session = URLSession(configuration: .ephemeral)
        defer { session.finishTasksAndInvalidate() }
        let (data, response) = try await session.data(for: request)
        let http = response as? HTTPURLResponse
        var fields: [String: String] = [:]
        for (name, value) in http?.allHeaderFields ?? [:] { fields[String(describing: name).lowercased()] = String(describing: value) }
        let answer = (status: http?.statusCode ?? 0, body: String(decoding: data, as: UTF8.self), headers: fields)
        // Every answer is what schemas/openapi.json documents for it.
        await SchemaCheck.checkHTTP(method: method, path: path, status: answer.status, headers: fields, body: answer.body)
        return answer
    }

    /// Asks `path` until `condition` holds for its answer (the worker is another process:
    /// its state is seen only through the endpoint); fails after `timeout`.
    static func waitFor(_ what: String, port: Int, _ path: String, headers: [String: String] = [:], timeout: Duration, _ condition: @escaping @Sendable (Int, String) -> Bool) async throws {
        let last = Mutex("nothing")
        do {
            try await withDeadline(timeout, what) {
                while true {
                    do {
                        let answer = try await get(port, path, headers: headers)
                        last.withLock { $0 = "\(answer.status) \(answer.body.prefix(300))" }
                        if condition(answer.status, answer.body) { return }
                    } catch {
                        last.withLock { $0 = "an error: \(error)" }
                    }
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
        } catch {
            Issue.record("\(what): the last answer of \(path) was \(last.withLock { $0 })")
            throw error
        }
    }

    /// One sample of Prometheus text: `name{label="value",…} number`.
    struct Sample: Equatable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    /// Parses Prometheus text exposition (0.0.4) strictly: comments, blank lines and
    /// samples; a line that is none of those is an error (so a malformed scrape fails).
    static func parse(_ text: String) throws -> [Sample] {
        struct Malformed: Error, CustomStringConvertible { let line: String; var description: String { "not a Prometheus sample: \(line)" } }
        var samples: [Sample] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) where !line.hasPrefix("#") {
            var rest = Substring(line)
            let name = rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" }
            guard !name.isEmpty else { throw Malformed(line: String(line)) }
            rest = rest.dropFirst(name.count)
            var labels: [String: String] = [:]
            if rest.first == "{" {
                rest = rest.dropFirst()
                while rest.first != "}" {
                    let key = rest.prefix { $0 != "=" }
                    rest = rest.dropFirst(key.count)
                    guard rest.hasPrefix("=\"") else { throw Malformed(line: String(line)) }
                    rest = rest.dropFirst(2)
                    var value = ""
                    while let character = rest.first, character != "\"" {
                        if character == "\\", rest.count > 1 { value.append(rest.dropFirst().first!); rest = rest.dropFirst(2) } else { value.append(character); rest = rest.dropFirst() }
                    }
                    guard rest.first == "\"" else { throw Malformed(line: String(line)) }
                    rest = rest.dropFirst()
                    labels[String(key)] = value
                    if rest.first == "," { rest = rest.dropFirst() }
                    guard !rest.isEmpty else { throw Malformed(line: String(line)) }
                }
                rest = rest.dropFirst()
            }
            let fields = rest.split(separator: " ")
            guard (1...2).contains(fields.count), let value = Double(fields[0]) else { throw Malformed(line: String(line)) }
            samples.append(Sample(name: String(name), labels: labels, value: value))
        }
        return samples
    }

    /// The sum of the samples named `name` whose labels include `labels`, if any.
    static func sample(_ name: String, _ labels: [String: String] = [:], in text: String) -> Double? {
        let matching = ((try? parse(text)) ?? []).filter { sample in sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value } }
        return matching.isEmpty ? nil : matching.reduce(0) { $0 + $1.value }
    }

    @Test("/healthz answers while the process serves; /openapi.json is the bundle of schemas/; /readyz is 200 once the group is joined, 503 while the broker is away and 200 again after; /metrics is Prometheus text whose counters move")
    func operations() async throws {
        // Behind a proxy: the outage cuts the network, the broker keeps its topics.
        let broker = try OwnBroker(proxied: true)
        try await broker.start()
        defer { Task { await broker.stop() } }
        let suffix = TestBroker.uniqueName("ops")
        let topics = ["VENDOR_EVENTS_TOPIC": "ve-\(suffix)", "TRIGGER_REQUESTS_TOPIC": "tr-\(suffix)", "RUN_STATUS_TOPIC": "rs-\(suffix)", "DLQ_TOPIC": "dl-\(suffix)"]
        let port = try OwnBroker.freePort()
        let worker = try WorkerProcess(arguments: ["run"], environment: topics.merging([
            "KAFKA_BROKERS": "127.0.0.1:\(broker.port)", "KAFKA_GROUP_ID": "group-\(suffix)", "TOPIC_PARTITIONS": "2",
            "WORKFLOWS_DIR": "\(H.fixtures)/workflows", "ORGS_FILE": "\(H.fixtures)/orgs.yaml",
            "STORE_URL": "sqlite://\(FileManager.default.temporaryDirectory.path)/\(suffix).sqlite",
            "RDKAFKA_MAX_POLL_INTERVAL_MS": "6000", "RDKAFKA_SESSION_TIMEOUT_MS": "6000", "LOG_FORMAT": "json", "HTTP_PORT": "\(port)",
        ]) { $1 })
        defer { worker.kill() }

        try await worker.waitForOutput("the HTTP surface", timeout: .seconds(30)) { lines in lines.contains { $0.contains("HTTP surface listening") } }
        #expect(try await Self.get(port, "/healthz").status == 200)
        // The API's own description: the bundle of schemas/, a valid OpenAPI 3.1 document.
        let openAPI = try await Self.get(port, "/openapi.json")
        #expect(openAPI.status == 200)
        #expect(await SchemaCheck.openAPIProblems(openAPI.body) == [])
        try await worker.waitForOutput("the group join", timeout: .seconds(30)) { lines in lines.contains { $0.contains("Joined the consumer group") } }
        try await Self.waitFor("ready", port: port, "/readyz", timeout: .seconds(10)) { status, _ in status == 200 }

        // Requests move the counters.
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: KafkaConfiguration(brokers: ["127.0.0.1:\(broker.port)"])), logger: TestBroker.logger)
        let requests = (0..<5).map { index in
            KafkaProducerMessage(
                topic: topics["TRIGGER_REQUESTS_TOPIC"]!, key: Array("ops-\(index)".utf8),
                value: H.workflowRun("quarterly-privacy-sweep", input: ["n": .int(Int64(index))]).canonicalBytes,
                headers: [KafkaHeader(key: "Authorization", value: "Bearer \(H.keyA)"), KafkaHeader(key: "Idempotency-Key", value: "ops-\(index)")]
            )
        }
        // Five new requests, then the first one again (a replay).
        for result in await client.send(requests) { _ = try result.get() }
        for result in await client.send([requests[0]]) { _ = try result.get() }
        try await client.shutdown()
        let requestTopic = topics["TRIGGER_REQUESTS_TOPIC"]!
        try await Self.waitFor("six messages counted", port: port, "/metrics", timeout: .seconds(30)) { status, body in
            status == 200 && (Self.sample("trigger_worker_messages_total", ["topic": requestTopic], in: body) ?? 0) >= 6
        }
        // Gauges are sampled at most once a second: the lag read after the six were handled.
        try await Task.sleep(for: .milliseconds(1100))
        let metrics = try await Self.get(port, "/metrics").body
        let samples = try Self.parse(metrics)
        #expect(metrics.contains("# TYPE trigger_worker_messages_total counter"))
        #expect(Self.sample("trigger_worker_messages_total", ["topic": requestTopic, "outcome": "answered"], in: metrics) == 5)
        #expect(Self.sample("trigger_worker_messages_total", ["topic": requestTopic, "outcome": "replayed"], in: metrics) == 1)
        #expect(Self.sample("trigger_worker_idempotent_replays_total", in: metrics) == 1)
        #expect(Self.sample("trigger_worker_runs_started_total", in: metrics) == 5)
        #expect(Self.sample("trigger_worker_outbox_entries", in: metrics) != nil)
        // Histograms: the six messages came in batches, each one store transaction.
        #expect(metrics.contains("# TYPE trigger_worker_batch_messages histogram"))
        #expect((Self.sample("trigger_worker_batch_messages_sum", in: metrics) ?? 0) >= 6, "batch sizes add up to the messages")
        let batches = Self.sample("trigger_worker_batch_messages_count", in: metrics) ?? 0
        #expect(batches >= 1 && batches == Self.sample("trigger_worker_store_transaction_seconds_count", ["kind": "batch"], in: metrics))
        #expect(Self.sample("trigger_worker_store_transaction_seconds_bucket", ["kind": "batch", "le": "+Inf"], in: metrics) == batches)
        // Every input partition reports its lag, and all was read.
        let lags = samples.filter { $0.name == "trigger_worker_consumer_lag" && $0.labels["topic"] == requestTopic }
        #expect(Set(lags.compactMap { $0.labels["partition"] }) == ["0", "1"], "\(lags)")
        #expect(lags.allSatisfy { $0.value == 0 }, "\(lags)")

        // The broker goes away: not ready within a few seconds; back: ready again.
        await broker.stop()
        try await Self.waitFor("not ready without the broker", port: port, "/readyz", timeout: .seconds(15)) { status, body in
            status == 503 && body.contains("the broker does not answer")
        }
        #expect(try await Self.get(port, "/healthz").status == 200, "alive all the same")
        try await broker.start()
        do {
            try await Self.waitFor("ready again with the broker back", port: port, "/readyz", timeout: .seconds(60)) { status, _ in status == 200 }
        } catch {
            Issue.record("the worker said: \(worker.output.suffix(15).joined(separator: "\n"))")
            throw error
        }

        worker.interrupt()
        let status = try await worker.waitForExit(timeout: .seconds(15))
        #expect(status == 0, "\(worker.output.suffix(12).joined(separator: "\n"))")
    }
}
