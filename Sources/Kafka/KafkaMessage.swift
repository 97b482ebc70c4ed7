/// A topic and one of its partitions.
public struct KafkaTopicPartition: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The topic's name.
    public var topic: String
    /// The partition's number.
    public var partition: Int32

    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public var description: String { "\(topic)[\(partition)]" }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.topic, lhs.partition) < (rhs.topic, rhs.partition)
    }
}

/// One record header. Kafka allows several headers with one name, and a header without a value.
public struct KafkaHeader: Sendable, Hashable {
    /// The header's name.
    public var key: String
    /// The header's value; `nil` for a header with no value.
    public var value: [UInt8]?

    public init(key: String, value: [UInt8]?) {
        self.key = key
        self.value = value
    }

    /// A header whose value is the UTF-8 bytes of `value`.
    public init(key: String, value: String) {
        self.key = key
        self.value = Array(value.utf8)
    }

    /// The value decoded as UTF-8, when it is valid UTF-8.
    public var stringValue: String? {
        value.flatMap { String(validating: $0, as: UTF8.self) }
    }
}

extension Array where Element == KafkaHeader {
    /// The first header named `name`, compared case-insensitively (as HTTP header names are).
    public func first(named name: String) -> KafkaHeader? {
        first { $0.key.caseInsensitiveEquals(name) }
    }
}

extension String {
    /// ASCII case-insensitive equality, without allocating (header names are ASCII).
    public func caseInsensitiveEquals(_ other: String) -> Bool {
        guard utf8.count == other.utf8.count else { return false }
        return zip(utf8, other.utf8).allSatisfy { a, b in
            a == b || (a | 0x20 == b | 0x20 && (a | 0x20) >= UInt8(ascii: "a") && (a | 0x20) <= UInt8(ascii: "z"))
        }
    }
}

/// A record read from Kafka.
public struct KafkaMessage: Sendable, Hashable {
    /// Where the record was read from.
    public var topicPartition: KafkaTopicPartition
    /// The record's offset in its partition.
    public var offset: Int64
    /// The record's key, or `nil` for a record without a key.
    public var key: [UInt8]?
    /// The record's value, or `nil` for a tombstone.
    public var value: [UInt8]?
    /// The record's headers, in the order they were written.
    public var headers: [KafkaHeader]
    /// The record's timestamp in milliseconds since the epoch, when the broker gave one.
    public var timestampMilliseconds: Int64?

    public init(
        topicPartition: KafkaTopicPartition,
        offset: Int64,
        key: [UInt8]?,
        value: [UInt8]?,
        headers: [KafkaHeader] = [],
        timestampMilliseconds: Int64? = nil
    ) {
        self.topicPartition = topicPartition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers
        self.timestampMilliseconds = timestampMilliseconds
    }

    /// The record's size as the consumer holds it: key, value and headers.
    public var byteCount: Int {
        (key?.count ?? 0) + (value?.count ?? 0) + headers.reduce(0) { $0 + $1.key.utf8.count + ($1.value?.count ?? 0) }
    }

    /// The record's topic.
    public var topic: String { topicPartition.topic }
    /// The record's partition.
    public var partition: Int32 { topicPartition.partition }
}

/// A record to write to Kafka.
public struct KafkaProducerMessage: Sendable, Hashable {
    /// The topic to write to.
    public var topic: String
    /// The partition, or `nil` to let the partitioner choose from the key.
    public var partition: Int32?
    /// The record's key; records with one key land in one partition, in order.
    public var key: [UInt8]?
    /// The record's value.
    public var value: [UInt8]?
    /// The record's headers.
    public var headers: [KafkaHeader]

    public init(topic: String, partition: Int32? = nil, key: [UInt8]?, value: [UInt8]?, headers: [KafkaHeader] = []) {
        self.topic = topic
        self.partition = partition
        self.key = key
        self.value = value
        self.headers = headers
    }

    /// A record whose key and value are the UTF-8 bytes of the given strings.
    public init(topic: String, key: String?, value: String, headers: [KafkaHeader] = []) {
        self.init(topic: topic, key: key.map { Array($0.utf8) }, value: Array(value.utf8), headers: headers)
    }
}

/// Where the broker stored a produced record.
public struct KafkaDeliveryReport: Sendable, Hashable {
    /// The partition the record landed in.
    public var topicPartition: KafkaTopicPartition
    /// The record's offset, when the broker reported one.
    public var offset: Int64?
}

extension Collection where Element == KafkaMessage {
    /// Where to resume after handling these messages: one past the highest offset
    /// of each partition. These are the positions to commit.
    public var nextOffsets: [KafkaTopicPartition: Int64] {
        reduce(into: [:]) { offsets, message in
            offsets[message.topicPartition] = Swift.max(offsets[message.topicPartition] ?? 0, message.offset + 1)
        }
    }
}
