import Foundation
import Kafka
import PostgresTestSupport
import Store
import Testing
import Workflows

/// The engine through crashes, with the real broker and real stores: runs that wait
/// on durable timers finish exactly once after a kill -9 and a restart (SQLite), and
/// after one of two instances is killed (PostgreSQL: the survivor takes over).
@Suite("Durable engine", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason), .serialized)
struct DurableEngineIntegrationTests {
    typealias H = WorkerHarness
    typealias Cluster = ScaleOutTests.Cluster

    static func requests(_ cluster: Cluster, count: Int, tag: String) -> [KafkaProducerMessage] {
        (0..<count).map { index in
            KafkaProducerMessage(
                topic: cluster.requests, key: Array("\(tag)-\(index)".utf8),
                value: H.workflowRun("short-delay", input: ["n": .int(Int64(index))]).canonicalBytes,
                headers: [KafkaHeader(key: "Authorization", value: "Bearer \(H.keyA)"), KafkaHeader(key: "Idempotency-Key", value: "\(tag)-\(index)")]
            )
        }
    }

    /// Per run: its events' types and ids, in the order read.
    static func runEvents(_ reader: TestMember) -> [String: [(type: String, id: String)]] {
        var runs: [String: [(type: String, id: String)]] = [:]
        for message in reader.snapshot.received {
            guard let event = try? JSONValue.parse(message.value ?? []), let type = event["event_type"]?.stringValue, type != "TriggerRequest.Responded",
                  let run = event[path: ["data", "workflow_run_id"]]?.stringValue, let id = event["event_id"]?.stringValue else { continue }
            runs[run, default: []].append((type, id))
        }
        return runs
    }

    static func count(_ reader: TestMember, _ type: String, where condition: @escaping (JSONValue) -> Bool = { _ in true }) -> Int {
        Set(reader.snapshot.received.compactMap { message -> String? in
            guard let event = try? JSONValue.parse(message.value ?? []), event["event_type"]?.stringValue == type, condition(event) else { return nil }
            return event[path: ["data", "workflow_run_id"]]?.stringValue
        }).count
    }

    /// Each run: Started first, one distinct id per transition (re-publications repeat
    /// an id, never mint one), the waiting step, the effect and the end exactly once.
    static func checkExactlyOnce(_ runs: [String: [(type: String, id: String)]], count: Int) {
        #expect(runs.count == count)
        for (run, events) in runs {
            #expect(events.first?.type == "WorkflowRun.Started", "\(run) starts with Started")
            var distinct: [String: Set<String>] = [:]
            for event in events { distinct[event.type, default: []].insert(event.id) }
            #expect(distinct["WorkflowRun.Started"]?.count == 1)
            #expect(distinct["WorkflowRun.StepUpdated"]?.count == 3, "\(run): pause waiting, pause done, follow-up done; \(distinct)")
            #expect(distinct["WorkQueueItem.Created"]?.count == 1, "\(run): the effect once")
            #expect(distinct["WorkflowRun.Completed"]?.count == 1, "\(run): completed once")
            #expect(distinct["WorkflowRun.Failed"] == nil)
            let firstEnd = events.firstIndex { $0.type == "WorkflowRun.Completed" }
            let lastStart = events.lastIndex { $0.type == "WorkflowRun.Started" }
            #expect(firstEnd.flatMap { end in lastStart.map { end > $0 } } == true, "\(run): the end follows the start")
        }
    }

    @Test("kill -9 while 150 runs wait on their delay, then a restart: every timer fires, every run completes exactly once")
    func killDuringDelay() async throws {
        let storePath = FileManager.default.temporaryDirectory.appendingPathComponent("\(TestBroker.uniqueName("delay")).sqlite").path
        let cluster = try await Cluster("delay", storeURL: "sqlite://\(storePath)", partitions: 3)
        let count = 150
        let reader = try TestMember(group: "reader-\(cluster.suffix)", topics: [cluster.status])
        reader.start()
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        let first = try cluster.worker()
        for result in await client.send(Self.requests(cluster, count: count, tag: "delay")) { _ = try result.get() }
        // Killed once runs are waiting on their timers (a 2 s delay), before they all fired.
        try await reader.waitUntil("runs waiting on their delay", timeout: .seconds(60)) { _ in
            Self.count(reader, "WorkflowRun.StepUpdated") { $0[path: ["data", "status"]] == "waiting" } >= count / 3
        }
        first.crash()
        _ = try await first.waitForExit(timeout: .seconds(10))
        let completedBefore = Self.count(reader, "WorkflowRun.Completed")
        #expect(completedBefore < count, "the kill came before every run had completed (\(completedBefore))")

        let second = try cluster.worker()
        try await reader.waitUntil("every run to complete", timeout: .seconds(120)) { _ in Self.count(reader, "WorkflowRun.Completed") == count }
        second.interrupt()
        #expect(try await second.waitForExit(timeout: .seconds(15)) == 0)
        await reader.stop()
        try await client.shutdown()

        Self.checkExactlyOnce(Self.runEvents(reader), count: count)
        let store = try SQLiteStore(path: storePath)
        #expect(try await store.runs(statuses: ["completed"], limit: 500, offset: 0).count == count)
        #expect(try await store.nextTaskDue() == nil, "no engine work is left")
        #expect(try await store.pendingOutbox(limit: 10).isEmpty)
        print("delay crash: \(completedBefore) of \(count) runs had completed before the kill")
    }

    @Test("two instances on PostgreSQL, 200 runs with delays, one killed -9 mid-way: the survivor finishes every run exactly once",
          .enabled(if: TestPostgres.url != nil, TestPostgres.skipReason))
    func killOneOfTwo() async throws {
        let url = try await TestPostgres.freshDatabase()
        let cluster = try await Cluster("engine-pg", storeURL: url, partitions: 4)
        let count = 200
        let reader = try TestMember(group: "reader-\(cluster.suffix)", topics: [cluster.status])
        reader.start()
        let survivor = try cluster.worker()
        let victim = try cluster.worker()
        try await cluster.waitForSplit(survivor, victim)
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        for result in await client.send(Self.requests(cluster, count: count, tag: "pg")) { _ = try result.get() }
        try await reader.waitUntil("some runs to complete", timeout: .seconds(60)) { _ in Self.count(reader, "WorkflowRun.Completed") >= count / 4 }
        victim.crash()
        _ = try await victim.waitForExit(timeout: .seconds(10))
        let completedBefore = Self.count(reader, "WorkflowRun.Completed")

        try await reader.waitUntil("every run to complete", timeout: .seconds(120)) { _ in Self.count(reader, "WorkflowRun.Completed") == count }
        survivor.interrupt()
        #expect(try await survivor.waitForExit(timeout: .seconds(15)) == 0)
        await reader.stop()
        try await client.shutdown()

        Self.checkExactlyOnce(Self.runEvents(reader), count: count)
        let (completed, left, pending) = try await TestPostgres.withStore(url) { store in
            (try await store.runs(statuses: ["completed"], limit: 500, offset: 0).count, try await store.nextTaskDue(), try await store.pendingOutbox(limit: 10).count)
        }
        #expect(completed == count)
        #expect(left == nil, "no engine work is left")
        #expect(pending == 0)
        let tookOver = survivor.output.contains { $0.contains("Took over runs whose lease ran out") }
        print("engine fail-over: \(completedBefore) of \(count) runs had completed before the kill; survivor took over expired leases: \(tookOver)")
    }
}
