import Foundation
import Kafka
import Logging
import Synchronization
import Testing

/// Where the integration tests find their broker. `make test` starts one and sets `KAFKA_BROKERS`.
enum TestBroker {
    static let brokers: String? = ProcessInfo.processInfo.environment["KAFKA_BROKERS"]
    static var isAvailable: Bool { brokers != nil }
    static let skipReason: Comment = "KAFKA_BROKERS is not set: run `make test`, which starts a broker"

    /// Settings for the local broker: short group timeouts, because this broker holds a
    /// first JoinGroup up to the rebalance timeout (see docs/environment notes).
    static var common: KafkaConfiguration {
        KafkaConfiguration(brokers: brokers!.split(separator: ",").map(String.init), clientID: "trigger-worker-tests")
    }

    static func consumerConfiguration(group: String, topics: [String], maxBatchSize: Int = 500, common: KafkaConfiguration = common) -> KafkaConsumerConfiguration {
        KafkaConsumerConfiguration(
            common: common, groupID: group, topics: topics,
            sessionTimeout: .seconds(6), maxPollInterval: .seconds(6), maxBatchSize: maxBatchSize
        )
    }

    static func uniqueName(_ prefix: String) -> String {
        "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
    }

    static func createTopic(_ name: String, partitions: Int32) async throws {
        let outcome = try await KafkaAdmin.createTopics([KafkaTopicSpecification(name: name, partitions: partitions)], configuration: common, logger: logger)
        #expect(outcome[name] == .created)
    }

    static let logger: Logger = {
        var logger = Logger(label: "tests")
        logger.logLevel = ProcessInfo.processInfo.environment["TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        return logger
    }()
}

struct TimedOut: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}

/// A consumer-group member driven the way the worker drives one: it reads the
/// events, records what it received, and commits each batch after "handling" it
/// (unless told not to). Tests wait on its state changes, not on the clock.
final class TestMember: Sendable {
    struct State: Sendable {
        var received: [KafkaMessage] = []
        var assigned: Set<KafkaTopicPartition> = []
        var revocations = 0
        var finished = false
    }

    let consumer: KafkaConsumer
    private let state = Mutex(State())
    private let changes = ChangeNotifier()
    private let commitBatches: Bool
    private let tasks = Mutex<[Task<Void, Never>]>([])

    init(group: String, topics: [String], commitBatches: Bool = true, maxBatchSize: Int = 500, common: KafkaConfiguration = TestBroker.common) throws {
        consumer = try KafkaConsumer(
            configuration: TestBroker.consumerConfiguration(group: group, topics: topics, maxBatchSize: maxBatchSize, common: common), logger: TestBroker.logger
        )
        self.commitBatches = commitBatches
    }

    func start() {
        let consumer = self.consumer
        let running = Task {
            do { try await consumer.run() } catch { Issue.record("consumer.run() failed: \(error)") }
        }
        let reading = Task { await self.readEvents() }
        tasks.withLock { $0 = [running, reading] }
    }

    private func readEvents() async {
        for await event in consumer.events {
            switch event {
            case .partitionsAssigned(let partitions):
                state.withLock { $0.assigned.formUnion(partitions) }
            case .messages(let batch):
                if commitBatches {
                    do {
                        try await consumer.commit(batch.nextOffsets)
                    } catch {
                        Issue.record("commit failed: \(error)")
                    }
                }
                // Checked before the test can see them (and after the commit, so that a slow
                // check cannot make the batch come again): a message its schema rejects fails the test.
                await SchemaCheck.check(batch)
                state.withLock { $0.received += batch }
            case .partitionsRevoked(let partitions, _):
                state.withLock {
                    $0.assigned.subtract(partitions)
                    $0.revocations += 1
                }
            }
            changes.notify()
        }
        state.withLock { $0.finished = true }
        changes.notify()
    }

    var snapshot: State { state.withLock { $0 } }

    /// Waits until `condition` holds, re-checking after each event; fails after `timeout`.
    func waitUntil(_ what: String, timeout: Duration = .seconds(30), _ condition: @escaping @Sendable (State) -> Bool) async throws {
        try await Self.waitUntil(what, of: [self], timeout: timeout) { condition(self.snapshot) }
    }

    /// Waits until `condition` holds, re-checking after an event of any of `members`; fails after `timeout`.
    static func waitUntil(_ what: String, of members: [TestMember], timeout: Duration = .seconds(30), _ condition: @escaping @Sendable () -> Bool) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for member in members {
                group.addTask {
                    var seen = member.changes.version
                    while !condition() {
                        seen = await member.changes.waitForChange(after: seen)
                        try Task.checkCancellation()
                    }
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)  // a deadline, not a synchronisation
                throw TimedOut(what: what)
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// Leaves the group gracefully (the revocation is handled first) and waits until the events end.
    func stop() async {
        consumer.triggerShutdown()
        for task in tasks.withLock({ $0 }) { await task.value }
    }
}

/// Produces `count` messages to each of `partitions` of `topic` and returns them.
@discardableResult
func produce(_ producer: KafkaProducer, topic: String, partitions: [Int32], count: Int, tag: String) async throws -> [KafkaProducerMessage] {
    var messages: [KafkaProducerMessage] = []
    for partition in partitions {
        for index in 0..<count {
            messages.append(KafkaProducerMessage(topic: topic, partition: partition, key: Array("k-\(partition)".utf8), value: Array("\(tag)-\(partition)-\(index)".utf8)))
        }
    }
    for result in await producer.send(messages) { _ = try result.get() }
    return messages
}

/// A version number that waiters can await changes of: any number of waiters, and
/// a cancelled waiter leaves the others (and later ones) unaffected.
final class ChangeNotifier: Sendable {
    private struct State {
        var version = 0
        var waiters: [Int: CheckedContinuation<Int, Never>] = [:]
        var nextWaiter = 0
    }

    private let state = Mutex(State())

    var version: Int { state.withLock { $0.version } }

    func notify() {
        let (version, waiters) = state.withLock { state -> (Int, [CheckedContinuation<Int, Never>]) in
            state.version += 1
            defer { state.waiters = [:] }
            return (state.version, Array(state.waiters.values))
        }
        for waiter in waiters { waiter.resume(returning: version) }
    }

    /// Returns the new version once it differs from `seen` (at once if it already does, or on cancellation).
    func waitForChange(after seen: Int) async -> Int {
        let id = state.withLock { state -> Int in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let current = state.withLock { state -> Int? in
                    if state.version != seen || Task.isCancelled { return state.version }
                    state.waiters[id] = continuation
                    return nil
                }
                if let current { continuation.resume(returning: current) }
            }
        } onCancel: {
            let waiter = state.withLock { state in state.waiters.removeValue(forKey: id).map { ($0, state.version) } }
            waiter?.0.resume(returning: waiter!.1)
        }
    }
}
