/// Settings shared by every client: where the brokers are and what librdkafka
/// properties to pass through.
///
/// The librdkafka property dictionary is built only by ``KafkaConsumerConfiguration/properties``
/// and ``KafkaProducerConfiguration/properties``: typed settings first, then
/// ``overrides`` on top, so an operator can always set any librdkafka property.
public struct KafkaConfiguration: Sendable, Hashable {
    /// `host:port` of one or more bootstrap brokers. Default: `127.0.0.1:9092`.
    public var brokers: [String]
    /// The client id sent to the broker. Default: `trigger-worker`.
    public var clientID: String
    /// librdkafka properties set verbatim after the typed settings (for example from
    /// `RDKAFKA_*` environment variables), each handed only to the clients it is for
    /// (a producer-only property to producers, a consumer-only one to consumers).
    /// Default: none.
    public var overrides: [String: String]

    public init(brokers: [String] = ["127.0.0.1:9092"], clientID: String = "trigger-worker", overrides: [String: String] = [:]) {
        self.brokers = brokers
        self.clientID = clientID
        self.overrides = overrides
    }

    var baseProperties: [String: String] {
        [
            "bootstrap.servers": brokers.joined(separator: ","),
            "client.id": clientID,
        ]
    }
}

/// Where a consumer group starts reading a partition that has no committed offset.
public enum KafkaAutoOffsetReset: String, Sendable, Hashable {
    /// From the oldest record still in the partition (nothing already published is missed).
    case earliest
    /// From the next record published after the consumer joined.
    case latest
}

/// Settings of a ``KafkaConsumer``.
public struct KafkaConsumerConfiguration: Sendable, Hashable {
    /// Brokers, client id and pass-through properties.
    public var common: KafkaConfiguration
    /// The consumer group. Every consumer with the same group shares the topics' partitions.
    public var groupID: String
    /// The topics to subscribe to.
    public var topics: [String]
    /// Where to start without a committed offset. Default: ``KafkaAutoOffsetReset/earliest``.
    public var autoOffsetReset: KafkaAutoOffsetReset
    /// How long the group coordinator waits for a heartbeat before it evicts the
    /// consumer. Default: 10 s.
    public var sessionTimeout: Duration
    /// The longest time between two polls before the consumer leaves the group. The
    /// poll thread polls continuously, but waits while the application still holds
    /// the previous batch, so this bounds the time one batch may take. librdkafka
    /// also uses it as the rebalance timeout: some Kafka-protocol brokers hold a
    /// first JoinGroup that long. Default: 30 s.
    public var maxPollInterval: Duration
    /// The largest batch handed to the application. Default: 500 messages.
    public var maxBatchSize: Int
    /// A batch is handed over once it holds this many bytes (keys, values and
    /// headers), even with fewer messages: large messages make small batches, so that
    /// what one batch holds in memory (and writes in one transaction) stays bounded.
    /// Default: 16 MiB.
    public var maxBatchBytes: Int
    /// How long the poll thread waits for a first message before it polls again
    /// (and notices a shutdown request). Default: 100 ms.
    public var pollTimeout: Duration
    /// How long a revocation waits for the application to finish with the revoked
    /// partitions before librdkafka is told to let them go anyway. Default: 30 s.
    public var revocationTimeout: Duration

    public init(
        common: KafkaConfiguration = KafkaConfiguration(),
        groupID: String,
        topics: [String],
        autoOffsetReset: KafkaAutoOffsetReset = .earliest,
        sessionTimeout: Duration = .seconds(10),
        maxPollInterval: Duration = .seconds(30),
        maxBatchSize: Int = 500,
        maxBatchBytes: Int = 16 << 20,
        pollTimeout: Duration = .milliseconds(100),
        revocationTimeout: Duration = .seconds(30)
    ) {
        self.common = common
        self.groupID = groupID
        self.topics = topics
        self.autoOffsetReset = autoOffsetReset
        self.sessionTimeout = sessionTimeout
        self.maxPollInterval = maxPollInterval
        self.maxBatchSize = maxBatchSize
        self.maxBatchBytes = maxBatchBytes
        self.pollTimeout = pollTimeout
        self.revocationTimeout = revocationTimeout
    }

    /// The librdkafka properties of this consumer: offsets are committed only
    /// explicitly, at positions the application names.
    public var properties: [String: String] {
        var properties = common.baseProperties
        properties["group.id"] = groupID
        properties["enable.auto.commit"] = "false"
        properties["enable.auto.offset.store"] = "false"
        properties["enable.partition.eof"] = "false"
        properties["auto.offset.reset"] = autoOffsetReset.rawValue
        properties["session.timeout.ms"] = String(sessionTimeout.milliseconds)
        properties["max.poll.interval.ms"] = String(maxPollInterval.milliseconds)
        properties.merge(common.overrides(for: .consumer)) { _, override in override }
        return properties
    }
}

/// Settings of a ``KafkaProducer``.
public struct KafkaProducerConfiguration: Sendable, Hashable {
    /// Brokers, client id and pass-through properties.
    public var common: KafkaConfiguration
    /// Idempotent production: no duplicates or reordering from the producer's own
    /// retries. Default: on.
    public var idempotent: Bool
    /// How long librdkafka waits to fill a request before sending it. Default: 5 ms.
    public var linger: Duration
    /// How long librdkafka keeps retrying a message before it reports it failed.
    /// Default: 30 s.
    public var deliveryTimeout: Duration
    /// How long ``KafkaProducer`` waits for outstanding messages on shutdown. Default: 10 s.
    public var flushTimeout: Duration
    /// How record batches are compressed. Default: lz4, cheap to compress and to read,
    /// and JSON events shrink several times (less for the broker to store and serve).
    public var compression: Compression
    /// The largest record librdkafka accepts (`message.max.bytes`); larger ones fail
    /// at once with `MSG_SIZE_TOO_LARGE`. Default: librdkafka's own (1,000,000).
    public var maxMessageBytes: Int?

    /// The codecs of librdkafka's `compression.type`.
    public enum Compression: String, Sendable, Hashable {
        case none, gzip, snappy, lz4, zstd
    }

    public init(
        common: KafkaConfiguration = KafkaConfiguration(),
        idempotent: Bool = true,
        linger: Duration = .milliseconds(5),
        deliveryTimeout: Duration = .seconds(30),
        flushTimeout: Duration = .seconds(10),
        compression: Compression = .lz4,
        maxMessageBytes: Int? = nil
    ) {
        self.common = common
        self.idempotent = idempotent
        self.linger = linger
        self.deliveryTimeout = deliveryTimeout
        self.flushTimeout = flushTimeout
        self.compression = compression
        self.maxMessageBytes = maxMessageBytes
    }

    /// The librdkafka properties of this producer.
    public var properties: [String: String] {
        var properties = common.baseProperties
        properties["enable.idempotence"] = idempotent ? "true" : "false"
        properties["linger.ms"] = String(linger.milliseconds)
        properties["message.timeout.ms"] = String(deliveryTimeout.milliseconds)
        properties["compression.type"] = compression.rawValue
        if let maxMessageBytes { properties["message.max.bytes"] = String(maxMessageBytes) }
        properties.merge(common.overrides(for: .producer)) { _, override in override }
        return properties
    }
}

extension Duration {
    /// The duration in whole milliseconds, rounded down.
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
