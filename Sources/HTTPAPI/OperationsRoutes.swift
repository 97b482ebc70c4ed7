import Hummingbird
import Kafka
import Logging
import Metrics
import NIOCore
import Prometheus
import ServiceLifecycle
import Store
import Worker

/// `GET /healthz`, `GET /readyz`, `GET /metrics` and `GET /openapi.json` (contract §8).
enum OperationsRoutes {
    /// - Parameter registry: what `/metrics` serves (the registry the process's metrics were bootstrapped with).
    static func add(to router: Router<BasicRequestContext>, services: WorkerServices, registry: PrometheusCollectorRegistry) {
        router.get("healthz") { _, _ -> Response in
            text(.ok, "ok\n")
        }
        let probe = ReadinessProbe(store: services.store, consumer: services.consumer, readiness: services.readiness)
        router.get("readyz") { _, _ -> Response in
            let failures = await probe.failures()
            guard failures.isEmpty else {
                return text(.serviceUnavailable, "not ready: " + failures.joined(separator: "; ") + "\n")
            }
            return text(.ok, "ready\n")
        }
        // Built once: the self-contained OpenAPI 3.1 document of schemas/ (scripts/schemas.py bundle).
        let openAPI = ByteBuffer(string: OpenAPIDocument.json)
        router.get("openapi.json") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: openAPI))
        }
        let sampled = SampledGauges(store: services.store, consumer: services.consumer)
        router.get("metrics") { _, _ -> Response in
            await sampled.refresh()
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer()))
            )
        }
    }

    private static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }
}

/// What `/readyz` checks (§8): the store answers, the broker answers, the instance
/// holds an assignment of its group, and nothing in ``Readiness`` (such as a SQLite
/// store in a shared group) keeps it from serving. The store and broker checks are
/// shared by concurrent probes and their verdicts kept for a second: however often
/// `/readyz` is asked, the broker and the store see at most one check a second.
struct ReadinessProbe: Sendable {
    let readiness: Readiness
    private let store: RecentVerdict
    private let broker: RecentVerdict

    init(store: any Store, consumer: KafkaConsumer, readiness: Readiness) {
        self.readiness = readiness
        self.store = RecentVerdict {
            // A real query (the outbox's size), so that a broken database file shows.
            (try? await Deadline.run(.milliseconds(2500)) { _ = try await store.outboxDepth() }) != nil
        }
        // Awaited, not abandoned at a deadline: a metadata request still running in
        // librdkafka when the consumer closes (the HTTP surface stops just before it)
        // or the process exits would use a handle being torn down. librdkafka's own
        // timeout bounds it.
        self.broker = RecentVerdict { await consumer.brokerAnswers(timeout: .seconds(2)) }
    }

    /// Why the instance is not ready; empty when it is.
    func failures() async -> [String] {
        async let storeAnswers = store.verdict()
        async let brokerAnswers = broker.verdict()
        var failures: [String] = []
        if !(await storeAnswers) { failures.append("the store does not answer") }
        if !(await brokerAnswers) { failures.append("the broker does not answer") }
        if !readiness.hasJoined { failures.append("no assignment from the consumer group yet") }
        failures += readiness.current.values.sorted()
        return failures
    }
}

/// A check run at most once at a time and at most about once a second: callers while
/// it runs wait for its verdict, callers within ``maxAge`` after it get that verdict.
actor RecentVerdict {
    static let maxAge = Duration.seconds(1)
    private let check: @Sendable () async -> Bool
    private var last: (verdict: Bool, at: ContinuousClock.Instant)?
    private var running: Task<Bool, Never>?

    init(_ check: @escaping @Sendable () async -> Bool) { self.check = check }

    func verdict() async -> Bool {
        if let last, ContinuousClock.now - last.at < Self.maxAge { return last.verdict }
        if let running { return await running.value }
        let task = Task { await check() }
        running = task
        let verdict = await task.value
        last = (verdict, .now)
        running = nil
        return verdict
    }
}

/// Gauges read from the store and the consumer when `/metrics` is scraped (at most
/// once a second, however often it is asked): the outbox's depth in entries
/// (`trigger_worker_outbox_entries`; an entry is one batch's outputs of one partition),
/// and consumer lag per partition (`trigger_worker_consumer_lag{topic, partition}`; a partition this instance
/// no longer holds reads 0 here, its new owner reports it).
actor SampledGauges {
    private let store: any Store
    private let consumer: KafkaConsumer
    private let outboxDepth = Metrics.Gauge(label: "trigger_worker_outbox_entries")
    private var lags: [KafkaTopicPartition: Metrics.Gauge] = [:]
    private var last: ContinuousClock.Instant?

    init(store: any Store, consumer: KafkaConsumer) {
        self.store = store
        self.consumer = consumer
    }

    func refresh() async {
        if let last, ContinuousClock.now - last < RecentVerdict.maxAge { return }
        last = .now
        let store = self.store
        if let depth = try? await Deadline.run(.seconds(2), { try await store.outboxDepth() }) { outboxDepth.record(depth) }
        guard let current = try? consumer.lag() else { return }
        for (partition, gauge) in lags where current[partition] == nil { gauge.record(0) }
        for (partition, lag) in current {
            let gauge = lags[partition] ?? Metrics.Gauge(label: "trigger_worker_consumer_lag", dimensions: [("topic", partition.topic), ("partition", "\(partition.partition)")])
            lags[partition] = gauge
            gauge.record(lag)
        }
    }
}
