import Foundation
import Kafka
import Logging
import Store
import Synchronization
import Testing
import Workflows
@testable import Worker

@Suite("Bounded text and log lines")
struct BoundsTests {
    @Test("text is cut at a character boundary to the byte limit, with an ellipsis")
    func cut() {
        #expect(BoundedText.cut("short", maxBytes: 10) == "short")
        let cut = BoundedText.cut(String(repeating: "é", count: 100), maxBytes: 11)
        #expect(cut.utf8.count <= 11)
        #expect(cut.hasSuffix("…"))
        #expect(cut.dropLast().allSatisfy { $0 == "é" }, "no half character")
        #expect(BoundedText.message(String(repeating: "x", count: 5000)).utf8.count == BoundedText.messageBytes)
    }

    @Test("control characters are escaped; other text is left as it is")
    func escaping() {
        #expect(BoundedText.escapingControls("plain é ✓") == "plain é ✓")
        #expect(BoundedText.escapingControls("a\nb\u{0}c\u{1B}[31m\u{85}") == "a\\u{a}b\\u{0}c\\u{1b}[31m\\u{85}")
    }

    @Test("text log lines: a value cannot start a new line, and every value is bounded")
    func textLogLines() throws {
        let lines = Mutex<[String]>([])
        let logger = Logger(label: "trigger-worker") { label in
            LineLogHandler(label: label, level: .info, format: .text) { line in lines.withLock { $0.append(line) } }
        }
        logger.error("Dead-lettered\nFAKE error line", metadata: [
            "org": "cborg_x\n2026-01-01T00:00:00Z critical trigger-worker: INJECTED", "big": "\(String(repeating: "y", count: 10_000))",
        ])
        let captured = lines.withLock { $0 }
        #expect(captured.count == 1)
        let line = try #require(captured.first)
        #expect(line.hasSuffix("\n"))
        #expect(line.dropLast().split(separator: "\n").count == 1, "one line: \(line)")
        #expect(line.contains("\\u{a}INJECTED") || line.contains("\\u{a}2026"))
        #expect(line.utf8.count < 3 * 1024, "the 10 KB value was cut to 1 KiB")
    }

    @Test("JSON log lines bound the message and every value to 1 KiB")
    func jsonLogLines() throws {
        let lines = Mutex<[String]>([])
        let logger = Logger(label: "trigger-worker") { label in
            LineLogHandler(label: label, level: .info, format: .json) { line in lines.withLock { $0.append(line) } }
        }
        logger.info("\(String(repeating: "m", count: 5000))", metadata: ["value": "\(String(repeating: "v", count: 5000))"])
        let line = try #require(lines.withLock { $0 }.first)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
        #expect(object["msg"]?.utf8.count == BoundedText.messageBytes)
        #expect(object["value"]?.utf8.count == BoundedText.messageBytes)
    }

    @Test("durations in words, for messages")
    func spokenDurations() {
        #expect(DurationParser.spoken(.seconds(86400)) == "24 hours")
        #expect(DurationParser.spoken(.seconds(3600)) == "1 hour")
        #expect(DurationParser.spoken(.seconds(600)) == "10 minutes")
        #expect(DurationParser.spoken(.seconds(7 * 86400)) == "7 days")
        #expect(DurationParser.spoken(.seconds(90)) == "90 seconds")
        #expect(DurationParser.spoken(.milliseconds(1500)) == "1500 milliseconds")
    }

    @Test("W3C traceparent: version 00 exactly, later versions' first fields, never ff or all-zero ids")
    func traceparents() {
        func valid(_ text: String) -> Bool { HeaderRules.isValidTraceparent(Array(text.utf8)) }
        #expect(valid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
        #expect(valid("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"))
        #expect(!valid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"), "version 00 has exactly four fields")
        #expect(!valid("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), "uppercase")
        #expect(!valid("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
        #expect(!valid("00-00000000000000000000000000000000-00f067aa0ba902b7-01"))
        #expect(!valid("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"))
        #expect(!valid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"))
    }

    @Test("an output key over 255 bytes is replaced by its digest, the same each time")
    func boundedKeys() {
        let long = Array(repeating: UInt8(ascii: "k"), count: 10_000)
        let bounded = Outputs.boundedKey(long)
        #expect(bounded?.count == 64)
        #expect(Outputs.boundedKey(long) == bounded)
        #expect(Outputs.boundedKey(Array("short".utf8)) == Array("short".utf8))
        #expect(Outputs.boundedKey(nil) == nil)
    }

    @Test("a dead-letter copy stays within the output limit: the value, then the input's headers, then the key are left out")
    func deadLetterBudget() {
        var configuration = WorkerConfiguration()
        configuration.maxMessageBytes = 4096
        let outputs = Outputs(configuration: configuration)
        let huge = Array(repeating: UInt8(ascii: "h"), count: 300_000)
        let message = KafkaMessage(
            topicPartition: .init(topic: "t", partition: 1), offset: 9, key: huge, value: Array("{}".utf8),
            headers: (0..<3).map { KafkaHeader(key: "H\($0)", value: huge) } + [KafkaHeader(key: "authorization", value: "Bearer ak_live_secret")]
        )
        let letter = outputs.deadLetter(DeadLetter(code: "invalid_request", message: "m", source: Source(message), value: message.value!))
        #expect(letter.byteCount <= outputs.limit)
        #expect(letter.headers.contains { $0.name == "source-value-bytes" && $0.value == Array("2".utf8) })
        #expect(letter.headers.contains { $0.name == "source-headers-omitted" && $0.value == Array("3".utf8) })
        #expect(letter.headers.contains { $0.name == "source-key-bytes" && $0.value == Array("300000".utf8) })
        #expect(letter.key == nil)
        #expect(!letter.headers.contains { $0.name.lowercased() == "authorization" })
    }

    @Test("an input's own error-code or source-* headers are not copied: a dead letter's cannot be forged")
    func forgedDeadLetterHeaders() {
        let outputs = Outputs(configuration: WorkerConfiguration())
        let message = KafkaMessage(topicPartition: .init(topic: "t", partition: 1), offset: 9, key: nil, value: Array("x".utf8), headers: [
            KafkaHeader(key: "Error-Code", value: "all_good"), KafkaHeader(key: "source-offset", value: "0"), KafkaHeader(key: "x-kept", value: "yes"),
        ])
        let letter = outputs.deadLetter(DeadLetter(code: "invalid_json", message: "m", source: Source(message), value: message.value!))
        #expect(letter.headers.filter { $0.name.lowercased() == "error-code" }.map(\.value) == [Array("invalid_json".utf8)])
        #expect(letter.headers.filter { $0.name.lowercased() == "source-offset" }.map(\.value) == [Array("9".utf8)])
        #expect(letter.headers.contains { $0.name == "x-kept" })
    }
}

@Suite("Partition logs")
struct PartitionLogTests {
    @Test("a mark beyond the log's end is a reset; before its start, a gap; else the log goes on")
    func classify() {
        #expect(PartitionLog.classify(next: 10, low: 0, high: 10) == .continues)
        #expect(PartitionLog.classify(next: 0, low: 0, high: 0) == .continues)
        #expect(PartitionLog.classify(next: 5, low: 0, high: 10) == .continues)
        #expect(PartitionLog.classify(next: 11, low: 0, high: 10) == .reset)
        #expect(PartitionLog.classify(next: 6, low: 0, high: 0) == .reset)
        #expect(PartitionLog.classify(next: 3, low: 8, high: 20) == .gap(count: 5))
    }
}

@Suite("Retention")
struct RetentionTests {
    struct FixedClock: WallClock {
        var time: Timestamp
        func now() -> Timestamp { time }
    }

    @Test("a sweep deletes expired records, and runs and assessments past RUN_RETENTION, in bounded batches")
    func sweep() async throws {
        let store = try SQLiteStore(path: FileManager.default.temporaryDirectory.appendingPathComponent("retention-\(UUID()).sqlite").path)
        let day: Int64 = 86400
        let now: Timestamp = 100 * day * 1000
        var writes = BatchWrites()
        writes.now = 0
        writes.runs = (0..<25).map { RunRecord(id: "cbwr_old\($0)", orgID: "o", workflowName: "w", status: "completed", startedAt: 10 * day, finishedAt: 10 * day, document: []) }
            + [RunRecord(id: "cbwr_recent", orgID: "o", workflowName: "w", status: "completed", startedAt: 95 * day, finishedAt: 95 * day, document: [])]
        writes.assessments = (0..<3).map { AssessmentRecord(id: "cbqsrw_old\($0)", orgID: "o", vendorID: "v", createdAt: 10 * day, document: []) }
        writes.records = (0..<4).map { index in
            IdempotencyRecord(scope: ScopeHash(bytes: [UInt8(index)] + Array(repeating: 0, count: 15)), orgID: "o", endpoint: "e", key: "k\(index)",
                              fingerprint: [], responseStatus: 201, responseBody: [], createdAt: 0, expiresAt: index < 3 ? 1000 : now + 1)
        }
        try await store.apply(writes)
        let sweeper = RetentionSweeper(store: store, ttl: .seconds(60), retention: .seconds(30 * day), clock: FixedClock(time: now), batchSize: 10, logger: Logger(label: "test"))
        let swept = await sweeper.sweep()
        #expect(swept == RetentionSweeper.Swept(records: 3, runs: 25, assessments: 3))
        #expect(try await store.run(id: "cbwr_recent") != nil)
        #expect(try await store.runs(statuses: [], limit: 100, offset: 0).count == 1)
        #expect(await sweeper.sweep() == RetentionSweeper.Swept())
    }
}
