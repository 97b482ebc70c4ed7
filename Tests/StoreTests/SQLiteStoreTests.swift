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
        let settings = try await makeStore().writerSettings()
        #expect(settings.journalMode == "wal")
        #expect(settings.synchronous == 2, "FULL")
    }

    @Test("pages freed by a delete are not zeroed and written again (Debian's SQLite zeroes them by default)")
    func secureDeleteFast() async throws {
        #expect(try await makeStore().writerSettings().secureDelete == 2, "FAST")
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
}
