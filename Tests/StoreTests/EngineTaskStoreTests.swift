import Foundation
@testable import Store
import Testing

/// The engine's queue, on every store: claims are exclusive and leased, a lost
/// claim writes nothing, and a commit writes a run's document, task, assessments
/// and events together.
extension StoreSemanticsTests {
    func task(_ id: String, due: Timestamp, source: PartitionID? = nil) -> EngineTask {
        EngineTask(runID: id, orgID: "cborg_a", dueAt: due, state: Array("{\"run\":\"\(id)\"}".utf8), source: source)
    }

    func startRuns(_ store: any Store, _ tasks: [EngineTask]) async throws {
        var writes = BatchWrites()
        writes.now = 1000
        writes.runs = tasks.map { RunRecord(id: $0.runID, orgID: $0.orgID, workflowName: "demo", status: "started", startedAt: 1, document: Array("{}".utf8)) }
        writes.tasks = tasks
        try await store.apply(writes)
    }

    @Test("due tasks are claimed once under a lease, oldest first; an expired lease is taken over; renewals keep it", arguments: StoreKind.available)
    func engineClaims(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        try await startRuns(store, [task("cbwr_b", due: 2000), task("cbwr_a", due: 1000, source: partition), task("cbwr_later", due: 9000)])
        #expect(try await store.nextTaskDue() == 1000)
        #expect(try await store.engineQueue(now: 2500) == EngineQueueStats(runnable: 2, running: 0, waiting: 1, oldestRunnableAge: 1500))

        let first = try await store.claimTasks(owner: "one", now: 2500, leaseUntil: 5000, limit: 10)
        #expect(first.map(\.runID) == ["cbwr_a", "cbwr_b"])
        #expect(first.allSatisfy { $0.fence == 1 && $0.leaseOwner == "one" && !$0.tookOverExpiredLease })
        #expect(first[0].source == partition && first[1].source == nil)
        #expect(first[0].state == Array("{\"run\":\"cbwr_a\"}".utf8))
        #expect(try await store.claimTasks(owner: "two", now: 2600, leaseUntil: 6000, limit: 10).isEmpty, "leased: no one else claims them")
        #expect(try await store.nextTaskDue() == 5000, "a leased task is next claimable when its lease runs out, not at its due time")
        #expect(try await store.engineQueue(now: 2600).running == 2)

        #expect(try await store.renewLeases(owner: "one", tasks: ["cbwr_a": 1, "cbwr_b": 1], until: 7000) == ["cbwr_a", "cbwr_b"])
        #expect(try await store.claimTasks(owner: "two", now: 6000, leaseUntil: 9000, limit: 10).isEmpty, "renewed to 7000")
        let taken = try await store.claimTasks(owner: "two", now: 7000, leaseUntil: 9000, limit: 1)
        #expect(taken.map(\.runID) == ["cbwr_a"])
        #expect(taken[0].fence == 2 && taken[0].tookOverExpiredLease)
        #expect(try await store.renewLeases(owner: "one", tasks: ["cbwr_a": 1], until: 99_000).isEmpty, "a lost lease is not renewed")

        // A claim handed back (its holder stopped): claimable at once, not renewed after,
        // and a claim after it took nothing over (no lease ran out).
        #expect(try await store.renewLeases(owner: "one", tasks: ["cbwr_b": 1], until: EngineTask.handedBack) == ["cbwr_b"])
        #expect(try await store.renewLeases(owner: "one", tasks: ["cbwr_b": 1], until: 99_000).isEmpty, "a lease handed back is not extended again")
        let after = try await store.claimTasks(owner: "two", now: 6500, leaseUntil: 9000, limit: 10)
        #expect(after.map(\.runID) == ["cbwr_b"])
        #expect(after[0].fence == 2 && !after[0].tookOverExpiredLease)
    }

    @Test("a commit writes what a claim did in one go; a lost claim's outcome writes nothing; a task that ended is gone", arguments: StoreKind.available)
    func engineCommits(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        try await startRuns(store, [task("cbwr_a", due: 1000, source: partition), task("cbwr_b", due: 1000)])
        let claimed = try await store.claimTasks(owner: "one", now: 1000, leaseUntil: 2000, limit: 10)
        #expect(claimed.count == 2)
        #expect(try await store.renewLeases(owner: "one", tasks: ["cbwr_a": 1], until: 5000) == ["cbwr_a"])
        // b's lease runs out and another instance claims it: one's outcome for b is stale.
        let stolen = try await store.claimTasks(owner: "two", now: 2000, leaseUntil: 9000, limit: 10)
        #expect(stolen.map(\.runID) == ["cbwr_b"])

        let event = OutboxMessage(topic: "workflow-run-status", key: Array("cbwr_a".utf8), value: Array("done".utf8), headers: [], source: partition)
        let assessment = AssessmentRecord(id: "cbqsrw_a", orgID: "cborg_a", vendorID: "cbvndr_v", createdAt: 1, document: Array("{}".utf8))
        let outcomes = [
            TaskOutcome(runID: "cbwr_a", fence: 1, status: "completed", finishedAt: 2, document: Array("{\"a\":1}".utf8), next: nil, assessments: [assessment], outbox: [event]),
            TaskOutcome(runID: "cbwr_b", fence: 1, status: "failed", finishedAt: 2, document: Array("{\"b\":1}".utf8), next: nil,
                        assessments: [AssessmentRecord(id: "cbqsrw_b", orgID: "cborg_a", vendorID: "cbvndr_v", document: [])],
                        outbox: [OutboxMessage(topic: "workflow-run-status", key: nil, value: Array("stale".utf8), headers: [])]),
        ]
        #expect(try await store.commitTasks(outcomes, now: 2500) == ["cbwr_a"])
        #expect(try await store.run(id: "cbwr_a")?.status == "completed")
        #expect(try await store.run(id: "cbwr_a")?.finishedAt == 2)
        #expect(try await store.task(runID: "cbwr_a") == nil)
        #expect(try await store.assessment(id: "cbqsrw_a") != nil)
        #expect(try await store.run(id: "cbwr_b")?.status == "started", "the lost claim wrote nothing")
        #expect(try await store.assessment(id: "cbqsrw_b") == nil)
        let outbox = try await store.pendingOutbox(limit: 10)
        #expect(outbox.flatMap(\.messages).map(\.value) == [Array("done".utf8)])
        #expect(outbox.first?.source == partition)

        // The new holder goes on: a later state, due later, lease released.
        let later = TaskOutcome(runID: "cbwr_b", fence: 2, status: "waiting", finishedAt: nil, document: Array("{}".utf8), next: (Array("{\"next\":1}".utf8), 50_000), assessments: [], outbox: [])
        #expect(try await store.commitTasks([later], now: 3000) == ["cbwr_b"])
        let kept = try #require(try await store.task(runID: "cbwr_b"))
        #expect(kept.dueAt == 50_000 && kept.state == Array("{\"next\":1}".utf8) && kept.leaseOwner == nil && kept.leaseUntil == 0)
        #expect(try await store.run(id: "cbwr_b")?.status == "waiting")
        #expect(try await store.claimTasks(owner: "three", now: 49_999, leaseUntil: 60_000, limit: 10).isEmpty)
        #expect(try await store.claimTasks(owner: "three", now: 50_000, leaseUntil: 60_000, limit: 10).map(\.runID) == ["cbwr_b"])
        // An outcome without a document moves only the task (a state that could not be read, kept for later).
        let parked = TaskOutcome(runID: "cbwr_b", fence: 4, status: "", finishedAt: nil, document: nil, next: (Array("{\"next\":1}".utf8), 90_000), assessments: [], outbox: [])
        #expect(try await store.commitTasks([parked], now: 50_000) == ["cbwr_b"])
        #expect(try await store.run(id: "cbwr_b")?.status == "waiting", "the run is left as it was")
        #expect(try await store.task(runID: "cbwr_b")?.dueAt == 90_000)
        _ = try await store.claimTasks(owner: "three", now: 90_000, leaseUntil: 95_000, limit: 10)
        #expect(try await store.releaseLeases() == 1)
        #expect(try await store.claimTasks(owner: "four", now: 90_000, leaseUntil: 99_000, limit: 10).first?.tookOverExpiredLease == false)
    }

    @Test("a batch reads the runs it cancels with their tasks; a cancel applies only at the fence it read", arguments: StoreKind.available)
    func cancels(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        try await startRuns(store, [task("cbwr_a", due: 1000, source: partition), task("cbwr_b", due: 1000)])
        var query = BatchQuery()
        query.runs = ["cbwr_a", "cbwr_b", "cbwr_none"]
        let snapshot = try await store.load(query, now: 1000)
        #expect(Set(snapshot.runs.keys) == ["cbwr_a", "cbwr_b"])
        #expect(snapshot.runs["cbwr_a"]?.task?.source == partition)
        #expect(snapshot.runs["cbwr_a"]?.task?.fence == 0)
        #expect(snapshot.runs["cbwr_a"]?.record.status == "started")

        // The engine claims b after the batch read it: the batch's cancel of b is a conflict, and writes nothing.
        _ = try await store.claimTasks(owner: "engine", now: 1000, leaseUntil: 9000, limit: 10)
        var stale = BatchWrites()
        stale.now = 1000
        stale.cancels = [RunCancel(runID: "cbwr_a", fence: 1, finishedAt: 2, document: Array("{\"a\":0}".utf8)), RunCancel(runID: "cbwr_b", fence: 0, finishedAt: 2, document: [])]
        await #expect(throws: StoreError.self) { try await store.apply(stale) }
        #expect(try await store.run(id: "cbwr_a")?.status == "started", "nothing of the batch was written")

        var writes = BatchWrites()
        writes.now = 1000
        writes.cancels = [RunCancel(runID: "cbwr_b", fence: 1, finishedAt: 2, document: Array("{\"canceled\":true}".utf8))]
        try await store.apply(writes)
        let canceled = try #require(try await store.run(id: "cbwr_b"))
        #expect(canceled.status == "canceled" && canceled.finishedAt == 2 && canceled.document == Array("{\"canceled\":true}".utf8))
        #expect(try await store.task(runID: "cbwr_b") == nil)
        // The engine's claim of b, still running, can no longer write.
        let late = TaskOutcome(runID: "cbwr_b", fence: 1, status: "completed", finishedAt: 3, document: Array("{}".utf8), next: nil, assessments: [], outbox: [])
        #expect(try await store.commitTasks([late], now: 2000).isEmpty)
        #expect(try await store.run(id: "cbwr_b")?.status == "canceled")
    }

    func event(_ id: String, vendor: String?, run: String? = nil, at time: Timestamp) -> EngineEvent {
        EngineEvent(orgID: "cborg_a", eventID: id, type: "QuestionnaireResponse.Submitted", vendorID: vendor, runID: run, data: Array("{\"id\":\"\(id)\"}".utf8), receivedAt: time)
    }

    func subscription(_ vendor: String?, seen: Int64 = 0) -> EventSubscription {
        EventSubscription(orgID: "cborg_a", eventType: "QuestionnaireResponse.Submitted", vendorID: vendor, seenSequence: seen)
    }

    @Test("events are kept once and found by org, type and vendor in order; they wake only the runs subscribed to them, even mid-claim", arguments: StoreKind.available)
    func events(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        try await startRuns(store, [task("cbwr_v1", due: 1000), task("cbwr_any", due: 1000), task("cbwr_other", due: 1000)])
        let claimed = try await store.claimTasks(owner: "e", now: 1000, leaseUntil: 2000, limit: 10)
        let fences = Dictionary(uniqueKeysWithValues: claimed.map { ($0.runID, $0.fence) })
        func waiting(_ run: String, _ sub: EventSubscription?) -> TaskOutcome {
            TaskOutcome(runID: run, fence: fences[run]!, status: "waiting", finishedAt: nil, document: nil, next: (Array("{}".utf8), 90_000), assessments: [], outbox: [], subscription: sub)
        }
        #expect(try await store.commitTasks([waiting("cbwr_v1", subscription("cbvndr_1")), waiting("cbwr_any", subscription(nil)), waiting("cbwr_other", nil)], now: 1500).count == 3)
        #expect(try await store.nextTaskDue() == 90_000)

        var writes = BatchWrites()
        writes.now = 5000
        writes.events = [event("cbevt_2", vendor: "cbvndr_2", at: 5000), event("cbevt_2", vendor: "cbvndr_2", at: 5000)]
        try await store.apply(writes)
        #expect(try await store.task(runID: "cbwr_any")?.dueAt == 5000, "a subscription without a vendor is woken by any")
        #expect(try await store.task(runID: "cbwr_v1")?.dueAt == 90_000, "another vendor's event does not wake it")
        #expect(try await store.task(runID: "cbwr_other")?.dueAt == 90_000, "not subscribed")
        writes.now = 6000
        writes.events = [event("cbevt_1", vendor: "cbvndr_1", run: "cbwr_elsewhere", at: 6000)]
        try await store.apply(writes)
        #expect(try await store.task(runID: "cbwr_v1")?.dueAt == 90_000, "an event for another run does not wake it")
        writes.now = 7000
        writes.events = [event("cbevt_3", vendor: "cbvndr_1", at: 7000)]
        try await store.apply(writes)
        #expect(try await store.task(runID: "cbwr_v1")?.dueAt == 7000)

        let all = try await store.events(orgID: "cborg_a", type: "QuestionnaireResponse.Submitted", vendorID: nil, since: 0, afterSequence: 0, limit: 10)
        #expect(all.map(\.event.eventID) == ["cbevt_2", "cbevt_1", "cbevt_3"], "in the order received, once each")
        let vendorOnly = try await store.events(orgID: "cborg_a", type: "QuestionnaireResponse.Submitted", vendorID: "cbvndr_1", since: 6500, afterSequence: 0, limit: 10)
        #expect(vendorOnly.map(\.event.eventID) == ["cbevt_3"])
        #expect(try await store.events(orgID: "cborg_a", type: "QuestionnaireResponse.Submitted", vendorID: nil, since: 0, afterSequence: all[0].sequence, limit: 1).map(\.event.eventID) == ["cbevt_1"])

        let sequence = Dictionary(uniqueKeysWithValues: all.map { ($0.event.eventID, $0.sequence) })
        // Woken mid-claim: the commit keeps it due. An event after the last one the step saw keeps a new subscriber due.
        let again = try #require(try await store.claimTasks(owner: "e", now: 7000, leaseUntil: 9000, limit: 10).first { $0.runID == "cbwr_v1" })
        writes.now = 7100
        writes.events = [event("cbevt_4", vendor: "cbvndr_1", at: 7100)]
        try await store.apply(writes)
        let kept = TaskOutcome(runID: "cbwr_v1", fence: again.fence, status: "waiting", finishedAt: nil, document: nil, next: (Array("{}".utf8), 90_000), assessments: [], outbox: [], subscription: subscription("cbvndr_1", seen: 1_000_000))
        #expect(try await store.commitTasks([kept], now: 7200) == ["cbwr_v1"])
        #expect(try await store.task(runID: "cbwr_v1")?.dueAt == 7200, "woken during its claim")
        let third = try #require(try await store.claimTasks(owner: "e", now: 7200, leaseUntil: 9000, limit: 10).first { $0.runID == "cbwr_v1" })
        let came = TaskOutcome(runID: "cbwr_v1", fence: third.fence, status: "waiting", finishedAt: nil, document: nil, next: (Array("{}".utf8), 90_000), assessments: [], outbox: [], subscription: subscription("cbvndr_1", seen: sequence["cbevt_3"]!))
        #expect(try await store.commitTasks([came], now: 7300) == ["cbwr_v1"])
        #expect(try await store.task(runID: "cbwr_v1")?.dueAt == 7300, "an event came after the last one the step saw")
        let fourth = try #require(try await store.claimTasks(owner: "e", now: 7300, leaseUntil: 9000, limit: 10).first { $0.runID == "cbwr_v1" })
        let newest = try #require(try await store.events(orgID: "cborg_a", type: "QuestionnaireResponse.Submitted", vendorID: nil, since: 0, afterSequence: 0, limit: 10).last?.sequence)
        let quiet = TaskOutcome(runID: "cbwr_v1", fence: fourth.fence, status: "waiting", finishedAt: nil, document: nil, next: (Array("{}".utf8), 90_000), assessments: [], outbox: [], subscription: subscription("cbvndr_1", seen: newest))
        #expect(try await store.commitTasks([quiet], now: 7400) == ["cbwr_v1"])
        #expect(try await store.task(runID: "cbwr_v1")?.dueAt == 90_000, "nothing new: due at its deadline")

        // Retention: events received before the cutoff go, later ones stay.
        #expect(try await store.pruneEngineHistory(before: 6, limit: 100) == 1, "cbevt_2, received at 5 s")
        let left = try await store.events(orgID: "cborg_a", type: "QuestionnaireResponse.Submitted", vendorID: nil, since: 0, afterSequence: 0, limit: 10)
        #expect(left.map(\.event.eventID) == ["cbevt_1", "cbevt_3", "cbevt_4"])
    }

    @Test("the PostgreSQL functions derived from earlier versions' text hold what they were derived to hold")
    func derivedFunctions() {
        #expect(PostgresSchema.applyBatchFunctionV4.contains("INSERT INTO run_tasks"))
        #expect(PostgresSchema.commitTasksFunctionV6.contains("w_since bigint[]") && PostgresSchema.commitTasksFunctionV6.contains("INSERT INTO run_waits"))
        #expect(PostgresSchema.commitTasksFunctionV8.contains("pg_advisory_xact_lock_shared") && PostgresSchema.commitTasksFunctionV8.contains("e.sequence > c.since"))
        #expect(!PostgresSchema.commitTasksFunctionV8.contains("received_at >= c.since"))
        #expect(PostgresSchema.recordEventsFunctionV8.contains("pg_advisory_xact_lock(k)"))
        #expect(PostgresSchema.cancelRunsFunctionV6.contains("DELETE FROM run_waits"))
        #expect(PostgresSchema.cancelRunsFunctionV7.contains("t.parent_id = c.run AND t.slots > 0"))
    }
}
