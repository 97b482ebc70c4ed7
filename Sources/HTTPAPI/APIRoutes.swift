import Foundation
import HTTPTypes
import Hummingbird
import Kafka
import Logging
import NIOCore
import Synchronization
import Worker
import Workflows

/// The HTTP API's routes (§8): Bearer keys on every `/v1` route, the `Request-Id`
/// echoed, answers as ``ReadAPI`` decides them. A store that fails answers 503.
enum APIRoutes {
    static func add(to router: Router<BasicRequestContext>, reads: ReadAPI, pipeline: Pipeline, maxBodyBytes: Int, logger: Logger) {
        router.post("v1/workflows/:name/run") { request, context -> Response in
            let name = parameter(context, "name")
            return await write(request, pipeline, maxBodyBytes, logger, endpoint: "POST /v1/workflows/\(name)/run") { WriteAPI.workflowRun(name: name, body: $0) }
        }
        // A workflow named `runs`: the router would take its path for `runs/:id`.
        router.post("v1/workflows/runs/run") { request, _ -> Response in
            await write(request, pipeline, maxBodyBytes, logger, endpoint: "POST /v1/workflows/runs/run") { WriteAPI.workflowRun(name: "runs", body: $0) }
        }
        router.post("v1/assessments") { request, _ -> Response in
            await write(request, pipeline, maxBodyBytes, logger, endpoint: "POST /v1/assessments") { WriteAPI.assessmentCreate(body: $0) }
        }
        router.post("v1/workflows/runs/:id/cancel") { request, context -> Response in
            let id = parameter(context, "id")
            // An id that cannot be a run's is a run not found (over Kafka it is a 422 of
            // the body's field; here it is the path): after the key, as every 404.
            guard Identifier.isValid(id, prefix: "cbwr") else {
                return await answer(request, reads, logger) { _ in ReadAPI.runNotFound(id) }
            }
            return await write(request, pipeline, maxBodyBytes, logger, endpoint: "POST /v1/workflows/runs/\(id)/cancel") { _ in WriteAPI.cancel(runID: id) }
        }
        router.get("v1/workflows/runs/:id") { request, context -> Response in
            let id = parameter(context, "id")
            return await answer(request, reads, logger) { org in try await reads.run(id: id, org: org) }
        }
        router.get("v1/workflows/runs") { request, _ -> Response in
            let parameters = queryParameters(request.uri.query)
            return await answer(request, reads, logger) { org in try await reads.runs(parameters: parameters, org: org) }
        }
        router.get("v1/assessments/:id") { request, context -> Response in
            let id = parameter(context, "id")
            return await answer(request, reads, logger) { org in try await reads.assessment(id: id, org: org) }
        }
    }

    /// A write: the body (at most `maxBodyBytes`, else 413), then the pipeline decides
    /// the equivalent trigger request. Replays say so in their headers (§8).
    private static func write(
        _ request: Request, _ pipeline: Pipeline, _ maxBodyBytes: Int, _ logger: Logger, endpoint: String, _ value: ([UInt8]) -> [UInt8]
    ) async -> Response {
        guard inFlight.enter() else { return busy(request) }
        defer { inFlight.leave() }
        // An invalid Request-Id is answered by the decoder's §4 checks, in their order.
        var (headers, _) = responseHeaders(request)
        let body: [UInt8]
        do {
            body = Array(buffer: try await request.body.collect(upTo: maxBodyBytes))
        } catch is NIOTooManyBytesError {
            let size = request.headers[.contentLength].flatMap(Int.init) ?? maxBodyBytes + 1
            return response(WriteAPI.payloadTooLarge(size: size, limit: maxBodyBytes), headers)
        } catch {
            // The client went away or sent a broken body: there is no one to answer, but say so.
            return response(WriteAPI.unreadableBody, headers)
        }
        // The headers the §4 rules check, each value as it came (a repeated one stays repeated).
        var carried: [KafkaHeader] = []
        for name in [HTTPField.Name.authorization, .idempotencyKey, .requestID, .traceparent] {
            for value in request.headers[values: name] { carried.append(KafkaHeader(key: name.rawName, value: Array(value.utf8))) }
        }
        do {
            let answer = try await pipeline.handleHTTP(endpoint: endpoint, value: value(body), headers: carried)
            if answer.replayed { headers[.idempotentReplayed] = "true" }
            if answer.fingerprintMismatch { headers[.fingerprintMismatch] = "true" }
            return Response(status: HTTPResponse.Status(code: answer.status), headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: answer.body)))
        } catch {
            logger.warning("An HTTP API write failed: the store did not answer", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            return response(APIAnswer.storeUnavailable, headers)
        }
    }

    /// Checks the `Request-Id` and the key, then answers with `body`'s answer.
    private static func answer(_ request: Request, _ reads: ReadAPI, _ logger: Logger, _ body: (Org) async throws -> APIAnswer) async -> Response {
        guard inFlight.enter() else { return busy(request) }
        defer { inFlight.leave() }
        let (headers, problem) = responseHeaders(request)
        if let problem { return response(problem, headers) }
        guard let org = reads.org(authorization: request.headers[.authorization]) else { return response(ReadAPI.unauthorized, headers) }
        do {
            return response(try await body(org), headers)
        } catch {
            logger.warning("An HTTP API read failed: the store did not answer", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            return response(APIAnswer.storeUnavailable, headers)
        }
    }

    /// A JSON answer's headers, with the `Request-Id` echoed when it is valid; the 400
    /// its §4 rules answer when it is not.
    static func responseHeaders(_ request: Request) -> (HTTPFields, problem: APIAnswer?) {
        let (echo, problem) = ReadAPI.requestID(request.headers[values: .requestID])
        var headers: HTTPFields = [.contentType: "application/json"]
        if let echo { headers[.requestID] = echo }
        return (headers, problem)
    }

    /// At most this many `/v1` requests are answered at once (each may hold a 1 MiB body
    /// or a page of 500 runs, and uses the store beside intake); more are answered 429.
    static let maxInFlight = 32
    private static let inFlight = InFlightLimit(maxInFlight)

    /// The 429 of a request over the limit, with its `Request-Id` echoed like any other
    /// answer's (an invalid one is not echoed, and is not answered 400: the limit comes first).
    private static func busy(_ request: Request) -> Response {
        var (headers, _) = responseHeaders(request)
        headers[.retryAfter] = "1"
        return response(APIAnswer.tooManyRequests, headers)
    }

    private static func response(_ answer: APIAnswer, _ headers: HTTPFields) -> Response {
        Response(status: HTTPResponse.Status(code: answer.status), headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: answer.body)))
    }

    /// A path parameter, percent-decoded (a workflow's name may need escaping), at most 1 KiB.
    static func parameter(_ context: BasicRequestContext, _ name: String) -> String {
        let raw = context.parameters.get(name) ?? ""
        let decoded = raw.removingPercentEncoding ?? raw
        return String(decoding: decoded.utf8.prefix(1024), as: UTF8.self)
    }

    /// The query string's name–value pairs, percent-decoded (`+` is a space), in order.
    static func queryParameters(_ query: String?) -> [(name: String, value: String)] {
        guard let query, !query.isEmpty else { return [] }
        return query.split(separator: "&").prefix(1000).map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ text: Substring) -> String {
                let spaced = text.replacingOccurrences(of: "+", with: " ")
                return spaced.removingPercentEncoding ?? spaced
            }
            return (decode(parts[0]), parts.count > 1 ? decode(parts[1]) : "")
        }
    }
}

extension HTTPField.Name {
    static let requestID = Self("Request-Id")!
    static let idempotencyKey = Self("Idempotency-Key")!
    static let traceparent = Self("traceparent")!
    static let idempotentReplayed = Self("Idempotent-Replayed")!
    static let fingerprintMismatch = Self("Idempotency-Fingerprint-Mismatch")!
}

/// A count of requests in flight, refused beyond a limit.
final class InFlightLimit: Sendable {
    private let count = Atomic<Int>(0)
    private let limit: Int

    init(_ limit: Int) { self.limit = limit }

    func enter() -> Bool {
        if count.add(1, ordering: .relaxed).newValue <= limit { return true }
        count.subtract(1, ordering: .relaxed)
        return false
    }

    func leave() { count.subtract(1, ordering: .relaxed) }
}
