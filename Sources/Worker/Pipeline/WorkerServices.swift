import Kafka
import Logging
import ServiceLifecycle
import UnixSignals
import Store
import Workflows

/// The worker's services, wired once: `run` uses them, and so do the benchmark
/// and the integration tests, so that they measure and test what runs.
public struct WorkerServices: Sendable {
    public let store: any Store
    public let producer: KafkaProducer
    public let consumer: KafkaConsumer
    public let publisher: OutboxPublisher
    public let pipeline: Pipeline
    public let sweeper: RetentionSweeper
    /// The engine: executes runs' steps after intake.
    public let executor: ExecutorService
    /// The HTTP client of `send_webhook`.
    public let webhooks: WebhookClient
    /// What keeps this instance from being ready (a SQLite store in a shared group).
    public let readiness = Readiness()
    /// Told of assignments and revocations: the publisher, and on SQLite the shared-group check.
    private let owners: [any PartitionOwner]
    private let shutdownGrace: Duration
    private let logger: Logger

    /// - Parameter enginePaused: runs are created and no step executes (the benchmark's switch).
    public init(configuration: WorkerConfiguration, orgs: OrgDirectory, catalog: WorkflowCatalog, store: any Store, enginePaused: Bool = false, logger: Logger) throws {
        self.store = store
        self.logger = logger
        shutdownGrace = configuration.shutdownGrace
        producer = try KafkaProducer(configuration: configuration.producer, logger: logger)
        let consumerConfiguration = KafkaConsumerConfiguration(common: configuration.kafka, groupID: configuration.groupID, topics: configuration.topics.inputs)
        consumer = try KafkaConsumer(configuration: consumerConfiguration, logger: logger)
        let publisher = OutboxPublisher(store: store, producer: producer, logger: logger, inputTopics: Set(configuration.topics.inputs))
        self.publisher = publisher
        webhooks = WebhookClient()
        let engine = RunEngine(maxEffectBytes: configuration.maxMessageBytes, actions: [
            .sendWebhook: webhooks.action(allowedHosts: configuration.webhookAllowedHosts) { orgs.org(id: $0)?.webhookSigningSecret },
            .waitForEvent: WaitForEventAction(store: store),
            .forEach: ForEachAction(store: store),
            .aggregate: AggregateAction(store: store),
            .runWorkflow: RunWorkflowAction(catalog: catalog, store: store),
        ])
        let executor = ExecutorService(configuration: configuration, catalog: catalog, store: store, engine: engine, paused: enginePaused, maxBatchSize: consumerConfiguration.maxBatchSize, logger: logger) {
            publisher.notify()
        }
        self.executor = executor
        pipeline = Pipeline(configuration: configuration, orgs: orgs, catalog: catalog, store: store, batchWritten: { executor.intakeWrote(messages: $0, startedRuns: $1) }, logger: logger) { publisher.notify() }
        sweeper = RetentionSweeper(store: store, ttl: configuration.idempotencyTTL, retention: configuration.runRetention, logger: logger)
        owners = store.isShared
            ? [publisher, readiness]
            : [publisher, readiness, SharedGroupCheck(consumer: consumer, readiness: readiness, logger: logger)]
    }

    /// One service group in dependency order. Graceful shutdown runs in reverse:
    /// the consumer stops fetching, what was handled is committed and the group is
    /// left; the publisher publishes what is left in the outbox; the producer flushes.
    /// A graceful shutdown that takes longer than three quarters of `SHUTDOWN_GRACE`
    /// is escalated to cancellation.
    /// - Parameter watchdog: `run` passes one, to exit within `SHUTDOWN_GRACE` whatever hangs.
    /// - Parameter surfaces: services that serve the worker to the outside (the HTTP
    ///   surface): started after the consumer, so stopped before it.
    /// - Parameter observability: services the others report to (the span exporter):
    ///   started first, so stopped last, after everything they report on.
    public func serviceGroup(signals: [UnixSignal] = [], watchdog: ShutdownWatchdog? = nil, surfaces: [any Service] = [], observability: [any Service] = []) -> ServiceGroup {
        serviceGroup(handler: pipeline, signals: signals, watchdog: watchdog, surfaces: surfaces, observability: observability)
    }

    /// - Parameter handler: what handles the consumed batches (a wrapper around the
    ///   pipeline can observe them, as the benchmark does).
    public func serviceGroup(
        handler: some BatchHandler, signals: [UnixSignal] = [], watchdog: ShutdownWatchdog? = nil, surfaces: [any Service] = [], observability: [any Service] = []
    ) -> ServiceGroup {
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = observability.map { .init(service: $0) }
        // A store with a lifecycle of its own (PostgreSQL's connection pool) comes
        // first, so that it is the last to stop.
        if let store = store as? any Service { services.append(.init(service: store)) }
        services += [
            .init(service: producer),
            .init(service: publisher),
            .init(service: webhooks),
            .init(service: executor),
            .init(service: sweeper),
            .init(service: BatchConsumerService(consumer: consumer, handler: handler, owners: owners, logger: logger), successTerminationBehavior: .gracefullyShutdownGroup),
        ]
        services += surfaces.map { .init(service: $0) }
        // Last, so that it is the first to hear of a graceful shutdown.
        if let watchdog { services.append(.init(service: watchdog)) }
        var configuration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: signals, logger: logger)
        // Cancellation comes at three quarters of the grace, so that it can unwind
        // (waits for a broker end at once) before the watchdog has to end the process.
        configuration.maximumGracefulShutdownDuration = shutdownGrace * 3 / 4
        return ServiceGroup(configuration: configuration)
    }
}
