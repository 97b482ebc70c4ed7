import Foundation
import Kafka
import Logging
import Store
import Testing
import Workflows
@testable import Worker

/// The decisions of the pipeline, without a broker: a snapshot in, writes out, at a time the test sets.
@Suite("Batch decisions")
struct BatchDeciderTests {
    static let org = "cborg_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    static let key = "ak_test_alpha_key"
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/pipeline").path

    let configuration: WorkerConfiguration
    let decoder: InputDecoder
    let decider: BatchDecider

    init() throws {
        var configuration = WorkerConfiguration()
        configuration.idempotencyTTL = .seconds(60)
        self.configuration = configuration
        let orgs = try OrgDirectory.load(path: "\(Self.fixtures)/orgs.yaml")
        decoder = InputDecoder(configuration: configuration, orgs: orgs)
        decider = BatchDecider(
            catalog: try WorkflowCatalog.load(directory: "\(Self.fixtures)/workflows"), engine: RunEngine(),
            outputs: Outputs(configuration: configuration), idempotencyTTL: configuration.idempotencyTTL,
            mismatchPolicy: .replay, logger: Logger(label: "test")
        )
    }

    func request(offset: Int64, key: String?, input: JSONValue = [:]) -> KafkaMessage {
        var headers = [KafkaHeader(key: "Authorization", value: "Bearer \(Self.key)")]
        if let key { headers.append(KafkaHeader(key: "Idempotency-Key", value: key)) }
        let value: JSONValue = ["request_type": "workflow_run", "workflow_name": "quarterly-privacy-sweep", "body": ["input": input]]
        return KafkaMessage(topicPartition: .init(topic: configuration.topics.triggerRequests, partition: 0), offset: offset, key: nil, value: value.canonicalBytes, headers: headers)
    }

    func decide(_ messages: [KafkaMessage], snapshot: BatchSnapshot = BatchSnapshot(), now: Timestamp) -> BatchDecider.Decision {
        decider.decide(decoder.decode(messages, now: now), snapshot: snapshot, now: now)
    }

    /// The snapshot a store would give after `writes`, at `now`.
    func snapshot(after writes: BatchWrites, now: Timestamp) -> BatchSnapshot {
        var snapshot = BatchSnapshot()
        for record in writes.records where record.expiresAt > now { snapshot.records[record.scope] = record }
        for (partition, change) in writes.watermarks { snapshot.watermarks[partition] = change.next }
        return snapshot
    }

    @Test("a new request writes its run, its 201 under the key, its events and the watermark")
    func newRequest() {
        let decision = decide([request(offset: 7, key: "k1")], now: 1_000_000)
        let writes = decision.writes
        #expect(writes.runs.count == 1)
        #expect(writes.records.count == 1)
        #expect(writes.records[0].expiresAt == 1_000_000 + 60_000)
        #expect(writes.records[0].responseStatus == 201)
        #expect(writes.watermarks[PartitionID(topic: configuration.topics.triggerRequests, partition: 0)]?.next == 8)
        #expect(writes.outbox.count == 2, "Responded and Started: the steps execute after the commit, in the engine")
        #expect(writes.tasks.map(\.runID) == writes.runs.map(\.id), "the run's engine task is written with it")
        #expect(writes.tasks.first?.dueAt == 1_000_000)
        #expect(writes.tasks.first?.source == PartitionID(topic: configuration.topics.triggerRequests, partition: 0))
        #expect(writes.runs.first?.status == "started")
        #expect(decision.tally.runsStarted == 1)
        #expect(decision.tally.outcomes == [.init(topic: configuration.topics.triggerRequests, outcome: "answered"): 1])
    }

    @Test("an HTTP request is decided like a Kafka one, sharing its key's record, but moves no mark, publishes no Responded, and its outputs and run belong to the requests topic's partition 0")
    func httpRequest() throws {
        let headers = [KafkaHeader(key: "Authorization", value: "Bearer \(Self.key)"), KafkaHeader(key: "Idempotency-Key", value: "k")]
        let value = WriteAPI.workflowRun(name: "quarterly-privacy-sweep", body: Array(#"{"input":{"a":1}}"#.utf8))
        let source = Source(httpEndpoint: "POST /v1/workflows/quarterly-privacy-sweep/run", id: "h1", headers: headers)
        let decision = decider.decide([(source, decoder.decodeHTTP(value, source: source))], snapshot: BatchSnapshot(), now: 1_000_000)
        let answer = try #require(decision.httpAnswers["h1"])
        #expect(answer.status == 201 && !answer.replayed)
        #expect(decision.writes.watermarks.isEmpty, "no place in a log")
        let owner = PartitionID(topic: configuration.topics.triggerRequests, partition: 0)
        #expect(decision.writes.outbox.map(\.headers.first?.value) == [Array("WorkflowRun.Started".utf8)], "no Responded")
        #expect(decision.writes.outbox.allSatisfy { $0.source == owner } && decision.writes.tasks.map(\.source) == [owner])
        #expect(try JSONValue.parse(decision.writes.runs[0].document)[path: ["trigger", "source"]] == ["http": "POST /v1/workflows/quarterly-privacy-sweep/run"])
        // The same key over Kafka, with the same body: a replay of the HTTP answer.
        let kafka = decide([request(offset: 0, key: "k", input: ["a": 1])], snapshot: snapshot(after: decision.writes, now: 1_000_000), now: 1_000_001)
        #expect(kafka.tally.replays == 1 && kafka.tally.mismatches == 0 && kafka.writes.runs.isEmpty)
        // A body cannot reach the request's other fields: spliced text is not JSON.
        let smuggled = WriteAPI.assessmentCreate(body: Array(#"{},"request_type":"workflow_run","workflow_name":"quarterly-privacy-sweep""#.utf8))
        let other = Source(httpEndpoint: "POST /v1/assessments", id: "h2", headers: headers)
        let refused = decider.decide([(other, decoder.decodeHTTP(smuggled, source: other))], snapshot: BatchSnapshot(), now: 1_000_000)
        #expect(refused.httpAnswers["h2"]?.status == 400 && refused.writes.runs.isEmpty)
    }

    @Test("a batch authenticates each request by its own Authorization, however the ones before it were answered")
    func authenticationPerMessage() {
        func with(_ authorization: String?, offset: Int64) -> KafkaMessage {
            var message = request(offset: offset, key: "k\(offset)")
            message.headers.removeAll { $0.key == "Authorization" }
            if let authorization { message.headers.append(KafkaHeader(key: "Authorization", value: authorization)) }
            return message
        }
        let valid = "Bearer \(Self.key)"
        let batch = [valid, valid, "Bearer ak_test_wrong", "Bearer ak_test_wrong", valid, nil, "bearer  \(Self.key) ", valid]
        let orgs = decoder.decode(batch.enumerated().map { with($1, offset: Int64($0)) }, now: 0).map { _, input -> String? in
            guard case .request(let request) = input else { return nil }
            return request.org.id
        }
        #expect(orgs == [Self.org, Self.org, nil, nil, Self.org, nil, Self.org, Self.org])
    }

    @Test("every message published is canonical JSON: new runs, replays (spliced, not re-encoded) and rejections")
    func canonicalOutputs() throws {
        let first = decide([request(offset: 0, key: "k", input: ["z": 1, "a": ["y": "é \"q\"", "b": [true, nil]]])], now: 1000)
        var unauthorized = request(offset: 2, key: "k3")
        unauthorized.headers = [KafkaHeader(key: "Authorization", value: "Bearer ak_test_wrong")]
        let replay = decide(
            [request(offset: 1, key: "k", input: ["other": 1]), unauthorized],
            snapshot: snapshot(after: first.writes, now: 1000), now: 2000
        )
        #expect(replay.tally.replays == 1 && replay.tally.mismatches == 1)
        // The metric's outcomes: one replay; the unauthorized request is rejected (401).
        #expect(replay.tally.outcomes == [
            .init(topic: configuration.topics.triggerRequests, outcome: "replayed"): 1, .init(topic: configuration.topics.triggerRequests, outcome: "rejected"): 1,
        ])
        let messages = first.writes.outbox + replay.writes.outbox
        #expect(messages.count == 4)
        for message in messages {
            #expect(try JSONValue.parse(message.value).canonicalBytes == message.value, "\(String(decoding: message.value, as: UTF8.self))")
        }
        // The replay carries the original response body byte for byte.
        let original = try JSONValue.parse(first.writes.outbox[0].value)
        let replayed = try JSONValue.parse(replay.writes.outbox[0].value)
        #expect(replayed[path: ["data", "response"]] == original[path: ["data", "response"]])
        #expect(replayed[path: ["data", "replayed"]] == true)
        #expect(replayed[path: ["data", "fingerprint_mismatch"]] == true)
    }

    @Test("redelivered offsets below the watermark are skipped, with or without a key")
    func redelivery() {
        let first = decide([request(offset: 0, key: nil), request(offset: 1, key: "k")], now: 1000)
        let again = decide([request(offset: 0, key: nil), request(offset: 1, key: "k"), request(offset: 2, key: nil)], snapshot: snapshot(after: first.writes, now: 1000), now: 2000)
        #expect(again.tally.alreadyDone == 2)
        #expect(again.tally.outcomes == [
            .init(topic: configuration.topics.triggerRequests, outcome: "already_done"): 2, .init(topic: configuration.topics.triggerRequests, outcome: "answered"): 1,
        ])
        #expect(again.writes.runs.count == 1, "only offset 2 is new")
        #expect(again.writes.watermarks.first?.value.expected == 2)
        #expect(again.writes.watermarks.first?.value.next == 3)
    }

    @Test("a key answers replays until it expires, then starts a new run with a new id")
    func expiry() throws {
        let first = decide([request(offset: 0, key: "k")], now: 1000)
        let originalRun = try #require(first.writes.runs.first?.id)
        let replay = decide([request(offset: 1, key: "k")], snapshot: snapshot(after: first.writes, now: 60_999), now: 60_999)
        #expect(replay.tally.replays == 1)
        #expect(replay.writes.runs.isEmpty)
        let expired = decide([request(offset: 2, key: "k")], snapshot: snapshot(after: first.writes, now: 61_000), now: 61_000)
        #expect(expired.tally.replays == 0)
        let newRun = try #require(expired.writes.runs.first?.id)
        #expect(newRun != originalRun)
    }

    @Test("ids and event ids are the same when the same input is decided again")
    func deterministic() {
        let a = decide([request(offset: 3, key: "k")], now: 1000)
        let b = decide([request(offset: 3, key: "k")], now: 5000)
        #expect(a.writes.runs.map(\.id) == b.writes.runs.map(\.id))
        let ids = { (writes: BatchWrites) in writes.outbox.compactMap { try? JSONValue.parse($0.value)["event_id"] } }
        #expect(ids(a.writes) == ids(b.writes))
        #expect(Set(ids(a.writes)).count == 2)
    }

    @Test("the fingerprint ignores key order; a different body is a mismatch")
    func fingerprints() throws {
        let one = KafkaMessage(topicPartition: .init(topic: "trigger-requests", partition: 0), offset: 0, key: nil,
                               value: Array(#"{"request_type":"workflow_run","workflow_name":"w","body":{"input":{"a":1,"b":2}}}"#.utf8),
                               headers: [KafkaHeader(key: "Authorization", value: "Bearer \(Self.key)")])
        var two = one
        two.value = Array(#"{"body":{"input":{"b":2,"a":1}}, "workflow_name":"w","request_type":"workflow_run"}"#.utf8)
        var three = one
        three.value = Array(#"{"request_type":"workflow_run","workflow_name":"w","body":{"input":{"a":1,"b":3}}}"#.utf8)
        func fingerprint(_ message: KafkaMessage) throws -> [UInt8] {
            guard case .request(let request)? = decoder.decode([message], now: 0).first?.1 else { throw TestFailure() }
            return request.fingerprint
        }
        #expect(try fingerprint(one) == fingerprint(two))
        #expect(try fingerprint(one) != fingerprint(three))
    }

    struct TestFailure: Error {}
}

@Suite("Event envelopes")
struct EnvelopeTests {
    @Test("the spliced envelope is the canonical encoding of the whole event")
    func canonical() throws {
        let outputs = Outputs(configuration: WorkerConfiguration())
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        let source = Source(KafkaMessage(topicPartition: .init(topic: "t", partition: 0), offset: 1, key: nil, value: nil,
                                         headers: [KafkaHeader(key: "request-id", value: "r1"), KafkaHeader(key: "TRACEPARENT", value: traceparent)]))
        let data: JSONValue = ["b": [1, "two"], "a": "quote \" here"]
        for orgID in ["cborg_1", nil] as [String?] {
            let message = outputs.event(id: "cbevt_1", type: "WorkflowRun.Started", orgID: orgID, data: data, key: nil, now: 1_746_576_000_123, source: source)
            let expected: JSONValue = ["event_id": "cbevt_1", "event_type": "WorkflowRun.Started", "occurred_at": 1_746_576_000, "org_id": orgID.json, "data": data]
            #expect(message.value == expected.canonicalBytes)
            #expect(try JSONValue.parse(message.value) == expected)
        }
        let headers = outputs.event(id: "e", type: "T", orgID: nil, data: [:], key: nil, now: 0, source: source, idempotencyKey: "k").headers
        #expect(headers.map(\.name) == ["event-type", "request-id", "idempotency-key", "traceparent"])
        // The input's trace, under the span that handled it (derived from the input's place in the log).
        #expect(headers.last?.value == HeaderRules.child(of: Array(traceparent.utf8), seed: ["kafka", "t", "0", "1"]))
        let other = Source(KafkaMessage(topicPartition: .init(topic: "t", partition: 0), offset: 2, key: nil, value: nil, headers: [KafkaHeader(key: "traceparent", value: traceparent)]))
        #expect(other.traceparent != source.traceparent, "another input, another span")
        #expect(other.traceparent.map { Array($0[0..<36]) } == Array("00-4bf92f3577b34da6a3ce929d0e0e4736-".utf8))
    }
}
