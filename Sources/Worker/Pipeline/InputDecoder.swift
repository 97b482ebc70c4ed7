import Foundation
import Kafka
import Workflows

/// Turns consumed messages into ``Input``s, running every check that needs no
/// store, in the contract's order: size, JSON, shape and `request_type`, API
/// key (then the idempotency key's length).
struct InputDecoder: Sendable {
    var topics: WorkerConfiguration.Topics
    var maxMessageBytes: Int
    var orgs: OrgDirectory

    /// The longest `Idempotency-Key` accepted, as Stripe's.
    static let maxIdempotencyKeyLength = 255

    /// Decodes a batch, in order. Requests that carry the same `Authorization`
    /// as the one before (one client sending many) are authenticated once.
    func decode(_ batch: [KafkaMessage]) -> [(Source, Input)] {
        var keys = KnownKey()
        return batch.map { message in
            let source = Source(message)
            return (source, decode(message, source: source, keys: &keys))
        }
    }

    /// The last `Authorization` value seen, and whose key it held.
    private struct KnownKey {
        var authorization: [UInt8]?
        var org: Org?
    }

    private func decode(_ message: KafkaMessage, source: Source, keys: inout KnownKey) -> Input {
        if message.topic == topics.vendorEvents {
            return decodeVendorEvent(message, source: source)
        }
        return decodeRequest(message, source: source, keys: &keys)
    }

    // MARK: Vendor events

    private func decodeVendorEvent(_ message: KafkaMessage, source: Source) -> Input {
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
        guard let type = VendorEventType(rawValue: eventType) else { return .ignored(eventType: eventType) }
        guard let eventID = envelope["event_id"]?.stringValue, !eventID.isEmpty else { return dead("invalid_event", "event_id is missing or not a string") }
        guard let orgID = envelope["org_id"]?.stringValue else { return dead("invalid_event", "org_id is missing or not a string") }
        guard let occurredAt = envelope["occurred_at"]?.intValue else { return dead("invalid_event", "occurred_at is missing or not epoch seconds") }
        guard let data = envelope["data"], let vendor = data["vendor"], vendor.objectValue != nil else {
            return dead("invalid_event", "data.vendor is missing or not an object")
        }
        guard let vendorID = vendor["id"]?.stringValue, !vendorID.isEmpty else { return dead("invalid_event", "data.vendor.id is missing or not a string") }
        guard let org = orgs.org(id: orgID) else { return dead("invalid_event", "org \(orgID) is not in the orgs file") }
        if let secret = org.webhookSigningSecret {
            guard let signature = source.header("Coverbase-Signature") else {
                return dead("invalid_signature", "the org signs its events and Coverbase-Signature is missing")
            }
            guard Digest.constantTimeEquals(signature.lowercased(), WebhookSignature.compute(value, secret: secret)) else {
                return dead("invalid_signature", "Coverbase-Signature does not match the value")
            }
        }
        return .vendorEvent(VendorEvent(source: source, org: org, eventID: eventID, type: type, occurredAt: occurredAt, data: data, vendor: vendor, vendorID: vendorID))
    }

    // MARK: Trigger requests

    private func decodeRequest(_ message: KafkaMessage, source: Source, keys: inout KnownKey) -> Input {
        let value = message.value ?? []
        var answer = AnsweredRequest(source: source, response: Responses.unauthorized)
        func reject(_ response: Response, deadLetter code: String? = nil, _ text: String = "") -> Input {
            answer.response = response
            if let code { answer.deadLetter = DeadLetter(code: code, message: text, source: source, value: value) }
            return .answered(answer)
        }
        answer.idempotencyKey = source.header("Idempotency-Key").flatMap { $0.isEmpty ? nil : $0 }

        guard value.count <= maxMessageBytes else {
            let text = "the value is \(value.count) bytes; MAX_MESSAGE_BYTES is \(maxMessageBytes)"
            return reject(Responses.payloadTooLarge(value.count, limit: maxMessageBytes), deadLetter: "message_too_large", text)
        }
        guard let json = try? JSONValue.parse(value) else {
            return reject(Responses.invalidRequest("The message value is not valid JSON."), deadLetter: "invalid_json", "the value is not JSON")
        }
        guard let request = json.objectValue else {
            return reject(Responses.invalidRequest("The message value must be a JSON object."), deadLetter: "invalid_request", "the value is not a JSON object")
        }
        let typeName = request["request_type"]?.stringValue
        answer.requestType = typeName
        guard let typeName, let type = RequestType(rawValue: typeName) else {
            let text = "request_type must be workflow_run or assessment_create"
            return reject(Responses.invalidRequest("Unknown request_type; expected workflow_run or assessment_create."), deadLetter: "invalid_request", text)
        }
        let workflowName: String?
        switch type {
        case .workflowRun:
            guard let name = request["workflow_name"]?.stringValue, !name.isEmpty else {
                return reject(Responses.invalidRequest("workflow_run needs a workflow_name."), deadLetter: "invalid_request", "workflow_name is missing")
            }
            workflowName = name
        case .assessmentCreate:
            workflowName = request["body"]?["trigger_workflow"]?.stringValue
        }
        answer.workflowName = workflowName
        // A workflow_run's body is optional (its input defaults to {}); an assessment_create needs one.
        let givenBody: JSONValue? = request["body"]
        guard let body = givenBody ?? (type == .workflowRun ? Optional(JSONValue.object([:])) : Optional<JSONValue>.none) else {
            return reject(Responses.invalidRequest("The request needs a body."), deadLetter: "invalid_request", "body is missing")
        }

        guard let authorization = source.headers.first(named: "Authorization")?.value else { return reject(Responses.unauthorized) }
        if authorization != keys.authorization {
            keys = KnownKey(authorization: authorization, org: Self.apiKey(authorization: authorization).flatMap(orgs.org(apiKey:)))
        }
        guard let org = keys.org else { return reject(Responses.unauthorized) }
        answer.orgID = org.id

        if let key = answer.idempotencyKey, key.count > Self.maxIdempotencyKeyLength {
            return reject(Responses.validation([
                Responses.ValidationIssue(location: ["header", "Idempotency-Key"], message: "String should have at most 255 characters", type: "string_too_long"),
            ]))
        }
        return .request(TriggerRequest(
            source: source, org: org, type: type, workflowName: workflowName, body: body,
            idempotencyKey: answer.idempotencyKey, requestID: source.header("Request-Id"),
            endpoint: Scopes.endpoint(for: type, workflowName: workflowName),
            fingerprint: Digest.sha256(body.canonicalBytes)
        ))
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
