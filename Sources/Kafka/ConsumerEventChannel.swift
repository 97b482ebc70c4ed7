import Foundation

/// What a ``KafkaConsumer`` tells the application, in the order it happened.
public enum KafkaConsumerEvent: Sendable, Hashable {
    /// These partitions are being assigned to this consumer; messages from them
    /// follow. librdkafka starts fetching them only once the application asks for
    /// the next event (or after the revocation timeout): meanwhile it may look at
    /// them and call ``KafkaConsumer/startAt(_:)``.
    case partitionsAssigned([KafkaTopicPartition])
    /// A batch of messages, in offset order within each partition.
    case messages([KafkaMessage])
    /// These partitions are being taken away. Every batch from them was delivered
    /// before this event, and librdkafka lets them go only when the application
    /// asks for the next event (or after the revocation timeout): finish or drop
    /// the in-flight work and commit their offsets before that. `lost` is true when
    /// the consumer was already evicted from the group and commits will fail.
    case partitionsRevoked([KafkaTopicPartition], lost: Bool)
}

/// The hand-off between the poll thread and the task that reads the events.
///
/// It holds at most one event beyond the one the application is working on, so
/// the poll thread stops fetching while the application is busy (backpressure).
/// The poll thread can also wait until the application has *handled* an event,
/// that is, asked for the next one: revocations use that.
final class ConsumerEventChannel: @unchecked Sendable {
    // All state below is guarded by `condition`.
    private let condition = NSCondition()
    private var buffer: [KafkaConsumerEvent] = []
    private var waiter: CheckedContinuation<KafkaConsumerEvent?, Never>?
    private var finished = false
    /// How many events were sent.
    private var sent = 0
    /// How many times the reader asked for an event.
    private var requests = 0

    private let capacity = 1

    // MARK: Poll thread side

    /// Hands `event` to the reader, waiting while the buffer is full. Returns the
    /// event's sequence number, or `nil` when the reader has gone.
    @discardableResult
    func send(_ event: KafkaConsumerEvent) -> Int? {
        condition.lock()
        while buffer.count >= capacity && !finished { condition.wait() }
        guard !finished else {
            condition.unlock()
            return nil
        }
        sent += 1
        let sequence = sent
        if let waiter {
            self.waiter = nil
            condition.unlock()
            waiter.resume(returning: event)
        } else {
            buffer.append(event)
            condition.unlock()
        }
        return sequence
    }

    /// Sends `event` and waits until the reader asks for the event after it, or
    /// until `timeout`. Returns false on a time-out.
    func sendAndWaitUntilHandled(_ event: KafkaConsumerEvent, timeout: Duration) -> Bool {
        guard let sequence = send(event) else { return true }
        let deadline = Date().addingTimeInterval(Double(timeout.milliseconds) / 1000)
        condition.lock()
        defer { condition.unlock() }
        // The reader's request number `sequence` received this event; request `sequence + 1` means it is done with it.
        while requests <= sequence && !finished {
            if !condition.wait(until: deadline) { return false }
        }
        return true
    }

    /// Ends the stream: the reader gets `nil` once the buffer is empty; later sends are dropped.
    func finish() {
        condition.lock()
        finished = true
        let waiter = self.waiter
        self.waiter = nil
        condition.broadcast()
        condition.unlock()
        waiter?.resume(returning: nil)
    }

    // MARK: Reader side

    /// The next event, or `nil` when the stream has ended or the task is cancelled.
    func next() async -> KafkaConsumerEvent? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<KafkaConsumerEvent?, Never>) in
                condition.lock()
                requests += 1
                condition.broadcast()
                if !buffer.isEmpty {
                    let event = buffer.removeFirst()
                    condition.unlock()
                    continuation.resume(returning: event)
                } else if finished || Task.isCancelled {
                    condition.unlock()
                    continuation.resume(returning: nil)
                } else {
                    waiter = continuation
                    condition.unlock()
                }
            }
        } onCancel: {
            condition.lock()
            let waiter = self.waiter
            self.waiter = nil
            condition.unlock()
            waiter?.resume(returning: nil)
        }
    }
}

/// The events of a ``KafkaConsumer``, to be read by one task.
///
/// When the reader stops reading (its iterator is released), the stream ends for
/// the poll thread too: later revocations do not wait for a reader that is gone.
public struct KafkaConsumerEvents: AsyncSequence, Sendable {
    public typealias Element = KafkaConsumerEvent
    let channel: ConsumerEventChannel

    public struct AsyncIterator: AsyncIteratorProtocol {
        let channel: ConsumerEventChannel
        private let reader: Reader

        init(channel: ConsumerEventChannel) {
            self.channel = channel
            self.reader = Reader(channel: channel)
        }

        public mutating func next() async -> KafkaConsumerEvent? { await channel.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(channel: channel) }

    /// Ends the channel when the last copy of an iterator is released.
    private final class Reader: Sendable {
        let channel: ConsumerEventChannel
        init(channel: ConsumerEventChannel) { self.channel = channel }
        deinit { channel.finish() }
    }
}
