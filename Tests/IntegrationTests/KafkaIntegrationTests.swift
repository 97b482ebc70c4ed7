import Foundation
import Kafka
import Testing

@Suite("Kafka layer against a real broker", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason), .serialized)
struct KafkaIntegrationTests {
    @Test("produce then consume keeps key, value and headers intact")
    func roundTrip() async throws {
        let topic = TestBroker.uniqueName("roundtrip")
        try await TestBroker.createTopic(topic, partitions: 1)
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        let headers = [
            KafkaHeader(key: "Idempotency-Key", value: "ariba-req-7821"),
            KafkaHeader(key: "binary", value: [0, 1, 2, 255]),
            KafkaHeader(key: "empty", value: nil),
            KafkaHeader(key: "binary", value: [9]),  // repeated names are kept, in order
        ]
        let sent = KafkaProducerMessage(topic: topic, key: Array("cbvndr_1".utf8), value: Array(#"{"a":1}"#.utf8), headers: headers)
        let report = try await producer.send(sent)
        #expect(report.topicPartition == KafkaTopicPartition(topic: topic, partition: 0))
        #expect(report.offset == 0)

        let member = try TestMember(group: TestBroker.uniqueName("g"), topics: [topic])
        member.start()
        try await member.waitUntil("the message") { $0.received.count == 1 }
        await member.stop()
        try await producer.shutdown()

        let received = try #require(member.snapshot.received.first)
        #expect(received.key == sent.key)
        #expect(received.value == sent.value)
        #expect(received.headers == headers)
        #expect(received.topicPartition == report.topicPartition)
        #expect(received.offset == 0)
        #expect(received.timestampMilliseconds != nil)
    }

    @Test("delivery results: success with an offset, an error for a message over the size limit")
    func deliveryResults() async throws {
        let topic = TestBroker.uniqueName("delivery")
        try await TestBroker.createTopic(topic, partitions: 1)
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        let oversized = [UInt8](repeating: 120, count: 2 * 1024 * 1024)
        let results = await producer.send([
            KafkaProducerMessage(topic: topic, key: "a", value: "first"),
            KafkaProducerMessage(topic: topic, key: Array("b".utf8), value: oversized),
            KafkaProducerMessage(topic: topic, key: "c", value: "third"),
        ])
        try await producer.shutdown()
        #expect(try results[0].get().offset == 0)
        #expect(try results[2].get().offset == 1)
        guard case .failure(let error) = results[1] else {
            Issue.record("a 2 MiB message was reported delivered")
            return
        }
        #expect(error.rdKafkaName == "MSG_SIZE_TOO_LARGE")
        #expect(!error.description.contains("xxxx"), "errors must not carry payloads")
    }

    @Test("a committed batch is not redelivered after a restart; an uncommitted one is")
    func commitSurvivesRestart() async throws {
        let topic = TestBroker.uniqueName("restart")
        let group = TestBroker.uniqueName("g")
        try await TestBroker.createTopic(topic, partitions: 1)
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        try await produce(producer, topic: topic, partitions: [0], count: 10, tag: "first")

        // First member: reads the ten messages but commits nothing.
        let first = try TestMember(group: group, topics: [topic], commitBatches: false)
        first.start()
        try await first.waitUntil("ten messages") { $0.received.count == 10 }
        // Commit the first six only, as if the rest were still in flight when it stopped.
        try await first.consumer.commit([KafkaTopicPartition(topic: topic, partition: 0): 6])
        await first.stop()

        let second = try TestMember(group: group, topics: [topic])
        second.start()
        try await second.waitUntil("the four uncommitted messages") { $0.received.count >= 4 }
        try await produce(producer, topic: topic, partitions: [0], count: 1, tag: "marker")
        try await second.waitUntil("the marker") { $0.received.contains { $0.value == Array("marker-0-0".utf8) } }
        await second.stop()
        try await producer.shutdown()

        #expect(second.snapshot.received.map(\.offset) == [6, 7, 8, 9, 10])
    }

    @Test("two members split the partitions; when one leaves the other takes all and resumes from committed offsets")
    func groupRebalance() async throws {
        let topic = TestBroker.uniqueName("rebalance")
        let group = TestBroker.uniqueName("g")
        try await TestBroker.createTopic(topic, partitions: 4)
        let all = Set((0..<4).map { KafkaTopicPartition(topic: topic, partition: Int32($0)) })
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)

        let a = try TestMember(group: group, topics: [topic])
        a.start()
        try await a.waitUntil("A to own all partitions") { $0.assigned == all }
        let b = try TestMember(group: group, topics: [topic])
        b.start()
        try await b.waitUntil("B to get partitions") { !$0.assigned.isEmpty }
        try await a.waitUntil("A to give some up") { $0.assigned.count < 4 }
        #expect(a.snapshot.assigned.isDisjoint(with: b.snapshot.assigned))
        #expect(a.snapshot.assigned.union(b.snapshot.assigned) == all)

        let firstRound = try await produce(producer, topic: topic, partitions: [0, 1, 2, 3], count: 25, tag: "one")
        do {
            try await TestMember.waitUntil("the first round to be consumed", of: [a, b]) { a.snapshot.received.count + b.snapshot.received.count >= firstRound.count }
        } catch {
            Issue.record("A: \(a.snapshot.received.count) received, owns \(a.snapshot.assigned.sorted()), \(a.snapshot.revocations) revocations; B: \(b.snapshot.received.count) received, owns \(b.snapshot.assigned.sorted()), \(b.snapshot.revocations) revocations")
            throw error
        }
        let bPartitions = b.snapshot.assigned
        #expect(!b.snapshot.received.isEmpty)
        #expect(Set(b.snapshot.received.map(\.topicPartition)).isSubset(of: bPartitions))

        await b.stop()
        try await a.waitUntil("A to own all partitions again") { $0.assigned == all }
        let secondRound = try await produce(producer, topic: topic, partitions: [0, 1, 2, 3], count: 25, tag: "two")
        try await a.waitUntil("the second round") { state in
            state.received.filter { String(decoding: $0.value ?? [], as: UTF8.self).hasPrefix("two-") }.count == secondRound.count
        }
        try await producer.shutdown()
        await a.stop()

        // Every message was received exactly once across the two members: B's committed
        // messages were not read again by A after the rebalance.
        let received = a.snapshot.received + b.snapshot.received
        let identities = received.map { "\($0.topicPartition)@\($0.offset)" }
        #expect(identities.count == Set(identities).count, "a message was delivered twice")
        #expect(received.count == firstRound.count + secondRound.count)
    }
}
