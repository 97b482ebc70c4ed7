import Hummingbird
import NIOCore

/// A request no route takes (an unknown path, or a known one with another method) is
/// answered 404 in the API's error envelope, `{"detail": {"code": "not_found", …}}`,
/// as every other error is, rather than with an empty body, and with the `Request-Id`
/// echoed when it is valid, as the `/v1` routes' answers have it.
struct NotFoundMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            // The method is one of HTTP's few tokens; the path is the caller's, so it is not echoed.
            let body = #"{"detail":{"code":"not_found","message":"No route takes \#(request.method.rawValue.prefix(16)) on this path."}}"#
            // An invalid Request-Id is not echoed; the 404 stands (the path is what failed).
            let (headers, _) = APIRoutes.responseHeaders(request)
            return Response(status: .notFound, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
        }
    }
}
