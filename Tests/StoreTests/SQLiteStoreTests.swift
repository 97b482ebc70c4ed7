import Foundation
import Store
import Testing

/// A fresh database file per test.
func makeStore() throws -> SQLiteStore {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("store-\(UUID()).sqlite").path
    return try SQLiteStore(path: path)
}

func scope(_ n: UInt8) -> ScopeHash { ScopeHash(bytes: [n] + Array(repeating: 0, count: 15)) }

func record(_ scope: ScopeHash, createdAt: Timestamp, ttl: Timestamp = 1000, body: String = #"{"ok":true}"#) -> IdempotencyRecord {
    IdempotencyRecord(
        scope: scope, orgID: "cborg_1", endpoint: "POST /v1/assessments", key: "k", fingerprint: [1, 2, 3],
        responseStatus: 201, responseBody: Array(body.utf8), createdAt: createdAt, expiresAt: createdAt + ttl
    )
}

@Suite("SQLite store")
struct SQLiteStoreTests {
    let partition = PartitionID(topic: "trigger-requests", partition: 3)

    @Test("a batch is written in one transaction and read back")
    func roundTrip() async throws {
        let store = try makeStore()
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
        #expect(outbox[0].headers == writes.outbox[0].headers)
        #expect(outbox[0].value == Array("v".utf8))
        try await store.deleteOutbox(ids: outbox.map(\.id))
        #expect(try await store.pendingOutbox(limit: 10).isEmpty)
    }

    @Test("a watermark that moved since it was read is a conflict, and nothing of the batch is written")
    func watermarkConflict() async throws {
        let store = try makeStore()
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

    @Test("a live idempotency record cannot be claimed twice; an expired one is replaced")
    func claims() async throws {
        let store = try makeStore()
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

    @Test("the sweeper deletes expired records in bounded batches and keeps live ones")
    func sweep() async throws {
        let store = try makeStore()
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

    @Test("an older vendor event does not overwrite a newer one")
    func vendorOrdering() async throws {
        let store = try makeStore()
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

    @Test("runs are listed newest first and filtered by status")
    func listing() async throws {
        let store = try makeStore()
        var writes = BatchWrites()
        writes.runs = [("a", "completed", 1), ("b", "failed", 2), ("c", "completed", 3)].map {
            RunRecord(id: $0.0, orgID: "o", workflowName: "w", status: $0.1, startedAt: Int64($0.2), document: [])
        }
        try await store.apply(writes)
        #expect(try await store.runs(statuses: [], limit: 10, offset: 0).map(\.id) == ["c", "b", "a"])
        #expect(try await store.runs(statuses: ["completed"], limit: 10, offset: 0).map(\.id) == ["c", "a"])
        #expect(try await store.runs(statuses: [], limit: 1, offset: 1).map(\.id) == ["b"])
    }

    @Test("STORE_URL paths: relative and absolute")
    func urls() throws {
        #expect(try StoreFactory.sqlitePath(from: "sqlite://data/trigger-worker.sqlite") == "data/trigger-worker.sqlite")
        #expect(try StoreFactory.sqlitePath(from: "sqlite:///var/lib/tw.sqlite") == "/var/lib/tw.sqlite")
        #expect(throws: StoreError.self) { try StoreFactory.sqlitePath(from: "sqlite://") }
    }
}
