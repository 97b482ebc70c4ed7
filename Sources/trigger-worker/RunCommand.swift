import ArgumentParser
import Foundation
import HTTPAPI
import Kafka
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import Store
import Worker
import Workflows

/// `trigger-worker run`: consume, handle, commit; shut down gracefully on SIGTERM/SIGINT.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Join the consumer group and handle vendor events and trigger requests until SIGTERM or SIGINT."
    )

    @Option(help: "A YAML or JSON file of configuration keys (KAFKA_BROKERS: …); environment variables win over it.")
    var config: String?

    /// librdkafka versions before this fail against brokers that send tagged fields in ApiVersions v3.
    static let minimumLibrdkafka = [2, 3]

    func run() async throws {
        // A file that may not grow (a full disk, a file-size limit) is a store error
        // the worker reports and stops on, not a signal that kills it unannounced.
        signal(SIGXFSZ, SIG_IGN)
        var configuration = try loadConfiguration(config)
        LoggingBootstrap.bootstrap(configuration)
        let logger = Logger(label: "trigger-worker")
        // Once per process: every metric the worker records lands here, for GET /metrics.
        let registry = PrometheusCollectorRegistry()
        var metrics = PrometheusMetricsFactory(registry: registry)
        metrics.valueHistogramBuckets = MetricBuckets.values
        metrics.durationHistogramBuckets = MetricBuckets.durations
        MetricsSystem.bootstrap(metrics)

        let version = KafkaAdmin.librdkafkaVersion
        logger.info("Starting trigger-worker", metadata: configuration.summary.merging(["librdkafka": "\(version)"]) { $1 })
        let parts = version.split(separator: ".").compactMap { Int($0) }
        guard parts.lexicographicallyPrecedes(Self.minimumLibrdkafka) == false else {
            logger.critical("librdkafka \(version) is too old; 2.3 or newer is needed (run scripts/install-deps.sh)")
            throw ExitCode(1)
        }

        let orgs: OrgDirectory
        let catalog: WorkflowCatalog
        do {
            orgs = try OrgDirectory.load(path: configuration.orgsFile)
            catalog = try WorkflowCatalog.load(directory: configuration.workflowsDirectory, knownOrgs: orgs.ids)
        } catch {
            for problem in error.problems { logger.critical("Invalid definition: \(problem)") }
            throw ExitCode(1)
        }
        logger.info("Loaded definitions", metadata: ["orgs": "\(orgs.orgs.count)", "workflows": "\(catalog.count)"])

        try await createTopics(configuration, logger: logger)

        let store: any Store
        do {
            store = try StoreFactory.open(url: configuration.storeURL, poolSize: configuration.storePoolSize, logger: logger)
        } catch {
            logger.critical("Cannot open the store", metadata: [LogKey.error: "\(error)"])
            throw ExitCode(1)
        }
        var tracing: (any Service)?
        do {
            tracing = try TracingBootstrap.bootstrap(environment: ProcessInfo.processInfo.environment, logger: logger)
        } catch {
            logger.critical("Cannot export spans; check the OTEL_* variables", metadata: [LogKey.error: "\(error)"])
            throw ExitCode(1)
        }
        configuration.traceInputs = tracing != nil
        let failure = await Self.serve(
            configuration: configuration, orgs: orgs, catalog: catalog, store: store, registry: registry, observability: tracing.map { [$0] } ?? [], logger: logger
        )
        // The clients are released by now; librdkafka destroys them on threads of their
        // own, which still log through Swift: exiting before they are done would tear the
        // runtime down under them (a trap at exit instead of a clean status).
        if await !KafkaAdmin.waitUntilClientsDestroyed(timeout: configuration.shutdownGrace / 3) {
            logger.warning("librdkafka clients were still being destroyed at exit")
        }
        if let failure {
            // A service failed for good (the store, a fatal Kafka error): the process
            // exits non-zero so that its supervisor restarts it. Offsets were committed
            // only for what the store holds.
            logger.critical("trigger-worker stopped after a fatal error", metadata: [LogKey.error: "\(failure)"])
            throw ExitCode(1)
        }
        logger.info("trigger-worker stopped")
    }

    /// Runs the worker's services until they stop; returns why, when a service failed.
    /// Everything it builds is released when it returns.
    private static func serve(
        configuration: WorkerConfiguration, orgs: OrgDirectory, catalog: WorkflowCatalog, store: any Store, registry: PrometheusCollectorRegistry,
        observability: [any Service], logger: Logger
    ) async -> (any Error)? {
        do {
            let services = try WorkerServices(configuration: configuration, orgs: orgs, catalog: catalog, store: store, logger: logger)
            let watchdog = ShutdownWatchdog(grace: configuration.shutdownGrace, logger: logger)
            // HTTP_PORT=0 turns the HTTP surface off (tests and the bench run many workers).
            let surfaces: [any Service] = configuration.httpPort == 0 ? [] : [
                HTTPSurface(
                    port: configuration.httpPort, services: services, orgs: orgs, maxBodyBytes: configuration.maxMessageBytes, registry: registry,
                    tracing: configuration.traceInputs, logger: logger
                ),
            ]
            try await services.serviceGroup(signals: [.sigterm, .sigint], watchdog: watchdog, surfaces: surfaces, observability: observability).run()
            return nil
        } catch {
            return error
        }
    }

    /// Creates the four topics when missing, retrying while the broker does not answer.
    private func createTopics(_ configuration: WorkerConfiguration, logger: Logger) async throws {
        // The output topics take what the worker may publish (MAX_MESSAGE_BYTES and its
        // envelope); an existing topic keeps its settings (see docs/configuration.md).
        let outputs = ["max.message.bytes": String(configuration.producer.maxMessageBytes ?? configuration.outputLimit)]
        let specifications = configuration.topics.all.map { topic in
            KafkaTopicSpecification(
                name: topic, partitions: configuration.topicPartitions,
                settings: [configuration.topics.runStatus, configuration.topics.deadLetter].contains(topic) ? outputs : [:]
            )
        }
        var delay = Duration.milliseconds(500)
        let deadline = ContinuousClock.now + .seconds(120)
        while true {
            let failure: KafkaError
            do {
                _ = try await KafkaAdmin.createTopics(specifications, configuration: configuration.kafka, timeout: .seconds(10), logger: logger)
                return
            } catch {
                failure = error
            }
            guard failure.isRetriable, ContinuousClock.now + delay < deadline else { throw failure }
            logger.warning("Brokers not answering yet; retrying topic creation", metadata: ["error": "\(failure)", "retry_in": "\(delay)"])
            try await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(10))
        }
    }
}

/// Reads the configuration, turning a problem into a clear message and exit code 2.
func loadConfiguration(_ file: String?) throws -> WorkerConfiguration {
    do {
        return try WorkerConfiguration.load(environment: ProcessInfo.processInfo.environment, configFile: file)
    } catch {
        FileHandleOutput.standardError("trigger-worker: configuration error: \(error)\n")
        throw ExitCode(2)
    }
}

enum FileHandleOutput {
    static func standardError(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}
