import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Worker

/// The HTTP API's routes (§8): Bearer keys on every `/v1` route, the `Request-Id`
/// echoed, answers as ``ReadAPI`` decides them. A store that fails answers 503.
enum APIRoutes {
    static func add(to router: Router<BasicRequestContext>, reads: ReadAPI, logger: Logger) {
        router.get("v1/workflows/runs/:id") { request, context -> Response in
            let id = context.parameters.get("id") ?? ""
            return await answer(request, reads, logger) { org in try await reads.run(id: id, org: org) }
        }
        router.get("v1/workflows/runs") { request, _ -> Response in
            let parameters = queryParameters(request.uri.query)
            return await answer(request, reads, logger) { org in try await reads.runs(parameters: parameters, org: org) }
        }
        router.get("v1/assessments/:id") { request, context -> Response in
            let id = context.parameters.get("id") ?? ""
            return await answer(request, reads, logger) { org in try await reads.assessment(id: id, org: org) }
        }
    }

    /// Checks the `Request-Id` and the key, then answers with `body`'s answer.
    private static func answer(_ request: Request, _ reads: ReadAPI, _ logger: Logger, _ body: (Org) async throws -> APIAnswer) async -> Response {
        let (echo, problem) = ReadAPI.requestID(request.headers[values: .requestID])
        var headers: HTTPFields = [.contentType: "application/json"]
        if let echo { headers[.requestID] = echo }
        if let problem { return response(problem, headers) }
        guard let org = reads.org(authorization: request.headers[.authorization]) else { return response(ReadAPI.unauthorized, headers) }
        do {
            return response(try await body(org), headers)
        } catch {
            logger.warning("An HTTP API read failed: the store did not answer", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            return response(APIAnswer.storeUnavailable, headers)
        }
    }

    private static func response(_ answer: APIAnswer, _ headers: HTTPFields) -> Response {
        Response(status: HTTPResponse.Status(code: answer.status), headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: answer.body)))
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
}
