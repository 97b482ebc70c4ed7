import Kafka
import Testing

@Suite("Kafka configuration")
struct KafkaConfigurationTests {
    @Test("consumer defaults commit only explicit offsets")
    func consumerDefaults() {
        let properties = KafkaConsumerConfiguration(groupID: "trigger-worker", topics: ["vendor-events"]).properties
        #expect(properties["bootstrap.servers"] == "127.0.0.1:9092")
        #expect(properties["group.id"] == "trigger-worker")
        #expect(properties["enable.auto.commit"] == "false")
        #expect(properties["enable.auto.offset.store"] == "false")
        #expect(properties["auto.offset.reset"] == "earliest")
        #expect(properties["session.timeout.ms"] == "10000")
        #expect(properties["max.poll.interval.ms"] == "30000")
    }

    @Test("overrides win over typed settings")
    func overrides() {
        let common = KafkaConfiguration(brokers: ["a:1", "b:2"], overrides: ["max.poll.interval.ms": "6000", "enable.auto.commit": "true", "compression.type": "zstd"])
        let consumer = KafkaConsumerConfiguration(common: common, groupID: "g", topics: ["t"]).properties
        #expect(consumer["bootstrap.servers"] == "a:1,b:2")
        #expect(consumer["max.poll.interval.ms"] == "6000")
        #expect(consumer["enable.auto.commit"] == "true")
        let producer = KafkaProducerConfiguration(common: common).properties
        #expect(producer["compression.type"] == "zstd", "an override wins over the lz4 default")
        #expect(producer["enable.idempotence"] == "true")
        #expect(producer["linger.ms"] == "5")
    }

    @Test("each client takes only the pass-through properties it knows: no start-up warnings for the other client's ones")
    func scopedOverrides() {
        let common = KafkaConfiguration(overrides: [
            "session.timeout.ms": "6000", "fetch.wait.max.ms": "10",  // consumer only
            "linger.ms": "50", "acks": "all",  // producer only
            "socket.timeout.ms": "9000",  // both
            "no.such.property": "1",  // unknown: handed to both, for librdkafka to refuse
        ])
        let consumer = KafkaConsumerConfiguration(common: common, groupID: "g", topics: ["t"]).properties
        let producer = KafkaProducerConfiguration(common: common).properties
        #expect(consumer["session.timeout.ms"] == "6000" && consumer["fetch.wait.max.ms"] == "10")
        #expect(consumer["linger.ms"] == nil && consumer["acks"] == nil)
        #expect(producer["linger.ms"] == "50" && producer["acks"] == "all")
        #expect(producer["session.timeout.ms"] == nil && producer["fetch.wait.max.ms"] == nil)
        #expect(consumer["socket.timeout.ms"] == "9000" && producer["socket.timeout.ms"] == "9000")
        #expect(consumer["no.such.property"] == "1" && producer["no.such.property"] == "1")
    }

    @Test("the producer is idempotent and compresses with lz4 by default")
    func producerDefaults() {
        let producer = KafkaProducerConfiguration().properties
        #expect(producer["enable.idempotence"] == "true")
        #expect(producer["compression.type"] == "lz4")
        #expect(KafkaProducerConfiguration(compression: .none).properties["compression.type"] == "none")
    }

    @Test("durations become whole milliseconds")
    func milliseconds() {
        #expect(Duration.milliseconds(1500).milliseconds == 1500)
        #expect(Duration.seconds(2).milliseconds == 2000)
        #expect(Duration.microseconds(999).milliseconds == 0)
    }

    @Test("librdkafka refuses an unknown property, naming it but not its value")
    func unknownProperty() {
        let common = KafkaConfiguration(overrides: ["no.such.property": "secret-value"])
        #expect {
            _ = try KafkaProducer(configuration: KafkaProducerConfiguration(common: common), logger: .init(label: "t"))
        } throws: { error in
            let error = error as? KafkaError
            return error?.code == .configuration && error!.description.contains("no.such.property") && !error!.description.contains("secret-value")
        }
    }

    @Test("the loaded librdkafka is at least 2.3")
    func libraryVersion() {
        let parts = KafkaAdmin.librdkafkaVersion.split(separator: ".").compactMap { Int($0) }
        #expect(parts.count >= 2)
        #expect(parts[0] > 2 || (parts[0] == 2 && parts[1] >= 3), "librdkafka \(KafkaAdmin.librdkafkaVersion) is too old")
    }
}

@Suite("Offsets to commit")
struct NextOffsetsTests {
    @Test("one past the highest offset of each partition")
    func nextOffsets() {
        let a = KafkaTopicPartition(topic: "t", partition: 0)
        let b = KafkaTopicPartition(topic: "t", partition: 1)
        let batch = [(a, 4), (b, 9), (a, 5), (a, 7)].map { KafkaMessage(topicPartition: $0.0, offset: Int64($0.1), key: nil, value: nil) }
        #expect(batch.nextOffsets == [a: 8, b: 10])
        #expect([KafkaMessage]().nextOffsets.isEmpty)
    }
}
