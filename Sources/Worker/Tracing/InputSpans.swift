import Instrumentation
import Kafka
import ServiceContextModule
import Tracing

/// A span per input, with swift-distributed-tracing: its parent is the input's valid
/// `traceparent` (a Kafka header, or the HTTP request's span), and the outputs of the
/// input, its run's later events included, carry the span's own `traceparent`.
///
/// Made only when a tracer exports them (`trigger-worker run` bootstraps one when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set); otherwise nothing at all is done per input,
/// and outputs carry a child `traceparent` whose span id derives from the input's place
/// in its log (``HeaderRules/child(of:seed:)``).
public struct InputSpans: Sendable {
    /// Whether spans are made.
    public let enabled: Bool

    public init(enabled: Bool) { self.enabled = enabled }

    /// The context whose span is the parent of an input with these headers: its
    /// `traceparent` when it is valid by §4's rules (one header, W3C trace context),
    /// written as version 00 (a later version's first four fields), which every tracer
    /// reads; else a new trace. Only that value reaches the tracer (and its logs).
    public static func parentContext(_ headers: [KafkaHeader]) -> ServiceContext {
        var context = ServiceContext.topLevel
        if let parent = HeaderRules.traceparent(headers) { extract(parent, into: &context) }
        return context
    }

    private static func extract(_ traceparent: [UInt8], into context: inout ServiceContext) {
        let version00 = Array("00-".utf8) + traceparent[3..<55]
        InstrumentationSystem.instrument.extract(version00, into: &context, using: TraceparentExtractor())
    }

    /// Starts the span of a consumed message, and makes its outputs carry it.
    func start(_ source: inout Source) {
        guard enabled else { return }
        var context = ServiceContext.topLevel
        if let parent = source.incomingTraceparent { Self.extract(parent, into: &context) }
        let span = InstrumentationSystem.tracer.startSpan("process \(source.topic)", context: context, ofKind: .consumer)
        span.updateAttributes { attributes in
            attributes["messaging.system"] = "kafka"
            attributes["messaging.operation.type"] = "process"
            attributes["messaging.destination.name"] = source.topic
            attributes["messaging.destination.partition.id"] = "\(source.partition)"
            attributes["messaging.kafka.offset"] = Int(source.offset)
        }
        adopt(span, into: &source)
    }

    /// Starts the span of a request over HTTP: a child of the HTTP server's span when
    /// there is one (the task's context), else of the request's `traceparent`.
    func startHTTP(_ source: inout Source, endpoint: String) {
        guard enabled else { return }
        var context = ServiceContext.current ?? .topLevel
        if ServiceContext.current == nil, let parent = source.incomingTraceparent { Self.extract(parent, into: &context) }
        // The endpoint (ids and names in it) is an attribute, not the span's name.
        let span = InstrumentationSystem.tracer.startSpan("decide HTTP write", context: context, ofKind: .internal)
        span.updateAttributes { $0["trigger_worker.endpoint"] = endpoint }
        adopt(span, into: &source)
    }

    /// The input's outputs carry the span's `traceparent` when the input had a valid one
    /// (§5: outputs carry `traceparent` only when the input had it), and only when the
    /// span is in the input's trace (a tracer that could not read it started a new one:
    /// the outputs then keep the derived child, in the input's trace).
    private func adopt(_ span: any Span, into source: inout Source) {
        source.span = span
        guard let incoming = source.incomingTraceparent else { return }
        var carrier: [String: String] = [:]
        InstrumentationSystem.instrument.inject(span.context, into: &carrier, using: HeaderInjector())
        if let value = carrier["traceparent"].map({ Array($0.utf8) }), HeaderRules.isValidTraceparent(value), value[3..<35] == incoming[3..<35] {
            source.traceparent = value
        }
    }

    /// Ends the spans of inputs that were handled: written, or answered (`error` nil), or not.
    static func end(_ items: [(Source, Input)], error: (any Error)? = nil, _ attributes: (inout SpanAttributes) -> Void = { _ in }) {
        for (source, input) in items {
            guard let span = source.span else { continue }
            span.updateAttributes { spanAttributes in
                spanAttributes["trigger_worker.input"] = input.kind
                if let org = input.orgID { spanAttributes["trigger_worker.org_id"] = org }
                attributes(&spanAttributes)
            }
            if let error {
                span.recordError(error)
                span.setStatus(SpanStatus(code: .error))
            }
            span.end()
        }
    }
}

/// Extracts from a `traceparent` value only (Kafka headers are bytes, and the
/// input's was checked by ``HeaderRules`` already).
struct TraceparentExtractor: Extractor {
    func extract(key: String, from carrier: [UInt8]) -> String? {
        key.lowercased() == "traceparent" ? String(decoding: carrier, as: UTF8.self) : nil
    }
}

/// Injects into a dictionary of lower-cased header names.
struct HeaderInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
        carrier[key.lowercased()] = value
    }
}

extension Input {
    /// What kind of input this is, as a span's attribute.
    var kind: String {
        switch self {
        case .vendorEvent: "vendor_event"
        case .request: "trigger_request"
        case .answered: "answered_request"
        case .response: "questionnaire_response"
        case .deadLetter: "dead_letter"
        case .ignored: "ignored_event"
        }
    }

    /// The org the input is of, when it is known.
    var orgID: String? {
        switch self {
        case .vendorEvent(let event): event.org.id
        case .request(let request): request.org.id
        case .answered(let answered): answered.orgID
        case .response(let response): response.org.id
        case .deadLetter, .ignored: nil
        }
    }
}
