import Hummingbird
import Logging
import Prometheus
import ServiceLifecycle
import Worker

/// Everything the worker serves on `HTTP_PORT` (contract §8): the operations routes
/// and the HTTP API. A service of the worker's group, started after the consumer and
/// stopped before it.
public struct HTTPSurface: Service {
    private let application: Application<RouterResponder<BasicRequestContext>>

    /// - Parameters:
    ///   - port: the port to listen on, on every interface.
    ///   - registry: what `/metrics` serves (the registry the process's metrics were bootstrapped with).
    ///   - maxBodyBytes: the largest body a write takes (`MAX_MESSAGE_BYTES`); a larger one is answered 413.
    /// - Parameter tracing: whether a server span is made per request (spans are exported).
    public init(
        port: Int, host: String = "0.0.0.0", services: WorkerServices, orgs: OrgDirectory, maxBodyBytes: Int, registry: PrometheusCollectorRegistry,
        tracing: Bool = false, logger: Logger
    ) {
        let router = Router()
        // The request's span, a child of its traceparent; the write's own span is its child.
        // Outermost, so that it sees every answer, a 404 of no route among them.
        if tracing { router.add(middleware: RequestSpanMiddleware()) }
        router.add(middleware: NotFoundMiddleware())
        OperationsRoutes.add(to: router, services: services, registry: registry)
        APIRoutes.add(to: router, reads: ReadAPI(orgs: orgs, store: services.store), pipeline: services.pipeline, maxBodyBytes: maxBodyBytes, logger: logger)
        application = Application(
            router: router,
            configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: "trigger-worker"),
            onServerRunning: { channel in
                logger.info("HTTP surface listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "-")"])
            },
            logger: logger
        )
    }

    public func run() async throws {
        // No signals of its own: the worker's group shuts it down (an HTTP service that
        // ended on a signal by itself would count as a service that stopped unexpectedly).
        try await application.runService(gracefulShutdownSignals: [])
    }
}
