import Foundation
import FuzzSupport
import Kafka
import Store
import Testing
import Workflows

/// Adversarial inputs through the broker, to the `trigger-worker` executable.
@Suite("Fuzzing through the broker", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason), .serialized)
struct FuzzBrokerTests {
    typealias H = WorkerHarness

    @Test("1,500 adversarial inputs to a running worker: one response per request, at most one dead letter per event, outputs within the limit, the process up with bounded memory, valid requests after them answered, no forged log line")
    func throughTheBroker() async throws {
        let suffix = TestBroker.uniqueName("fuzz")
        let topics = ["VENDOR_EVENTS_TOPIC": "ve-\(suffix)", "TRIGGER_REQUESTS_TOPIC": "tr-\(suffix)", "RUN_STATUS_TOPIC": "rs-\(suffix)", "DLQ_TOPIC": "dl-\(suffix)"]
        let storePath = FileManager.default.temporaryDirectory.appendingPathComponent("\(suffix).sqlite").path
        let maxMessageBytes = 16 * 1024
        let outputLimit = maxMessageBytes + 256 * 1024
        _ = try await KafkaAdmin.createTopics(topics.values.map { KafkaTopicSpecification(name: $0, partitions: 2) }, configuration: TestBroker.common, logger: TestBroker.logger)
        let worker = try WorkerProcess(arguments: ["run"], environment: topics.merging([
            "KAFKA_BROKERS": TestBroker.brokers!, "KAFKA_GROUP_ID": "group-\(suffix)", "TOPIC_PARTITIONS": "2",
            "WORKFLOWS_DIR": "\(H.fixtures)/workflows", "ORGS_FILE": "\(H.fixtures)/orgs.yaml", "STORE_URL": "sqlite://\(storePath)",
            "RDKAFKA_MAX_POLL_INTERVAL_MS": "6000", "RDKAFKA_SESSION_TIMEOUT_MS": "6000", "HTTP_PORT": "0",
            "MAX_MESSAGE_BYTES": String(maxMessageBytes), "LOG_FORMAT": "text", "LOG_LEVEL": "info",
        ]) { $1 })
        defer { worker.kill() }
        _ = try await worker.waitForLine("the group join", timeout: .seconds(30)) { $0.contains("Joined the consumer group") }

        var common = TestBroker.common
        common.overrides["message.max.bytes"] = String(64 << 20)
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: common), logger: TestBroker.logger)
        var inputs = AdversarialInputs(seed: 0xF0E1, apiKey: H.keyA, orgID: H.orgA, workflowName: "quarterly-privacy-sweep", maxMessageBytes: maxMessageBytes)
        var sent: [(input: AdversarialInputs.Input, message: KafkaProducerMessage)] = []
        for index in 0..<1500 {
            var input = inputs.next()
            // Every event's dead letter lands on one partition of the dead-letter topic, in the order handled.
            if input.toVendorEvents { input.key = Array("fuzz-event".utf8) }
            let topic = input.toVendorEvents ? topics["VENDOR_EVENTS_TOPIC"]! : topics["TRIGGER_REQUESTS_TOPIC"]!
            sent.append((input, KafkaProducerMessage(topic: topic, partition: Int32(index % 2), key: input.key, value: input.value, headers: input.headers)))
        }
        // Last on each event partition: a sentinel dead letter. Once both are read, every event's dead letter is.
        for partition in [Int32(0), 1] {
            let sentinel = AdversarialInputs.Input(toVendorEvents: true, key: Array("fuzz-event".utf8), value: Array("sentinel: not JSON".utf8), headers: [], recipe: "sentinel")
            sent.append((sentinel, KafkaProducerMessage(topic: topics["VENDOR_EVENTS_TOPIC"]!, partition: partition, key: sentinel.key, value: sentinel.value)))
        }
        let valid = (0..<20).map { inputs.validRequest(idempotencyKey: "after-fuzz-\($0)") }
        sent += valid.enumerated().map { index, input in
            (input, KafkaProducerMessage(topic: topics["TRIGGER_REQUESTS_TOPIC"]!, partition: Int32(index % 2), key: input.key, value: input.value, headers: input.headers))
        }
        var reports: [(input: AdversarialInputs.Input, report: KafkaDeliveryReport)] = []
        for (entry, result) in zip(sent, await client.send(sent.map(\.message))) {
            reports.append((entry.input, try result.get()))
        }
        try await client.shutdown()
        func coordinates(_ report: KafkaDeliveryReport) -> String { "\(report.topicPartition.topic)[\(report.topicPartition.partition)]@\(report.offset ?? -1)" }
        let requests = Dictionary(uniqueKeysWithValues: reports.filter { !$0.input.toVendorEvents }.map { (coordinates($0.report), $0.input.recipe) })
        let events = Dictionary(uniqueKeysWithValues: reports.filter { $0.input.toVendorEvents }.map { (coordinates($0.report), $0.input.recipe) })
        let validSources = Set(reports.filter { $0.input.recipe == "valid" }.map { coordinates($0.report) })
        let sentinels = Set(reports.filter { $0.input.recipe == "sentinel" }.map { coordinates($0.report) })

        let reader = try TestMember(group: "reader-\(suffix)", topics: [topics["RUN_STATUS_TOPIC"]!, topics["DLQ_TOPIC"]!])
        reader.start()
        let statusTopic = topics["RUN_STATUS_TOPIC"]!
        let deadLetterTopic = topics["DLQ_TOPIC"]!
        try await reader.waitUntil("a response to each of the \(requests.count) requests, and both sentinels", timeout: .seconds(180)) { state in
            Set(state.received.filter { $0.topic == statusTopic }.compactMap(Self.respondedSource)).count >= requests.count
                && sentinels.isSubset(of: Set(state.received.filter { $0.topic == deadLetterTopic }.map(Self.deadLetterSource)))
        }

        let received = reader.snapshot.received
        var responses: [String: Set<String>] = [:]
        var statuses: [String: Int64] = [:]
        var deadLetters: [String: Int] = [:]
        for message in received {
            let size = Self.size(message)
            #expect(size <= outputLimit, "an output of \(size) bytes on \(message.topic)")
            if message.topic == topics["DLQ_TOPIC"]! {
                deadLetters[Self.deadLetterSource(message), default: 0] += 1
                continue
            }
            guard let source = Self.respondedSource(message), let event = try? JSONValue.parse(message.value ?? []) else { continue }
            responses[source, default: []].insert(event["event_id"]?.stringValue ?? "")
            statuses[source] = event[path: ["data", "response", "status"]]?.intValue
        }
        for (source, recipe) in requests {
            #expect(responses[source]?.count == 1, "request \(source) (\(recipe)) has \(responses[source]?.count ?? 0) distinct responses")
        }
        for (source, recipe) in events {
            #expect(deadLetters[source, default: 0] <= 1, "event \(source) (\(recipe)) was dead-lettered \(deadLetters[source]!) times")
        }
        let eventLetters = events.keys.filter { deadLetters[$0] != nil }.count
        #expect(eventLetters > events.count / 2, "most generated events are broken: \(eventLetters) of \(events.count) dead-lettered")
        for source in validSources {
            #expect(statuses[source] == 201, "the valid request \(source) was answered \(String(describing: statuses[source]))")
        }

        // The process is up, its memory bounded; no value forged a log line of its own.
        #expect(kill(worker.pid, 0) == 0, "the worker is still running")
        let status = (try? String(contentsOfFile: "/proc/\(worker.pid)/status", encoding: .utf8)) ?? ""
        let peakKiB = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        #expect(peakKiB > 0 && peakKiB < 1_536 * 1024, "peak resident memory \(peakKiB) KiB")
        #expect(!worker.output.contains { $0.hasPrefix("INJECTED") || $0.hasPrefix("2026-01-01") }, "a log line was forged")

        worker.interrupt()
        #expect(try await worker.waitForExit(timeout: .seconds(15)) == 0)
        await reader.stop()
        let store = try SQLiteStore(path: storePath)
        #expect(try await store.parkedOutputs(limit: 10).isEmpty, "nothing was refused by the broker")
        #expect(try await store.pendingOutbox(limit: 1).isEmpty)
        let largest = received.map(Self.size).max() ?? 0
        print("fuzz through the broker: \(sent.count) inputs (\(requests.count) requests, \(events.count) vendor events); \(responses.values.map(\.count).reduce(0, +)) responses, \(deadLetters.values.reduce(0, +)) dead letters; largest output \(largest) bytes (limit \(outputLimit)); worker peak memory \(peakKiB / 1024) MiB")
    }

    /// `topic[partition]@offset` of the input a dead letter copies.
    static func deadLetterSource(_ message: KafkaMessage) -> String {
        "\(message.header("source-topic") ?? "")[\(message.header("source-partition") ?? "")]@\(message.header("source-offset") ?? "")"
    }

    /// A message's key, value and headers, in bytes.
    static func size(_ message: KafkaMessage) -> Int {
        var size = (message.key?.count ?? 0) + (message.value?.count ?? 0)
        for header in message.headers { size += header.key.utf8.count + (header.value?.count ?? 0) }
        return size
    }

    /// `topic[partition]@offset` of the request a `TriggerRequest.Responded` answers.
    static func respondedSource(_ message: KafkaMessage) -> String? {
        guard let event = try? JSONValue.parse(message.value ?? []), event["event_type"] == "TriggerRequest.Responded",
              let source = event[path: ["data", "request", "source"]] else { return nil }
        return "\(source["topic"]?.stringValue ?? "")[\(source["partition"]?.intValue ?? -1)]@\(source["offset"]?.intValue ?? -1)"
    }
}
