import Foundation
import Kafka
import Logging
import Store
import Testing
import Workflows
@testable import Worker

/// What a hostile or careless sender can put in a message, decided without a
/// broker: strict headers (§4), bounded echoes, dead-letter copies (§6), the
/// age of vendor events (§3).
@Suite("Hostile inputs")
struct HostileInputTests {
    static let org = "cborg_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    static let apiKey = "ak_test_alpha_key"
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/pipeline").path
    /// 2026-11-29T12:00:00Z, in milliseconds.
    static let now: Timestamp = 1_795_953_600_000

    let configuration: WorkerConfiguration
    let decoder: InputDecoder
    let decider: BatchDecider

    init() throws {
        var configuration = WorkerConfiguration()
        configuration.idempotencyTTL = .seconds(600)
        configuration.idempotencyMismatch = .reject
        configuration.maxMessageBytes = 4096
        self.configuration = configuration
        let orgs = try OrgDirectory.load(path: "\(Self.fixtures)/orgs.yaml")
        decoder = InputDecoder(configuration: configuration, orgs: orgs)
        decider = BatchDecider(
            catalog: try WorkflowCatalog.load(directory: "\(Self.fixtures)/workflows"), engine: RunEngine(),
            outputs: Outputs(configuration: configuration), idempotencyTTL: configuration.idempotencyTTL,
            mismatchPolicy: configuration.idempotencyMismatch, logger: Logger(label: "test")
        )
    }

    // MARK: Helpers

    func request(offset: Int64 = 0, headers: [KafkaHeader], value: JSONValue? = nil) -> KafkaMessage {
        let value = value ?? ["request_type": "workflow_run", "workflow_name": "quarterly-privacy-sweep", "body": ["input": ["n": 1]]]
        return KafkaMessage(topicPartition: .init(topic: configuration.topics.triggerRequests, partition: 0), offset: offset, key: Array("k".utf8), value: value.canonicalBytes, headers: headers)
    }

    var authorization: KafkaHeader { KafkaHeader(key: "Authorization", value: "Bearer \(Self.apiKey)") }

    func vendorEvent(offset: Int64 = 0, eventID: String = Identifier.derive(prefix: "cbevt", from: ["e"]), occurredAt: Int64 = now / 1000, vendorID: String = "cbvndr_e448ba62882143f3ba0c140bb2e30162") -> KafkaMessage {
        let value: JSONValue = [
            "event_id": .string(eventID), "event_type": "Vendor.Created", "occurred_at": .int(occurredAt), "org_id": .string(Self.org),
            "data": ["vendor": ["id": .string(vendorID), "name": "Acme Payroll", "tier": "high", "tags": ["processes_pii"]]],
        ]
        return KafkaMessage(topicPartition: .init(topic: configuration.topics.vendorEvents, partition: 0), offset: offset, key: nil, value: value.canonicalBytes)
    }

    func decide(_ messages: [KafkaMessage], snapshot: BatchSnapshot = BatchSnapshot(), now: Timestamp = now) -> BatchDecider.Decision {
        decider.decide(decoder.decode(messages, now: now), snapshot: snapshot, now: now)
    }

    /// The one `TriggerRequest.Responded` of a decision, parsed.
    func response(_ decision: BatchDecider.Decision) throws -> (event: JSONValue, message: OutboxMessage) {
        let responses = decision.writes.outbox.filter { $0.topic == configuration.topics.runStatus && $0.headers.contains { $0.name == "event-type" && $0.value == Array("TriggerRequest.Responded".utf8) } }
        try #require(responses.count == 1, "exactly one response")
        return (try JSONValue.parse(responses[0].value), responses[0])
    }

    func deadLetters(_ decision: BatchDecider.Decision) -> [OutboxMessage] {
        decision.writes.outbox.filter { $0.topic == configuration.topics.deadLetter }
    }

    // MARK: Idempotency-Key (§4)

    @Test("an Idempotency-Key that is not UTF-8 is answered 422, never treated as no key")
    func nonUTF8Key() throws {
        let decision = decide([request(headers: [authorization, KafkaHeader(key: "Idempotency-Key", value: [0x6B, 0xFF, 0xFE])])])
        let (event, message) = try response(decision)
        #expect(event[path: ["data", "response", "status"]] == 422)
        #expect(event[path: ["data", "response", "body", "detail", "0", "loc"]] == ["header", "Idempotency-Key"])
        #expect(event[path: ["data", "request", "idempotency_key"]] == .null, "an invalid key is not echoed")
        #expect(!message.headers.contains { $0.name == "idempotency-key" })
        #expect(decision.writes.runs.isEmpty)
    }

    @Test("the 255 limit of an Idempotency-Key counts bytes, not characters; an empty key is 422 too")
    func keyLimitInBytes() throws {
        let twoByte = String(repeating: "é", count: 128)  // 128 characters, 256 bytes
        for key in [twoByte, ""] {
            let decision = decide([request(headers: [authorization, KafkaHeader(key: "Idempotency-Key", value: key)])])
            #expect(try response(decision).event[path: ["data", "response", "status"]] == 422, "key of \(key.utf8.count) bytes")
            #expect(decision.writes.runs.isEmpty)
        }
        let fits = String(repeating: "é", count: 127) + "k"  // 255 bytes
        let accepted = decide([request(headers: [authorization, KafkaHeader(key: "Idempotency-Key", value: fits)])])
        #expect(try response(accepted).event[path: ["data", "response", "status"]] == 201)
    }

    @Test("a key with a NUL or another control character is answered 422 (it would be stored cut short)")
    func controlCharacterKey() throws {
        for key in ["abc\u{0}def", "line\nbreak", "tab\u{7F}"] {
            let decision = decide([request(headers: [authorization, KafkaHeader(key: "Idempotency-Key", value: key)])])
            #expect(try response(decision).event[path: ["data", "response", "status"]] == 422)
        }
    }

    // MARK: Request-Id and traceparent (§4)

    @Test("a Request-Id over 255 bytes or not printable ASCII is answered 400 invalid_request and not echoed")
    func badRequestID() throws {
        for value in [String(repeating: "r", count: 256), "café", "a\nb"] {
            let decision = decide([request(headers: [authorization, KafkaHeader(key: "Request-Id", value: value)])])
            let (event, message) = try response(decision)
            #expect(event[path: ["data", "response", "status"]] == 400)
            #expect(event[path: ["data", "response", "body", "detail", "code"]] == "invalid_request")
            #expect(event[path: ["data", "request", "request_id"]] == .null)
            #expect(!message.headers.contains { $0.name == "request-id" })
            #expect(decision.writes.runs.isEmpty)
        }
        let fine = decide([request(headers: [authorization, KafkaHeader(key: "Request-Id", value: String(repeating: "r", count: 255))])])
        #expect(try response(fine).event[path: ["data", "response", "status"]] == 201)
    }

    @Test("a traceparent that is not W3C trace context is never carried on; a valid one's trace is, on every output, under the input's own span")
    func traceparent() throws {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        for invalid in ["00-x", String(repeating: "0", count: 2000), "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"] {
            let decision = decide([request(headers: [authorization, KafkaHeader(key: "traceparent", value: invalid)])])
            #expect(decision.writes.outbox.count > 1)
            for message in decision.writes.outbox {
                #expect(!message.headers.contains { $0.name == "traceparent" }, "echoed \(invalid.prefix(60))")
            }
        }
        let decision = decide([request(headers: [authorization, KafkaHeader(key: "traceparent", value: valid)])])
        let carried = Set(decision.writes.outbox.compactMap { message in message.headers.first { $0.name == "traceparent" }.map { String(decoding: $0.value, as: UTF8.self) } })
        #expect(carried.count == 1, "every output of one input has the same parent span: \(carried)")
        let child = try #require(carried.first)
        #expect(HeaderRules.isValidTraceparent(Array(child.utf8)))
        #expect(child.hasPrefix("00-4bf92f3577b34da6a3ce929d0e0e4736-") && child.hasSuffix("-01"), "the same trace and flags")
        #expect(!child.contains("00f067aa0ba902b7"), "a span of its own, not the caller's")
        // Decided again (a redelivery after a crash), the input gets the same span: outputs are identical.
        #expect(decide([request(headers: [authorization, KafkaHeader(key: "traceparent", value: valid)])]).writes.outbox == decision.writes.outbox)
    }

    // MARK: Dead letters (§6)

    @Test("a dead-letter copy never carries the Authorization header")
    func noAuthorizationInDeadLetters() throws {
        let message = KafkaMessage(topicPartition: .init(topic: configuration.topics.triggerRequests, partition: 0), offset: 0, key: nil, value: Array("{not json".utf8), headers: [authorization, KafkaHeader(key: "X-Other", value: "kept")])
        let letters = deadLetters(decide([message]))
        try #require(letters.count == 1)
        #expect(!letters[0].headers.contains { $0.name.lowercased() == "authorization" })
        #expect(letters[0].headers.contains { $0.name == "X-Other" && $0.value == Array("kept".utf8) })
        #expect(letters[0].value == Array("{not json".utf8))
    }

    @Test("a value over MAX_MESSAGE_BYTES is dead-lettered without its value, with source-value-bytes")
    func tooLargeDeadLetter() throws {
        let big = Array(repeating: UInt8(ascii: "x"), count: 10_000)
        let message = KafkaMessage(topicPartition: .init(topic: configuration.topics.triggerRequests, partition: 0), offset: 0, key: Array("k".utf8), value: big, headers: [authorization])
        let decision = decide([message])
        #expect(try response(decision).event[path: ["data", "response", "status"]] == 413)
        let letters = deadLetters(decision)
        try #require(letters.count == 1)
        #expect(letters[0].value.isEmpty)
        #expect(letters[0].headers.first { $0.name == "source-value-bytes" }?.value == Array("10000".utf8))
        #expect(letters[0].key == Array("k".utf8))
    }

    @Test("a body that grows past MAX_MESSAGE_BYTES once encoded (\\b is written \\u0008) is answered 413, not echoed into outputs too large to publish")
    func inflatingBody() throws {
        let escapes = String(repeating: "\\b", count: 1500)  // 3,000 bytes as sent, 9,000 encoded
        let value = Array("{\"request_type\":\"workflow_run\",\"workflow_name\":\"quarterly-privacy-sweep\",\"body\":{\"input\":{\"x\":\"\(escapes)\"}}}".utf8)
        #expect(value.count < configuration.maxMessageBytes)
        let message = KafkaMessage(topicPartition: .init(topic: configuration.topics.triggerRequests, partition: 0), offset: 0, key: nil, value: value, headers: [authorization])
        let decision = decide([message])
        #expect(try response(decision).event[path: ["data", "response", "status"]] == 413)
        #expect(decision.writes.runs.isEmpty)
        let letter = try #require(deadLetters(decision).first)
        #expect(letter.headers.first { $0.name == "error-code" }?.value == Array("message_too_large".utf8))
        #expect(letter.value == value, "the value itself fits: it is kept")
        for output in decision.writes.outbox { #expect(output.byteCount <= configuration.outputLimit) }
    }

    @Test("a workflow_name too long to be a name is answered 404 after the API key, not echoed")
    func longWorkflowName() throws {
        let name = String(repeating: "w", count: 300)
        let decision = decide([request(headers: [authorization], value: ["request_type": "workflow_run", "workflow_name": .string(name)])])
        let event = try response(decision).event
        #expect(event[path: ["data", "response", "status"]] == 404)
        #expect(event[path: ["data", "request", "workflow_name"]] == .null)
        #expect((event[path: ["data", "response", "body", "detail", "message"]]?.stringValue?.utf8.count ?? 0) < 300)
        #expect(deadLetters(decision).isEmpty)
        let unauthenticated = decide([request(headers: [], value: ["request_type": "workflow_run", "workflow_name": .string(name)])])
        #expect(try response(unauthenticated).event[path: ["data", "response", "status"]] == 401, "the API key is checked first")
    }

    // MARK: Vendor events (§3)

    @Test("a signed vendor event older than the dedupe window is dead-lettered event_too_old and starts nothing")
    func eventTooOld() throws {
        let old = vendorEvent(occurredAt: Self.now / 1000 - 601)
        let decision = decide([old])
        #expect(decision.writes.runs.isEmpty)
        #expect(decision.writes.records.isEmpty)
        let letters = deadLetters(decision)
        try #require(letters.count == 1)
        #expect(letters[0].headers.first { $0.name == "error-code" }?.value == Array("event_too_old".utf8))
        // Inside the window it is handled.
        #expect(decide([vendorEvent(occurredAt: Self.now / 1000 - 599)]).writes.runs.count == 1)
    }

    @Test("a vendor event more than 5 minutes in the future is invalid_event (it would pin the vendor record)")
    func eventInTheFuture() throws {
        let decision = decide([vendorEvent(occurredAt: Self.now / 1000 + 301)])
        #expect(decision.writes.runs.isEmpty)
        #expect(decision.writes.vendors.isEmpty)
        #expect(deadLetters(decision).first?.headers.first { $0.name == "error-code" }?.value == Array("invalid_event".utf8))
        #expect(decide([vendorEvent(occurredAt: Self.now / 1000 + 299)]).writes.runs.count == 1)
    }

    @Test("ids in a vendor event must have their documented formats: a NUL, a wrong prefix or length is invalid_event")
    func idFormats() throws {
        let valid = "cbvndr_e448ba62882143f3ba0c140bb2e30162"
        for (eventID, vendorID) in [
            (Identifier.derive(prefix: "cbevt", from: ["a"]), valid + "\u{0}x"),
            (Identifier.derive(prefix: "cbevt", from: ["b"]), "cbvndr_E448BA62882143F3BA0C140BB2E30162"),
            (Identifier.derive(prefix: "cbevt", from: ["c"]), "vendor-1"),
            ("cbevt_1", valid),
            ("evt\u{0}" + String(repeating: "x", count: 300), valid),
        ] {
            let decision = decide([vendorEvent(eventID: eventID, vendorID: vendorID)])
            #expect(decision.writes.runs.isEmpty)
            #expect(decision.writes.vendors.isEmpty)
            let letter = try #require(deadLetters(decision).first)
            #expect(letter.headers.first { $0.name == "error-code" }?.value == Array("invalid_event".utf8))
            let text = try #require(letter.headers.first { $0.name == "error-message" }).value
            #expect(text.count <= 1024 && !text.contains(0), "error-message is bounded and has no NUL")
        }
    }

    // MARK: Messages that depend on settings

    @Test("idempotency_key_reused names the configured window, not 24 hours")
    func reusedMessageNamesTTL() throws {
        let first = decide([request(offset: 0, headers: [authorization, KafkaHeader(key: "Idempotency-Key", value: "k")])])
        var snapshot = BatchSnapshot()
        for record in first.writes.records { snapshot.records[record.scope] = record }
        let different = request(offset: 1, headers: [authorization, KafkaHeader(key: "Idempotency-Key", value: "k")],
                                value: ["request_type": "workflow_run", "workflow_name": "quarterly-privacy-sweep", "body": ["input": ["n": 2]]])
        let event = try response(decide([different], snapshot: snapshot)).event
        #expect(event[path: ["data", "response", "status"]] == 422)
        let message = try #require(event[path: ["data", "response", "body", "detail", "message"]]?.stringValue)
        #expect(message.contains("10 minutes"), "\(message)")
        #expect(!message.contains("24 hours"))
    }
}

@Suite("Identifier derivation")
struct IdentifierDerivationTests {
    @Test("parts are length-prefixed: moving a separator between parts gives another id")
    func unambiguous() {
        #expect(Identifier.derive(prefix: "cbwr", from: ["a|b", "c"]) != Identifier.derive(prefix: "cbwr", from: ["a", "b|c"]))
        #expect(Identifier.derive(prefix: "cbwr", from: ["ab", ""]) != Identifier.derive(prefix: "cbwr", from: ["a", "b"]))
        #expect(Identifier.derive(prefix: "cbwr", from: ["x"]) != Identifier.derive(prefix: "cbwr", from: ["x", ""]))
    }
}
