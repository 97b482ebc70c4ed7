import Foundation
import FuzzSupport
import Kafka
import Logging
import Store
import Testing
import Workflows
@testable import Worker

/// Thousands of malformed and adversarial inputs through the real decode → decide →
/// write path, on a real SQLite store: each gets its one answer, nothing is over the
/// producer's limit, and valid requests after them are all answered.
@Suite("Fuzzing the pipeline")
struct FuzzTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/pipeline").path

    struct Clock: WallClock {
        func now() -> Timestamp { Timestamp(Date().timeIntervalSince1970 * 1000) }
    }

    @Test("3,000 adversarial inputs: one response per request, at most one dead letter per event, every output within the limit", arguments: [UInt64(0x5EED), 0xC0FFEE])
    func adversarial(seed: UInt64) async throws {
        var configuration = WorkerConfiguration()
        configuration.maxMessageBytes = 16 * 1024
        let store = try SQLiteStore(path: FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-\(UUID()).sqlite").path)
        let orgs = try OrgDirectory.load(path: "\(Self.fixtures)/orgs.yaml")
        let pipeline = Pipeline(
            configuration: configuration, orgs: orgs, catalog: try WorkflowCatalog.load(directory: "\(Self.fixtures)/workflows"),
            store: store, clock: Clock(), logger: Logger(label: "fuzz") { _ in SwiftLogNoOpLogHandler() }, outboxReady: {}
        )
        var inputs = AdversarialInputs(
            seed: seed, apiKey: "ak_test_alpha_key", orgID: "cborg_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", workflowName: "quarterly-privacy-sweep",
            maxMessageBytes: configuration.maxMessageBytes
        )
        var offsets: [KafkaTopicPartition: Int64] = [:]
        var requests: [KafkaTopicPartition: [Int64: String]] = [:]
        var events: [Int64: String] = [:]
        func message(_ input: AdversarialInputs.Input, partition: Int32) -> KafkaMessage {
            let topicPartition = KafkaTopicPartition(topic: input.toVendorEvents ? configuration.topics.vendorEvents : configuration.topics.triggerRequests, partition: partition)
            let offset = offsets[topicPartition, default: 0]
            offsets[topicPartition] = offset + 1
            if input.toVendorEvents { events[offset] = input.recipe } else { requests[topicPartition, default: [:]][offset] = input.recipe }
            return KafkaMessage(topicPartition: topicPartition, offset: offset, key: input.key, value: input.value, headers: input.headers)
        }

        let count = 3000
        var batch: [KafkaMessage] = []
        for index in 0..<count {
            let input = inputs.next()
            batch.append(message(input, partition: input.toVendorEvents ? 0 : Int32(index % 2)))
            if batch.count == 100 || index == count - 1 {
                try await pipeline.handle(batch)
                batch = []
            }
        }
        // Valid requests after all that are all answered.
        let valid = (0..<20).map { message(inputs.validRequest(idempotencyKey: "after-fuzz-\(seed)-\($0)"), partition: 0) }
        try await pipeline.handle(valid)

        let outputs = try await store.pendingOutbox(limit: 1_000_000).flatMap(\.messages)
        var responses: [String: [String]] = [:]
        var deadLetters: [String: Int] = [:]
        var validStatuses: [Int64: Int64] = [:]
        for output in outputs {
            #expect(output.byteCount <= configuration.outputLimit, "an output of \(output.byteCount) bytes")
            if output.topic == configuration.topics.deadLetter {
                let topic = output.headers.first { $0.name == "source-topic" }.map { String(decoding: $0.value, as: UTF8.self) } ?? ""
                let partition = output.headers.first { $0.name == "source-partition" }.map { String(decoding: $0.value, as: UTF8.self) } ?? ""
                let offset = output.headers.first { $0.name == "source-offset" }.map { String(decoding: $0.value, as: UTF8.self) } ?? ""
                deadLetters["\(topic)[\(partition)]@\(offset)", default: 0] += 1
                continue
            }
            let event = try JSONValue.parse(output.value)
            #expect(event.canonicalBytes == output.value, "outputs are canonical JSON")
            guard event["event_type"] == "TriggerRequest.Responded", let source = event[path: ["data", "request", "source"]] else { continue }
            let coordinates = "\(source["topic"]?.stringValue ?? "")[\(source["partition"]?.intValue ?? -1)]@\(source["offset"]?.intValue ?? -1)"
            responses[coordinates, default: []].append(event["event_id"]?.stringValue ?? "")
            if source["partition"] == 0, let offset = source["offset"]?.intValue, let status = event[path: ["data", "response", "status"]]?.intValue {
                validStatuses[offset] = status
            }
        }

        var requestCount = 0
        for (partition, byOffset) in requests {
            for (offset, recipe) in byOffset {
                requestCount += 1
                let answers = responses["\(partition.topic)[\(partition.partition)]@\(offset)"] ?? []
                #expect(answers.count == 1, "request \(partition)@\(offset) (\(recipe)) got \(answers.count) responses")
            }
        }
        for (offset, recipe) in events {
            #expect(deadLetters["\(configuration.topics.vendorEvents)[0]@\(offset)", default: 0] <= 1, "event @\(offset) (\(recipe)) dead-lettered more than once")
        }
        for message in valid {
            #expect(validStatuses[message.offset] == 201, "the valid request at \(message.offset) was answered \(String(describing: validStatuses[message.offset]))")
        }
        let largest = outputs.map(\.byteCount).max() ?? 0
        print("fuzz seed \(seed): \(count) inputs (\(requestCount) requests, \(events.count) vendor events); \(responses.values.map(\.count).reduce(0, +)) responses, \(deadLetters.values.reduce(0, +)) dead letters, \(outputs.count) outputs, largest \(largest) bytes (limit \(configuration.outputLimit))")
    }
}
