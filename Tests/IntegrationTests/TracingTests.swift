import Foundation
import HTTPTestSupport
import Kafka
import Testing
import Workflows

/// Spans exported over OTLP by a running worker (issue 11, tracing): a local HTTP
/// receiver stands in for the collector, and the worker is told about it with the
/// standard `OTEL_*` variables.
@Suite("Tracing", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason), .serialized)
struct TracingTests {
    typealias H = WorkerHarness

    /// One exported span, as OTLP/JSON carries it.
    struct ExportedSpan: CustomStringConvertible {
        var traceID: String
        var spanID: String
        var parentSpanID: String
        var name: String
        var service: String?
        var description: String { "\(name) trace=\(traceID) span=\(spanID) parent=\(parentSpanID)" }
    }

    /// OTLP/JSON ids are hex by the OTLP spec, base64 by protobuf's JSON mapping: either is read as hex.
    static func hexID(_ value: JSONValue?) -> String {
        guard let text = value?.stringValue, !text.isEmpty else { return "" }
        if text.count == 32 || text.count == 16, text.allSatisfy(\.isHexDigit) { return text.lowercased() }
        guard let data = Data(base64Encoded: text) else { return text }
        return Identifier.hex(Array(data))
    }

    /// Every span of every export request the collector received.
    static func spans(in requests: [ReceivedRequest]) -> [ExportedSpan] {
        var spans: [ExportedSpan] = []
        for request in requests where request.uri.hasSuffix("/v1/traces") {
            guard let body = try? JSONValue.parse(request.body) else { continue }
            for resource in body["resourceSpans"]?.arrayValue ?? [] {
                let service = resource[path: ["resource", "attributes"]]?.arrayValue?
                    .first { $0["key"] == "service.name" }?[path: ["value", "stringValue"]]?.stringValue
                for scope in resource["scopeSpans"]?.arrayValue ?? [] {
                    for span in scope["spans"]?.arrayValue ?? [] {
                        spans.append(ExportedSpan(
                            traceID: hexID(span["traceId"]), spanID: hexID(span["spanId"]), parentSpanID: hexID(span["parentSpanId"]),
                            name: span["name"]?.stringValue ?? "", service: service
                        ))
                    }
                }
            }
        }
        return spans
    }

    /// A collector (a local receiver), a worker exporting to it (`protocol`: the
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, swift-otel's default when nil), a reader of its
    /// status topic and a client.
    static func tracedWorker(_ prefix: String, protocol: String?) async throws -> (HTTPReceiver, HTTPWorker, TestMember, KafkaProducer) {
        let collector = try await HTTPReceiver { _, _ in Reply(status: 200) }
        var environment = ["OTEL_EXPORTER_OTLP_ENDPOINT": collector.url(""), "OTEL_BSP_SCHEDULE_DELAY": "100"]
        environment["OTEL_EXPORTER_OTLP_PROTOCOL"] = `protocol`
        let worker = try await HTTPWorker.start(prefix, environment: environment)
        let reader = try worker.statusReader()
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        return (collector, worker, reader, client)
    }

    /// A request of org A to run quarterly-privacy-sweep, with `key` as its Kafka key and Idempotency-Key.
    static func request(to worker: HTTPWorker, key: String, traceparent: String) -> KafkaProducerMessage {
        KafkaProducerMessage(
            topic: worker.topics["TRIGGER_REQUESTS_TOPIC"]!, key: Array(key.utf8), value: H.workflowRun("quarterly-privacy-sweep").canonicalBytes,
            headers: [
                KafkaHeader(key: "Authorization", value: "Bearer \(H.keyA)"), KafkaHeader(key: "Idempotency-Key", value: key),
                KafkaHeader(key: "traceparent", value: traceparent),
            ]
        )
    }

    @Test("with OTEL_EXPORTER_OTLP_ENDPOINT set, each input's span is exported: a Kafka request's is the child of its traceparent, an HTTP request's the child of the server's span; outputs carry the exported span's id")
    func exported() async throws {
        let (collector, worker, reader, client) = try await Self.tracedWorker("trace", protocol: "http/json")
        defer { worker.process.kill(); Task { await collector.close(); await reader.stop() } }

        // Over Kafka.
        let kafkaTrace = "4bf92f3577b34da6a3ce929d0e0e4736", kafkaParent = "00f067aa0ba902b7"
        _ = try await client.send(Self.request(to: worker, key: "trace-1", traceparent: "00-\(kafkaTrace)-\(kafkaParent)-01"))
        // Over HTTP.
        let httpTrace = "0af7651916cd43dd8448eb211c80319c", httpParent = "b7ad6b7169203331"
        let answer = try await OperationsTests.post(
            worker.port, "/v1/workflows/quarterly-privacy-sweep/run", body: Array(#"{"input": {}}"#.utf8),
            headers: ["Authorization": "Bearer \(H.keyA)", "traceparent": "00-\(httpTrace)-\(httpParent)-01"]
        )
        #expect(answer.status == 201, "\(answer.body)")
        // A later version of trace context (§4 accepts its first four fields): read as version 00, same trace.
        let laterTrace = "6cf92f3577b34da6a3ce929d0e0e4736", laterParent = "20f067aa0ba902b7"
        _ = try await client.send(Self.request(to: worker, key: "trace-2", traceparent: "01-\(laterTrace)-\(laterParent)-01-future"))
        // Trace headers the tracer cannot read are not logged with the request's other headers.
        let unreadable = try await OperationsTests.get(
            worker.port, "/v1/workflows/runs?limit=1", headers: ["Authorization": "Bearer \(H.keyA)", "traceparent": "garbage", "tracestate": "=,=,="]
        )
        #expect(unreadable.status == 200)
        try await client.shutdown()

        /// The span id of the `traceparent` the outputs of trace `trace` carry (all the same).
        @Sendable func outputSpans(of trace: String) -> Set<String> {
            Set(reader.snapshot.received.compactMap { message in
                let parts = message.header("traceparent")?.split(separator: "-").map(String.init) ?? []
                return parts.count == 4 && parts[1] == trace ? parts[2] : nil
            })
        }
        try await reader.waitUntil("outputs of the three traces") { _ in
            !outputSpans(of: kafkaTrace).isEmpty && !outputSpans(of: httpTrace).isEmpty && !outputSpans(of: laterTrace).isEmpty
        }
        let kafkaOutputSpan = try #require(outputSpans(of: kafkaTrace).first)
        let httpOutputSpan = try #require(outputSpans(of: httpTrace).first)
        #expect(outputSpans(of: kafkaTrace).count == 1 && outputSpans(of: httpTrace).count == 1, "one span per input carries its outputs")
        #expect(kafkaOutputSpan != kafkaParent && httpOutputSpan != httpParent)

        let laterOutputSpan = try #require(outputSpans(of: laterTrace).first)
        try await collector.waitUntil("the spans of the three inputs", timeout: .seconds(30)) { requests in
            let spans = Self.spans(in: requests)
            return [kafkaOutputSpan, httpOutputSpan, laterOutputSpan].allSatisfy { id in spans.contains { $0.spanID == id } }
        }
        let spans = Self.spans(in: collector.requests)
        #expect(collector.requests.allSatisfy { $0.method == "POST" && $0.uri.hasSuffix("/v1/traces") }, "spans only: \(collector.requests.map(\.uri))")
        // The Kafka request's span: the child of its traceparent, the parent of its outputs.
        let kafkaSpan = try #require(spans.first { $0.spanID == kafkaOutputSpan }, "\(spans)")
        #expect(kafkaSpan.traceID == kafkaTrace && kafkaSpan.parentSpanID == kafkaParent, "\(kafkaSpan)")
        #expect(kafkaSpan.name == "process \(worker.topics["TRIGGER_REQUESTS_TOPIC"]!)" && kafkaSpan.service == "trigger-worker", "\(kafkaSpan)")
        // The HTTP request's: the child of the server's span, itself the child of the request's traceparent.
        let httpSpan = try #require(spans.first { $0.spanID == httpOutputSpan }, "\(spans)")
        #expect(httpSpan.traceID == httpTrace && httpSpan.name == "decide HTTP write", "\(httpSpan)")
        let serverSpan = try #require(spans.first { $0.spanID == httpSpan.parentSpanID }, "the server's span: \(spans)")
        #expect(serverSpan.traceID == httpTrace && serverSpan.parentSpanID == httpParent, "\(serverSpan)")
        #expect(serverSpan.name == "POST /v1/workflows/{name}/run", "a route, not a path: \(serverSpan)")
        let laterSpan = try #require(spans.first { $0.spanID == laterOutputSpan }, "\(spans)")
        #expect(laterSpan.traceID == laterTrace && laterSpan.parentSpanID == laterParent, "\(laterSpan)")
        #expect(!worker.process.output.joined().contains(H.keyA), "an API key in the worker's logs")

        worker.process.interrupt()
        #expect(try await worker.process.waitForExit(timeout: .seconds(15)) == 0, "\(worker.process.output.suffix(10).joined(separator: "\n"))")
    }

    @Test("by default spans go out as OTLP/HTTP protobuf: the export holds the Kafka request's trace id, its parent and the outputs' span id")
    func protobuf() async throws {
        let (collector, worker, reader, client) = try await Self.tracedWorker("tracepb", protocol: nil)
        defer { worker.process.kill(); Task { await collector.close(); await reader.stop() } }
        let trace = "5bf92f3577b34da6a3ce929d0e0e4736", parent = "10f067aa0ba902b7"
        _ = try await client.send(Self.request(to: worker, key: "trace-pb", traceparent: "00-\(trace)-\(parent)-01"))
        try await client.shutdown()
        try await reader.waitUntil("the response") { !$0.received.isEmpty }
        let carried = try #require(reader.snapshot.received.first?.header("traceparent")).split(separator: "-").map(String.init)
        #expect(carried.count == 4 && carried[1] == trace && carried[2] != parent)
        /// The raw bytes of a hex id, as protobuf's `bytes` fields carry them.
        func bytes(_ hex: String) -> [UInt8] {
            var result: [UInt8] = []
            var index = hex.startIndex
            while index < hex.endIndex {
                let next = hex.index(index, offsetBy: 2)
                result.append(UInt8(hex[index..<next], radix: 16)!)
                index = next
            }
            return result
        }
        let wanted = [bytes(trace), bytes(parent), bytes(carried[2])]
        try await collector.waitUntil("an export with the span", timeout: .seconds(30)) { requests in
            requests.contains { request in wanted.allSatisfy { request.body.firstRange(of: $0) != nil } }
        }
        let export = try #require(collector.requests.first { request in wanted.allSatisfy { request.body.firstRange(of: $0) != nil } })
        #expect(export.uri == "/v1/traces" && export.header("content-type") == "application/x-protobuf", "\(export.uri) \(export.header("content-type") ?? "-")")
    }
}
