import Foundation
@testable import Kafka
import Synchronization
import Testing

@Suite("Consumer event hand-off")
struct ConsumerEventChannelTests {
    private func batch(_ offset: Int64) -> KafkaConsumerEvent {
        .messages([KafkaMessage(topicPartition: .init(topic: "t", partition: 0), offset: offset, key: nil, value: nil)])
    }

    @Test("events arrive in order and the stream ends after finish")
    func ordering() async {
        let channel = ConsumerEventChannel()
        let sender = Thread {
            for offset in 0..<5 { channel.send(batch(Int64(offset))) }
            channel.finish()
        }
        sender.start()
        var received: [KafkaConsumerEvent] = []
        for await event in KafkaConsumerEvents(channel: channel) { received.append(event) }
        #expect(received == (0..<5).map { batch(Int64($0)) })
    }

    @Test("a revocation waits until the reader asks for the next event")
    func revocationWaitsForHandling() async {
        let channel = ConsumerEventChannel()
        let handled = Mutex(false)
        let waitedLongEnough = Mutex<Bool?>(nil)
        let sender = Thread {
            let revoked = KafkaConsumerEvent.partitionsRevoked([.init(topic: "t", partition: 0)], lost: false)
            let inTime = channel.sendAndWaitUntilHandled(revoked, timeout: .seconds(30))
            // By the time the wait returns, the reader must have finished with the event.
            waitedLongEnough.withLock { $0 = inTime && handled.withLock { $0 } }
            channel.finish()
        }
        sender.start()
        var iterator = KafkaConsumerEvents(channel: channel).makeAsyncIterator()
        let event = await iterator.next()
        guard case .partitionsRevoked = event else {
            Issue.record("expected a revocation, got \(String(describing: event))")
            return
        }
        handled.withLock { $0 = true }  // "committed offsets"
        #expect(await iterator.next() == nil)
        #expect(waitedLongEnough.withLock { $0 } == true)
    }

    @Test("an unhandled revocation gives up after its timeout")
    func revocationTimeout() {
        let channel = ConsumerEventChannel()
        #expect(!channel.sendAndWaitUntilHandled(.partitionsRevoked([], lost: false), timeout: .milliseconds(50)))
    }
}

@Suite("Consumer event hand-off: a departed reader")
struct DepartedReaderTests {
    @Test("a revocation does not wait for a reader that stopped reading")
    func departedReader() async {
        let channel = ConsumerEventChannel()
        do {
            var iterator = KafkaConsumerEvents(channel: channel).makeAsyncIterator()
            let sender = Thread { channel.send(.partitionsAssigned([])) }
            sender.start()
            _ = await iterator.next()
        }  // the iterator is released here, as when a for-await loop returns
        let started = ContinuousClock.now
        #expect(channel.sendAndWaitUntilHandled(.partitionsRevoked([], lost: false), timeout: .seconds(20)))
        #expect(ContinuousClock.now - started < .seconds(5))
    }
}
