import Crypto
import Kafka
import Store
import Workflows

/// Builds the messages the worker publishes: status events, responses and dead
/// letters, each within ``limit`` bytes whatever the input held (§6).
struct Outputs: Sendable {
    var topics: WorkerConfiguration.Topics
    /// `MAX_MESSAGE_BYTES`: the most an input value may have, and so an echoed value.
    var maxMessageBytes: Int
    /// The most bytes (key, value and headers) of any output.
    var limit: Int

    init(configuration: WorkerConfiguration) {
        topics = configuration.topics
        maxMessageBytes = configuration.maxMessageBytes
        limit = configuration.outputLimit
    }

    /// The longest input key an output carries as it is; a longer one is replaced by its digest.
    static let maxKeyBytes = 255

    /// An event envelope `{event_id, event_type, occurred_at, org_id, data}` for the
    /// status topic, with the input's valid `request-id` and `traceparent` and the
    /// request's valid `idempotency-key`.
    func event(id: String, type: String, orgID: String?, data: JSONValue, key: [UInt8]?, now: Timestamp, source: Source, idempotencyKey: String? = nil) -> OutboxMessage {
        event(id: id, type: type, orgID: orgID, key: key, now: now, source: source, idempotencyKey: idempotencyKey) { $0.value(data) }
    }

    /// The same, with `data` already in canonical JSON (a document stored too is encoded once).
    func event(id: String, type: String, orgID: String?, encodedData data: [UInt8], key: [UInt8]?, now: Timestamp, source: Source, idempotencyKey: String?) -> OutboxMessage {
        event(id: id, type: type, orgID: orgID, key: key, now: now, source: source, idempotencyKey: idempotencyKey) { $0.encoded(data) }
    }

    /// The same, with `data` written by `writeData`, straight into the envelope.
    func event(
        id: String, type: String, orgID: String?, key: [UInt8]?, now: Timestamp, source: Source, idempotencyKey: String?,
        writeData: (inout CanonicalJSONWriter) -> Void
    ) -> OutboxMessage {
        event(
            id: id, type: type, orgID: orgID, key: key, now: now, requestID: source.requestID, idempotencyKey: idempotencyKey,
            traceparent: source.traceparent, writeData: writeData
        )
    }

    /// A run's event written by the engine, after intake: the headers are those of the
    /// input that started the run (kept in its state), and its source partition is the
    /// input's, so that the instance owning it publishes it after the run's `Started`.
    func runEvent(_ event: RunEvent, orgID: String, runID: String, headers: RunHeaders, source: PartitionID?, now: Timestamp) -> OutboxMessage {
        runMessage(
            event, orgID: orgID, key: Self.boundedKey(Array(runID.utf8)), source: source, now: now,
            headers: Self.headers(type: event.type, requestID: headers.requestID, idempotencyKey: headers.idempotencyKey, traceparent: headers.traceparent.map { Array($0.utf8) })
        )
    }

    /// A run's events, as ``runEvent(_:orgID:runID:headers:source:now:)`` writes each. Their
    /// key and headers are the same but for the type: made once per run and per type, and
    /// shared (a claim of the demo's three steps writes seven events; `make bench` profiled
    /// the engine: memory allocation was a quarter of its CPU).
    func runEvents(_ events: [RunEvent], orgID: String, runID: String, headers: RunHeaders, source: PartitionID?, now: Timestamp) -> [OutboxMessage] {
        let key = Self.boundedKey(Array(runID.utf8))
        let traceparent = headers.traceparent.map { Array($0.utf8) }
        var byType: [(type: String, headers: [OutboxHeader])] = []
        return events.map { event in
            let eventHeaders: [OutboxHeader]
            if let made = byType.first(where: { $0.type == event.type }) {
                eventHeaders = made.headers
            } else {
                eventHeaders = Self.headers(type: event.type, requestID: headers.requestID, idempotencyKey: headers.idempotencyKey, traceparent: traceparent)
                byType.append((event.type, eventHeaders))
            }
            return runMessage(event, orgID: orgID, key: key, source: source, now: now, headers: eventHeaders)
        }
    }

    private func runMessage(_ event: RunEvent, orgID: String, key: [UInt8]?, source: PartitionID?, now: Timestamp, headers: [OutboxHeader]) -> OutboxMessage {
        // Sized for the data and the envelope's fields (ids, type and time: under 256 bytes).
        let value = envelope(id: Identifier.derive(prefix: "cbevt", from: event.idParts), type: event.type, orgID: orgID, now: now, capacity: 256 + event.data.count) {
            $0.encoded(event.data)
        }
        return OutboxMessage(topic: topics.runStatus, key: key, value: value, headers: headers, source: source)
    }

    private func event(
        id: String, type: String, orgID: String?, key: [UInt8]?, now: Timestamp, requestID: String?, idempotencyKey: String?, traceparent: [UInt8]?,
        writeData: (inout CanonicalJSONWriter) -> Void
    ) -> OutboxMessage {
        OutboxMessage(
            topic: topics.runStatus, key: Self.boundedKey(key), value: envelope(id: id, type: type, orgID: orgID, now: now, writeData: writeData),
            headers: Self.headers(type: type, requestID: requestID, idempotencyKey: idempotencyKey, traceparent: traceparent)
        )
    }

    /// The envelope `{data, event_id, event_type, occurred_at, org_id}` (canonical JSON).
    private func envelope(id: String, type: String, orgID: String?, now: Timestamp, capacity: Int = 512, writeData: (inout CanonicalJSONWriter) -> Void) -> [UInt8] {
        var envelope = CanonicalJSONWriter(capacity: capacity)
        envelope.object { envelope in
            envelope.key("data"); writeData(&envelope)
            envelope.key("event_id"); envelope.string(id)
            envelope.key("event_type"); envelope.string(type)
            envelope.key("occurred_at"); envelope.int(now / 1000)
            envelope.key("org_id"); envelope.string(orgID)
        }
        return envelope.bytes
    }

    /// An event's headers: its type, then those of the input it answers.
    private static func headers(type: String, requestID: String?, idempotencyKey: String?, traceparent: [UInt8]?) -> [OutboxHeader] {
        var headers = [OutboxHeader(name: "event-type", value: Array(type.utf8))]
        if let requestID { headers.append(OutboxHeader(name: "request-id", value: Array(requestID.utf8))) }
        if let idempotencyKey { headers.append(OutboxHeader(name: "idempotency-key", value: Array(idempotencyKey.utf8))) }
        if let traceparent { headers.append(OutboxHeader(name: "traceparent", value: traceparent)) }
        return headers
    }

    /// `key`, or when it is longer than ``maxKeyBytes`` the lowercase hex SHA-256 of
    /// it: the same input key always gives the same output key (and partition).
    static func boundedKey(_ key: [UInt8]?) -> [UInt8]? {
        guard let key, key.count > maxKeyBytes else { return key }
        return Array(Identifier.hex(Array(SHA256.hash(data: key))).utf8)
    }

    /// The input's key and value byte for byte, its headers but `Authorization`, and
    /// the error headers of the contract. What would take the copy over ``limit`` is
    /// left out, each with a header that gives its size: first the value (always
    /// when it is over `MAX_MESSAGE_BYTES`; `source-value-bytes`), then the input's
    /// headers (`source-headers-omitted`), then the key (`source-key-bytes`).
    func deadLetter(_ letter: DeadLetter) -> OutboxMessage {
        let source = letter.source
        let errorHeaders = [
            OutboxHeader(name: "error-code", value: Array(letter.code.utf8)),
            OutboxHeader(name: "error-message", value: Array(letter.message.utf8)),  // cut to 1 KiB by DeadLetter
            OutboxHeader(name: "source-topic", value: Array(source.topic.utf8)),
            OutboxHeader(name: "source-partition", value: Array(String(source.partition).utf8)),
            OutboxHeader(name: "source-offset", value: Array(String(source.offset).utf8)),
        ]
        // Secrets do not travel to other topics; nor does a header that could pass for one of the worker's.
        let copied = source.headers.filter { header in
            !header.key.caseInsensitiveEquals("Authorization") && !Self.deadLetterHeaders.contains { header.key.caseInsensitiveEquals($0) }
        }.map { OutboxHeader(name: $0.key, value: $0.value ?? []) }
        var copy = OutboxMessage(topic: topics.deadLetter, key: source.key, value: letter.value, headers: copied + errorHeaders)
        func omit(_ header: String, size: Int) { copy.headers.append(OutboxHeader(name: header, value: Array(String(size).utf8))) }
        // Room for the headers that say what was left out.
        let budget = limit - 3 * 64
        if copy.value.count > maxMessageBytes || copy.byteCount > budget {
            omit("source-value-bytes", size: copy.value.count)
            copy.value = []
        }
        if copy.byteCount > budget {
            omit("source-headers-omitted", size: copied.count)
            copy.headers.removeFirst(copied.count)
        }
        if copy.byteCount > budget, let key = copy.key {
            omit("source-key-bytes", size: key.count)
            copy.key = nil
        }
        return copy
    }

    /// The headers a dead letter's copy gets from the worker; an input's own headers of
    /// these names are not copied, so that none can be forged.
    static let deadLetterHeaders = [
        "error-code", "error-message", "source-topic", "source-partition", "source-offset",
        "source-value-bytes", "source-headers-omitted", "source-key-bytes",
    ]
}

extension OutboxMessage {
    /// The value as published: a dead letter whose value was left out
    /// (`source-value-bytes`) goes out with no value at all (null), as §6 has it.
    var publishedValue: [UInt8]? {
        value.isEmpty && headers.contains(where: { $0.name == "source-value-bytes" }) ? nil : value
    }
}
