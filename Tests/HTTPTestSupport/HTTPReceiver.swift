import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A request the receiver got.
public struct ReceivedRequest: Sendable {
    public var method: String
    public var uri: String
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    /// When it arrived.
    public var at: ContinuousClock.Instant

    /// The first value of header `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }
}

/// How the receiver answers one request.
public struct Reply: Sendable {
    public var status: Int
    /// How long it waits before answering (longer than the caller's timeout: a timeout).
    public var delay: Duration

    public init(status: Int, delay: Duration = .zero) {
        self.status = status
        self.delay = delay
    }
}

/// A local HTTP server for tests: records every request and answers each as the test's
/// `reply` says (given the request and how many came before it to the same path).
public final class HTTPReceiver: Sendable {
    public let port: Int
    private let channel: any Channel
    private let recorder: Recorder

    final class Recorder: Sendable {
        let requests = Mutex<[ReceivedRequest]>([])
        let reply: @Sendable (ReceivedRequest, Int) -> Reply

        init(reply: @escaping @Sendable (ReceivedRequest, Int) -> Reply) { self.reply = reply }

        func record(_ request: ReceivedRequest) -> Reply {
            let earlier = requests.withLock { requests in
                defer { requests.append(request) }
                return requests.filter { $0.uri == request.uri }.count
            }
            return reply(request, earlier)
        }
    }

    public init(reply: @escaping @Sendable (ReceivedRequest, Int) -> Reply) async throws {
        let recorder = Recorder(reply: reply)
        self.recorder = recorder
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(recorder: recorder))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = channel.localAddress?.port ?? 0
    }

    /// `http://127.0.0.1:<port><path>`.
    public func url(_ path: String) -> String { "http://127.0.0.1:\(port)\(path)" }

    public var requests: [ReceivedRequest] { recorder.requests.withLock { $0 } }

    /// Waits until `condition` holds for the requests received, polling every 20 ms.
    public func waitUntil(_ what: String, timeout: Duration, _ condition: ([ReceivedRequest]) -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while !condition(requests) {
            guard ContinuousClock.now < deadline else { throw ReceiverTimeout(what: what, received: requests.count) }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    public func close() async {
        try? await channel.close()
    }

    public struct ReceiverTimeout: Error, CustomStringConvertible {
        public var what: String
        public var received: Int
        public var description: String { "timed out waiting for \(what) (\(received) requests received)" }
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let recorder: Recorder
        var head: HTTPRequestHead?
        var body: [UInt8] = []

        init(recorder: Recorder) { self.recorder = recorder }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body = []
            case .body(var buffer):
                body += buffer.readBytes(length: buffer.readableBytes) ?? []
            case .end:
                guard let head else { return }
                let request = ReceivedRequest(
                    method: head.method.rawValue, uri: head.uri, headers: head.headers.map { ($0.name, $0.value) }, body: body, at: .now
                )
                let reply = recorder.record(request)
                let respond = {
                    var headers = HTTPHeaders()
                    headers.add(name: "Content-Length", value: "0")
                    context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: HTTPResponseStatus(statusCode: reply.status), headers: headers))), promise: nil)
                    context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
                }
                if reply.delay > .zero {
                    let nanoseconds = reply.delay.components.seconds * 1_000_000_000 + reply.delay.components.attoseconds / 1_000_000_000
                    context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(nanoseconds)) { respond() }
                } else {
                    respond()
                }
            }
        }
    }
}
