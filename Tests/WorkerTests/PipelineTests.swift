import Foundation
import Kafka
import Logging
import Store
import Synchronization
import Testing
import Workflows
@testable import Worker

/// The pipeline's two steps against a real SQLite store: a batch prepared while
/// the one before it is still unwritten, and what happens when that one is
/// decided again.
@Suite("Pipeline overlap")
struct PipelineTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/pipeline").path

    struct FixedClock: WallClock {
        var time: Timestamp
        func now() -> Timestamp { time }
    }

    let configuration = WorkerConfiguration()
    let store: SQLiteStore
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("pipeline-\(UUID().uuidString).sqlite").path
        store = try SQLiteStore(path: path)
    }

    func pipeline(at time: Timestamp = 1_000_000, store: (any Store)? = nil) throws -> Pipeline {
        let orgs = try OrgDirectory.load(path: "\(Self.fixtures)/orgs.yaml")
        return Pipeline(
            configuration: configuration, orgs: orgs, catalog: try WorkflowCatalog.load(directory: "\(Self.fixtures)/workflows"),
            store: store ?? self.store, clock: FixedClock(time: time), logger: Logger(label: "test"), outboxReady: {}
        )
    }

    func request(partition: Int32, offset: Int64, key: String, dueDate: String = "2026-06-30") -> KafkaMessage {
        let value: JSONValue = ["request_type": "workflow_run", "workflow_name": "quarterly-privacy-sweep", "body": ["input": ["due_date": .string(dueDate)]]]
        return KafkaMessage(
            topicPartition: .init(topic: configuration.topics.triggerRequests, partition: partition), offset: offset, key: nil,
            value: value.canonicalBytes,
            headers: [KafkaHeader(key: "Authorization", value: "Bearer ak_test_alpha_key"), KafkaHeader(key: "Idempotency-Key", value: key)]
        )
    }

    func runCount() async throws -> Int {
        try await store.runs(statuses: [], limit: 1000, offset: 0).count
    }

    @Test("a batch prepared before the previous one is written sees its keys and watermarks")
    func preparedAfterPending() async throws {
        let pipeline = try pipeline()
        let first = try await pipeline.prepare([request(partition: 0, offset: 0, key: "k1")], after: nil)
        // Same partition (the watermark must chain) and the same key (a replay of a run not yet written).
        let second = try await pipeline.prepare([request(partition: 0, offset: 1, key: "k1"), request(partition: 0, offset: 2, key: "k2")], after: first)
        #expect(second.decision.tally.replays == 1)
        #expect(second.decision.tally.runsStarted == 1)
        #expect(second.decision.writes.watermarks.first?.value.expected == 1, "expects the watermark the first batch writes")

        #expect(try await pipeline.write(first).asPrepared)
        #expect(try await pipeline.write(second).asPrepared)
        #expect(try await runCount() == 2)
        // Redelivered, the three offsets are all done.
        let again = try await pipeline.prepare((0...2).map { request(partition: 0, offset: $0, key: "k\(max($0, 1))") }, after: nil)
        #expect(again.decision.tally.alreadyDone == 3)
    }

    @Test("a batch decided again after a conflict asks for the next one to be prepared again")
    func conflictInvalidatesNext() async throws {
        let pipeline = try pipeline()
        let first = try await pipeline.prepare([request(partition: 0, offset: 0, key: "k1")], after: nil)
        let second = try await pipeline.prepare([request(partition: 0, offset: 1, key: "k1")], after: first)
        #expect(second.decision.tally.replays == 1)

        // Another instance claims k1 (through another partition) before the first batch is written.
        let other = try self.pipeline(at: 1_000_500)
        try await other.handle([request(partition: 5, offset: 0, key: "k1", dueDate: "2026-09-30")])

        #expect(try await pipeline.write(first) == BatchWriteResult(asPrepared: false), "decided again: k1 is now a replay of the other instance's run")
        // What the second batch saw of the first is stale: prepared again, it replays the other instance's response.
        let fresh = try await pipeline.prepare([request(partition: 0, offset: 1, key: "k1")], after: nil)
        let body = try #require(fresh.decision.writes.outbox.first).value
        #expect(String(decoding: body, as: UTF8.self).contains("2026-09-30"))
        #expect(try await pipeline.write(fresh).asPrepared)
        #expect(try await runCount() == 1, "one run for the key")
    }

    @Test("a batch of a partition that another instance handled further while it was in flight writes nothing, and its offsets are not to be committed")
    func supersededBatch() async throws {
        let pipeline = try pipeline()
        let late = try await pipeline.prepare((0..<3).map { request(partition: 0, offset: $0, key: "late-\($0)") }, after: nil)
        // The partition moved: the new owner handled the same records and more.
        let owner = try self.pipeline(at: 1_000_500)
        try await owner.handle((0..<5).map { request(partition: 0, offset: $0, key: "late-\($0)") })
        let outputsBefore = try await store.pendingOutbox(limit: 100).flatMap(\.messages).count

        let result = try await pipeline.write(late)
        #expect(result == BatchWriteResult(asPrepared: false, superseded: [PartitionID(topic: configuration.topics.triggerRequests, partition: 0)]))
        #expect(try await store.partitionMarks([PartitionID(topic: configuration.topics.triggerRequests, partition: 0)]).first?.value.next == 5, "the mark stays where the new owner put it")
        #expect(try await store.pendingOutbox(limit: 100).flatMap(\.messages).count == outputsBefore, "no response or event written twice")
        #expect(try await runCount() == 5)
    }

    @Test("a batch the store did not take (unavailable) is written once when it answers again; one whose reply was lost after it committed is not written twice")
    func storeOutage() async throws {
        let partition = PartitionID(topic: configuration.topics.triggerRequests, partition: 0)
        for lostReply in [false, true] {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("outage-\(UUID().uuidString).sqlite").path
            let base = try SQLiteStore(path: path)
            let flaky = FlakyStore(base: base, failures: [lostReply ? .afterCommit : .beforeCommit])
            let pipeline = try pipeline(store: flaky)
            let prepared = try await pipeline.prepare((0..<3).map { request(partition: 0, offset: $0, key: "outage-\($0)") }, after: nil)
            let result = try await pipeline.write(prepared)
            #expect(result.superseded == (lostReply ? [partition] : []), "lost reply: \(lostReply)")
            #expect(try await base.runs(statuses: [], limit: 10, offset: 0).count == 3, "one run per request")
            #expect(try await base.pendingOutbox(limit: 100).flatMap(\.messages).count == prepared.outputCount, "each output written once")
            #expect(try await base.partitionMarks([partition])[partition]?.next == 3)
            #expect(flaky.applies == (lostReply ? 3 : 2), "retried; after a lost reply, the retry conflicts and the batch decided again writes nothing")
        }
    }

    @Test("an HTTP request whose commit's reply was lost is answered as the request it was (201, not a replay of itself), and written once")
    func httpLostReply() async throws {
        for (key, lostReply) in [("with-key", true), (nil, true), ("with-key", false)] as [(String?, Bool)] {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("http-outage-\(UUID().uuidString).sqlite").path
            let base = try SQLiteStore(path: path)
            let flaky = FlakyStore(base: base, failures: [lostReply ? .afterCommit : .beforeCommit])
            let pipeline = try pipeline(store: flaky)
            var headers = [KafkaHeader(key: "Authorization", value: "Bearer ak_test_alpha_key")]
            if let key { headers.append(KafkaHeader(key: "Idempotency-Key", value: key)) }
            let answer = try await pipeline.handleHTTP(
                endpoint: "POST /v1/workflows/quarterly-privacy-sweep/run",
                value: WriteAPI.workflowRun(name: "quarterly-privacy-sweep", body: Array(#"{"input":{"due_date":"2026-06-30"}}"#.utf8)), headers: headers
            )
            #expect(answer.status == 201 && !answer.replayed, "key \(key ?? "none"), lost reply \(lostReply): \(String(decoding: answer.body, as: UTF8.self))")
            let runs = try await base.runs(statuses: [], limit: 10, offset: 0)
            #expect(runs.count == 1, "one run")
            #expect(try JSONValue.parse(answer.body)["workflow_run_id"]?.stringValue == runs.first?.id)
        }
    }

    @Test("the overlay keeps newer watermarks and vendors and drops records expired by now")
    func overlay() {
        let partition = PartitionID(topic: "t", partition: 0)
        var snapshot = BatchSnapshot()
        snapshot.watermarks[partition] = 5
        let vendorKey = VendorKey(orgID: "cborg_1", vendorID: "cbvndr_1")
        snapshot.vendors[vendorKey] = VendorRecord(id: "cbvndr_1", orgID: "cborg_1", document: Array("new".utf8), occurredAt: 20)
        var writes = BatchWrites()
        writes.watermarks[partition] = (expected: 5, next: 9)
        writes.vendors = [VendorRecord(id: "cbvndr_1", orgID: "cborg_1", document: Array("old".utf8), occurredAt: 10)]
        let live = ScopeHash(bytes: Array(repeating: 1, count: 16))
        let expired = ScopeHash(bytes: Array(repeating: 2, count: 16))
        func record(_ scope: ScopeHash, expiresAt: Timestamp) -> IdempotencyRecord {
            IdempotencyRecord(scope: scope, orgID: "cborg_1", endpoint: "e", key: "k", fingerprint: [], responseStatus: 201, responseBody: [], createdAt: 0, expiresAt: expiresAt)
        }
        writes.records = [record(live, expiresAt: 101), record(expired, expiresAt: 100)]
        snapshot.overlay(writes, now: 100)
        #expect(snapshot.watermarks[partition] == 9)
        #expect(snapshot.vendors[vendorKey]?.document == Array("new".utf8))
        #expect(snapshot.records[live] != nil)
        #expect(snapshot.records[expired] == nil)
    }
}

/// A store that fails its next applies as unavailable: before committing them, or after
/// (a reply lost on the way back), and its claims while `claimsFail`; everything else
/// goes to `base`.
final class FlakyStore: Store {
    enum Failure { case beforeCommit, afterCommit }

    private let base: SQLiteStore
    private let plan: Mutex<(failures: [Failure], applies: Int)>

    init(base: SQLiteStore, failures: [Failure]) {
        self.base = base
        plan = Mutex((failures, 0))
    }

    var applies: Int { plan.withLock { $0.applies } }

    /// Whether claims fail (reads still answer), and how many were tried.
    let claimsFail = Mutex(false)
    let claims = Mutex(0)
    /// How many of the next reads of a run's task fail, and how many were tried.
    let taskReadsFail = Mutex(0)
    let taskReads = Mutex(0)
    /// Whether the store keeps its next due time to itself (`nextTaskDue` is `nil`): an
    /// idle executor then waits its idle interval unless its doorbell rings.
    let hidesNextDue = Mutex(false)
    /// Claims after the first `after` wait, before they reach the store, until ``openClaims()``
    /// (a claim the store holds open); `waiting` are those held now.
    private let claimGate = Mutex<(after: Int?, waiting: [CheckedContinuation<Void, Never>])>((nil, []))

    /// Holds every claim after the first `count` until ``openClaims()``.
    func holdClaims(after count: Int) { claimGate.withLock { $0.after = count } }

    /// How many claims are held now.
    var heldClaims: Int { claimGate.withLock { $0.waiting.count } }

    /// Lets the held claims, and every later one, through.
    func openClaims() {
        let waiting = claimGate.withLock { gate in
            defer { gate = (nil, []) }
            return gate.waiting
        }
        for claim in waiting { claim.resume() }
    }

    func apply(_ writes: BatchWrites) async throws {
        let failure = plan.withLock { plan -> Failure? in
            plan.applies += 1
            return plan.failures.isEmpty ? nil : plan.failures.removeFirst()
        }
        if failure == .afterCommit { try await base.apply(writes) }
        if failure != nil { throw StoreError(code: .unavailable, message: "the test's store is away") }
        try await base.apply(writes)
    }

    var isShared: Bool { base.isShared }
    func load(_ query: BatchQuery, now: Timestamp) async throws -> BatchSnapshot { try await base.load(query, now: now) }
    func pendingOutbox(limit: Int, selection: OutboxSelection) async throws -> [OutboxEntry] { try await base.pendingOutbox(limit: limit, selection: selection) }
    func finishOutbox(done: [Int64], park: [ParkedOutput]) async throws { try await base.finishOutbox(done: done, park: park) }
    func parkedOutputs(limit: Int) async throws -> [ParkedOutput] { try await base.parkedOutputs(limit: limit) }
    func retryParked(id: Int64) async throws -> Bool { try await base.retryParked(id: id) }
    func dropParked(id: Int64) async throws -> Bool { try await base.dropParked(id: id) }
    func partitionMarks(_ partitions: [PartitionID]) async throws -> [PartitionID: PartitionMark] { try await base.partitionMarks(partitions) }
    func resetPartition(_ partition: PartitionID, from mark: PartitionMark, next: Int64) async throws { try await base.resetPartition(partition, from: mark, next: next) }
    func pruneRuns(finishedBefore before: Int64, limit: Int) async throws -> Int { try await base.pruneRuns(finishedBefore: before, limit: limit) }
    func pruneAssessments(createdBefore before: Int64, limit: Int) async throws -> Int { try await base.pruneAssessments(createdBefore: before, limit: limit) }
    func pruneEngineHistory(before: Int64, limit: Int) async throws -> Int { try await base.pruneEngineHistory(before: before, limit: limit) }
    func deleteExpiredIdempotencyRecords(now: Timestamp, limit: Int) async throws -> Int { try await base.deleteExpiredIdempotencyRecords(now: now, limit: limit) }
    func run(id: String) async throws -> RunRecord? { try await base.run(id: id) }
    func runs(statuses: [String], limit: Int, offset: Int) async throws -> [RunRecord] { try await base.runs(statuses: statuses, limit: limit, offset: offset) }
    func assessment(id: String) async throws -> AssessmentRecord? { try await base.assessment(id: id) }
    func claimTasks(owner: String, now: Timestamp, leaseUntil: Timestamp, limit: Int) async throws -> [EngineTask] {
        let number = claims.withLock { $0 += 1; return $0 }
        if claimsFail.withLock({ $0 }) { throw StoreError(code: .unavailable, message: "the test's store refuses claims") }
        await withCheckedContinuation { (claim: CheckedContinuation<Void, Never>) in
            let held = claimGate.withLock { gate -> Bool in
                guard let after = gate.after, number > after else { return false }
                gate.waiting.append(claim)
                return true
            }
            if !held { claim.resume() }
        }
        return try await base.claimTasks(owner: owner, now: now, leaseUntil: leaseUntil, limit: limit)
    }
    func renewLeases(owner: String, tasks: [String: Int64], until: Timestamp) async throws -> Set<String> { try await base.renewLeases(owner: owner, tasks: tasks, until: until) }
    func commitTasks(_ outcomes: [TaskOutcome], now: Timestamp) async throws -> Set<String> { try await base.commitTasks(outcomes, now: now) }
    func releaseLeases() async throws -> Int { try await base.releaseLeases() }
    func nextTaskDue() async throws -> Timestamp? { hidesNextDue.withLock { $0 } ? nil : try await base.nextTaskDue() }
    func engineQueue(now: Timestamp) async throws -> EngineQueueStats { try await base.engineQueue(now: now) }
    func outboxDepth() async throws -> Int { try await base.outboxDepth() }
    func runs(matching query: RunQuery) async throws -> (runs: [RunRecord], total: Int) { try await base.runs(matching: query) }
    func task(runID: String) async throws -> EngineTask? {
        taskReads.withLock { $0 += 1 }
        let fails = taskReadsFail.withLock { left in
            defer { left = max(0, left - 1) }
            return left > 0
        }
        if fails { throw StoreError(code: .unavailable, message: "the test's store cannot read the run") }
        return try await base.task(runID: runID)
    }
    func vendors(orgID: String, afterID: String, limit: Int) async throws -> [VendorRecord] { try await base.vendors(orgID: orgID, afterID: afterID, limit: limit) }
    func pendingItems(runID: String) async throws -> Int { try await base.pendingItems(runID: runID) }
    func itemCounts(runID: String, stepID: String) async throws -> ItemCounts { try await base.itemCounts(runID: runID, stepID: stepID) }
    func itemResults(runID: String, stepID: String, afterKey: String, limit: Int) async throws -> [ItemResult] {
        try await base.itemResults(runID: runID, stepID: stepID, afterKey: afterKey, limit: limit)
    }
    func events(orgID: String, type: String, vendorID: String?, since: Timestamp, afterSequence: Int64, limit: Int) async throws -> [StoredEvent] {
        try await base.events(orgID: orgID, type: type, vendorID: vendorID, since: since, afterSequence: afterSequence, limit: limit)
    }
}

