import Foundation
@testable import Store
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

    @Test("the writer syncs the WAL at each commit: offsets follow the transaction, so it must survive a power loss")
    func durability() async throws {
        let settings = try await makeStore().durabilitySettings()
        #expect(settings.journalMode == "wal")
        #expect(settings.synchronous == 2, "FULL")
    }

    @Test("outbox messages are packed and unpacked unchanged: keys or none, headers or none, empty values")
    func outboxCoding() {
        let messages = [
            OutboxMessage(topic: "trigger-worker.run-status", key: Array("cbwr_1".utf8), value: Array(#"{"a":1}"#.utf8), headers: [
                OutboxHeader(name: "event-type", value: Array("WorkflowRun.Started".utf8)), OutboxHeader(name: "empty", value: []),
            ]),
            OutboxMessage(topic: "dlq", key: nil, value: [], headers: []),
            OutboxMessage(topic: "é", key: [], value: Array(repeating: 0xFF, count: 70_000), headers: [OutboxHeader(name: "x", value: [0])]),
        ]
        #expect(OutboxCoding.decode(Array(OutboxCoding.encode(messages[...]))) == messages)
        #expect(OutboxCoding.decode(Array(OutboxCoding.encode(messages[1...]))) == Array(messages[1...]))
    }

    @Test("records are looked up in chunks: more scopes than one statement takes, live ones found, expired and absent ones not")
    func manyScopes() async throws {
        let store = try makeStore()
        func wide(_ n: Int) -> ScopeHash { ScopeHash(bytes: [UInt8(n & 0xFF), UInt8(n >> 8)] + Array(repeating: 7, count: 14)) }
        let count = SQLiteStore.lookupChunk * 2 + 37
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
        #expect(outbox[0].messages == writes.outbox)
        try await store.finishOutbox(done: outbox.map(\.id), park: [])
        #expect(try await store.pendingOutbox(limit: 10).isEmpty)
    }

    @Test("outbox messages keep their order, keys (or none), values and headers across entries")
    func outboxEntries() async throws {
        let store = try makeStore()
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

@Suite("SQLite store migrations")
struct MigrationTests {
    /// Writes a database as an older version left it, with Python's sqlite3 (not our code).
    func makeDatabase(at path: String, sql: String) throws {
        let sqlite = Process()
        sqlite.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        sqlite.arguments = ["python3", "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()", path, sql]
        try sqlite.run()
        sqlite.waitUntilExit()
        #expect(sqlite.terminationStatus == 0)
    }

    @Test("v2 packs the outbox rows a v1 database still holds, in order")
    func packedOutbox() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("v1-\(UUID()).sqlite").path
        // A v1 database with two messages waiting, written as v1 wrote them.
        let v1 = """
        CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
        INSERT INTO grdb_migrations VALUES ('v1');
        CREATE TABLE partition_progress (topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL, PRIMARY KEY (topic, partition)) WITHOUT ROWID;
        CREATE TABLE idempotency (scope BLOB PRIMARY KEY, org_id TEXT NOT NULL, endpoint TEXT NOT NULL, key TEXT NOT NULL, fingerprint BLOB NOT NULL, status INTEGER NOT NULL, body BLOB NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
        CREATE INDEX idempotency_expiry ON idempotency (expires_at);
        CREATE TABLE vendors (org_id TEXT NOT NULL, id TEXT NOT NULL, document BLOB NOT NULL, occurred_at INTEGER NOT NULL, PRIMARY KEY (org_id, id)) WITHOUT ROWID;
        CREATE TABLE runs (id TEXT PRIMARY KEY, org_id TEXT NOT NULL, workflow_name TEXT NOT NULL, status TEXT NOT NULL, started_at INTEGER NOT NULL, document BLOB NOT NULL) WITHOUT ROWID;
        CREATE INDEX runs_by_start ON runs (started_at);
        CREATE TABLE assessments (id TEXT PRIMARY KEY, org_id TEXT NOT NULL, vendor_id TEXT NOT NULL, document BLOB NOT NULL) WITHOUT ROWID;
        CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL, headers BLOB NOT NULL);
        INSERT INTO outbox (topic, key, value, headers) VALUES ('a', X'6B', X'7631', X'0001680000000178');
        INSERT INTO outbox (topic, key, value, headers) VALUES ('b', NULL, X'7632', X'');
        """
        try makeDatabase(at: path, sql: v1)

        let store = try SQLiteStore(path: path)
        let entries = try await store.pendingOutbox(limit: 10)
        #expect(entries.flatMap(\.messages) == [
            OutboxMessage(topic: "a", key: Array("k".utf8), value: Array("v1".utf8), headers: [OutboxHeader(name: "h", value: Array("x".utf8))]),
            OutboxMessage(topic: "b", key: nil, value: Array("v2".utf8), headers: []),
        ])
    }

    @Test("an older database keeps its records and runs across v4 and v5: scopes rehashed, finish and creation times filled in")
    func upgrade() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("v3-\(UUID()).sqlite").path
        let v1 = """
        CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
        INSERT INTO grdb_migrations VALUES ('v1'), ('v2-packed-outbox'), ('v3-rowid-tables');
        CREATE TABLE partition_progress (topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL, PRIMARY KEY (topic, partition)) WITHOUT ROWID;
        CREATE TABLE idempotency (scope BLOB NOT NULL UNIQUE, org_id TEXT NOT NULL, endpoint TEXT NOT NULL, key TEXT NOT NULL, fingerprint BLOB NOT NULL, status INTEGER NOT NULL, body BLOB NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL);
        CREATE INDEX idempotency_expiry ON idempotency (expires_at);
        CREATE TABLE vendors (org_id TEXT NOT NULL, id TEXT NOT NULL, document BLOB NOT NULL, occurred_at INTEGER NOT NULL, PRIMARY KEY (org_id, id)) WITHOUT ROWID;
        CREATE TABLE runs (id TEXT NOT NULL UNIQUE, org_id TEXT NOT NULL, workflow_name TEXT NOT NULL, status TEXT NOT NULL, started_at INTEGER NOT NULL, document BLOB NOT NULL);
        CREATE INDEX runs_by_start ON runs (started_at);
        CREATE TABLE assessments (id TEXT NOT NULL UNIQUE, org_id TEXT NOT NULL, vendor_id TEXT NOT NULL, document BLOB NOT NULL);
        CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, messages BLOB NOT NULL);
        INSERT INTO partition_progress VALUES ('tr', 0, 42);
        INSERT INTO idempotency VALUES (X'00112233445566778899AABBCCDDEEFF', 'cborg_1', 'POST /v1/assessments', 'key-1', X'01', 201, CAST('{"ok":true}' AS BLOB), 100, 999999999999);
        INSERT INTO idempotency VALUES (X'AA112233445566778899AABBCCDDEEFF', 'cborg_1', 'POST /v1/assessments', 'cut', X'01', 201, CAST('{"first":1}' AS BLOB), 100, 999999999999);
        INSERT INTO idempotency VALUES (X'BB112233445566778899AABBCCDDEEFF', 'cborg_1', 'POST /v1/assessments', 'cut', X'01', 201, CAST('{"second":2}' AS BLOB), 200, 999999999999);
        INSERT INTO runs VALUES ('cbwr_done', 'cborg_1', 'w', 'completed', 500, CAST('{}' AS BLOB)), ('cbwr_open', 'cborg_1', 'w', 'started', 600, CAST('{}' AS BLOB));
        INSERT INTO assessments VALUES ('cbqsrw_1', 'cborg_1', 'cbvndr_1', CAST('{"created_at":1234,"id":"cbqsrw_1"}' AS BLOB));
        """
        try makeDatabase(at: path, sql: v1)

        let store = try SQLiteStore(path: path)
        var query = BatchQuery()
        let scope = ScopeHash(orgID: "cborg_1", endpoint: "POST /v1/assessments", key: "key-1")
        query.scopes = [scope]
        let partition = PartitionID(topic: "tr", partition: 0)
        query.partitions = [partition]
        let snapshot = try await store.load(query, now: 1000)
        #expect(snapshot.records[scope]?.responseBody == Array(#"{"ok":true}"#.utf8), "a replay after the upgrade still finds its record")
        // Two keys stored cut short to one hash alike: the store still opens, with the later record.
        var cut = BatchQuery()
        cut.scopes = [ScopeHash(orgID: "cborg_1", endpoint: "POST /v1/assessments", key: "cut")]
        #expect(try await store.load(cut, now: 1000).records.values.map(\.responseBody) == [Array(#"{"second":2}"#.utf8)])
        #expect(snapshot.watermarks[partition] == 42)
        #expect(try await store.partitionMarks([partition])[partition] == PartitionMark(next: 42, epoch: 0, lastDigest: nil))
        #expect(try await store.run(id: "cbwr_done")?.finishedAt == 500)
        #expect(try await store.run(id: "cbwr_open")?.finishedAt == nil)
        #expect(try await store.assessment(id: "cbqsrw_1")?.createdAt == 1234)
    }

    @Test("an outbox entry closes at 16 MiB: a batch of large messages becomes several entries, in order")
    func outboxEntriesByBytes() async throws {
        let store = try makeStore()
        var writes = BatchWrites()
        writes.outbox = (0..<7).map { OutboxMessage(topic: "t", key: nil, value: Array(repeating: UInt8($0), count: 5 << 20), headers: []) }
        try await store.apply(writes)
        let entries = try await store.pendingOutbox(limit: 10)
        #expect(entries.map(\.messages.count) == [4, 3], "an entry takes messages until it holds 16 MiB or more")
        #expect(entries.flatMap(\.messages) == writes.outbox)
    }

    @Test("a round parks refused messages and deletes its entries in one transaction; parked outputs are listed, retried (to the end of the outbox) and dropped")
    func parking() async throws {
        let store = try makeStore()
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

        try await store.finishOutbox(done: [], park: [refused])
        let again = try #require(try await store.parkedOutputs(limit: 10).first)
        #expect(try await store.dropParked(id: again.id))
        #expect(try await store.dropParked(id: again.id) == false)
        #expect(try await store.parkedOutputs(limit: 10).isEmpty)
    }

    @Test("a reset starts a new epoch of a partition's log at the given offset, only from the mark it was read at")
    func partitionReset() async throws {
        let partition = PartitionID(topic: "trigger-requests", partition: 3)
        let store = try makeStore()
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

    @Test("retention prunes finished runs and old assessments in bounded batches; running runs and newer ones stay")
    func retention() async throws {
        let store = try makeStore()
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
}
