import Kafka
import Logging
import Metrics
import Store
import Synchronization

/// Refuses, loudly, a consumer group shared by several instances when the store is
/// SQLite: each instance would keep its own idempotency records, so a partition that
/// moves to another instance (a deploy, a crash, a third instance) would forget its
/// keys, and a retry would start a second run.
///
/// The broker is not asked how many members the group has (Tansu does not answer
/// ListGroups); instead, after each assignment, the partitions this instance owns are
/// compared with all the input topics have. Owning fewer means another member owns the
/// rest: that is logged at error level with what to do, counted in
/// `trigger_worker_sqlite_shared_group_total`, and reported in ``Readiness`` until this
/// instance owns every partition again.
public final class SharedGroupCheck: PartitionOwner {
    private let consumer: KafkaConsumer
    private let topics: [String]
    private let readiness: Readiness
    private let logger: Logger
    /// What this instance owns, and the generation of that (each assignment is one):
    /// a check's verdict counts only while its generation is the latest.
    private let owned = Mutex<(partitions: Set<PartitionID>, generation: Int)>(([], 0))
    private let refusals = Counter(label: "trigger_worker_sqlite_shared_group_total")
    /// The check under way: a revocation (the last one at shutdown) waits for it, so that
    /// no metadata request is left running in librdkafka while the consumer closes.
    private let running = Mutex<Task<Void, Never>?>(nil)

    /// The name of the problem in ``Readiness``.
    public static let problem = "sqlite-shared-group"

    public init(consumer: KafkaConsumer, readiness: Readiness, logger: Logger) {
        self.consumer = consumer
        topics = consumer.configuration.topics
        self.readiness = readiness
        self.logger = logger
    }

    public func partitionsAssigned(_ partitions: [PartitionID]) {
        let (owned, generation) = self.owned.withLock { owned in
            owned.partitions.formUnion(partitions)
            owned.generation += 1
            return owned
        }
        running.withLock { running in
            let previous = running
            running = Task {
                await previous?.value  // one at a time, in order
                await self.check(owned, generation: generation)
            }
        }
    }

    public func partitionsRevoked(_ partitions: [PartitionID]) async {
        owned.withLock {
            $0.partitions.subtract(partitions)
            $0.generation += 1
        }
        await running.withLock { $0 }?.value
    }

    /// Compares what this instance owns with what the input topics have; a verdict
    /// reached after the ownership changed again is dropped (the newer check decides).
    func check(_ owned: Set<PartitionID>, generation: Int) async {
        let counts: [String: Int]
        do {
            counts = try await consumer.partitionCounts(of: topics, timeout: .seconds(5))
        } catch {
            logger.warning("Cannot read the input topics' partition counts; whether other instances share the group is not known", metadata: [LogKey.error: "\(error)"])
            return
        }
        let total = counts.values.reduce(0, +)
        guard let verdict = Self.verdict(owned: owned.count, total: total), self.owned.withLock({ $0.generation == generation }) else { return }
        if verdict == .shared {
            refusals.increment()
            if readiness.report(Self.problem, "several instances share the consumer group, but the store is SQLite") {
                logger.error("Several instances share this consumer group, but the store is SQLite, which each instance keeps for itself: a partition that moves to another instance forgets its idempotency keys, and a retry starts a second run. Give every instance one PostgreSQL store (STORE_URL=postgres://…), or run one instance.", metadata: [
                    "partitions_owned": "\(owned.count)", "partitions_in_topics": "\(total)", LogKey.group: "\(consumer.configuration.groupID)",
                ])
            }
        } else if readiness.clear(Self.problem) {
            logger.info("This instance owns every partition of its topics again; the SQLite store is safe", metadata: ["partitions_owned": "\(owned.count)"])
        }
    }

    enum Verdict { case alone, shared }

    /// `shared` when this instance owns fewer partitions than there are; `nil` when
    /// nothing can be said (the topics' partitions are not known yet).
    static func verdict(owned: Int, total: Int) -> Verdict? {
        guard total > 0 else { return nil }
        return owned < total ? .shared : .alone
    }
}

/// What keeps this instance from being ready to serve, by name (for `/readyz`), and
/// whether it has joined its consumer group (holds an assignment, possibly empty).
public final class Readiness: Sendable, PartitionOwner {
    private let problems = Mutex<[String: String]>([:])
    private let joined = Mutex(false)

    public init() {}

    /// Whether an assignment of the group was received.
    public var hasJoined: Bool { joined.withLock { $0 } }

    public func partitionsAssigned(_ partitions: [PartitionID]) { joined.withLock { $0 = true } }

    /// A revocation is followed by the next assignment (or by leaving the group at shutdown).
    public func partitionsRevoked(_ partitions: [PartitionID]) async {}

    /// Whether nothing keeps the instance from serving.
    public var isReady: Bool { problems.withLock { $0.isEmpty } }

    /// The problems, by name.
    public var current: [String: String] { problems.withLock { $0 } }

    /// Notes a problem. - Returns: whether it is new.
    @discardableResult
    public func report(_ name: String, _ description: String) -> Bool {
        problems.withLock { $0.updateValue(description, forKey: name) == nil }
    }

    /// Clears a problem. - Returns: whether there was one.
    @discardableResult
    public func clear(_ name: String) -> Bool {
        problems.withLock { $0.removeValue(forKey: name) != nil }
    }
}
