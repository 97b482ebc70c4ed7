import Foundation
import Kafka
import Store
import Workflows

/// Turns consumed messages into ``Input``s, running every check that needs no
/// store, in the contract's order: size, JSON, shape and `request_type`, API
/// key (then the idempotency key), and for vendor events their fields, org,
/// signature and age.
///
/// Every value an output may repeat is checked here, so that what is echoed is
/// bounded: ids have their documented formats, names and keys at most 255 bytes.
struct InputDecoder: Sendable {
    var topics: WorkerConfiguration.Topics
    var maxMessageBytes: Int
    /// Events older than this are dead-lettered (`event_too_old`): their dedupe
    /// records may have expired, so they must not start work again.
    var idempotencyTTL: Duration
    var orgs: OrgDirectory
    /// Starts each input's span, when spans are made.
    var spans: InputSpans

    /// How far in the future an event's `occurred_at` may be (clock skew).
    static let maxFutureSkew: Int64 = 300
    /// The longest workflow name accepted in a request, in bytes.
    static let maxNameBytes = 255

    init(configuration: WorkerConfiguration, orgs: OrgDirectory) {
        topics = configuration.topics
        maxMessageBytes = configuration.maxMessageBytes
        idempotencyTTL = configuration.idempotencyTTL
        self.orgs = orgs
        spans = InputSpans(enabled: configuration.traceInputs)
    }

    /// Decodes a batch, in order, at `now` (milliseconds). Requests that carry the
    /// same `Authorization` as the one before (one client sending many) are
    /// authenticated once.
    func decode(_ batch: [KafkaMessage], now: Timestamp) -> [(Source, Input)] {
        var keys = KnownKey()
        return batch.map { message in
            var source = Source(message)
            spans.start(&source)
            let input = message.topic == topics.vendorEvents
                ? decodeVendorEvent(message, source: source, now: now)
                : decodeRequest(message.value ?? [], source: source, keys: &keys)
            return (source, input)
        }
    }

    /// A request that came over HTTP, as the equivalent trigger request `value` (§4's
    /// shape): the same checks, in the same order, as a Kafka message's.
    func decodeHTTP(_ value: [UInt8], source: Source) -> Input {
        var keys = KnownKey()
        return decodeRequest(value, source: source, keys: &keys)
    }

    /// The last `Authorization` value seen, and whose key it held.
    private struct KnownKey {
        var authorization: [UInt8]?
        var org: Org?
    }

    // MARK: Vendor events

    private func decodeVendorEvent(_ message: KafkaMessage, source: Source, now: Timestamp) -> Input {
        let value = message.value ?? []
        func dead(_ code: String, _ text: String) -> Input {
            .deadLetter(DeadLetter(code: code, message: text, source: source, value: value))
        }
        guard value.count <= maxMessageBytes else {
            return dead("message_too_large", "the value is \(value.count) bytes; MAX_MESSAGE_BYTES is \(maxMessageBytes)")
        }
        guard let json = try? JSONValue.parse(value) else { return dead("invalid_json", "the value is not JSON") }
        guard let envelope = json.objectValue else { return dead("invalid_event", "the value is not a JSON object") }
        guard let eventType = envelope["event_type"]?.stringValue else { return dead("invalid_event", "event_type is missing or not a string") }
        let type = VendorEventType(rawValue: eventType)
        let isResponse = eventType == WaitableEvent.questionnaireResponse
        guard type != nil || isResponse else { return .ignored(eventType: BoundedText.identifier(eventType)) }
        guard let eventID = envelope["event_id"]?.stringValue, Identifier.isValid(eventID, prefix: "cbevt") else {
            return dead("invalid_event", "event_id must be cbevt_ followed by 32 lowercase hex digits")
        }
        guard let orgID = envelope["org_id"]?.stringValue, Identifier.isValid(orgID, prefix: "cborg") else {
            return dead("invalid_event", "org_id must be cborg_ followed by 32 lowercase hex digits")
        }
        guard case .int(let occurredAt)? = envelope["occurred_at"], (0...Self.latestEpochSecond).contains(occurredAt) else {
            return dead("invalid_event", "occurred_at must be epoch seconds")
        }
        guard let data = envelope["data"], data.objectValue != nil else { return dead("invalid_event", "data is missing or not an object") }
        let vendor: JSONValue
        let vendorID: String
        if isResponse {
            if let problem = Self.responseProblem(data) { return dead("invalid_event", problem) }
            vendor = .null
            vendorID = data["vendor_id"]!.stringValue!
        } else {
            guard let found = data["vendor"], found.objectValue != nil else { return dead("invalid_event", "data.vendor is missing or not an object") }
            guard let id = found["id"]?.stringValue, Identifier.isValid(id, prefix: "cbvndr") else {
                return dead("invalid_event", "data.vendor.id must be cbvndr_ followed by 32 lowercase hex digits")
            }
            if let problem = Self.vendorFieldProblem(found) { return dead("invalid_event", problem) }
            vendor = found
            vendorID = id
        }
        // Outputs repeat the data canonically encoded, which can be larger than as sent
        // (`\b` is written `\u0008`, `1e15` in full): that too must fit.
        let encodedData = data.canonicalBytes
        guard encodedData.count <= maxMessageBytes else {
            return dead("message_too_large", "data is \(encodedData.count) bytes once encoded; MAX_MESSAGE_BYTES is \(maxMessageBytes)")
        }
        guard let org = orgs.org(id: orgID) else { return dead("invalid_event", "org \(orgID) is not in the orgs file") }
        if let secret = org.webhookSigningSecret {
            guard case .one(let signature?) = HeaderRules.lookup(source.headers, "Coverbase-Signature") else {
                return dead("invalid_signature", "the org signs its events and Coverbase-Signature is missing (or given twice)")
            }
            let expected = Array(WebhookSignature.compute(value, secret: secret).utf8)
            guard Digest.constantTimeEquals(signature.map { $0 | 0x20 }, expected) else {
                return dead("invalid_signature", "Coverbase-Signature does not match the value")
            }
        }
        // Checked once the event is known to be authentic: its time is a claim of the sender's.
        let nowSeconds = now / 1000
        if occurredAt > nowSeconds + Self.maxFutureSkew {
            return dead("invalid_event", "occurred_at \(occurredAt) is more than \(Self.maxFutureSkew) s in the future (now \(nowSeconds))")
        }
        // Expired at the same moment its dedupe record would be (see BatchDecider).
        if occurredAt * 1000 + idempotencyTTL.milliseconds <= now {
            return dead("event_too_old", "occurred_at \(occurredAt) is older than IDEMPOTENCY_TTL (\(DurationParser.format(idempotencyTTL))); a replay this old could start work again")
        }
        guard let type else {
            return .response(ResponseEvent(
                source: source, org: org, eventID: eventID, occurredAt: occurredAt, data: data, encodedData: encodedData,
                vendorID: vendorID, runID: data["workflow_run_id"]?.stringValue
            ))
        }
        return .vendorEvent(VendorEvent(source: source, org: org, eventID: eventID, type: type, occurredAt: occurredAt, data: data, encodedData: encodedData, vendor: vendor, vendorID: vendorID))
    }

    /// The fields §10 gives a `QuestionnaireResponse.Submitted`'s `data`.
    static func responseProblem(_ data: JSONValue) -> String? {
        guard let questionnaire = data["questionnaire_id"]?.stringValue, Identifier.isValid(questionnaire, prefix: "cbqst") else {
            return "data.questionnaire_id must be cbqst_ followed by 32 lowercase hex digits"
        }
        guard let vendor = data["vendor_id"]?.stringValue, Identifier.isValid(vendor, prefix: "cbvndr") else {
            return "data.vendor_id must be cbvndr_ followed by 32 lowercase hex digits"
        }
        if let run = data["workflow_run_id"], run != .null, !(run.stringValue.map { Identifier.isValid($0, prefix: "cbwr") } ?? false) {
            return "data.workflow_run_id must be cbwr_ followed by 32 lowercase hex digits, or absent"
        }
        guard case .int(let submitted)? = data["submitted_at"], (0...latestEpochSecond).contains(submitted) else { return "data.submitted_at must be epoch seconds" }
        guard data["answers"]?.objectValue != nil else { return "data.answers must be an object" }
        return nil
    }

    /// Epoch seconds beyond this (the year 5138) are not a time: refused before any arithmetic on them.
    static let latestEpochSecond: Int64 = 100_000_000_000

    /// The types §3 gives the vendor's other fields, when they are present.
    static func vendorFieldProblem(_ vendor: JSONValue) -> String? {
        for field in ["name", "tier"] {
            if let value = vendor[field], value.stringValue == nil { return "data.vendor.\(field) must be a string" }
        }
        if let tags = vendor["tags"], tags.arrayValue?.allSatisfy({ $0.stringValue != nil }) != true {
            return "data.vendor.tags must be a list of strings"
        }
        if let attributes = vendor["attributes"], attributes.objectValue == nil { return "data.vendor.attributes must be an object" }
        if let email = vendor["owner_email"], email != .null, email.stringValue == nil { return "data.vendor.owner_email must be a string or null" }
        return nil
    }

    // MARK: Trigger requests

    private func decodeRequest(_ value: [UInt8], source: Source, keys: inout KnownKey) -> Input {
        var answer = AnsweredRequest(source: source, response: Responses.unauthorized)
        func reject(_ response: Response, deadLetter code: String? = nil, _ text: String = "") -> Input {
            answer.response = response
            if let code { answer.deadLetter = DeadLetter(code: code, message: text, source: source, value: value) }
            return .answered(answer)
        }
        let key = HeaderRules.idempotencyKey(source.headers)
        if case .valid(let valid) = key { answer.idempotencyKey = valid }

        // Over HTTP the body alone is bounded (by the server, and as `body` below): the
        // value around it is the worker's own wrapping.
        guard value.count <= maxMessageBytes || source.http != nil else {
            let text = "the value is \(value.count) bytes; MAX_MESSAGE_BYTES is \(maxMessageBytes)"
            return reject(Responses.payloadTooLarge(value.count, limit: maxMessageBytes), deadLetter: "message_too_large", text)
        }
        guard let json = try? JSONValue.parse(value) else {
            return reject(Responses.invalidRequest("The message value is not valid JSON."), deadLetter: "invalid_json", "the value is not JSON")
        }
        guard let request = json.objectValue else {
            return reject(Responses.invalidRequest("The message value must be a JSON object."), deadLetter: "invalid_request", "the value is not a JSON object")
        }
        guard let typeName = request["request_type"]?.stringValue, let type = RequestType(rawValue: typeName) else {
            let text = "request_type must be workflow_run, assessment_create or workflow_run_cancel"
            return reject(Responses.invalidRequest("Unknown request_type; expected workflow_run, assessment_create or workflow_run_cancel."), deadLetter: "invalid_request", text)
        }
        answer.requestType = type.rawValue
        let workflowName: String?
        switch type {
        case .workflowRun:
            guard let name = request["workflow_name"]?.stringValue, !name.isEmpty else {
                return reject(Responses.invalidRequest("workflow_run needs a workflow_name."), deadLetter: "invalid_request", "workflow_name is missing")
            }
            workflowName = name
        case .assessmentCreate:
            // Validated with the body (422); echoed only when it could be a name.
            workflowName = request["body"]?["trigger_workflow"]?.stringValue.flatMap { Self.isName($0) ? $0 : nil }
        case .workflowRunCancel:
            workflowName = nil
        }
        // Echoed only when it could be a name; a longer one is answered 404 below.
        answer.workflowName = workflowName.flatMap { Self.isName($0) ? $0 : nil }
        if let problem = source.requestIDProblem {
            return reject(Responses.invalidRequest(problem))
        }
        // A workflow_run's body is optional (its input defaults to {}); an assessment_create's
        // missing body is a 422 of the body's own, after the API key.
        let body = request["body"] ?? (type == .workflowRun ? .object([:]) : .null)
        // A cancel has no Idempotency-Key semantics (§10): its key is echoed, never checked or stored.
        let encodedBody = body.canonicalBytes
        guard encodedBody.count <= maxMessageBytes else {
            let text = "the body is \(encodedBody.count) bytes once encoded; MAX_MESSAGE_BYTES is \(maxMessageBytes)"
            return reject(Responses.payloadTooLarge(encodedBody.count, limit: maxMessageBytes), deadLetter: "message_too_large", text)
        }

        guard case .one(let authorization?) = HeaderRules.lookup(source.headers, "Authorization") else { return reject(Responses.unauthorized) }
        if authorization != keys.authorization {
            keys = KnownKey(authorization: authorization, org: Self.apiKey(authorization: authorization).flatMap(orgs.org(apiKey:)))
        }
        guard let org = keys.org else { return reject(Responses.unauthorized) }
        answer.orgID = org.id

        if case .invalid(let issue) = key, type != .workflowRunCancel { return reject(Responses.validation([issue])) }
        // No workflow has such a name (names are at most 255 bytes): 404, as for any unknown one.
        if let workflowName, !Self.isName(workflowName) { return reject(Responses.workflowNotFound(workflowName)) }
        return .request(TriggerRequest(
            source: source, org: org, type: type, workflowName: workflowName, body: body, idempotencyKey: answer.idempotencyKey,
            endpoint: Scopes.endpoint(for: type, workflowName: workflowName),
            fingerprint: Digest.sha256(encodedBody)
        ))
    }

    /// A workflow name as a request may give it: 1 to 255 bytes, no control characters.
    static func isName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= maxNameBytes && !name.unicodeScalars.contains(where: BoundedText.isControl)
    }

    /// The API key of an `Authorization` value `Bearer ak_live_…` / `Bearer ak_test_…`:
    /// the scheme in any case, ASCII blanks around the key ignored.
    static func apiKey(authorization value: [UInt8]) -> ArraySlice<UInt8>? {
        func isBlank(_ byte: UInt8) -> Bool { byte == 0x20 || (0x09...0x0D).contains(byte) }
        var rest = value[...].drop { $0 == 0x20 }
        let scheme = rest.prefix { $0 != 0x20 }
        guard scheme.count == 6, zip(scheme, "bearer".utf8).allSatisfy({ $0 | 0x20 == $1 }) else { return nil }
        rest = rest[scheme.endIndex...].drop(while: isBlank)
        while let last = rest.last, isBlank(last) { rest.removeLast() }
        guard rest.starts(with: "ak_live_".utf8) || rest.starts(with: "ak_test_".utf8) else { return nil }
        return rest
    }
}
