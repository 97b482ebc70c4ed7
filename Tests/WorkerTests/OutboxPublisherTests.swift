import Store
import Testing
@testable import Kafka
@testable import Worker

/// Which outbox entries a publishing round may delete, and which messages it parks.
@Suite("Outbox publisher rounds")
struct OutboxPublisherTests {
    func entry(_ id: Int64, messages: Int) -> OutboxEntry {
        OutboxEntry(id: id, messages: (0..<messages).map { index in OutboxMessage(topic: "t", key: Array("k".utf8), value: [UInt8(index)], headers: []) })
    }

    let delivered: Result<KafkaDeliveryReport, KafkaError> = .success(KafkaDeliveryReport(topicPartition: .init(topic: "t", partition: 0), offset: 1))
    let failed: Result<KafkaDeliveryReport, KafkaError> = .failure(KafkaError(code: .delivery, message: "timed out", isRetriable: true))
    /// librdkafka's MSG_SIZE_TOO_LARGE (10) and _FATAL (-150).
    let tooLarge: Result<KafkaDeliveryReport, KafkaError> = .failure(KafkaError(code: .produce, rdKafkaCode: 10, context: "cannot produce to t"))
    let fatal: Result<KafkaDeliveryReport, KafkaError> = .failure(KafkaError(code: .delivery, rdKafkaCode: -150, context: "fatal"))

    @Test("a fully delivered round deletes every entry")
    func allDelivered() {
        let entries = [entry(1, messages: 2), entry(2, messages: 1)]
        let round = OutboxPublisher.settle(entries, results: [delivered, delivered, delivered], now: 5)
        #expect(round.done == [1, 2])
        #expect(round.parked.isEmpty)
        #expect(round.failure == nil)
    }

    @Test("from the first entry with a retriable failure on, entries stay, even those delivered after it")
    func keepsFromFirstFailure() {
        let entries = [entry(1, messages: 1), entry(2, messages: 2), entry(3, messages: 1)]
        let round = OutboxPublisher.settle(entries, results: [delivered, delivered, failed, delivered], now: 5)
        #expect(round.done == [1], "entry 3 was delivered but follows the failed entry 2: it is published again after it")
        #expect(round.failure?.message == "timed out")
    }

    @Test("a message refused for good is parked and its entry is done: it holds back nothing after it")
    func parksPermanentRefusals() throws {
        let entries = [entry(1, messages: 1), entry(2, messages: 3), entry(3, messages: 1)]
        let round = OutboxPublisher.settle(entries, results: [delivered, delivered, tooLarge, delivered, delivered], now: 5)
        #expect(round.done == [1, 2, 3])
        #expect(round.failure == nil)
        let parked = try #require(round.parked.first)
        #expect(round.parked.count == 1)
        #expect(parked.message == entries[1].messages[1])
        #expect(parked.errorCode == "MSG_SIZE_TOO_LARGE")
        #expect(parked.parkedAt == 5)
    }

    @Test("a refusal in an entry that also has a retriable failure is not parked yet: the entry is published again whole")
    func noParkingInKeptEntries() {
        let entries = [entry(1, messages: 2), entry(2, messages: 1)]
        let round = OutboxPublisher.settle(entries, results: [tooLarge, failed, tooLarge], now: 5)
        #expect(round.done.isEmpty)
        #expect(round.parked.isEmpty)
        #expect(round.failure?.isRetriable == true)
    }

    @Test("an unclassified error (neither retriable nor permanent) is retried, and parked once its entry is given up on")
    func unclassifiedErrors() {
        let unknownTopic: Result<KafkaDeliveryReport, KafkaError> = .failure(KafkaError(code: .delivery, rdKafkaCode: 3, context: "unknown topic"))
        let entries = [entry(1, messages: 2), entry(2, messages: 1)]
        let kept = OutboxPublisher.settle(entries, results: [delivered, unknownTopic, delivered], now: 5)
        #expect(kept.done.isEmpty)
        #expect(kept.failedEntry == 1)
        #expect(kept.failure?.isRetriable == false && kept.failure?.isPermanent == false)
        let givenUp = OutboxPublisher.settle(entries, results: [delivered, unknownTopic, delivered], now: 5, giveUp: [1])
        #expect(givenUp.done == [1, 2])
        #expect(givenUp.parked.map(\.message) == [entries[0].messages[1]])
        // A retriable failure is never given up on: the broker may come back.
        #expect(OutboxPublisher.settle(entries, results: [failed, delivered, delivered], now: 5, giveUp: [1]).done.isEmpty)
    }

    @Test("a fatal error is never parked: it stops the publisher")
    func fatalIsNotPermanent() {
        let round = OutboxPublisher.settle([entry(1, messages: 1)], results: [fatal], now: 5)
        #expect(round.done.isEmpty)
        #expect(round.failure?.isFatal == true)
        #expect(round.failure?.isPermanent == false)
    }
}

@Suite("Doorbell")
struct DoorbellTests {
    @Test("a wait ended by a ring leaves no ring behind: the next wait waits (no hot loop)")
    func noRingLeftBehind() async {
        let doorbell = Doorbell()
        doorbell.ring()
        // Returns at once (rung before), once its cancelled timer has ended.
        await doorbell.wait(timeout: .seconds(60))
        #expect(!doorbell.isRung, "the cancelled timer rang the bell")
    }
}
