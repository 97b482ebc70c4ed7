import Workflows

/// The API's error bodies, as the HTTP endpoints answer them.
enum Responses {
    static func error(_ status: Int, _ code: String, _ message: String) -> Response {
        Response(status: status, body: ["detail": ["code": .string(code), "message": .string(message)]])
    }

    static let unauthorized = error(401, "unauthorized", "Invalid or expired API key.")

    static func invalidRequest(_ message: String) -> Response { error(400, "invalid_request", message) }

    static func payloadTooLarge(_ size: Int, limit: Int) -> Response {
        error(413, "payload_too_large", "The message is \(size) bytes; the limit is \(limit) bytes.")
    }

    static func workflowNotFound(_ name: String) -> Response { error(404, "workflow_not_found", "Workflow '\(BoundedText.identifier(name))' not found.") }

    static func workflowDisabled(_ name: String) -> Response { error(409, "workflow_disabled", "Workflow '\(BoundedText.identifier(name))' is disabled.") }

    static func vendorNotFound(_ id: String) -> Response { error(404, "vendor_not_found", "Vendor '\(BoundedText.identifier(id))' not found.") }

    static func runNotFound(_ id: String) -> Response { error(404, "workflow_run_not_found", "Workflow run '\(BoundedText.identifier(id))' not found.") }

    static func runFinished(_ id: String, status: String) -> Response {
        error(409, "workflow_run_finished", "Workflow run '\(BoundedText.identifier(id))' has already finished (\(status)).")
    }

    /// The key was used with another body within `ttl` (`IDEMPOTENCY_MISMATCH=reject`).
    static func idempotencyKeyReused(ttl: Duration) -> Response {
        error(422, "idempotency_key_reused", "This Idempotency-Key was used with a different request body within the last \(DurationParser.spoken(ttl)).")
    }

    /// One item of a 422 in FastAPI's list form.
    struct ValidationIssue: Sendable, Hashable {
        var location: [String]
        var message: String
        var type: String

        var json: JSONValue { ["loc": .array(location.map(JSONValue.string)), "msg": .string(message), "type": .string(type)] }

        static func missing(_ location: [String]) -> Self { Self(location: location, message: "Field required", type: "missing") }
        static func notString(_ location: [String]) -> Self { Self(location: location, message: "Input should be a valid string", type: "string_type") }
        static func notList(_ location: [String]) -> Self { Self(location: location, message: "Input should be a valid list", type: "list_type") }
        static func notObject(_ location: [String]) -> Self { Self(location: location, message: "Input should be a valid dictionary", type: "dict_type") }
        static func tooLong(_ location: [String], maxBytes: Int) -> Self {
            Self(location: location, message: "String should have at most \(maxBytes) bytes", type: "string_too_long")
        }
        static func notIdentifier(_ location: [String], prefix: String) -> Self {
            Self(location: location, message: "String should match pattern '^\(prefix)_[0-9a-f]{32}$'", type: "string_pattern_mismatch")
        }
    }

    static func validation(_ issues: [ValidationIssue]) -> Response {
        Response(status: 422, body: ["detail": .array(issues.map(\.json))])
    }
}
