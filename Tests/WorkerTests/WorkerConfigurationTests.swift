import Workflows
import Foundation
import Kafka
import Testing
@testable import Worker

@Suite("Worker configuration")
struct WorkerConfigurationTests {
    @Test("defaults are the contract's")
    func defaults() throws {
        let configuration = try WorkerConfiguration.load(environment: [:])
        #expect(configuration.kafka.brokers == ["127.0.0.1:9092"])
        #expect(configuration.groupID == "trigger-worker")
        #expect(configuration.topics.all == ["vendor-events", "trigger-requests", "workflow-run-status", "trigger-worker-dlq"])
        #expect(configuration.storeURL == "sqlite://data/trigger-worker.sqlite")
        #expect(configuration.workflowsDirectory == "workflows")
        #expect(configuration.orgsFile == "config/orgs.yaml")
        #expect(configuration.idempotencyTTL == .seconds(86400))
        #expect(configuration.maxMessageBytes == 1_048_576)
        #expect(configuration.idempotencyMismatch == .replay)
        #expect(configuration.httpPort == 8080)
        #expect(configuration.logLevel == .info)
        #expect(configuration.logFormat == .json)
        #expect(configuration.kafka.overrides.isEmpty)
    }

    @Test("environment variables set every key")
    func environment() throws {
        let configuration = try WorkerConfiguration.load(environment: [
            "KAFKA_BROKERS": "k1:9092, k2:9093",
            "KAFKA_GROUP_ID": "workers",
            "VENDOR_EVENTS_TOPIC": "ve", "TRIGGER_REQUESTS_TOPIC": "tr", "RUN_STATUS_TOPIC": "rs", "DLQ_TOPIC": "dl",
            "STORE_URL": "postgres://u:p@db:5432/w",
            "WORKFLOWS_DIR": "/srv/workflows", "ORGS_FILE": "/srv/orgs.yaml",
            "IDEMPOTENCY_TTL": "10m", "MAX_MESSAGE_BYTES": "2048", "IDEMPOTENCY_MISMATCH": "reject",
            "HTTP_PORT": "0", "LOG_LEVEL": "debug", "LOG_FORMAT": "text",
            "PATH": "/usr/bin",
        ])
        #expect(configuration.kafka.brokers == ["k1:9092", "k2:9093"])
        #expect(configuration.groupID == "workers")
        #expect(configuration.topics.inputs == ["ve", "tr"])
        #expect(configuration.topics.runStatus == "rs")
        #expect(configuration.topics.deadLetter == "dl")
        #expect(configuration.storeURL == "postgres://u:p@db:5432/w")
        #expect(configuration.workflowsDirectory == "/srv/workflows")
        #expect(configuration.orgsFile == "/srv/orgs.yaml")
        #expect(configuration.idempotencyTTL == .seconds(600))
        #expect(configuration.maxMessageBytes == 2048)
        #expect(configuration.idempotencyMismatch == .reject)
        #expect(configuration.httpPort == 0)
        #expect(configuration.logLevel == .debug)
        #expect(configuration.logFormat == .text)
    }

    @Test("RDKAFKA_* variables pass through to librdkafka, lower-cased with dots")
    func passthrough() throws {
        let configuration = try WorkerConfiguration.load(environment: [
            "RDKAFKA_MAX_POLL_INTERVAL_MS": "10000",
            "RDKAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "RDKAFKA_": "ignored",
            "NOT_RDKAFKA_X": "ignored",
        ])
        #expect(configuration.kafka.overrides == ["max.poll.interval.ms": "10000", "security.protocol": "sasl_ssl"])
        let consumer = KafkaConsumerConfiguration(common: configuration.kafka, groupID: configuration.groupID, topics: configuration.topics.inputs)
        #expect(consumer.properties["max.poll.interval.ms"] == "10000", "a pass-through property wins over the typed default")
    }

    @Test("a config file sets keys; the environment wins over it")
    func configFile() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("trigger-worker-\(UUID()).yaml").path
        try "KAFKA_GROUP_ID: from-file\nIDEMPOTENCY_TTL: 5s\nMAX_MESSAGE_BYTES: 4096\nRDKAFKA_LINGER_MS: 1\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let configuration = try WorkerConfiguration.load(environment: ["KAFKA_GROUP_ID": "from-env"], configFile: file)
        #expect(configuration.groupID == "from-env")
        #expect(configuration.idempotencyTTL == .seconds(5))
        #expect(configuration.maxMessageBytes == 4096)
        #expect(configuration.kafka.overrides["linger.ms"] == "1")

        let json = file + ".json"
        try #"{"HTTP_PORT": 9000, "LOG_FORMAT": "text"}"#.write(toFile: json, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: json) }
        let fromJSON = try WorkerConfiguration.load(environment: ["CONFIG_FILE": json])
        #expect(fromJSON.httpPort == 9000)
        #expect(fromJSON.logFormat == .text)
    }

    @Test("invalid values name their key", arguments: [
        ("IDEMPOTENCY_TTL", "24 hours"), ("IDEMPOTENCY_TTL", "0s"), ("MAX_MESSAGE_BYTES", "-1"),
        ("IDEMPOTENCY_MISMATCH", "ignore"), ("HTTP_PORT", "70000"), ("LOG_LEVEL", "loud"),
        ("LOG_FORMAT", "xml"), ("STORE_URL", "mysql://x"), ("TOPIC_PARTITIONS", "0"),
    ])
    func invalid(key: String, value: String) {
        #expect {
            try WorkerConfiguration.load(environment: [key: value])
        } throws: { error in
            (error as? ConfigurationError)?.key == key && (error as? ConfigurationError)?.code == .invalidValue
        }
    }

    @Test("durations: the contract's units", arguments: [("500ms", Duration.milliseconds(500)), ("5s", .seconds(5)), ("10m", .seconds(600)), ("24h", .seconds(86400)), ("7d", .seconds(604_800))])
    func durations(text: String, expected: Duration) {
        #expect(DurationParser.parse(text) == expected)
        #expect(DurationParser.parse(DurationParser.format(expected)) == expected, "format must parse back")
    }

    @Test("durations are formatted in the largest whole unit")
    func formatting() {
        #expect(DurationParser.format(.seconds(86400)) == "1d")
        #expect(DurationParser.format(.seconds(90)) == "90s")
        #expect(DurationParser.format(.milliseconds(1500)) == "1500ms")
    }

    @Test("durations without a known unit are refused", arguments: ["", "5", "s", "5w", "1.5h", "-5s"])
    func badDurations(text: String) {
        #expect(DurationParser.parse(text) == nil)
    }

    @Test("the start-up summary hides database passwords")
    func redaction() {
        #expect(WorkerConfiguration.redactedURL("postgres://user:secret@db:5432/w") == "postgres://user:***@db:5432/w")
        #expect(WorkerConfiguration.redactedURL("sqlite://data/x.sqlite") == "sqlite://data/x.sqlite")
    }

    @Test("a duration too long to represent is refused, not a crash", arguments: ["9999999999999999999d", "106751991167301d", "9223372036854775807h", "99999999999999999999ms"])
    func overflowingDurations(text: String) {
        #expect(DurationParser.parse(text) == nil)
        #expect(throws: ConfigurationError.self) { try WorkerConfiguration(values: ["IDEMPOTENCY_TTL": text]) }
    }
}
