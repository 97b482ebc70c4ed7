import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization
import Workflows

/// `send_webhook` called directly (§10): an HTTP POST of `payload` (or the run object)
/// with `Coverbase-Signature` (HMAC-SHA256 of the raw body under the org's
/// `webhook_signing_secret`) and a stable `Coverbase-Delivery-Id`, 10 s per attempt.
/// 2xx succeeds; 408, 429, 5xx, timeouts and connection errors are retried under the
/// step's `retry:`; any other status fails the step at once. Redirects are not
/// followed (a redirect could lead past `WEBHOOK_ALLOWED_HOSTS`).
struct WebhookAction: StepAction {
    let client: WebhookClient
    /// Lower-cased host names; empty: any host.
    let allowedHosts: Set<String>
    let timeout: Duration
    /// The org's `webhook_signing_secret`, when it has one.
    let signingSecret: @Sendable (String) -> String?

    /// The most headers a step may add, and the most bytes of each value.
    static let maxHeaders = 32
    static let maxHeaderValueBytes = 4096
    /// Headers the worker sets itself; a step's `headers` cannot replace them.
    static let reserved: Set<String> = ["content-type", "content-length", "host", "coverbase-signature", "coverbase-delivery-id", "transfer-encoding", "connection"]

    func perform(_ context: StepContext) async -> StepOutcome {
        let fields = context.inputFields
        guard let text = fields["url"]?.stringValue, let url = URL(string: text), let scheme = url.scheme?.lowercased(),
              scheme == "http" || scheme == "https", let host = url.host?.lowercased(), !host.isEmpty
        else {
            return .failed(message: "send_webhook needs an http(s) URL with a host; got \(BoundedText.identifier(fields["url"]?.templateText ?? "nothing"))", retriable: false)
        }
        guard allowedHosts.isEmpty || allowedHosts.contains(host) else {
            return .failed(message: "send_webhook host '\(BoundedText.identifier(host))' is not in WEBHOOK_ALLOWED_HOSTS", retriable: false)
        }
        let body = fields["payload"].map(\.canonicalBytes) ?? RunDocument.encode(context.run)
        guard body.count <= context.maxEffectBytes else {
            return .failed(message: "send_webhook body would be \(body.count) bytes; the limit is \(context.maxEffectBytes) (MAX_MESSAGE_BYTES)", retriable: false)
        }
        var request = HTTPClientRequest(url: text)
        request.method = .POST
        switch Self.headers(fields["headers"]) {
        case .failure(let problem):
            return .failed(message: problem.message, retriable: false)
        case .success(let extra):
            for (name, value) in extra { request.headers.add(name: name, value: value) }
        }
        request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
        request.headers.replaceOrAdd(name: "Coverbase-Delivery-Id", value: context.deliveryID)
        if let secret = signingSecret(context.run.orgID) {
            let code = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Array(secret.utf8)))
            request.headers.replaceOrAdd(name: "Coverbase-Signature", value: Identifier.hex(Array(code)))
        }
        request.body = .bytes(ByteBuffer(bytes: body))

        let status: UInt
        do {
            let response = try await client.http().execute(request, timeout: .milliseconds(timeout.wholeMilliseconds))
            status = response.status.code
            // The answer's body is not kept: read and dropped, at most 64 KiB of it.
            _ = try? await response.body.collect(upTo: 64 * 1024)
        } catch {
            return .failed(message: "webhook to \(host) failed: \(Self.describe(error))", retriable: true)
        }
        switch status {
        case 200..<300:
            return .succeeded(StepSuccess(
                message: .string("webhook delivered to \(host) (HTTP \(status))"),
                output: ["delivery_id": .string(context.deliveryID), "status": .int(Int64(status))]
            ))
        case 408, 429, 500..<600:
            return .failed(message: "webhook to \(host) answered HTTP \(status)", retriable: true)
        case 300..<400:
            return .failed(message: "webhook to \(host) answered HTTP \(status): redirects are not followed", retriable: false)
        default:
            return .failed(message: "webhook to \(host) answered HTTP \(status)", retriable: false)
        }
    }

    struct HeaderProblem: Error { var message: String }

    /// A step's `headers`: an object of strings, names that are HTTP tokens and not
    /// reserved, values without line breaks, bounded in number and size.
    static func headers(_ value: JSONValue?) -> Result<[(String, String)], HeaderProblem> {
        guard let value, value != .null else { return .success([]) }
        guard let object = value.objectValue else { return .failure(HeaderProblem(message: "send_webhook headers must be a mapping of names to strings")) }
        guard object.count <= maxHeaders else { return .failure(HeaderProblem(message: "send_webhook takes at most \(maxHeaders) headers, not \(object.count)")) }
        var headers: [(String, String)] = []
        for (name, value) in object.sorted(by: { $0.key < $1.key }) {
            let token = !name.isEmpty && name.utf8.count <= 128 && name.utf8.allSatisfy { byte in
                (0x21...0x7E).contains(byte) && !"()<>@,;:\\\"/[]?={}".utf8.contains(byte)
            }
            guard token else { return .failure(HeaderProblem(message: "send_webhook header name '\(BoundedText.identifier(name))' is not a valid HTTP header name")) }
            guard !reserved.contains(name.lowercased()) else { continue }
            guard let text = value.stringValue, text.utf8.count <= maxHeaderValueBytes, !text.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D || $0 == 0 }) else {
                return .failure(HeaderProblem(message: "send_webhook header '\(name)' must be a string of at most \(maxHeaderValueBytes) bytes without line breaks"))
            }
            headers.append((name, text))
        }
        return .success(headers)
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError, error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
            return "timed out"
        }
        return BoundedText.message(String(describing: error))
    }
}

/// The HTTP client of `send_webhook`, as a service: shut down after the engine stops.
/// It is made at the first call only: a worker whose workflows call no webhook (or
/// wiring that never runs, as the benchmark's) never owns one, and AsyncHTTPClient
/// traps on a client dropped without its shutdown.
public final class WebhookClient: Service, Sendable {
    private let client = Mutex<(HTTPClient?, closed: Bool)>((nil, false))

    public init() {}

    /// The client, made at the first call. - Throws: once the service has stopped.
    func http() throws -> HTTPClient {
        try client.withLock { state in
            if let existing = state.0 { return existing }
            guard !state.closed else { throw HTTPClientError.alreadyShutdown }
            var configuration = HTTPClient.Configuration()
            configuration.redirectConfiguration = .disallow
            configuration.timeout = HTTPClient.Configuration.Timeout(connect: .seconds(10), read: .seconds(10))
            let made = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
            state.0 = made
            return made
        }
    }

    public func run() async throws {
        try? await gracefulShutdown()
        let made = client.withLock { state -> HTTPClient? in
            state.closed = true
            return state.0
        }
        try await made?.shutdown()
    }

    /// The action, for the engine. - Parameter timeout: per attempt (the contract's 10 s).
    func action(allowedHosts: Set<String>, timeout: Duration = .seconds(10), signingSecret: @escaping @Sendable (String) -> String?) -> WebhookAction {
        WebhookAction(client: self, allowedHosts: allowedHosts, timeout: timeout, signingSecret: signingSecret)
    }
}
