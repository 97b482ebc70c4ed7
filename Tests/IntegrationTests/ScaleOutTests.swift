import Foundation
import Kafka
import PostgresTestSupport
import Store
import Testing
import Workflows

/// Several worker processes in one consumer group: on one PostgreSQL store they are
/// one worker (a key, wherever it arrives, starts one run; a dead instance's work is
/// finished by the survivor); on SQLite they are refused loudly.
@Suite("Several instances", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason), .serialized)
struct ScaleOutTests {
    typealias H = WorkerHarness

    /// Topics, and the environment of workers in one group on one store.
    struct Cluster {
        let suffix: String
        let topics: [String: String]
        let environment: [String: String]
        let partitions: Int32
        var requests: String { topics["TRIGGER_REQUESTS_TOPIC"]! }
        var status: String { topics["RUN_STATUS_TOPIC"]! }

        init(_ name: String, storeURL: String, partitions: Int32) async throws {
            suffix = TestBroker.uniqueName(name)
            self.partitions = partitions
            topics = ["VENDOR_EVENTS_TOPIC": "ve-\(suffix)", "TRIGGER_REQUESTS_TOPIC": "tr-\(suffix)", "RUN_STATUS_TOPIC": "rs-\(suffix)", "DLQ_TOPIC": "dl-\(suffix)"]
            environment = topics.merging([
                "KAFKA_BROKERS": TestBroker.brokers!, "KAFKA_GROUP_ID": "group-\(suffix)", "TOPIC_PARTITIONS": "\(partitions)",
                "WORKFLOWS_DIR": "\(H.fixtures)/workflows", "ORGS_FILE": "\(H.fixtures)/orgs.yaml", "STORE_URL": storeURL,
                // A dead instance's claims of runs run out in 5 s (the engine's fail-over).
                "STEP_LEASE": "5s",
                "RDKAFKA_MAX_POLL_INTERVAL_MS": "6000", "RDKAFKA_SESSION_TIMEOUT_MS": "6000", "LOG_LEVEL": "info", "LOG_FORMAT": "json", "HTTP_PORT": "0",
            ]) { $1 }
            _ = try await KafkaAdmin.createTopics(
                topics.values.map { KafkaTopicSpecification(name: $0, partitions: partitions) }, configuration: TestBroker.common, logger: TestBroker.logger
            )
        }

        func worker(_ extra: [String: String] = [:]) throws -> WorkerProcess {
            try WorkerProcess(arguments: ["run"], environment: environment.merging(extra) { $1 })
        }

        /// The request topic's partitions `worker` owns.
        func requestPartitions(of worker: WorkerProcess) -> Set<String> { requestPartitions(in: worker.output) }

        func requestPartitions(in lines: [String]) -> Set<String> {
            WorkerProcess.owned(in: lines).filter { $0.hasPrefix("\(requests)[") }
        }

        /// Waits until `first` and `second` own the request topic's partitions between them, each some.
        func waitForSplit(_ first: WorkerProcess, _ second: WorkerProcess) async throws {
            let all = Set((0..<partitions).map { "\(requests)[\($0)]" })
            try await second.waitForOutput("the second instance to own some of the partitions", timeout: .seconds(60)) { lines in
                let owned = requestPartitions(in: lines)
                return !owned.isEmpty && owned.count < all.count
            }
            try await first.waitForOutput("the first instance to own the other partitions", timeout: .seconds(60)) { lines in
                let owned = requestPartitions(in: lines)
                return !owned.isEmpty && owned.isDisjoint(with: requestPartitions(of: second)) && owned.union(requestPartitions(of: second)) == all
            }
        }

        func request(key: String, n: Int, partition: Int32? = nil) -> KafkaProducerMessage {
            KafkaProducerMessage(
                topic: requests, partition: partition, key: Array(key.utf8),
                value: H.workflowRun("quarterly-privacy-sweep", input: ["n": .int(Int64(n))]).canonicalBytes,
                headers: [KafkaHeader(key: "Authorization", value: "Bearer \(H.keyA)"), KafkaHeader(key: "Idempotency-Key", value: key)]
            )
        }
    }

    static func events(_ reader: TestMember) -> [JSONValue] {
        reader.snapshot.received.compactMap { try? JSONValue.parse($0.value ?? []) }
    }

    static func responses(_ events: [JSONValue]) -> [JSONValue] {
        events.filter { $0["event_type"] == "TriggerRequest.Responded" }
    }

    static func key(_ response: JSONValue) -> String? { response[path: ["data", "request", "idempotency_key"]]?.stringValue }
    static func runID(_ response: JSONValue) -> JSONValue? { response[path: ["data", "response", "body", "workflow_run_id"]] }
    static func source(_ response: JSONValue) -> String { response[path: ["data", "request", "source"]]!.canonicalString }

    @Test("the same key sent to two partitions owned by two instances at the same moment: one run; the other request is answered with the stored response, replayed",
          .enabled(if: TestPostgres.url != nil, TestPostgres.skipReason))
    func sameKeyOnTwoInstances() async throws {
        let url = try await TestPostgres.freshDatabase()
        let cluster = try await Cluster("twin", storeURL: url, partitions: 2)
        // Each key goes to both partitions, side by side. Published before the instances
        // start, so that both fetch their partition's backlog as soon as the group has
        // formed, and decide the two copies of a key at about the same moment.
        let keys = 300
        let requests = (0..<keys).flatMap { index in [Int32(0), 1].map { cluster.request(key: "twin-\(index)", n: index, partition: $0) } }
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        for result in await client.send(requests) { _ = try result.get() }
        try await client.shutdown()

        let reader = try TestMember(group: "reader-\(cluster.suffix)", topics: [cluster.status])
        reader.start()
        let first = try cluster.worker(["LOG_LEVEL": "debug"])
        defer { first.kill() }
        let second = try cluster.worker(["LOG_LEVEL": "debug"])
        defer { second.kill() }
        try await reader.waitUntil("a response to each of the \(keys * 2) requests", timeout: .seconds(120)) { state in
            Set(state.received.compactMap(CrashTests.respondedSource)).count == keys * 2
        }
        await reader.stop()
        let answered = [first, second].map { $0.output.filter { $0.contains("Request answered") }.count }
        #expect(answered.allSatisfy { $0 > 0 }, "both instances answered requests: \(answered)")

        let responses = Self.responses(Self.events(reader))
        let byKey = Dictionary(grouping: responses) { Self.key($0)! }
        #expect(byKey.count == keys)
        for (key, answers) in byKey {
            let distinct = Dictionary(grouping: answers, by: Self.source).mapValues { $0[0] }.values
            #expect(distinct.count == 2, "\(key): one response per request")
            #expect(Set(answers.map { $0["event_id"]! }).count == 2, "\(key): no response published twice with different ids")
            #expect(Set(distinct.compactMap(Self.runID)).count == 1, "\(key): both responses name one run")
            #expect(distinct.filter { $0[path: ["data", "replayed"]] == true }.count == 1, "\(key): exactly one of the two is a replay")
            #expect(distinct.allSatisfy { $0[path: ["data", "response", "status"]] == 201 })
        }
        let runs = try await TestPostgres.withStore(url) { try await $0.runs(statuses: [], limit: 500, offset: 0) }
        #expect(runs.count == keys, "one run per key in the store")
        let conflicts = (first.output + second.output).filter { $0.contains("Store conflict") }.count
        print("same key on two instances: answered \(answered[0]) and \(answered[1]); \(conflicts) store conflicts settled by deciding again")
    }

    @Test("kill -9 one of two instances in the middle of 2,000 requests: the survivor takes its partitions, answers every request once, one run per key, publishes what the dead one left in the outbox; a replay on another partition gets the original run",
          .enabled(if: TestPostgres.url != nil, TestPostgres.skipReason))
    func failOver() async throws {
        let url = try await TestPostgres.freshDatabase()
        let cluster = try await Cluster("failover", storeURL: url, partitions: 4)
        // The victim publishes late (its producer lingers 5 s), so that outbox rows it
        // committed are still unpublished when it dies.
        let victim = try cluster.worker(["LOG_LEVEL": "debug", "RDKAFKA_LINGER_MS": "5000"])
        defer { victim.kill() }
        let survivor = try cluster.worker()
        defer { survivor.kill() }
        try await cluster.waitForSplit(victim, survivor)
        let victimPartitions = cluster.requestPartitions(of: victim)

        let reader = try TestMember(group: "reader-\(cluster.suffix)", topics: [cluster.status])
        reader.start()
        let count = 2000
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        for result in await client.send((0..<count).map { cluster.request(key: "key-\($0)", n: $0) }) { _ = try result.get() }

        try await victim.waitForOutput("the victim to commit a batch", timeout: .seconds(60)) { lines in lines.contains { $0.contains("Batch committed") } }
        victim.crash()
        _ = try await victim.waitForExit(timeout: .seconds(10))
        let left = try await TestPostgres.withStore(url) { store in
            try await store.pendingOutbox(limit: 10_000).filter { entry in
                entry.source.map { victimPartitions.contains("\($0.topic)[\($0.partition)]") } ?? false
            }.flatMap(\.messages).count
        }
        #expect(left > 0, "the victim died with committed, unpublished outputs")

        try await survivor.waitForOutput("the survivor to take every partition", timeout: .seconds(60)) { lines in
            cluster.requestPartitions(in: lines).count == Int(cluster.partitions)
        }
        try await reader.waitUntil("a response to each of the \(count) requests", timeout: .seconds(120)) { state in
            Set(state.received.compactMap(CrashTests.respondedSource)).count == count
        }

        // Replays after the fail-over, each to another partition than its original.
        let originals = Self.responses(Self.events(reader))
        let firstByKey = Dictionary(grouping: originals) { Self.key($0)! }.mapValues { $0[0] }
        let replayed = (0..<20).map { "key-\($0 * 97)" }
        let replays = replayed.map { key -> KafkaProducerMessage in
            let partition = Int32(firstByKey[key]![path: ["data", "request", "source", "partition"]]!.numberValue!)
            return cluster.request(key: key, n: Int(key.dropFirst(4))!, partition: (partition + 1) % cluster.partitions)
        }
        for result in await client.send(replays) { _ = try result.get() }
        try await reader.waitUntil("the replays' responses", timeout: .seconds(60)) { state in
            Set(state.received.compactMap(CrashTests.respondedSource)).count == count + replayed.count
        }
        // The engine finishes every run, those the dead instance had claimed included
        // (their leases run out and the survivor takes them over).
        try await reader.waitUntil("every run to end", timeout: .seconds(120)) { state in
            Set(state.received.compactMap { message -> String? in
                guard let event = try? JSONValue.parse(message.value ?? []), event["event_type"] == "WorkflowRun.Completed" || event["event_type"] == "WorkflowRun.Failed" else { return nil }
                return event[path: ["data", "workflow_run_id"]]?.stringValue
            }).count == count
        }
        survivor.interrupt()
        #expect(try await survivor.waitForExit(timeout: .seconds(15)) == 0)
        try await client.shutdown()
        await reader.stop()

        let events = Self.events(reader)
        let responses = Self.responses(events)
        let idsBySource = Dictionary(grouping: responses, by: Self.source).mapValues { Set($0.map { $0["event_id"]! }) }
        #expect(idsBySource.count == count + replayed.count)
        #expect(idsBySource.values.allSatisfy { $0.count == 1 }, "one distinct event_id per response")
        let runsByKey = Dictionary(grouping: responses) { Self.key($0)! }.mapValues { Set($0.compactMap(Self.runID)) }
        #expect(runsByKey.count == count)
        #expect(runsByKey.values.allSatisfy { $0.count == 1 }, "a key has one run id, the replays' included")
        for key in replayed {
            let answers = responses.filter { Self.key($0) == key }
            #expect(Set(answers.map(Self.source)).count == 2)
            #expect(answers.contains { $0[path: ["data", "replayed"]] == true }, "\(key): the replay is answered as one")
        }
        // In order per key: each run's Started comes before its end.
        var firstSeen: [String: (started: Int, ended: Int?)] = [:]
        for (index, event) in events.enumerated() {
            guard let run = event[path: ["data", "workflow_run_id"]]?.stringValue, let type = event["event_type"]?.stringValue else { continue }
            if type == "WorkflowRun.Started", firstSeen[run] == nil { firstSeen[run] = (index, nil) }
            if type == "WorkflowRun.Completed" || type == "WorkflowRun.Failed", let seen = firstSeen[run], seen.ended == nil { firstSeen[run] = (seen.started, index) }
        }
        #expect(firstSeen.count == count)
        #expect(firstSeen.values.allSatisfy { seen in seen.ended.map { $0 > seen.started } ?? false }, "every run's end follows its start")
        let (runs, pending) = try await TestPostgres.withStore(url) { store in
            (try await store.runs(statuses: [], limit: 500, offset: count - 1).count, try await store.pendingOutbox(limit: 10).count)
        }
        #expect(runs == 1, "\(count) runs in the store, no more")
        #expect(pending == 0, "nothing is stranded in the outbox")
        print("fail-over: \(left) outputs left unpublished by the dead instance; \(events.count) status events, \(events.count - Set(events.map { $0["event_id"]! }).count) re-published")
    }

    @Test("an instance frozen (SIGSTOP) at work while its partitions move to the other: after it thaws, nothing it had decided is applied over the new owner's work, and the group's offsets end at the store's marks",
          .enabled(if: TestPostgres.url != nil, TestPostgres.skipReason))
    func frozenInstance() async throws {
        let url = try await TestPostgres.freshDatabase()
        let cluster = try await Cluster("zombie", storeURL: url, partitions: 4)
        let zombie = try cluster.worker(["LOG_LEVEL": "debug"])
        defer { zombie.kill() }
        let owner = try cluster.worker()
        defer { owner.kill() }
        try await cluster.waitForSplit(zombie, owner)

        let reader = try TestMember(group: "reader-\(cluster.suffix)", topics: [cluster.status])
        reader.start()
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        let count = 1500
        for result in await client.send((0..<count).map { cluster.request(key: "z-\($0)", n: $0) }) { _ = try result.get() }
        try await zombie.waitForOutput("the instance to be at work", timeout: .seconds(60)) { lines in lines.contains { $0.contains("Batch committed") } }
        kill(zombie.pid, SIGSTOP)
        // Frozen past its session timeout: the group hands its partitions to the other.
        try await owner.waitForOutput("the other instance to take every partition", timeout: .seconds(60)) { lines in
            cluster.requestPartitions(in: lines).count == Int(cluster.partitions)
        }
        try await reader.waitUntil("a response to each of the \(count) requests", timeout: .seconds(120)) { state in
            Set(state.received.compactMap(CrashTests.respondedSource)).count == count
        }
        kill(zombie.pid, SIGCONT)
        // Thawed, it finds it lost its partitions (and may rejoin): it is stopped once it said so.
        try await zombie.waitForOutput("the thawed instance to notice", timeout: .seconds(60)) { lines in
            lines.contains { $0.contains("Partitions revoked") && $0.contains("\"lost\":\"true\"") }
                || lines.contains { $0.contains("handled by another instance meanwhile") }
                || lines.filter { $0.contains("Joined the consumer group") }.count >= 3
        }
        zombie.interrupt()
        _ = try await zombie.waitForExit(timeout: .seconds(20))
        owner.interrupt()
        #expect(try await owner.waitForExit(timeout: .seconds(20)) == 0)
        try await client.shutdown()
        await reader.stop()

        let responses = Self.responses(Self.events(reader))
        let idsBySource = Dictionary(grouping: responses, by: Self.source).mapValues { Set($0.map { $0["event_id"]! }) }
        #expect(idsBySource.count == count)
        #expect(idsBySource.values.allSatisfy { $0.count == 1 }, "one distinct event_id per response")
        let runsByKey = Dictionary(grouping: responses) { Self.key($0)! }.mapValues { Set($0.compactMap(Self.runID)) }
        #expect(runsByKey.values.allSatisfy { $0.count == 1 })
        let runs = try await TestPostgres.withStore(url) { try await $0.runs(statuses: [], limit: 500, offset: count - 1).count }
        #expect(runs == 1, "\(count) runs, no more")

        // The group's offsets: at each partition's end, as the store's marks are.
        let marks = try await TestPostgres.withStore(url) { store in
            try await store.partitionMarks((0..<cluster.partitions).map { PartitionID(topic: cluster.requests, partition: $0) })
        }
        let offsets = try KafkaConsumer(configuration: TestBroker.consumerConfiguration(group: cluster.environment["KAFKA_GROUP_ID"]!, topics: []), logger: TestBroker.logger)
        let committed = try await offsets.committedOffsets(for: (0..<cluster.partitions).map { KafkaTopicPartition(topic: cluster.requests, partition: $0) })
        #expect(marks.values.map(\.next).reduce(0, +) == Int64(count))
        for (partition, offset) in committed {
            #expect(offset == marks[PartitionID(topic: partition.topic, partition: partition.partition)]?.next, "\(partition): committed \(String(describing: offset))")
        }
        let superseded = zombie.output.filter { $0.contains("handled by another instance meanwhile") }.count
        print("frozen instance: \(superseded) batches found superseded after the thaw")
    }

    @Test("two instances in one group on SQLite stores: refused loudly (an error that says what to use, not ready); one instance alone again is fine")
    func sqliteSharedGroup() async throws {
        let directory = FileManager.default.temporaryDirectory.path
        let cluster = try await Cluster("sqlite-group", storeURL: "sqlite://\(directory)/unused.sqlite", partitions: 2)
        let first = try cluster.worker(["STORE_URL": "sqlite://\(directory)/\(cluster.suffix)-1.sqlite"])
        defer { first.kill() }
        try await first.waitForOutput("the first instance to own every partition", timeout: .seconds(60)) { lines in
            cluster.requestPartitions(in: lines).count == 2
        }
        let second = try cluster.worker(["STORE_URL": "sqlite://\(directory)/\(cluster.suffix)-2.sqlite"])
        defer { second.kill() }
        try await second.waitForOutput("the refusal", timeout: .seconds(60)) { lines in
            lines.contains { $0.contains("Several instances share this consumer group, but the store is SQLite") && $0.contains("postgres://") && $0.contains("\"level\":\"error\"") }
        }
        second.interrupt()
        #expect(try await second.waitForExit(timeout: .seconds(15)) == 0)
        try await first.waitForOutput("the first instance alone again", timeout: .seconds(60)) { lines in
            lines.contains { $0.contains("owns every partition of its topics again") }
        }
    }
}
