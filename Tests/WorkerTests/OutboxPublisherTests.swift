import Store
import Testing
@testable import Kafka
@testable import Worker

/// Which outbox entries a publishing round may delete.
@Suite("Outbox publisher rounds")
struct OutboxPublisherTests {
    func entry(_ id: Int64, messages: Int) -> OutboxEntry {
        OutboxEntry(id: id, messages: (0..<messages).map { _ in OutboxMessage(topic: "t", key: Array("k".utf8), value: [], headers: []) })
    }

    let delivered: Result<KafkaDeliveryReport, KafkaError> = .success(KafkaDeliveryReport(topicPartition: .init(topic: "t", partition: 0), offset: 1))
    let failed: Result<KafkaDeliveryReport, KafkaError> = .failure(KafkaError(code: .delivery, message: "timed out", isRetriable: true))

    @Test("a fully delivered round deletes every entry")
    func allDelivered() {
        let entries = [entry(1, messages: 2), entry(2, messages: 1)]
        let outcome = OutboxPublisher.deliveredPrefix(of: entries, results: [delivered, delivered, delivered])
        #expect(outcome.delivered == [1, 2])
        #expect(outcome.failure == nil)
    }

    @Test("from the first entry with a failed message on, entries stay, even those delivered after it")
    func keepsFromFirstFailure() {
        let entries = [entry(1, messages: 1), entry(2, messages: 2), entry(3, messages: 1)]
        let outcome = OutboxPublisher.deliveredPrefix(of: entries, results: [delivered, delivered, failed, delivered])
        #expect(outcome.delivered == [1], "entry 3 was delivered but follows the failed entry 2: it is published again after it")
        #expect(outcome.failure?.message == "timed out")
    }
}
