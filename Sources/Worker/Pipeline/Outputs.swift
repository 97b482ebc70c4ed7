import Kafka
import Store
import Workflows

/// Builds the messages the worker publishes: status events, responses and dead letters.
struct Outputs: Sendable {
    var topics: WorkerConfiguration.Topics

    /// An event envelope `{event_id, event_type, occurred_at, org_id, data}` for the
    /// status topic, with the input's `request-id`, `idempotency-key` and `traceparent`.
    func event(id: String, type: String, orgID: String?, data: JSONValue, key: [UInt8]?, now: Timestamp, source: Source) -> OutboxMessage {
        event(id: id, type: type, orgID: orgID, encodedData: data.canonicalBytes, key: key, now: now, source: source)
    }

    /// The same, with `data` already in canonical JSON (a document stored too is encoded once).
    func event(id: String, type: String, orgID: String?, encodedData data: [UInt8], key: [UInt8]?, now: Timestamp, source: Source) -> OutboxMessage {
        // The envelope's keys in canonical (sorted) order, around the encoded data.
        var envelope: [UInt8] = []
        envelope.reserveCapacity(data.count + 160)
        envelope.append(contentsOf: #"{"data":"#.utf8)
        envelope.append(contentsOf: data)
        envelope.append(contentsOf: #","event_id":"#.utf8)
        envelope.append(contentsOf: JSONValue.string(id).canonicalBytes)
        envelope.append(contentsOf: #","event_type":"#.utf8)
        envelope.append(contentsOf: JSONValue.string(type).canonicalBytes)
        envelope.append(contentsOf: #","occurred_at":"#.utf8)
        envelope.append(contentsOf: String(now / 1000).utf8)
        envelope.append(contentsOf: #","org_id":"#.utf8)
        envelope.append(contentsOf: orgID.json.canonicalBytes)
        envelope.append(UInt8(ascii: "}"))
        var headers = [OutboxHeader(name: "event-type", value: Array(type.utf8))]
        for (input, output) in [("Request-Id", "request-id"), ("Idempotency-Key", "idempotency-key"), ("traceparent", "traceparent")] {
            if let value = source.headers.first(named: input)?.value { headers.append(OutboxHeader(name: output, value: value)) }
        }
        return OutboxMessage(topic: topics.runStatus, key: key, value: envelope, headers: headers)
    }

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
