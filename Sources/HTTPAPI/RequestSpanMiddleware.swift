import HTTPTypes
import Hummingbird
import Kafka
import Tracing
import Worker

/// The server span of each HTTP request, when spans are exported: the child of the
/// request's `traceparent` when it is valid by §4's rules (``InputSpans/parentContext(_:)``),
/// else the root of a new trace. Only that header reaches the tracer: Hummingbird's own
/// `TracingMiddleware` hands it every header, and a tracer that cannot read them logs
/// them, `Authorization` included. The span is the task's context while the request is
/// handled, so that a write's span is its child.
struct RequestSpanMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let headers = request.headers[values: .traceparent].map { KafkaHeader(key: "traceparent", value: Array($0.utf8)) }
        // The route's template, not the path: ids and names stay out of span names.
        let name = "\(request.method.rawValue) \(context.endpointPath ?? "unmatched")"
        return try await withSpan(name, context: InputSpans.parentContext(headers), ofKind: .server) { span in
            span.attributes["http.request.method"] = request.method.rawValue
            span.attributes["http.route"] = context.endpointPath
            let response = try await next(request, context)
            span.attributes["http.response.status_code"] = Int(response.status.code)
            if response.status.code >= 500 { span.setStatus(SpanStatus(code: .error)) }
            return response
        }
    }
}
