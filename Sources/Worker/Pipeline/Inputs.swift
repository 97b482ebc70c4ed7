import Kafka
import Store
import Tracing
import Workflows

/// Where an input came from, and what of it is echoed into outputs.
struct Source: Sendable {
    var topic: String
    var partition: Int32
    var offset: Int64
    var key: [UInt8]?
    var headers: [KafkaHeader]
    /// The `Request-Id`, when present and valid (§4): the only form ever echoed.
    let requestID: String?
    /// Why the `Request-Id` is not valid, when it is present and is not (answered 400).
    let requestIDProblem: String?
    /// The `traceparent` the input's outputs carry, when the input's is valid W3C trace
    /// context: the same trace, and the span that handled the input as their parent (the
    /// exported span's id when spans are made, ``InputSpans``; else an id derived from
    /// the input's coordinates).
    var traceparent: [UInt8]?
    /// The input's own `traceparent`, when it is valid.
    let incomingTraceparent: [UInt8]?
    /// The span that handles the input, when spans are made (``InputSpans``).
    var span: (any Span)?
    /// For a request over HTTP: its method and path (`POST /v1/…`) and an id minted for
    /// it; `nil` for a Kafka message. Such an input has no place in a log: no watermark,
    /// no `TriggerRequest.Responded` (its answer is the HTTP response), no dead letter.
    let http: (endpoint: String, id: String)?

    /// A request that came over HTTP (`headers` as it carried them).
    init(httpEndpoint endpoint: String, id: String, headers: [KafkaHeader]) {
        topic = ""
        partition = -1
        offset = -1
        key = nil
        self.headers = headers
        (requestID, requestIDProblem) = HeaderRules.requestID(headers)
        incomingTraceparent = HeaderRules.traceparent(headers)
        traceparent = incomingTraceparent.map { HeaderRules.child(of: $0, seed: ["http", id]) }
        http = (endpoint, id)
    }

    init(_ message: KafkaMessage) {
        http = nil
        topic = message.topic
        partition = message.partition
        offset = message.offset
        key = message.key
        headers = message.headers
        (requestID, requestIDProblem) = HeaderRules.requestID(message.headers)
        incomingTraceparent = HeaderRules.traceparent(message.headers)
        traceparent = incomingTraceparent.map {
            HeaderRules.child(of: $0, seed: ["kafka", message.topic, String(message.partition), String(message.offset)])
        }
    }

    var partitionID: PartitionID { PartitionID(topic: topic, partition: partition) }

    /// Writes `{topic, partition, offset}` as events carry it (`{http: "POST /v1/…"}`
    /// for a request over HTTP).
    func write(to writer: inout CanonicalJSONWriter) {
        writer.object { source in
            if let http {
                source.key("http"); source.string(http.endpoint)
                return
            }
            source.key("offset"); source.int(offset)
            source.key("partition"); source.int(Int64(partition))
            source.key("topic"); source.string(topic)
        }
    }

    /// What started a run from this input.
    enum Trigger {
        case event(id: String)
        case request(idempotencyKey: String?)
    }

    /// The `trigger` of the runs this input starts, in canonical JSON:
    /// `{kind, event_id | idempotency_key, request_id, source}`.
    func triggerDocument(_ trigger: Trigger) -> [UInt8] {
        var writer = CanonicalJSONWriter(capacity: 192)
        writer.object { document in
            switch trigger {
            case .event(let id):
                document.key("event_id"); document.string(id)
                document.key("kind"); document.string("event")
            case .request(let key):
                document.key("idempotency_key"); document.string(key)
                document.key("kind"); document.string("request")
            }
            document.key("request_id"); document.string(requestID)
            document.key("source"); write(to: &document)
        }
        return writer.bytes
    }

    /// The parts every id derived from this input ends with: where it was read,
    /// in which epoch of its partition's log (a log that was reset starts a new
    /// epoch, so that its offsets mint new ids).
    func coordinates(epoch: Int64) -> [String] {
        if let http { return ["http", http.id] }
        return [topic, String(partition), String(epoch), String(offset)]
    }
}

/// One consumed message after decoding and the checks that need no store.
enum Input: Sendable {
    /// A `Vendor.Created` or `Vendor.Updated` event of a known org, signature checked.
    case vendorEvent(VendorEvent)
    /// An authenticated trigger request of a known shape; body not yet validated.
    case request(TriggerRequest)
    /// A trigger request answered without the store (400, 401, 413, 422), perhaps dead-lettered too.
    case answered(AnsweredRequest)
    /// A `QuestionnaireResponse.Submitted` of a known org, signature checked: kept for
    /// the steps that wait for it.
    case response(ResponseEvent)
    /// A vendor event that cannot be handled at all.
    case deadLetter(DeadLetter)
    /// A well-formed event of a type the worker does not act on.
    case ignored(eventType: String)
}

struct VendorEvent: Sendable {
    var source: Source
    var org: Org
    var eventID: String
    var type: VendorEventType
    var occurredAt: Int64
    /// The event's `data`, `{"vendor": {…}}`: the input of the runs it starts.
    var data: JSONValue
    /// `data` in canonical JSON (its fingerprint is taken over these bytes).
    var encodedData: [UInt8]
    var vendor: JSONValue
    var vendorID: String
    /// The dedupe scope `(org, "event", event_id)`, hashed once here.
    let scope: ScopeHash

    init(source: Source, org: Org, eventID: String, type: VendorEventType, occurredAt: Int64, data: JSONValue, encodedData: [UInt8], vendor: JSONValue, vendorID: String) {
        self.source = source
        self.org = org
        self.eventID = eventID
        self.type = type
        self.occurredAt = occurredAt
        self.data = data
        self.encodedData = encodedData
        self.vendor = vendor
        self.vendorID = vendorID
        scope = ScopeHash(orgID: org.id, endpoint: Scopes.eventEndpoint, key: eventID)
    }
}

/// A `QuestionnaireResponse.Submitted` (§10): it starts nothing; steps wait for it.
struct ResponseEvent: Sendable {
    var source: Source
    var org: Org
    var eventID: String
    var occurredAt: Int64
    var data: JSONValue
    var encodedData: [UInt8]
    var vendorID: String
    /// `data.workflow_run_id`: it then matches only that run's waits.
    var runID: String?
    /// The dedupe scope `(org, "event", event_id)`, as for vendor events.
    let scope: ScopeHash

    init(source: Source, org: Org, eventID: String, occurredAt: Int64, data: JSONValue, encodedData: [UInt8], vendorID: String, runID: String?) {
        self.source = source
        self.org = org
        self.eventID = eventID
        self.occurredAt = occurredAt
        self.data = data
        self.encodedData = encodedData
        self.vendorID = vendorID
        self.runID = runID
        scope = ScopeHash(orgID: org.id, endpoint: Scopes.eventEndpoint, key: eventID)
    }
}

/// The request types.
enum RequestType: String, Sendable, CaseIterable {
    case workflowRun = "workflow_run"
    case assessmentCreate = "assessment_create"
    /// `POST /v1/workflows/runs/{id}/cancel`: no idempotency key semantics (§10); a
    /// redelivered message is deduplicated by its coordinates.
    case workflowRunCancel = "workflow_run_cancel"
}

struct TriggerRequest: Sendable {
    var source: Source
    var org: Org
    var type: RequestType
    /// `workflow_name` of a `workflow_run`; `trigger_workflow` of an `assessment_create` when given.
    var workflowName: String?
    var body: JSONValue
    /// A valid key (§4), or `nil` when the request has none.
    var idempotencyKey: String?
    /// Method and concrete path: `POST /v1/workflows/<name>/run` or `POST /v1/assessments`.
    var endpoint: String
    var fingerprint: [UInt8]
    /// The idempotency scope `(org, endpoint, key)`, hashed once here; `nil` without a key.
    let scope: ScopeHash?

    init(source: Source, org: Org, type: RequestType, workflowName: String?, body: JSONValue, idempotencyKey: String?, endpoint: String, fingerprint: [UInt8]) {
        self.source = source
        self.org = org
        self.type = type
        self.workflowName = workflowName
        self.body = body
        self.idempotencyKey = idempotencyKey
        self.endpoint = endpoint
        self.fingerprint = fingerprint
        scope = type == .workflowRunCancel ? nil : idempotencyKey.map { ScopeHash(orgID: org.id, endpoint: endpoint, key: $0) }
    }

    /// The run a `workflow_run_cancel` names, when it is a run id.
    var runID: String? {
        guard type == .workflowRunCancel, let id = body["workflow_run_id"]?.stringValue, Identifier.isValid(id, prefix: "cbwr") else { return nil }
        return id
    }
}

/// A request answered before the store is involved.
struct AnsweredRequest: Sendable {
    var source: Source
    var orgID: String?
    /// A known request type, or `nil` (an unknown one is not echoed).
    var requestType: String?
    /// At most 255 bytes, without control characters; `nil` otherwise.
    var workflowName: String?
    /// A valid key (§4) only: an invalid one is answered 422 and never echoed.
    var idempotencyKey: String?
    var response: Response
    /// When set, the raw message also goes to the dead-letter topic with this error.
    var deadLetter: DeadLetter?
}

struct DeadLetter: Sendable {
    /// `invalid_json`, `invalid_request`, `invalid_event`, `message_too_large`, `invalid_signature`, `event_too_old`.
    var code: String
    /// At most 1 KiB (``BoundedText/messageBytes``).
    var message: String
    var source: Source
    var value: [UInt8]

    init(code: String, message: String, source: Source, value: [UInt8]) {
        self.code = code
        self.message = BoundedText.message(message)
        self.source = source
        self.value = value
    }
}

/// An API response: a status and a JSON body, kept encoded (canonical JSON): it is
/// stored under an idempotency key and published, and a replay splices it unparsed.
struct Response: Sendable, Hashable {
    var status: Int
    var body: [UInt8]

    init(status: Int, body: JSONValue) {
        self.init(status: status, encodedBody: body.canonicalBytes)
    }

    init(status: Int, encodedBody: [UInt8]) {
        self.status = status
        body = encodedBody
    }
}

/// Idempotency scopes `(org, endpoint, key)`, hashed by ``ScopeHash/init(orgID:endpoint:key:)``.
enum Scopes {
    static let eventEndpoint = "event"

    static func endpoint(for type: RequestType, workflowName: String?) -> String {
        switch type {
        case .workflowRun: "POST /v1/workflows/\(workflowName ?? "")/run"
        case .assessmentCreate: "POST /v1/assessments"
        case .workflowRunCancel: "POST /v1/workflows/runs/cancel"
        }
    }
}
