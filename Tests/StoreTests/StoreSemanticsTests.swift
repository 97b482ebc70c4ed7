import Foundation
@testable import Store
import Testing

/// The semantics every store keeps, run against each store (`StoreKind.available`):
/// the embedded SQLite store, and PostgreSQL where `TEST_POSTGRES_URL` names a server
/// (`make test` starts one).
@Suite("Store semantics")
struct StoreSemanticsTests {
    let partition = PartitionID(topic: "trigger-requests", partition: 3)

    @Test("records are looked up in chunks: more scopes than one statement takes, live ones found, expired and absent ones not", arguments: StoreKind.available)
    func manyScopes(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        func wide(_ n: Int) -> ScopeHash { ScopeHash(bytes: [UInt8(n & 0xFF), UInt8(n >> 8)] + Array(repeating: 7, count: 14)) }
        let count = 1037  // more than SQLite takes in one statement
        var writes = BatchWrites()
        writes.now = 100
        // Every third record expires at 150, the others at 1,100.
        writes.records = (0..<count).map { record(wide($0), createdAt: 100, ttl: $0 % 3 == 0 ? 50 : 1000, body: "\($0)") }
        try await store.apply(writes)

        var query = BatchQuery()
        query.scopes = Set((0..<count + 10).map(wide))
        let snapshot = try await store.load(query, now: 200)
        let live = (0..<count).filter { $0 % 3 != 0 }
        #expect(snapshot.records.count == live.count)
        #expect(live.allSatisfy { snapshot.records[wide($0)]?.responseBody == Array("\($0)".utf8) })
    }

    @Test("a batch is written in one transaction and read back", arguments: StoreKind.available)
    func roundTrip(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        var writes = BatchWrites()
        writes.now = 100
        writes.watermarks[partition] = (expected: nil, next: 10)
        writes.records = [record(scope(1), createdAt: 100)]
        writes.vendors = [VendorRecord(id: "cbvndr_1", orgID: "cborg_1", document: Array(#"{"id":"cbvndr_1"}"#.utf8), occurredAt: 5)]
        writes.runs = [RunRecord(id: "cbwr_1", orgID: "cborg_1", workflowName: "w", status: "completed", startedAt: 1, document: Array("{}".utf8))]
        writes.assessments = [AssessmentRecord(id: "cbqsrw_1", orgID: "cborg_1", vendorID: "cbvndr_1", document: Array("{}".utf8))]
        writes.outbox = [OutboxMessage(topic: "out", key: Array("k".utf8), value: Array("v".utf8), headers: [OutboxHeader(name: "event-type", value: Array("X".utf8)), OutboxHeader(name: "empty", value: [])])]
        try await store.apply(writes)

        var query = BatchQuery()
        query.partitions = [partition]
        query.scopes = [scope(1), scope(2)]
        query.vendors = [VendorKey(orgID: "cborg_1", vendorID: "cbvndr_1")]
        let snapshot = try await store.load(query, now: 150)
        #expect(snapshot.watermarks[partition] == 10)
        #expect(snapshot.records[scope(1)] == record(scope(1), createdAt: 100))
        #expect(snapshot.records[scope(2)] == nil)
        #expect(snapshot.vendors[VendorKey(orgID: "cborg_1", vendorID: "cbvndr_1")]?.occurredAt == 5)
        #expect(try await store.run(id: "cbwr_1")?.workflowName == "w")
        #expect(try await store.assessment(id: "cbqsrw_1")?.vendorID == "cbvndr_1")
        let outbox = try await store.pendingOutbox(limit: 10)
        #expect(outbox.count == 1)
        #expect(outbox[0].messages == writes.outbox)
        try await store.finishOutbox(done: outbox.map(\.id), park: [])
        #expect(try await store.pendingOutbox(limit: 10).isEmpty)
    }

    @Test("an org's runs are listed newest first with filters, paging and a total; another org's are not; outbox depth counts entries", arguments: StoreKind.available)
    func runLists(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        var writes = BatchWrites()
        // 30 runs of org 1 (started at 1…30; names a/b; statuses completed/waiting/failed), 5 of org 2.
        writes.runs = (1...30).map { n in
            RunRecord(id: "cbwr_\(n)", orgID: "cborg_1", workflowName: n % 2 == 0 ? "a" : "b", status: ["completed", "waiting", "failed"][n % 3], startedAt: Int64(n), document: Array("{\"n\":\(n)}".utf8))
        } + (1...5).map { n in RunRecord(id: "cbwr_x\(n)", orgID: "cborg_2", workflowName: "a", status: "completed", startedAt: Int64(n), document: Array("{}".utf8)) }
        writes.outbox = [OutboxMessage(topic: "out", key: nil, value: Array("v".utf8), headers: [])]
        try await store.apply(writes)

        let all = try await store.runs(matching: RunQuery(orgID: "cborg_1", limit: 100))
        #expect(all.total == 30 && all.runs.map(\.startedAt) == (1...30).reversed().map(Int64.init), "newest first")
        let page = try await store.runs(matching: RunQuery(orgID: "cborg_1", limit: 7, offset: 21))
        #expect(page.total == 30 && page.runs.map(\.startedAt) == [9, 8, 7, 6, 5, 4, 3])
        let filtered = try await store.runs(matching: RunQuery(orgID: "cborg_1", workflowName: "a", statuses: ["completed", "failed"], startedFrom: 10, startedUntil: 20, limit: 100))
        let expected = (10...20).filter { $0 % 2 == 0 && $0 % 3 != 1 }.reversed().map(Int64.init)
        #expect(filtered.runs.map(\.startedAt) == expected && filtered.total == expected.count)
        #expect(filtered.runs.allSatisfy { $0.orgID == "cborg_1" && $0.workflowName == "a" })
        let other = try await store.runs(matching: RunQuery(orgID: "cborg_2", limit: 2))
        #expect(other.total == 5 && other.runs.count == 2 && other.runs.allSatisfy { $0.orgID == "cborg_2" })
        #expect(try await store.runs(matching: RunQuery(orgID: "cborg_3")).total == 0)
        #expect(try await store.outboxDepth() == 1)
    }

    @Test("outbox messages keep their order, keys (or none), values and headers across entries", arguments: StoreKind.available)
    func outboxEntries(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        let messages = (0..<2500).map { (index: Int) -> OutboxMessage in
            let key: [UInt8]? = index % 2 == 0 ? Array("k\(index)".utf8) : nil
            var headers: [OutboxHeader] = []
            if index % 5 != 0 {
                headers = [OutboxHeader(name: "h", value: Array("\(index)".utf8)), OutboxHeader(name: "empty", value: [])]
            }
            return OutboxMessage(topic: "t\(index % 3)", key: key, value: Array("v\(index)".utf8), headers: headers)
        }
        var first = BatchWrites()
        first.outbox = Array(messages[..<1500])
        try await store.apply(first)
        var second = BatchWrites()
        second.outbox = Array(messages[1500...])
        try await store.apply(second)
        let entries = try await store.pendingOutbox(limit: 10)
        #expect(entries.map(\.messages.count) == [1000, 500, 1000], "at most 1,000 messages an entry, never across batches")
        #expect(entries.flatMap(\.messages) == messages)
        #expect(entries.map(\.id) == entries.map(\.id).sorted())
        try await store.finishOutbox(done: [entries[0].id], park: [])
        #expect(try await store.pendingOutbox(limit: 10).map(\.id) == Array(entries.map(\.id).dropFirst()))
    }

    @Test("a watermark that moved since it was read is a conflict, and nothing of the batch is written", arguments: StoreKind.available)
    func watermarkConflict(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        var first = BatchWrites()
        first.watermarks[partition] = (expected: nil, next: 10)
        try await store.apply(first)

        var stale = BatchWrites()
        stale.watermarks[partition] = (expected: nil, next: 20)  // read before the first batch was written
        stale.runs = [RunRecord(id: "cbwr_2", orgID: "o", workflowName: "w", status: "completed", startedAt: 1, document: [])]
        await #expect(throws: StoreError.self) { try await store.apply(stale) }
        #expect(try await store.run(id: "cbwr_2") == nil, "the conflicting batch must be rolled back whole")

        var wrongExpectation = BatchWrites()
        wrongExpectation.watermarks[partition] = (expected: 5, next: 20)
        await #expect(throws: StoreError.self) { try await store.apply(wrongExpectation) }

        var next = BatchWrites()
        next.watermarks[partition] = (expected: 10, next: 20)
        try await store.apply(next)
        var query = BatchQuery()
        query.partitions = [partition]
        #expect(try await store.load(query, now: 0).watermarks[partition] == 20)
    }

    @Test("a live idempotency record cannot be claimed twice; an expired one is replaced", arguments: StoreKind.available)
    func claims(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        var first = BatchWrites()
        first.now = 1000
        first.records = [record(scope(7), createdAt: 1000, ttl: 500, body: "first")]
        try await store.apply(first)

        var concurrent = BatchWrites()
        concurrent.now = 1200
        concurrent.records = [record(scope(7), createdAt: 1200, ttl: 500, body: "second")]
        await #expect(throws: StoreError.self) { try await store.apply(concurrent) }

        var query = BatchQuery()
        query.scopes = [scope(7)]
        #expect(try await store.load(query, now: 1499).records[scope(7)]?.responseBody == Array("first".utf8))
        #expect(try await store.load(query, now: 1500).records[scope(7)] == nil, "expired at expires_at")

        var later = BatchWrites()
        later.now = 1600
        later.records = [record(scope(7), createdAt: 1600, ttl: 500, body: "third")]
        try await store.apply(later)
        #expect(try await store.load(query, now: 1601).records[scope(7)]?.responseBody == Array("third".utf8))
    }

    @Test("the sweeper deletes expired records in bounded batches and keeps live ones", arguments: StoreKind.available)
    func sweep(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        var writes = BatchWrites()
        writes.records = (0..<25).map { record(scope(UInt8($0)), createdAt: 0, ttl: $0 < 20 ? 100 : 10_000) }
        try await store.apply(writes)
        #expect(try await store.deleteExpiredIdempotencyRecords(now: 200, limit: 8) == 8)
        #expect(try await store.deleteExpiredIdempotencyRecords(now: 200, limit: 8) == 8)
        #expect(try await store.deleteExpiredIdempotencyRecords(now: 200, limit: 8) == 4)
        #expect(try await store.deleteExpiredIdempotencyRecords(now: 200, limit: 8) == 0)
        var query = BatchQuery()
        query.scopes = Set((20..<25).map { scope(UInt8($0)) })
        #expect(try await store.load(query, now: 200).records.count == 5)
    }

    @Test("an older vendor event does not overwrite a newer one", arguments: StoreKind.available)
    func vendorOrdering(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        let key = VendorKey(orgID: "o", vendorID: "v")
        for (occurredAt, name) in [(10, "new"), (5, "old")] {
            var writes = BatchWrites()
            writes.vendors = [VendorRecord(id: "v", orgID: "o", document: Array(name.utf8), occurredAt: Int64(occurredAt))]
            try await store.apply(writes)
        }
        var query = BatchQuery()
        query.vendors = [key]
        #expect(try await store.load(query, now: 0).vendors[key]?.document == Array("new".utf8))
    }

    @Test("runs are listed newest first and filtered by status", arguments: StoreKind.available)
    func listing(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        var writes = BatchWrites()
        writes.runs = [("a", "completed", 1), ("b", "failed", 2), ("c", "completed", 3)].map {
            RunRecord(id: $0.0, orgID: "o", workflowName: "w", status: $0.1, startedAt: Int64($0.2), document: [])
        }
        try await store.apply(writes)
        #expect(try await store.runs(statuses: [], limit: 10, offset: 0).map(\.id) == ["c", "b", "a"])
        #expect(try await store.runs(statuses: ["completed"], limit: 10, offset: 0).map(\.id) == ["c", "a"])
        #expect(try await store.runs(statuses: [], limit: 1, offset: 1).map(\.id) == ["b"])
    }

    @Test("an outbox entry closes at 16 MiB: a batch of large messages becomes several entries, in order", arguments: StoreKind.available)
    func outboxEntriesByBytes(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        var writes = BatchWrites()
        writes.outbox = (0..<7).map { OutboxMessage(topic: "t", key: nil, value: Array(repeating: UInt8($0), count: 5 << 20), headers: []) }
        try await store.apply(writes)
        let entries = try await store.pendingOutbox(limit: 10)
        #expect(entries.map(\.messages.count) == [4, 3], "an entry takes messages until it holds 16 MiB or more")
        #expect(entries.flatMap(\.messages) == writes.outbox)
    }

    @Test("a round parks refused messages and deletes its entries in one transaction; parked outputs are listed, retried (to the end of the outbox) and dropped", arguments: StoreKind.available)
    func parking(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        var writes = BatchWrites()
        writes.outbox = (0..<3).map { OutboxMessage(topic: "t", key: Array("k".utf8), value: Array("m\($0)".utf8), headers: [OutboxHeader(name: "event-type", value: Array("X".utf8))]) }
        try await store.apply(writes)
        let entry = try #require(try await store.pendingOutbox(limit: 1).first)
        let refused = ParkedOutput(message: writes.outbox[1], errorCode: "MSG_SIZE_TOO_LARGE", error: "too large", parkedAt: 42)
        try await store.finishOutbox(done: [entry.id], park: [refused])
        #expect(try await store.pendingOutbox(limit: 10).isEmpty)

        let parked = try await store.parkedOutputs(limit: 10)
        #expect(parked.count == 1)
        #expect(parked[0].message == writes.outbox[1])
        #expect(parked[0].errorCode == "MSG_SIZE_TOO_LARGE" && parked[0].error == "too large" && parked[0].parkedAt == 42)

        // Something else was written meanwhile: the retried message goes after it.
        var later = BatchWrites()
        later.outbox = [OutboxMessage(topic: "t", key: nil, value: Array("later".utf8), headers: [])]
        try await store.apply(later)
        #expect(try await store.retryParked(id: parked[0].id))
        #expect(try await store.parkedOutputs(limit: 10).isEmpty)
        #expect(try await store.pendingOutbox(limit: 10).flatMap(\.messages) == later.outbox + [writes.outbox[1]])
        #expect(try await store.retryParked(id: parked[0].id) == false, "gone once retried")

        // A parked output keeps its source partition, and goes back to it.
        let owned = PartitionID(topic: "trigger-requests", partition: 2)
        var sourced = writes.outbox[2]
        sourced.source = owned
        try await store.finishOutbox(done: [], park: [ParkedOutput(message: sourced, errorCode: "X", error: "x", parkedAt: 43)])
        let keptSource = try #require(try await store.parkedOutputs(limit: 10).first)
        #expect(keptSource.message.source == owned)
        #expect(try await store.retryParked(id: keptSource.id))
        #expect(try await store.pendingOutbox(limit: 10).last?.source == owned)

        try await store.finishOutbox(done: [], park: [refused])
        let again = try #require(try await store.parkedOutputs(limit: 10).first)
        #expect(try await store.dropParked(id: again.id))
        #expect(try await store.dropParked(id: again.id) == false)
        #expect(try await store.parkedOutputs(limit: 10).isEmpty)
    }

    @Test("a reset starts a new epoch of a partition's log at the given offset, only from the mark it was read at", arguments: StoreKind.available)
    func partitionReset(_ kind: StoreKind) async throws {
        let partition = PartitionID(topic: "trigger-requests", partition: 3)
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        var writes = BatchWrites()
        writes.watermarks[partition] = (expected: nil, next: 50)
        try await store.apply(writes)
        let mark = try #require(try await store.partitionMarks([partition])[partition])
        #expect(mark == PartitionMark(next: 50, epoch: 0))

        try await store.resetPartition(partition, from: mark, next: 0)
        #expect(try await store.partitionMarks([partition])[partition] == PartitionMark(next: 0, epoch: 1))
        var query = BatchQuery()
        query.partitions = [partition]
        let snapshot = try await store.load(query, now: 0)
        #expect(snapshot.watermarks[partition] == 0)
        #expect(snapshot.epochs[partition] == 1)
        await #expect(throws: StoreError.self, "the mark moved: no second reset from a stale read") {
            try await store.resetPartition(partition, from: mark, next: 0)
        }
        // A batch decided on the old mark cannot apply over the reset.
        var stale = BatchWrites()
        stale.watermarks[partition] = (expected: 50, next: 60)
        await #expect(throws: StoreError.self) { try await store.apply(stale) }
    }

    @Test("retention prunes finished runs and old assessments in bounded batches; running runs and newer ones stay", arguments: StoreKind.available)
    func retention(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        var writes = BatchWrites()
        writes.runs = (0..<5).map { RunRecord(id: "cbwr_old\($0)", orgID: "o", workflowName: "w", status: "completed", startedAt: 100, finishedAt: 100 + Int64($0), document: []) }
            + [RunRecord(id: "cbwr_running", orgID: "o", workflowName: "w", status: "started", startedAt: 50, document: []),
               RunRecord(id: "cbwr_new", orgID: "o", workflowName: "w", status: "failed", startedAt: 1000, finishedAt: 1000, document: [])]
        writes.assessments = [AssessmentRecord(id: "cbqsrw_old", orgID: "o", vendorID: "v", createdAt: 100, document: []),
                              AssessmentRecord(id: "cbqsrw_new", orgID: "o", vendorID: "v", createdAt: 1000, document: [])]
        try await store.apply(writes)
        #expect(try await store.pruneRuns(finishedBefore: 500, limit: 3) == 3)
        #expect(try await store.pruneRuns(finishedBefore: 500, limit: 3) == 2)
        #expect(try await store.pruneRuns(finishedBefore: 500, limit: 3) == 0)
        #expect(try await store.run(id: "cbwr_running") != nil, "a run that has not finished is never pruned")
        #expect(try await store.run(id: "cbwr_new") != nil)
        #expect(try await store.run(id: "cbwr_old0") == nil)
        #expect(try await store.pruneAssessments(createdBefore: 500, limit: 10) == 1)
        #expect(try await store.assessment(id: "cbqsrw_old") == nil)
        #expect(try await store.assessment(id: "cbqsrw_new") != nil)
    }

    @Test("outbox entries belong to their source partition, in order per source; an owner reads its partitions' entries and those of none; entries of topics no longer read are found as orphans", arguments: StoreKind.available)
    func outboxSources(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        let other = PartitionID(topic: "trigger-requests", partition: 4)
        func message(_ text: String, _ source: PartitionID?) -> OutboxMessage {
            OutboxMessage(topic: "out", key: Array(text.utf8), value: Array(text.utf8), headers: [], source: source)
        }
        var writes = BatchWrites()
        writes.outbox = [message("a1", partition), message("b1", other), message("a2", partition), message("b2", other)]
        try await store.apply(writes)
        var putBack = BatchWrites()
        putBack.outbox = [message("none", nil)]
        try await store.apply(putBack)

        let all = try await store.pendingOutbox(limit: 10)
        #expect(all.map(\.source) == [partition, other, nil], "one entry per source, in the order the sources first appear")
        #expect(all[0].messages.map(\.value) == [Array("a1".utf8), Array("a2".utf8)])
        #expect(all[1].messages.map(\.value) == [Array("b1".utf8), Array("b2".utf8)])
        #expect(try await store.pendingOutbox(limit: 10, selection: .owned([other])).map(\.source) == [other, nil])
        #expect(try await store.pendingOutbox(limit: 10, selection: .owned([])).map(\.source) == [nil], "an instance that owns nothing publishes only the entries of none")
        #expect(try await store.pendingOutbox(limit: 1, selection: .owned([partition, other])).map(\.source) == [partition])
        #expect(try await store.pendingOutbox(limit: 10, selection: .orphaned(inputTopics: [partition.topic])).isEmpty, "no entry of a topic the instances no longer read")
        var renamed = BatchWrites()
        renamed.outbox = [message("old", PartitionID(topic: "trigger-requests-before", partition: 9))]
        try await store.apply(renamed)
        #expect(try await store.pendingOutbox(limit: 10, selection: .orphaned(inputTopics: [partition.topic])).map(\.source) == [PartitionID(topic: "trigger-requests-before", partition: 9)])
    }

    @Test("two batches claiming one scope at once: one is written, the other is a conflict and writes nothing", arguments: StoreKind.available)
    func concurrentClaims(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        for round in 0..<20 {
            let claimed = scope(UInt8(round))
            let outcomes = await withTaskGroup(of: Bool.self) { group in
                for side in 0..<2 {
                    group.addTask {
                        var writes = BatchWrites()
                        writes.now = 1000
                        writes.records = [record(claimed, createdAt: 1000, body: "side \(side)")]
                        writes.runs = [RunRecord(id: "cbwr_\(round)_\(side)", orgID: "o", workflowName: "w", status: "started", startedAt: 1, document: [])]
                        do {
                            try await store.apply(writes)
                            return true
                        } catch let error as StoreError {
                            #expect(error.code == .conflict)
                            return false
                        } catch {
                            Issue.record("unexpected \(error)")
                            return false
                        }
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            #expect(outcomes.filter { $0 }.count == 1, "round \(round): exactly one claim wins")
            var query = BatchQuery()
            query.scopes = [claimed]
            let winner = try #require(try await store.load(query, now: 1001).records[claimed])
            let side = String(decoding: winner.responseBody, as: UTF8.self).last!
            #expect(try await store.run(id: "cbwr_\(round)_\(side)") != nil)
            #expect(try await store.run(id: "cbwr_\(round)_\(side == "0" ? "1" : "0")") == nil, "the losing batch is rolled back whole")
        }
    }

    @Test("two batches moving one partition's mark from the same read: one wins, the other conflicts (a fence for a batch of a partition that moved)", arguments: StoreKind.available)
    func concurrentMarks(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        var first = BatchWrites()
        first.watermarks[partition] = (expected: nil, next: 10)
        try await store.apply(first)
        let winners = await withTaskGroup(of: Int64?.self) { group in
            for next in [Int64(20), 30] {
                group.addTask {
                    var writes = BatchWrites()
                    writes.watermarks[self.partition] = (expected: 10, next: next)
                    writes.runs = [RunRecord(id: "cbwr_\(next)", orgID: "o", workflowName: "w", status: "started", startedAt: 1, document: [])]
                    return (try? await store.apply(writes)) == nil ? nil : next
                }
            }
            return await group.reduce(into: [Int64]()) { if let next = $1 { $0.append(next) } }
        }
        #expect(winners.count == 1)
        let mark = try #require(try await store.partitionMarks([partition])[partition])
        #expect(mark.next == winners.first)
        #expect(try await store.run(id: "cbwr_\(winners.first == 20 ? 30 : 20)") == nil)
    }

    @Test("a batch that names one vendor twice keeps the newer event (the later one on a tie)", arguments: StoreKind.available)
    func vendorTwiceInABatch(_ kind: StoreKind) async throws {
        let opened = try await kind.open()
        defer { opened.close() }
        let store = opened.store
        let key = VendorKey(orgID: "o", vendorID: "v")
        var writes = BatchWrites()
        writes.vendors = [(5, "a"), (9, "b"), (9, "c"), (7, "d")].map {
            VendorRecord(id: "v", orgID: "o", document: Array($0.1.utf8), occurredAt: Int64($0.0))
        }
        try await store.apply(writes)
        var query = BatchQuery()
        query.vendors = [key]
        #expect(try await store.load(query, now: 0).vendors[key]?.document == Array("c".utf8))
    }
}
