import Workflows
import Foundation
import Kafka
import Logging
import Yams

/// Everything the worker is configured with, from environment variables and an
/// optional YAML/JSON file with the same keys (the environment wins).
///
/// Keys and defaults are those of the contract (docs/configuration.md).
public struct WorkerConfiguration: Sendable {
    /// How a replay whose body differs from the original is answered.
    public enum IdempotencyMismatchPolicy: String, Sendable, Hashable {
        /// With the original response, flagged `fingerprint_mismatch` (Coverbase's behaviour).
        case replay
        /// With `422 idempotency_key_reused` (Stripe's behaviour).
        case reject
    }

    /// The log line format.
    public enum LogFormat: String, Sendable, Hashable {
        /// One JSON object per line.
        case json
        /// Human-readable lines.
        case text
    }

    /// The topics the worker reads and writes.
    public struct Topics: Sendable, Hashable {
        public var vendorEvents = "vendor-events"
        public var triggerRequests = "trigger-requests"
        public var runStatus = "workflow-run-status"
        public var deadLetter = "trigger-worker-dlq"

        /// The input topics, which the consumer group subscribes to.
        public var inputs: [String] { [vendorEvents, triggerRequests] }
        /// Every topic, created at start-up when missing.
        public var all: [String] { [vendorEvents, triggerRequests, runStatus, deadLetter] }
    }

    /// Brokers and `RDKAFKA_*` pass-through properties. `KAFKA_BROKERS`, default `127.0.0.1:9092`.
    public var kafka = KafkaConfiguration()
    /// `KAFKA_GROUP_ID`, default `trigger-worker`.
    public var groupID = "trigger-worker"
    /// `VENDOR_EVENTS_TOPIC`, `TRIGGER_REQUESTS_TOPIC`, `RUN_STATUS_TOPIC`, `DLQ_TOPIC`.
    public var topics = Topics()
    /// Partitions of each topic the worker creates. `TOPIC_PARTITIONS`, default 6.
    public var topicPartitions: Int32 = 6
    /// `STORE_URL`, default `sqlite://data/trigger-worker.sqlite`.
    public var storeURL = "sqlite://data/trigger-worker.sqlite"
    /// `STORE_POOL_SIZE`, default 8: the most connections to a PostgreSQL store per instance.
    public var storePoolSize = 8
    /// `WORKFLOWS_DIR`, default `workflows`.
    public var workflowsDirectory = "workflows"
    /// `ORGS_FILE`, default `config/orgs.yaml`.
    public var orgsFile = "config/orgs.yaml"
    /// `IDEMPOTENCY_TTL`, default 24 hours.
    public var idempotencyTTL: Duration = .seconds(24 * 3600)
    /// `MAX_MESSAGE_BYTES`, default 1 MiB.
    public var maxMessageBytes = 1_048_576
    /// `IDEMPOTENCY_MISMATCH`, default `replay`.
    public var idempotencyMismatch = IdempotencyMismatchPolicy.replay
    /// `HTTP_PORT`, default 8080; 0 disables the HTTP surface.
    public var httpPort = 8080
    /// Whether a span is made per input (``InputSpans``): set by `run` when it exports
    /// spans over OTLP (`OTEL_EXPORTER_OTLP_ENDPOINT`); not a key of its own.
    public var traceInputs = false
    /// `SHUTDOWN_GRACE`, default 30 s: after SIGTERM or a fatal error the process exits within this.
    public var shutdownGrace: Duration = .seconds(30)
    /// `RUN_RETENTION`, default 30 days: finished runs and assessments are pruned this long after they ended.
    public var runRetention: Duration = .seconds(30 * 86400)
    /// `STEP_LEASE`, default 30 s: how long a claimed run stays claimed without renewal (§10).
    public var stepLease: Duration = .seconds(30)
    /// `ENGINE_CONCURRENCY`, default 64: steps one instance executes at once (§10).
    public var engineConcurrency = 64
    /// `WEBHOOK_ALLOWED_HOSTS`, default empty (any host): the host names `send_webhook` may call, lower-cased.
    public var webhookAllowedHosts: Set<String> = []
    /// `LOG_LEVEL`, default `info`.
    public var logLevel = Logger.Level.info
    /// `LOG_FORMAT`, default `json`.
    public var logFormat = LogFormat.json

    /// The defaults of the contract.
    public init() {}

    /// The most bytes an input value may have (`MAX_MESSAGE_BYTES`) and the room the
    /// worker keeps beside it for what it writes around an echoed value: envelopes,
    /// run documents, bounded headers. Every output is built within ``outputLimit``.
    public static let envelopeAllowance = 256 * 1024

    /// The most bytes (key, value and headers) of any message the worker publishes.
    public var outputLimit: Int { maxMessageBytes + Self.envelopeAllowance }

    /// The producer's settings: librdkafka's `message.max.bytes` leaves room above
    /// ``outputLimit`` for the per-record framing librdkafka counts too.
    public var producer: KafkaProducerConfiguration {
        KafkaProducerConfiguration(common: kafka, maxMessageBytes: outputLimit + 16 * 1024)
    }

    /// The bounds of `MAX_MESSAGE_BYTES`: librdkafka refuses records over 1,000,000,000 bytes.
    static let maxMessageBytesRange = 256...(100 << 20)

    /// The environment variable that names a configuration file.
    public static let configFileKey = "CONFIG_FILE"

    /// Reads the configuration file (when `configFile`, or else `CONFIG_FILE`, names
    /// one), then the environment on top of it.
    public static func load(environment: [String: String], configFile: String? = nil) throws(ConfigurationError) -> WorkerConfiguration {
        var values: [String: String] = [:]
        if let path = configFile ?? environment[configFileKey], !path.isEmpty {
            values = try readFile(path)
        }
        values.merge(environment) { _, fromEnvironment in fromEnvironment }
        return try WorkerConfiguration(values: values)
    }

    /// Builds the configuration from flat `KEY: value` pairs.
    public init(values: [String: String]) throws(ConfigurationError) {
        func value(_ key: String) -> String? {
            values[key].flatMap { $0.trimmingSpaces.isEmpty ? nil : $0.trimmingSpaces }
        }
        if let brokers = value("KAFKA_BROKERS") {
            kafka.brokers = brokers.split(separator: ",").map { String($0).trimmingSpaces }.filter { !$0.isEmpty }
        }
        kafka.overrides = Self.librdkafkaOverrides(values)
        groupID = value("KAFKA_GROUP_ID") ?? groupID
        topics.vendorEvents = value("VENDOR_EVENTS_TOPIC") ?? topics.vendorEvents
        topics.triggerRequests = value("TRIGGER_REQUESTS_TOPIC") ?? topics.triggerRequests
        topics.runStatus = value("RUN_STATUS_TOPIC") ?? topics.runStatus
        topics.deadLetter = value("DLQ_TOPIC") ?? topics.deadLetter
        if Set(topics.all).count != topics.all.count {
            throw ConfigurationError(code: .invalidValue, key: "VENDOR_EVENTS_TOPIC", message: "the four topics must have four different names (got \(topics.all.joined(separator: ", ")))")
        }
        if let text = value("TOPIC_PARTITIONS") {
            guard let partitions = Int32(text), partitions > 0 else { throw Self.invalid("TOPIC_PARTITIONS", text, "a whole number above 0") }
            topicPartitions = partitions
        }
        storeURL = value("STORE_URL") ?? storeURL
        guard storeURL.hasPrefix("sqlite://") || storeURL.hasPrefix("postgres://") || storeURL.hasPrefix("postgresql://") else {
            throw ConfigurationError(code: .invalidValue, key: "STORE_URL", message: "must start with sqlite:// or postgres://")
        }
        if let text = value("STORE_POOL_SIZE") {
            guard let size = Int(text), (1...1000).contains(size) else { throw Self.invalid("STORE_POOL_SIZE", text, "a whole number from 1 to 1000") }
            storePoolSize = size
        }
        workflowsDirectory = value("WORKFLOWS_DIR") ?? workflowsDirectory
        orgsFile = value("ORGS_FILE") ?? orgsFile
        if let text = value("IDEMPOTENCY_TTL") {
            guard let ttl = DurationParser.parse(text), ttl > .zero else { throw Self.invalid("IDEMPOTENCY_TTL", text, "a duration such as 500ms, 5s, 10m, 24h or 7d") }
            idempotencyTTL = ttl
        }
        if let text = value("MAX_MESSAGE_BYTES") {
            guard let bytes = Int(text), Self.maxMessageBytesRange.contains(bytes) else {
                throw Self.invalid("MAX_MESSAGE_BYTES", text, "a whole number of bytes from \(Self.maxMessageBytesRange.lowerBound) to \(Self.maxMessageBytesRange.upperBound)")
            }
            maxMessageBytes = bytes
        }
        if let text = value("SHUTDOWN_GRACE") {
            guard let grace = DurationParser.parse(text), grace > .zero else { throw Self.invalid("SHUTDOWN_GRACE", text, "a duration such as 10s or 1m") }
            shutdownGrace = grace
        }
        if let text = value("RUN_RETENTION") {
            guard let retention = DurationParser.parse(text), retention > .zero else { throw Self.invalid("RUN_RETENTION", text, "a duration such as 30d") }
            // A replay names the run its key started: the run outlives the key.
            guard retention >= idempotencyTTL else {
                throw ConfigurationError(code: .invalidValue, key: "RUN_RETENTION", message: "must be at least IDEMPOTENCY_TTL (\(DurationParser.format(idempotencyTTL))): a replay names a run that should still exist")
            }
            runRetention = retention
        } else {
            runRetention = max(runRetention, idempotencyTTL)
        }
        if let text = value("STEP_LEASE") {
            guard let lease = DurationParser.parse(text), lease >= .seconds(1), lease <= .seconds(86400) else {
                throw Self.invalid("STEP_LEASE", text, "a duration from 1s to 24h, such as 30s")
            }
            stepLease = lease
        }
        if let text = value("ENGINE_CONCURRENCY") {
            guard let concurrency = Int(text), (1...10_000).contains(concurrency) else {
                throw Self.invalid("ENGINE_CONCURRENCY", text, "a whole number of steps from 1 to 10000")
            }
            engineConcurrency = concurrency
        }
        if let text = value("WEBHOOK_ALLOWED_HOSTS") {
            let hosts = text.split(separator: ",").map { String($0).trimmingSpaces.lowercased() }.filter { !$0.isEmpty }
            guard hosts.allSatisfy({ host in host.utf8.count <= 253 && host.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") } }) else {
                throw Self.invalid("WEBHOOK_ALLOWED_HOSTS", text, "a comma-separated list of host names")
            }
            webhookAllowedHosts = Set(hosts)
        }
        if let text = value("IDEMPOTENCY_MISMATCH") {
            guard let policy = IdempotencyMismatchPolicy(rawValue: text.lowercased()) else { throw Self.invalid("IDEMPOTENCY_MISMATCH", text, "replay or reject") }
            idempotencyMismatch = policy
        }
        if let text = value("HTTP_PORT") {
            guard let port = Int(text), (0...65535).contains(port) else { throw Self.invalid("HTTP_PORT", text, "a port from 0 to 65535 (0 disables HTTP)") }
            httpPort = port
        }
        if let text = value("LOG_LEVEL") {
            let aliases = ["warn": "warning", "fatal": "critical"]
            guard let level = Logger.Level(rawValue: aliases[text.lowercased()] ?? text.lowercased()) else {
                throw Self.invalid("LOG_LEVEL", text, "trace, debug, info, notice, warning, error or critical")
            }
            logLevel = level
        }
        if let text = value("LOG_FORMAT") {
            guard let format = LogFormat(rawValue: text.lowercased()) else { throw Self.invalid("LOG_FORMAT", text, "json or text") }
            logFormat = format
        }
    }

    /// `RDKAFKA_<PROPERTY>` → librdkafka's `<property>`: lower-cased, `_` → `.`.
    static func librdkafkaOverrides(_ values: [String: String]) -> [String: String] {
        var overrides: [String: String] = [:]
        for (key, value) in values where key.hasPrefix("RDKAFKA_") && key.count > "RDKAFKA_".count {
            overrides[key.dropFirst("RDKAFKA_".count).lowercased().replacingOccurrences(of: "_", with: ".")] = value
        }
        return overrides
    }

    private static func invalid(_ key: String, _ value: String, _ expected: String) -> ConfigurationError {
        ConfigurationError(code: .invalidValue, key: key, message: "'\(value)' is not valid; expected \(expected)")
    }

    /// Reads a YAML or JSON file of `KEY: value` pairs (JSON is YAML too).
    private static func readFile(_ path: String) throws(ConfigurationError) -> [String: String] {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ConfigurationError(code: .unreadableFile, key: configFileKey, message: "cannot read '\(path)'")
        }
        let loaded: Any?
        do {
            loaded = try Yams.load(yaml: text)
        } catch {
            throw ConfigurationError(code: .unreadableFile, key: configFileKey, message: "'\(path)' is not valid YAML or JSON: \(error)")
        }
        guard let mapping = loaded as? [String: Any] else {
            if loaded == nil { return [:] }
            throw ConfigurationError(code: .unreadableFile, key: configFileKey, message: "'\(path)' must hold a mapping of KEY: value")
        }
        var values: [String: String] = [:]
        for (key, value) in mapping {
            switch value {
            case let string as String: values[key] = string
            case let bool as Bool: values[key] = bool ? "true" : "false"
            case let int as Int: values[key] = String(int)
            case let double as Double: values[key] = String(double)
            default:
                throw ConfigurationError(code: .unreadableFile, key: key, message: "in '\(path)' must be a single value, not a list or mapping")
            }
        }
        return values
    }

    /// The configuration as `KEY=value` lines for the start-up log (no secrets: only
    /// librdkafka property names are shown, not their values).
    public var summary: Logger.Metadata {
        [
            "brokers": "\(kafka.brokers.joined(separator: ","))",
            "group": "\(groupID)",
            "topics": "\(topics.all.joined(separator: ","))",
            "store": "\(Self.redactedURL(storeURL))",
            "store_pool_size": "\(storePoolSize)",
            "workflows_dir": "\(workflowsDirectory)",
            "orgs_file": "\(orgsFile)",
            "idempotency_ttl": "\(DurationParser.format(idempotencyTTL))",
            "max_message_bytes": "\(maxMessageBytes)",
            "idempotency_mismatch": "\(idempotencyMismatch.rawValue)",
            "http_port": "\(httpPort)",
            "shutdown_grace": "\(DurationParser.format(shutdownGrace))",
            "run_retention": "\(DurationParser.format(runRetention))",
            "step_lease": "\(DurationParser.format(stepLease))",
            "engine_concurrency": "\(engineConcurrency)",
            "webhook_allowed_hosts": "\(webhookAllowedHosts.isEmpty ? "any" : webhookAllowedHosts.sorted().joined(separator: ","))",
            "rdkafka_overrides": "\(kafka.overrides.keys.sorted().joined(separator: ","))",
        ]
    }

    /// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
    public static func redactedURL(_ url: String) -> String {
        guard let scheme = url.range(of: "://"), let at = url[scheme.upperBound...].lastIndex(of: "@") else { return url }
        let credentials = url[scheme.upperBound..<at]
        guard let colon = credentials.firstIndex(of: ":") else { return url }
        return url[..<colon] + ":***" + url[at...]
    }
}
