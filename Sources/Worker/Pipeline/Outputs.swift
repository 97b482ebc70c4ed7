import Kafka
import Store
import Workflows

/// Builds the messages the worker publishes: status events, responses and dead letters.
struct Outputs: Sendable {
    var topics: WorkerConfiguration.Topics

    /// An event envelope `{event_id, event_type, occurred_at, org_id, data}` for the
    /// status topic, with the input's `request-id`, `idempotency-key` and `traceparent`.
    func event(id: String, type: String, orgID: String?, data: JSONValue, key: [UInt8]?, now: Timestamp, source: Source) -> OutboxMessage {
        event(id: id, type: type, orgID: orgID, key: key, now: now, source: source) { $0.value(data) }
    }

    /// The same, with `data` already in canonical JSON (a document stored too is encoded once).
    func event(id: String, type: String, orgID: String?, encodedData data: [UInt8], key: [UInt8]?, now: Timestamp, source: Source) -> OutboxMessage {
        event(id: id, type: type, orgID: orgID, key: key, now: now, source: source) { $0.encoded(data) }
    }

    /// The same, with `data` written by `writeData`, straight into the envelope.
    func event(
        id: String, type: String, orgID: String?, key: [UInt8]?, now: Timestamp, source: Source, writeData: (inout CanonicalJSONWriter) -> Void
    ) -> OutboxMessage {
        var envelope = CanonicalJSONWriter()
        envelope.object { envelope in
            envelope.key("data"); writeData(&envelope)
            envelope.key("event_id"); envelope.string(id)
            envelope.key("event_type"); envelope.string(type)
            envelope.key("occurred_at"); envelope.int(now / 1000)
            envelope.key("org_id"); envelope.string(orgID)
        }
        var headers = [OutboxHeader(name: "event-type", value: Array(type.utf8))]
        for (input, output) in Self.echoedHeaders {
            if let value = source.headers.first(named: input)?.value { headers.append(OutboxHeader(name: output, value: value)) }
        }
        return OutboxMessage(topic: topics.runStatus, key: key, value: envelope.bytes, headers: headers)
    }

    /// The input headers an event carries on, and their names on it.
    private static let echoedHeaders = [("Request-Id", "request-id"), ("Idempotency-Key", "idempotency-key"), ("traceparent", "traceparent")]

    /// The input's value byte for byte, with its headers and the error headers of the contract.
    func deadLetter(_ letter: DeadLetter) -> OutboxMessage {
        var headers = letter.source.headers.map { OutboxHeader(name: $0.key, value: $0.value ?? []) }
        headers += [
            OutboxHeader(name: "error-code", value: Array(letter.code.utf8)),
            OutboxHeader(name: "error-message", value: Array(letter.message.utf8)),
            OutboxHeader(name: "source-topic", value: Array(letter.source.topic.utf8)),
            OutboxHeader(name: "source-partition", value: Array(String(letter.source.partition).utf8)),
            OutboxHeader(name: "source-offset", value: Array(String(letter.source.offset).utf8)),
        ]
        return OutboxMessage(topic: topics.deadLetter, key: letter.source.key, value: letter.value, headers: headers)
    }
}
