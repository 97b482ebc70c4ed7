import Foundation
import Kafka
import Store
import Workflows

/// An answer of the HTTP API: status and JSON body (canonical, as the Kafka path's).
public struct APIAnswer: Sendable, Hashable {
    public var status: Int
    public var body: [UInt8]

    init(_ response: Response) {
        status = response.status
        body = response.body
    }

    init(status: Int, body: [UInt8]) {
        self.status = status
        self.body = body
    }

    /// 429 when the server answers as many API requests as it takes at once.
    public static var tooManyRequests: APIAnswer {
        APIAnswer(Responses.error(429, "too_many_requests", "Too many requests at once; retry after a second."))
    }

    /// 503 when the store does not answer a read (retry later).
    public static var storeUnavailable: APIAnswer {
        APIAnswer(Responses.error(503, "store_unavailable", "The store did not answer; retry later."))
    }
}

/// What the HTTP API's reads answer (§8 with api-facts.md): a run, an org's runs
/// (filters and paging), an assessment. The rules (keys, org isolation, error bodies,
/// 422 items) live here beside the Kafka path's; the HTTP server only carries them.
/// Another org's run or assessment answers exactly what an unknown id answers.
public struct ReadAPI: Sendable {
    private let orgs: OrgDirectory
    private let store: any Store

    public init(orgs: OrgDirectory, store: any Store) {
        self.orgs = orgs
        self.store = store
    }

    /// The org whose API key an `Authorization` header carries (`Bearer ak_…`).
    public func org(authorization: String?) -> Org? {
        guard let authorization, authorization.utf8.count <= 1024,
              let key = InputDecoder.apiKey(authorization: Array(authorization.utf8))
        else { return nil }
        return orgs.org(apiKey: key)
    }

    /// 401 with the §4 body.
    public static var unauthorized: APIAnswer { APIAnswer(Responses.unauthorized) }

    /// 404 `workflow_run_not_found`.
    public static func runNotFound(_ id: String) -> APIAnswer { APIAnswer(Responses.runNotFound(id)) }

    /// `GET /v1/workflows/runs/{id}`.
    public func run(id: String, org: Org) async throws -> APIAnswer {
        guard let run = try await store.run(id: id), run.orgID == org.id else { return APIAnswer(Responses.runNotFound(id)) }
        return APIAnswer(status: 200, body: run.document)
    }

    /// `GET /v1/assessments/{id}`.
    public func assessment(id: String, org: Org) async throws -> APIAnswer {
        guard let assessment = try await store.assessment(id: id), assessment.orgID == org.id else {
            return APIAnswer(Responses.error(404, "assessment_not_found", "Assessment '\(BoundedText.identifier(id))' not found."))
        }
        return APIAnswer(status: 200, body: assessment.document)
    }

    /// The most runs one page holds, and a page's size when `limit` is not given.
    public static let maxLimit = 500
    public static let defaultLimit = 100

    /// `GET /v1/workflows/runs` with its query parameters (decoded, in order; a
    /// parameter given twice counts once, the last, except `status`, which adds up).
    public func runs(parameters: [(name: String, value: String)], org: Org) async throws -> APIAnswer {
        let query: RunQuery
        switch Self.runQuery(parameters, orgID: org.id) {
        case .success(let parsed): query = parsed
        case .failure(let issues): return APIAnswer(Responses.validation(issues.issues))
        }
        let (runs, total) = try await store.runs(matching: query)
        var writer = CanonicalJSONWriter(capacity: 64 + runs.reduce(0) { $0 + $1.document.count + 1 })
        writer.object { page in
            page.key("items"); page.array { items in for run in runs { items.encoded(run.document) } }
            page.key("limit"); page.int(Int64(query.limit))
            page.key("offset"); page.int(Int64(query.offset))
            page.key("total"); page.int(Int64(total))
        }
        return APIAnswer(status: 200, body: writer.bytes)
    }

    struct Issues: Error { var issues: [Responses.ValidationIssue] }

    /// The list's query, or its 422 items (every bad parameter, FastAPI's way).
    static func runQuery(_ parameters: [(name: String, value: String)], orgID: String) -> Result<RunQuery, Issues> {
        var query = RunQuery(orgID: orgID, limit: defaultLimit)
        var issues: [Responses.ValidationIssue] = []
        var statuses: [String] = []
        func integer(_ name: String, _ text: String, in range: ClosedRange<Int>) -> Int? {
            guard text.utf8.count <= 20, let value = Int(text.trimmingCharacters(in: .whitespaces)) else {
                issues.append(.init(location: ["query", name], message: "Input should be a valid integer, unable to parse string as an integer", type: "int_parsing"))
                return nil
            }
            if value < range.lowerBound {
                issues.append(.init(location: ["query", name], message: "Input should be greater than or equal to \(range.lowerBound)", type: "greater_than_equal"))
                return nil
            }
            if value > range.upperBound {
                issues.append(.init(location: ["query", name], message: "Input should be less than or equal to \(range.upperBound)", type: "less_than_equal"))
                return nil
            }
            return value
        }
        // One value per name (the last), `status` aside: bounded whatever the query holds.
        var last: [String: String] = [:]
        for (name, value) in parameters {
            if name == "status" {
                guard RunStatus(rawValue: value) != nil else {
                    if issues.count < 20 {
                        issues.append(.init(
                            location: ["query", "status"],
                            message: "Input should be \(RunStatus.allCases.map { "'\($0.rawValue)'" }.dropLast().joined(separator: ", ")) or '\(RunStatus.allCases.last!.rawValue)'",
                            type: "enum"
                        ))
                    }
                    continue
                }
                if !statuses.contains(value) { statuses.append(value) }
            } else if ["limit", "offset", "workflow_name", "created_at_after", "created_at_before"].contains(name) {
                last[name] = value
            }
        }
        query.statuses = statuses
        if let text = last["limit"], let limit = integer("limit", text, in: 1...maxLimit) { query.limit = limit }
        if let text = last["offset"], let offset = integer("offset", text, in: 0...Int(Int32.max)) { query.offset = offset }
        if let name = last["workflow_name"] {
            if InputDecoder.isName(name) {
                query.workflowName = name
            } else {
                issues.append(.tooLong(["query", "workflow_name"], maxBytes: InputDecoder.maxNameBytes))
            }
        }
        for (name, bound) in [("created_at_after", \RunQuery.startedFrom), ("created_at_before", \RunQuery.startedUntil)] {
            guard let text = last[name] else { continue }
            if let seconds = timestamp(text) {
                query[keyPath: bound] = seconds
            } else {
                issues.append(.init(location: ["query", name], message: "Input should be a valid datetime", type: "datetime_parsing"))
            }
        }
        return issues.isEmpty ? .success(query) : .failure(Issues(issues: issues))
    }

    /// Seconds since the epoch of an ISO 8601 date-time (`2026-11-30T12:00:00Z`, with an
    /// offset, or fractional seconds; without a zone it is UTC), a date (`2026-11-30`,
    /// midnight UTC), or epoch seconds (the API's timestamps are).
    static func timestamp(_ text: String) -> Int64? {
        guard text.utf8.count <= 64 else { return nil }
        if let seconds = Int64(text), (0...253_402_300_799).contains(seconds) { return seconds }
        if text.count == 19, !text.hasSuffix("Z"), let utc = timestamp(text + "Z") { return utc }
        let withFraction = ISO8601DateFormatter()
        withFraction.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let plain = ISO8601DateFormatter()
        plain.formatOptions = [.withInternetDateTime]
        let day = ISO8601DateFormatter()
        day.formatOptions = [.withFullDate]
        guard let date = plain.date(from: text) ?? withFraction.date(from: text) ?? day.date(from: text) else { return nil }
        return Int64(date.timeIntervalSince1970.rounded(.down))
    }
}

extension ReadAPI {
    /// The `Request-Id` header's values as an HTTP request carried them: the one to
    /// echo when valid, or the 400 the §4 rules answer when it is not.
    public static func requestID(_ values: [String]) -> (echo: String?, problem: APIAnswer?) {
        let (value, problem) = HeaderRules.requestID(values.map { KafkaHeader(key: "Request-Id", value: Array($0.utf8)) })
        return (value, problem.map { APIAnswer(Responses.invalidRequest($0)) })
    }
}

/// What an HTTP request that writes is answered: the §4 status and body, and whether
/// it replays an earlier request with its key (`Idempotent-Replayed: true`), with another
/// body (`Idempotency-Fingerprint-Mismatch: true`).
public struct HTTPAnswer: Sendable, Hashable {
    public var status: Int
    public var body: [UInt8]
    public var replayed: Bool
    public var fingerprintMismatch: Bool
}

/// The HTTP API's writes (§8): each is the trigger request of §4 it stands for, decided
/// and written by the pipeline as Kafka's are (``Pipeline/handleHTTP(endpoint:value:headers:)``).
public enum WriteAPI {
    /// 413 with §4's body, for a body over `MAX_MESSAGE_BYTES` (`size` as far as it is known).
    public static func payloadTooLarge(size: Int, limit: Int) -> APIAnswer { APIAnswer(Responses.payloadTooLarge(size, limit: limit)) }

    /// 400 for a body that could not be read to its end.
    public static var unreadableBody: APIAnswer { APIAnswer(Responses.invalidRequest("The request body could not be read.")) }

    /// The trigger request a `POST` stands for, as §4 has it on the requests topic, its
    /// `body` the HTTP body parsed (never spliced: a body cannot reach the request's other
    /// fields). A body that is not one JSON value gives a value that is not JSON either,
    /// answered as the Kafka path answers one (400 `invalid_request`).
    public static func workflowRun(name: String, body: [UInt8]) -> [UInt8] {
        value(["request_type": "workflow_run", "workflow_name": .string(name)], body: body, empty: .object([:]))
    }

    public static func assessmentCreate(body: [UInt8]) -> [UInt8] {
        value(["request_type": "assessment_create"], body: body, empty: nil)
    }

    public static func cancel(runID: String) -> [UInt8] {
        (["request_type": "workflow_run_cancel", "body": ["workflow_run_id": .string(runID)]] as JSONValue).canonicalBytes
    }

    private static func value(_ fields: [String: JSONValue], body: [UInt8], empty: JSONValue?) -> [UInt8] {
        var request = fields
        if body.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) {
            if let empty { request["body"] = empty }
        } else {
            guard let parsed = try? JSONValue.parse(body) else { return Array("not JSON".utf8) }
            request["body"] = parsed
        }
        return JSONValue.object(request).canonicalBytes
    }

}
