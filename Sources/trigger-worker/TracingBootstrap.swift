import Logging
import OTel
import ServiceLifecycle
import Tracing

/// Spans exported over OTLP/HTTP with swift-otel, when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the other `OTEL_*` variables
/// (protocol `http/protobuf` or `http/json`, sampler, batch processor, resource) are
/// swift-otel's. Without an endpoint nothing is bootstrapped and no span is made.
enum TracingBootstrap {
    /// Bootstraps the process's tracer, once.
    /// - Returns: the exporter's service, to run first in the group (so that it stops
    ///   last and flushes what the others ended); `nil` when spans are not exported.
    static func bootstrap(environment: [String: String], logger: Logger) throws -> (any Service)? {
        let endpoint = environment["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].flatMap { $0.isEmpty ? nil : $0 } ?? environment["OTEL_EXPORTER_OTLP_ENDPOINT"]
        guard let endpoint, !endpoint.isEmpty,
              environment["OTEL_SDK_DISABLED"]?.lowercased() != "true", environment["OTEL_TRACES_EXPORTER"]?.lowercased() != "none"
        else { return nil }
        var configuration = OTel.Configuration.default
        configuration.serviceName = "trigger-worker"
        // The worker's logs and metrics have their own paths (LOG_FORMAT, GET /metrics).
        configuration.logs.enabled = false
        configuration.metrics.enabled = false
        configuration.diagnosticLogger = .custom(logger)
        // Only the OTLP/HTTP exporter is built (the gRPC one would add grpc-swift to every build).
        configuration.traces.otlpExporter.protocol = .httpProtobuf
        let backend = try OTel.makeTracingBackend(configuration: configuration)
        InstrumentationSystem.bootstrap(backend.factory)
        logger.info("Exporting spans over OTLP", metadata: ["endpoint": "\(endpoint)"])
        return backend.service
    }
}
