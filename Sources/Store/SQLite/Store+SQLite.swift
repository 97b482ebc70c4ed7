import Foundation
import GRDB

/// The embedded store: one SQLite file in WAL mode, for a single worker instance.
///
/// Small rows keyed at random live in `WITHOUT ROWID` tables; large ones (runs,
/// responses) in rowid tables with a unique index on their key. Statements are
/// prepared once per connection and reused across a batch: random-key B-tree
/// inserts and per-statement overhead dominate the cost of a batch.
public final class SQLiteStore: Store {
    private let pool: DatabasePool
    /// The database file.
    public let path: String

    /// Opens (creating when missing) the database at `path` and migrates it.
    public init(path: String) throws {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            // A batch writes megabytes (runs, events): checkpoint (and fsync) every
            // ~40 MiB of WAL instead of every 4 MiB, i.e. every few batches, not every one.
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 10000")
            // The writer touches the run, task, outbox and dedupe B-trees of every batch:
            // with SQLite's default 2 MiB page cache it re-read pages from the file for
            // most of them (pread was 8% of the engine bench's profile). 64 MiB for the
            // writer, 8 MiB for each reader (runs completed ÷ accepted 0.36 → 0.40).
            try db.execute(sql: "PRAGMA cache_size = \(db.configuration.readonly ? -8192 : -65536)")
            // Debian builds SQLite with SECURE_DELETE: every page a delete frees is zeroed,
            // so written to the WAL and checkpointed again. The outbox frees its published
            // entries (a batch's events, many overflow pages each) in every round: measured
            // with a WAL hook (`bench --engine-only`, 60,000 runs), deleting them wrote 84,257
            // pages, 1.4 per run, and took 0.81 s of the writer's 7.8; with FAST, 819 pages
            // and 0.19 s. FAST still zeroes what a delete leaves inside the pages it writes;
            // freed pages keep their old bytes until reused, as with SQLite's own default.
            try db.execute(sql: "PRAGMA secure_delete = FAST")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            // DatabasePool sets WAL with synchronous NORMAL on its writer, which may
            // lose the last commits on power loss. A batch's Kafka offsets are committed
            // after its transaction, so the transaction must survive that too: FULL
            // syncs the WAL at each commit, one fsync per batch of hundreds of messages.
            try pool.writeWithoutTransaction { try $0.execute(sql: "PRAGMA synchronous = FULL") }
            try Self.migrator.migrate(pool)
        } catch {
            throw StoreError(code: .unavailable, message: "cannot open the SQLite store at \(path): \(error)")
        }
    }

    /// The journal mode, `synchronous` and `secure_delete` levels the writer runs with
    /// (for tests and diagnostics).
    func writerSettings() async throws -> (journalMode: String, synchronous: Int, secureDelete: Int) {
        try await pool.write { db in
            (
                try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "", try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1,
                try Int.fetchOne(db, sql: "PRAGMA secure_delete") ?? -1
            )
        }
    }

    /// The schema, versioned: add a migration for each change, never edit one.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE partition_progress (
                    topic TEXT NOT NULL,
                    partition INTEGER NOT NULL,
                    next_offset INTEGER NOT NULL,
                    PRIMARY KEY (topic, partition)
                ) WITHOUT ROWID;
                CREATE TABLE idempotency (
                    scope BLOB PRIMARY KEY,
                    org_id TEXT NOT NULL,
                    endpoint TEXT NOT NULL,
                    key TEXT NOT NULL,
                    fingerprint BLOB NOT NULL,
                    status INTEGER NOT NULL,
                    body BLOB NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL
                ) WITHOUT ROWID;
                CREATE INDEX idempotency_expiry ON idempotency (expires_at);
                CREATE TABLE vendors (
                    org_id TEXT NOT NULL,
                    id TEXT NOT NULL,
                    document BLOB NOT NULL,
                    occurred_at INTEGER NOT NULL,
                    PRIMARY KEY (org_id, id)
                ) WITHOUT ROWID;
                CREATE TABLE runs (
                    id TEXT PRIMARY KEY,
                    org_id TEXT NOT NULL,
                    workflow_name TEXT NOT NULL,
                    status TEXT NOT NULL,
                    started_at INTEGER NOT NULL,
                    document BLOB NOT NULL
                ) WITHOUT ROWID;
                CREATE INDEX runs_by_start ON runs (started_at);
                CREATE TABLE assessments (
                    id TEXT PRIMARY KEY,
                    org_id TEXT NOT NULL,
                    vendor_id TEXT NOT NULL,
                    document BLOB NOT NULL
                ) WITHOUT ROWID;
                CREATE TABLE outbox (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    topic TEXT NOT NULL,
                    key BLOB,
                    value BLOB NOT NULL,
                    headers BLOB NOT NULL
                );
                """)
        }
        // One outbox row per batch (up to 1,000 messages) instead of one per
        // message: five fewer random inserts and deletes per request. Rows still
        // waiting are carried over, in order.
        migrator.registerMigration("v2-packed-outbox") { db in
            try db.execute(sql: "ALTER TABLE outbox RENAME TO outbox_v1")
            try db.execute(sql: "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, messages BLOB NOT NULL)")
            let pending = try Row.fetchAll(db, sql: "SELECT topic, key, value, headers FROM outbox_v1 ORDER BY id").map { row in
                OutboxMessage(topic: row[0], key: (row[1] as Data?).map { Array($0) }, value: Array(row[2] as Data), headers: V1HeaderCoding.decode(Array(row[3] as Data)))
            }
            var start = 0
            while start < pending.count {
                let end = min(start + OutboxCoding.maxMessagesPerEntry, pending.count)
                try db.execute(sql: "INSERT INTO outbox (messages) VALUES (?)", arguments: [OutboxCoding.encode(pending[start..<end])])
                start = end
            }
            try db.execute(sql: "DROP TABLE outbox_v1")
        }
        // Rows of a kilobyte and more (runs, responses) make WITHOUT ROWID B-trees
        // split pages on every random-key insert; a rowid table with a unique index
        // on the key appends instead (measured: a batch's writes ~3.5x faster).
        migrator.registerMigration("v3-rowid-tables") { db in
            try db.execute(sql: """
                CREATE TABLE idempotency_v3 (
                    scope BLOB NOT NULL UNIQUE,
                    org_id TEXT NOT NULL,
                    endpoint TEXT NOT NULL,
                    key TEXT NOT NULL,
                    fingerprint BLOB NOT NULL,
                    status INTEGER NOT NULL,
                    body BLOB NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL
                );
                INSERT INTO idempotency_v3 SELECT * FROM idempotency;
                DROP TABLE idempotency;
                ALTER TABLE idempotency_v3 RENAME TO idempotency;
                CREATE INDEX idempotency_expiry ON idempotency (expires_at);

                CREATE TABLE runs_v3 (
                    id TEXT NOT NULL UNIQUE,
                    org_id TEXT NOT NULL,
                    workflow_name TEXT NOT NULL,
                    status TEXT NOT NULL,
                    started_at INTEGER NOT NULL,
                    document BLOB NOT NULL
                );
                INSERT INTO runs_v3 SELECT * FROM runs;
                DROP TABLE runs;
                ALTER TABLE runs_v3 RENAME TO runs;
                CREATE INDEX runs_by_start ON runs (started_at);

                CREATE TABLE assessments_v3 (
                    id TEXT NOT NULL UNIQUE,
                    org_id TEXT NOT NULL,
                    vendor_id TEXT NOT NULL,
                    document BLOB NOT NULL
                );
                INSERT INTO assessments_v3 SELECT * FROM assessments;
                DROP TABLE assessments;
                ALTER TABLE assessments_v3 RENAME TO assessments;
                """)
        }
        // Hardening: partition epochs (a log found reset starts a new one), parked
        // outputs, and the times retention counts from.
        migrator.registerMigration("v4-epochs-parking-retention") { db in
            try db.execute(sql: """
                ALTER TABLE partition_progress ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE partition_progress ADD COLUMN last_digest BLOB;
                CREATE TABLE parked_outputs (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    parked_at INTEGER NOT NULL,
                    error_code TEXT NOT NULL,
                    error TEXT NOT NULL,
                    message BLOB NOT NULL
                );
                ALTER TABLE runs ADD COLUMN finished_at INTEGER;
                UPDATE runs SET finished_at = started_at WHERE status != 'started';
                CREATE INDEX runs_by_finish ON runs (finished_at) WHERE finished_at IS NOT NULL;
                ALTER TABLE assessments ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
                UPDATE assessments SET created_at = COALESCE(json_extract(CAST(document AS TEXT), '$.created_at'), 0);
                CREATE INDEX assessments_by_creation ON assessments (created_at);
                """)
        }
        // Scopes are hashed over length-prefixed parts now (they were joined with '|'):
        // records written before keep answering replays under their new hash. Two rows
        // that hash alike (keys that were stored cut short at a NUL) keep the later one.
        migrator.registerMigration("v5-length-prefixed-scopes") { db in
            let select = try db.makeStatement(sql: "SELECT rowid, org_id, endpoint, key FROM idempotency WHERE rowid > ? ORDER BY rowid LIMIT 10000")
            let update = try db.makeStatement(sql: "UPDATE OR REPLACE idempotency SET scope = ? WHERE rowid = ?")
            var last: Int64 = 0
            while true {
                let rows = try Row.fetchAll(select, arguments: [last])
                guard let final = rows.last else { break }
                for row in rows {
                    try update.execute(arguments: [Data(ScopeHash(orgID: row[1], endpoint: row[2], key: row[3]).bytes), row[0] as Int64])
                }
                last = final[0]
            }
        }
        // Several instances: an outbox entry belongs to the partition whose inputs it
        // answers, and is published by the instance that owns that partition.
        migrator.registerMigration("v6-outbox-sources") { db in
            try db.execute(sql: """
                ALTER TABLE outbox ADD COLUMN source_topic TEXT;
                ALTER TABLE outbox ADD COLUMN source_partition INTEGER;
                """)
        }
        // A parked output keeps its source partition, and goes back to it when retried.
        migrator.registerMigration("v7-parked-sources") { db in
            try db.execute(sql: """
                ALTER TABLE parked_outputs ADD COLUMN source_topic TEXT;
                ALTER TABLE parked_outputs ADD COLUMN source_partition INTEGER;
                """)
        }
        // The durable engine: a run's steps execute after intake, claimed with leases.
        migrator.registerMigration("v8-engine-tasks") { db in
            try db.execute(sql: """
                CREATE TABLE run_tasks (
                    run_id TEXT PRIMARY KEY,
                    org_id TEXT NOT NULL,
                    due_at INTEGER NOT NULL,
                    lease_owner TEXT,
                    lease_until INTEGER NOT NULL DEFAULT 0,
                    fence INTEGER NOT NULL DEFAULT 0,
                    state BLOB NOT NULL,
                    source_topic TEXT,
                    source_partition INTEGER
                );
                CREATE INDEX run_tasks_by_due ON run_tasks (due_at);
                """)
        }
        // Steps that wait for events: the events kept, what each waiting run waits for,
        // and a run woken while it was being performed (its commit keeps it due).
        migrator.registerMigration("v9-engine-events") { db in
            try db.execute(sql: """
                CREATE TABLE engine_events (
                    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
                    org_id TEXT NOT NULL,
                    event_id TEXT NOT NULL,
                    event_type TEXT NOT NULL,
                    vendor_id TEXT,
                    run_id TEXT,
                    data BLOB NOT NULL,
                    received_at INTEGER NOT NULL,
                    UNIQUE (org_id, event_id)
                );
                CREATE INDEX engine_events_by_type ON engine_events (org_id, event_type, sequence);
                CREATE INDEX engine_events_by_vendor ON engine_events (org_id, event_type, vendor_id, sequence);
                CREATE TABLE run_waits (
                    run_id TEXT PRIMARY KEY,
                    org_id TEXT NOT NULL,
                    event_type TEXT NOT NULL,
                    vendor_id TEXT
                );
                CREATE INDEX run_waits_by_event ON run_waits (org_id, event_type, vendor_id);
                ALTER TABLE run_tasks ADD COLUMN woken INTEGER NOT NULL DEFAULT 0;
                """)
        }
        // for_each: items are tasks of their run, held back by its concurrency, and their
        // results are kept for the for_each and aggregate steps.
        migrator.registerMigration("v10-for-each-items") { db in
            try db.execute(sql: """
                ALTER TABLE run_tasks ADD COLUMN parent_id TEXT;
                ALTER TABLE run_tasks ADD COLUMN slots INTEGER NOT NULL DEFAULT 0;
                CREATE INDEX run_tasks_by_parent ON run_tasks (parent_id, due_at) WHERE parent_id IS NOT NULL;
                CREATE TABLE run_items (
                    run_id TEXT NOT NULL,
                    step_id TEXT NOT NULL,
                    item_key TEXT NOT NULL,
                    status TEXT NOT NULL,
                    response BLOB,
                    finished_at INTEGER NOT NULL,
                    PRIMARY KEY (run_id, step_id, item_key)
                );
                """)
        }
        // When the next task can be claimed (due, its lease run out), read from an index.
        migrator.registerMigration("v11-next-claimable-index") { db in
            try db.execute(sql: "CREATE INDEX run_tasks_by_claimable ON run_tasks (max(due_at, lease_until))")
        }
        // The HTTP API lists an org's runs newest first.
        migrator.registerMigration("v12-runs-by-org") { db in
            try db.execute(sql: "CREATE INDEX runs_by_org_start ON runs (org_id, started_at)")
        }
        return migrator
    }

    // MARK: Batches

    /// Scopes looked up per statement (SQLite allows 32,766 parameters).
    static let lookupChunk = 500

    public func load(_ query: BatchQuery, now: Timestamp) async throws -> BatchSnapshot {
        try await pool.read { db in
            var snapshot = BatchSnapshot()
            for (partition, mark) in try Self.marks(Array(query.partitions), db) {
                snapshot.watermarks[partition] = mark.next
                if mark.epoch != 0 { snapshot.epochs[partition] = mark.epoch }
            }
            // One statement per chunk of scopes rather than one per scope.
            let scopes = Array(query.scopes)
            for start in stride(from: 0, to: scopes.count, by: Self.lookupChunk) {
                let chunk = scopes[start..<min(start + Self.lookupChunk, scopes.count)]
                let placeholders = Array(repeating: "?", count: chunk.count).joined(separator: ",")
                let record = try db.cachedStatement(sql: """
                    SELECT scope, org_id, endpoint, key, fingerprint, status, body, created_at, expires_at
                    FROM idempotency WHERE scope IN (\(placeholders)) AND expires_at > ?
                    """)
                var arguments = StatementArguments(chunk.map { Data($0.bytes) })
                arguments += [now]
                let rows = try Row.fetchCursor(record, arguments: arguments)
                while let row = try rows.next() {
                    let scope = ScopeHash(bytes: Array(row[0] as Data))
                    snapshot.records[scope] = IdempotencyRecord(
                        scope: scope, orgID: row[1], endpoint: row[2], key: row[3],
                        fingerprint: Array(row[4] as Data), responseStatus: row[5], responseBody: Array(row[6] as Data),
                        createdAt: row[7], expiresAt: row[8]
                    )
                }
            }
            let vendor = try db.cachedStatement(sql: "SELECT document, occurred_at FROM vendors WHERE org_id = ? AND id = ?")
            for key in query.vendors {
                if let row = try Row.fetchOne(vendor, arguments: [key.orgID, key.vendorID]) {
                    snapshot.vendors[key] = VendorRecord(id: key.vendorID, orgID: key.orgID, document: Array(row[0] as Data), occurredAt: row[1])
                }
            }
            let run = try db.cachedStatement(sql: "SELECT id, org_id, workflow_name, status, started_at, finished_at, document FROM runs WHERE id = ?")
            let task = try db.cachedStatement(sql: "SELECT \(Self.taskColumns) FROM run_tasks WHERE run_id = ?")
            for id in query.runs {
                guard let row = try Row.fetchOne(run, arguments: [id]) else { continue }
                snapshot.runs[id] = RunSnapshot(record: Self.run(row), task: try Row.fetchOne(task, arguments: [id]).map { Self.task($0) })
            }
            return snapshot
        }
    }

    public func apply(_ writes: BatchWrites) async throws {
        guard !writes.isEmpty else { return }
        do {
            try await pool.write { db in try Self.apply(writes, db) }
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            // A run or assessment id exists already: another writer handled these inputs.
            throw StoreError(code: .conflict, message: "a row the batch creates exists already: \(error.message ?? "")")
        }
    }

    private static func apply(_ writes: BatchWrites, _ db: Database) throws {
        let insertWatermark = try db.cachedStatement(sql: "INSERT INTO partition_progress (topic, partition, next_offset, last_digest) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
        let moveWatermark = try db.cachedStatement(sql: "UPDATE partition_progress SET next_offset = ?, last_digest = ? WHERE topic = ? AND partition = ? AND next_offset = ? AND epoch = ?")
        for (partition, change) in writes.watermarks {
            let digest = writes.lastDigests[partition].map { Data($0) }
            if let expected = change.expected {
                try moveWatermark.execute(arguments: [change.next, digest, partition.topic, partition.partition, expected, writes.epochs[partition] ?? 0])
            } else {
                try insertWatermark.execute(arguments: [partition.topic, partition.partition, change.next, digest])
            }
            if db.changesCount != 1 {
                throw StoreError(code: .conflict, message: "the watermark of \(partition.topic)[\(partition.partition)] moved since it was read")
            }
        }

        // A live record with the same scope is a conflict; an expired one is replaced.
        let insertRecord = try db.cachedStatement(sql: """
            INSERT INTO idempotency (scope, org_id, endpoint, key, fingerprint, status, body, created_at, expires_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (scope) DO UPDATE SET
                org_id = excluded.org_id, endpoint = excluded.endpoint, key = excluded.key,
                fingerprint = excluded.fingerprint, status = excluded.status, body = excluded.body,
                created_at = excluded.created_at, expires_at = excluded.expires_at
            WHERE idempotency.expires_at <= ?
            """)
        for record in writes.records {
            try insertRecord.execute(arguments: [
                Data(record.scope.bytes), record.orgID, record.endpoint, record.key, Data(record.fingerprint),
                record.responseStatus, Data(record.responseBody), record.createdAt, record.expiresAt, writes.now,
            ])
            if db.changesCount != 1 {
                throw StoreError(code: .conflict, message: "idempotency scope \(record.scope) was claimed since it was read")
            }
        }

        let upsertVendor = try db.cachedStatement(sql: """
            INSERT INTO vendors (org_id, id, document, occurred_at) VALUES (?, ?, ?, ?)
            ON CONFLICT (org_id, id) DO UPDATE SET document = excluded.document, occurred_at = excluded.occurred_at
            WHERE excluded.occurred_at >= vendors.occurred_at
            """)
        for vendor in writes.vendors {
            try upsertVendor.execute(arguments: [vendor.orgID, vendor.id, Data(vendor.document), vendor.occurredAt])
        }

        let insertRun = try db.cachedStatement(sql: "INSERT INTO runs (id, org_id, workflow_name, status, started_at, finished_at, document) VALUES (?, ?, ?, ?, ?, ?, ?)")
        for run in writes.runs {
            try insertRun.execute(arguments: [run.id, run.orgID, run.workflowName, run.status, run.startedAt, run.finishedAt, Data(run.document)])
        }

        let insertAssessment = try db.cachedStatement(sql: "INSERT INTO assessments (id, org_id, vendor_id, created_at, document) VALUES (?, ?, ?, ?, ?)")
        for assessment in writes.assessments {
            try insertAssessment.execute(arguments: [assessment.id, assessment.orgID, assessment.vendorID, assessment.createdAt, Data(assessment.document)])
        }
        try appendOutbox(writes.outbox, db)
        try insertTasks(writes.tasks, db)
        try record(writes.events, now: writes.now, db)
        try cancel(writes.cancels, now: writes.now, db)
    }

    /// Keeps the events and wakes the runs waiting for them.
    private static func record(_ events: [EngineEvent], now: Timestamp, _ db: Database) throws {
        let insert = try db.cachedStatement(sql: """
            INSERT INTO engine_events (org_id, event_id, event_type, vendor_id, run_id, data, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (org_id, event_id) DO NOTHING
            """)
        let wake = try db.cachedStatement(sql: """
            UPDATE run_tasks SET due_at = min(due_at, ?1), woken = 1
             WHERE run_id IN (SELECT run_id FROM run_waits WHERE org_id = ?2 AND event_type = ?3 AND (vendor_id IS NULL OR vendor_id = ?4))
               AND (?5 IS NULL OR run_id = ?5 OR run_id LIKE ?5 || '/%')
            """)
        for event in events {
            try insert.execute(arguments: [event.orgID, event.eventID, event.type, event.vendorID, event.runID, Data(event.data), event.receivedAt])
            guard db.changesCount == 1 else { continue }
            try wake.execute(arguments: [now, event.orgID, event.type, event.vendorID, event.runID])
        }
    }

    private static func cancel(_ cancels: [RunCancel], now: Timestamp, _ db: Database) throws {
        let deleteTask = try db.cachedStatement(sql: "DELETE FROM run_tasks WHERE run_id = ? AND fence = ?")
        let updateRun = try db.cachedStatement(sql: "UPDATE runs SET status = 'canceled', finished_at = ?, document = ? WHERE id = ?")
        let deleteWait = try db.cachedStatement(sql: "DELETE FROM run_waits WHERE run_id = ?")
        // A canceled child run wakes the run (or item) that waits for it.
        let wakeParent = try db.cachedStatement(sql: """
            UPDATE run_tasks SET due_at = min(due_at, ?), woken = 1
             WHERE run_id = (SELECT parent_id FROM run_tasks WHERE run_id = ? AND slots = 0)
            """)
        for cancel in cancels {
            try wakeParent.execute(arguments: [now, cancel.runID])
            try deleteTask.execute(arguments: [cancel.runID, cancel.fence])
            if db.changesCount != 1 {
                throw StoreError(code: .conflict, message: "run \(cancel.runID) moved on since it was read")
            }
            try deleteWait.execute(arguments: [cancel.runID])
            // Its for_each's items go with it (its child runs are runs of their own and go on).
            try db.execute(sql: "DELETE FROM run_waits WHERE run_id IN (SELECT run_id FROM run_tasks WHERE parent_id = ? AND slots > 0)", arguments: [cancel.runID])
            try db.execute(sql: "DELETE FROM run_tasks WHERE parent_id = ? AND slots > 0", arguments: [cancel.runID])
            try updateRun.execute(arguments: [cancel.finishedAt, Data(cancel.document), cancel.runID])
        }
    }

    private static func insertTasks(_ tasks: [EngineTask], _ db: Database) throws {
        let insert = try db.cachedStatement(sql: "INSERT INTO run_tasks (run_id, org_id, due_at, state, source_topic, source_partition) VALUES (?, ?, ?, ?, ?, ?)")
        for task in tasks {
            try insert.execute(arguments: [task.runID, task.orgID, task.dueAt, Data(task.state), task.source?.topic, task.source?.partition])
        }
    }

    /// Appends messages to the outbox, in entries of one source partition each
    /// (see ``OutboxCoding/entries(_:)``).
    private static func appendOutbox(_ messages: [OutboxMessage], _ db: Database) throws {
        let insertOutbox = try db.cachedStatement(sql: "INSERT INTO outbox (source_topic, source_partition, messages) VALUES (?, ?, ?)")
        for entry in OutboxCoding.entries(messages) {
            try insertOutbox.execute(arguments: [entry.source?.topic, entry.source?.partition, OutboxCoding.encode(entry.messages)])
        }
    }

    /// The marks of `partitions`.
    private static func marks(_ partitions: [PartitionID], _ db: Database) throws -> [PartitionID: PartitionMark] {
        let select = try db.cachedStatement(sql: "SELECT next_offset, epoch, last_digest FROM partition_progress WHERE topic = ? AND partition = ?")
        var marks: [PartitionID: PartitionMark] = [:]
        for partition in partitions {
            if let row = try Row.fetchOne(select, arguments: [partition.topic, partition.partition]) {
                marks[partition] = PartitionMark(next: row[0], epoch: row[1], lastDigest: (row[2] as Data?).map { Array($0) })
            }
        }
        return marks
    }

    // MARK: Outbox

    public var isShared: Bool { false }

    public func pendingOutbox(limit: Int, selection: OutboxSelection) async throws -> [OutboxEntry] {
        try await pool.read { db in
            var sql = "SELECT id, source_topic, source_partition, messages FROM outbox"
            var arguments: StatementArguments = []
            switch selection {
            case .all:
                break
            case .owned(let sources):
                sql += " WHERE source_topic IS NULL"
                if !sources.isEmpty {
                    sql += " OR (source_topic, source_partition) IN (VALUES \(Array(repeating: "(?, ?)", count: sources.count).joined(separator: ",")))"
                    for source in sources { arguments += [source.topic, source.partition] }
                }
            case .orphaned(let topics):
                sql += " WHERE source_topic IS NOT NULL"
                if !topics.isEmpty {
                    sql += " AND source_topic NOT IN (\(Array(repeating: "?", count: topics.count).joined(separator: ",")))"
                    arguments += StatementArguments(Array(topics))
                }
            }
            sql += " ORDER BY id LIMIT ?"
            arguments += [limit]
            return try Row.fetchAll(db, sql: sql, arguments: arguments).map { row in
                let topic: String? = row[1]
                return OutboxEntry(
                    id: row[0], source: topic.map { PartitionID(topic: $0, partition: row[2]) },
                    messages: OutboxCoding.decode(Array(row[3] as Data))
                )
            }
        }
    }

    public func finishOutbox(done: [Int64], park: [ParkedOutput]) async throws {
        guard !done.isEmpty || !park.isEmpty else { return }
        try await pool.write { db in
            let insert = try db.cachedStatement(sql: "INSERT INTO parked_outputs (parked_at, error_code, error, message, source_topic, source_partition) VALUES (?, ?, ?, ?, ?, ?)")
            for output in park {
                try insert.execute(arguments: [
                    output.parkedAt, output.errorCode, output.error, OutboxCoding.encode([output.message][...]),
                    output.message.source?.topic, output.message.source?.partition,
                ])
            }
            let delete = try db.cachedStatement(sql: "DELETE FROM outbox WHERE id = ?")
            for id in done { try delete.execute(arguments: [id]) }
        }
    }

    public func parkedOutputs(limit: Int) async throws -> [ParkedOutput] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT id, parked_at, error_code, error, message, source_topic, source_partition FROM parked_outputs ORDER BY id LIMIT ?", arguments: [limit]).compactMap { row in
                guard var message = OutboxCoding.decode(Array(row[4] as Data)).first else { return nil }
                message.source = (row[5] as String?).map { PartitionID(topic: $0, partition: row[6]) }
                return ParkedOutput(id: row[0], message: message, errorCode: row[2], error: row[3], parkedAt: row[1])
            }
        }
    }

    public func retryParked(id: Int64) async throws -> Bool {
        try await pool.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT message, source_topic, source_partition FROM parked_outputs WHERE id = ?", arguments: [id]) else { return false }
            let source = (row[1] as String?).map { PartitionID(topic: $0, partition: row[2]) }
            try Self.appendOutbox(OutboxCoding.decode(Array(row[0] as Data)).map { message in
                var message = message
                message.source = source
                return message
            }, db)
            try db.execute(sql: "DELETE FROM parked_outputs WHERE id = ?", arguments: [id])
            return true
        }
    }

    public func dropParked(id: Int64) async throws -> Bool {
        try await pool.write { db in
            try db.execute(sql: "DELETE FROM parked_outputs WHERE id = ?", arguments: [id])
            return db.changesCount == 1
        }
    }

    // MARK: Partitions

    public func partitionMarks(_ partitions: [PartitionID]) async throws -> [PartitionID: PartitionMark] {
        try await pool.read { db in try Self.marks(partitions, db) }
    }

    public func resetPartition(_ partition: PartitionID, from mark: PartitionMark, next: Int64) async throws {
        try await pool.write { db in
            try db.execute(
                sql: "UPDATE partition_progress SET next_offset = ?, epoch = epoch + 1, last_digest = NULL WHERE topic = ? AND partition = ? AND next_offset = ? AND epoch = ?",
                arguments: [next, partition.topic, partition.partition, mark.next, mark.epoch]
            )
            if db.changesCount != 1 {
                throw StoreError(code: .conflict, message: "the mark of \(partition.topic)[\(partition.partition)] moved since it was read")
            }
        }
    }

    // MARK: Expiry and retention

    public func deleteExpiredIdempotencyRecords(now: Timestamp, limit: Int) async throws -> Int {
        try await deleteOldest(from: "idempotency", by: "expires_at", where: "expires_at <= ?", now, limit: limit)
    }

    public func pruneRuns(finishedBefore before: Int64, limit: Int) async throws -> Int {
        try await deleteOldest(from: "runs", by: "finished_at", where: "finished_at IS NOT NULL AND finished_at < ?", before, limit: limit)
    }

    public func pruneEngineHistory(before: Int64, limit: Int) async throws -> Int {
        let events = try await deleteOldest(from: "engine_events", by: "received_at", where: "received_at < ?", before * 1000, limit: limit)
        let items = try await deleteOldest(from: "run_items", by: "finished_at", where: "finished_at < ?", before, limit: max(0, limit - events))
        return events + items
    }

    public func pruneAssessments(createdBefore before: Int64, limit: Int) async throws -> Int {
        try await deleteOldest(from: "assessments", by: "created_at", where: "created_at < ?", before, limit: limit)
    }

    /// Deletes up to `limit` rows of `table` that match `condition`, oldest by `column`
    /// first, in one short transaction; returns how many.
    private func deleteOldest(from table: String, by column: String, where condition: String, _ bound: Int64, limit: Int) async throws -> Int {
        try await pool.write { db in
            try db.execute(
                sql: "DELETE FROM \(table) WHERE rowid IN (SELECT rowid FROM \(table) WHERE \(condition) ORDER BY \(column) LIMIT ?)",
                arguments: [bound, limit]
            )
            return db.changesCount
        }
    }

    // MARK: The engine's work

    private static let taskColumns = "run_id, org_id, due_at, state, source_topic, source_partition, fence, lease_owner, lease_until, parent_id, slots"

    private static func task(_ row: Row, tookOver: Bool = false) -> EngineTask {
        let topic: String? = row[4]
        return EngineTask(
            runID: row[0], orgID: row[1], dueAt: row[2], state: Array(row[3] as Data),
            source: topic.map { PartitionID(topic: $0, partition: row[5]) }, fence: row[6], leaseOwner: row[7], leaseUntil: row[8],
            tookOverExpiredLease: tookOver, parentID: row[9], slots: row[10]
        )
    }

    public func claimTasks(owner: String, now: Timestamp, leaseUntil: Timestamp, limit: Int) async throws -> [EngineTask] {
        try await pool.write { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT \(Self.taskColumns) FROM run_tasks WHERE due_at <= ? AND lease_until <= ? ORDER BY due_at LIMIT ?
                """, arguments: [now, now, limit])
            // A claim starts unwoken: only an event during it keeps the run due at its commit.
            let claim = try db.cachedStatement(sql: "UPDATE run_tasks SET lease_owner = ?, lease_until = ?, fence = fence + 1, woken = 0 WHERE run_id = ?")
            return try rows.map { row in
                // A lease handed back (ended at `handedBack`) was not taken over.
                var task = Self.task(row, tookOver: (row[7] as String?) != nil && (row[8] as Int64) != EngineTask.handedBack)
                try claim.execute(arguments: [owner, leaseUntil, task.runID])
                task.fence += 1
                task.leaseOwner = owner
                task.leaseUntil = leaseUntil
                return task
            }
        }
    }

    public func renewLeases(owner: String, tasks: [String: Int64], until: Timestamp) async throws -> Set<String> {
        guard !tasks.isEmpty else { return [] }
        return try await pool.write { db in
            let renew = try db.cachedStatement(sql: "UPDATE run_tasks SET lease_until = ? WHERE run_id = ? AND fence = ? AND lease_owner = ? AND lease_until <> ?")
            var renewed: Set<String> = []
            for (runID, fence) in tasks {
                try renew.execute(arguments: [until, runID, fence, owner, EngineTask.handedBack])
                if db.changesCount == 1 { renewed.insert(runID) }
            }
            return renewed
        }
    }

    public func commitTasks(_ outcomes: [TaskOutcome], now: Timestamp) async throws -> Set<String> {
        guard !outcomes.isEmpty else { return [] }
        return try await pool.write { db in
            // Each outcome's first statement is fenced: it writes only over its own claim
            // (one B-tree search per run, not a SELECT before the write), and nothing else
            // of it is written when the claim moved on. Woken by an event while it was being
            // performed: due at once, not at its deadline.
            let updateTask = try db.cachedStatement(sql: """
                UPDATE run_tasks SET state = ?, due_at = CASE WHEN woken = 1 THEN min(?, ?) ELSE ? END, woken = 0,
                       lease_owner = NULL, lease_until = 0, fence = fence + 1
                 WHERE run_id = ? AND fence = ?
                """)
            let deleteWait = try db.cachedStatement(sql: "DELETE FROM run_waits WHERE run_id = ?")
            let insertWait = try db.cachedStatement(sql: "INSERT INTO run_waits (run_id, org_id, event_type, vendor_id) VALUES (?, ?, ?, ?)")
            let wakeIfCame = try db.cachedStatement(sql: """
                UPDATE run_tasks SET due_at = min(due_at, ?1)
                 WHERE run_id = ?2 AND EXISTS (
                    SELECT 1 FROM engine_events WHERE org_id = ?3 AND event_type = ?4 AND (?5 IS NULL OR vendor_id = ?5)
                       AND (run_id IS NULL OR run_id = ?2 OR ?2 LIKE run_id || '/%') AND sequence > ?6)
                """)
            let deleteTask = try db.cachedStatement(sql: "DELETE FROM run_tasks WHERE run_id = ? AND fence = ?")
            let updateRun = try db.cachedStatement(sql: "UPDATE runs SET status = ?, finished_at = ?, document = ? WHERE id = ?")
            let insertAssessment = try db.cachedStatement(sql: "INSERT INTO assessments (id, org_id, vendor_id, created_at, document) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
            let spawn = try db.cachedStatement(sql: """
                INSERT INTO run_tasks (run_id, org_id, due_at, state, source_topic, source_partition, parent_id, slots) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (run_id) DO NOTHING
                """)
            let keepResult = try db.cachedStatement(sql: """
                INSERT INTO run_items (run_id, step_id, item_key, status, response, finished_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
                """)
            var written: Set<String> = []
            var outbox: [OutboxMessage] = []
            var parents: Set<String> = []
            for outcome in outcomes {
                if let next = outcome.next {
                    try updateTask.execute(arguments: [Data(next.state), next.dueAt, now, next.dueAt, outcome.runID, outcome.fence])
                } else {
                    try deleteTask.execute(arguments: [outcome.runID, outcome.fence])
                }
                guard db.changesCount == 1 else { continue }
                try deleteWait.execute(arguments: [outcome.runID])
                if let wait = outcome.subscription, outcome.next != nil {
                    try insertWait.execute(arguments: [outcome.runID, wait.orgID, wait.eventType, wait.vendorID])
                    try wakeIfCame.execute(arguments: [now, outcome.runID, wait.orgID, wait.eventType, wait.vendorID, wait.seenSequence])
                }
                if let document = outcome.document {
                    try updateRun.execute(arguments: [outcome.status, outcome.finishedAt, Data(document), outcome.runID])
                }
                for assessment in outcome.assessments {
                    try insertAssessment.execute(arguments: [assessment.id, assessment.orgID, assessment.vendorID, assessment.createdAt, Data(assessment.document)])
                }
                for task in outcome.spawn {
                    try spawn.execute(arguments: [task.runID, task.orgID, EngineTask.dormant, Data(task.state), task.source?.topic, task.source?.partition, task.parentID, task.slots])
                    parents.insert(task.parentID ?? outcome.runID)
                }
                if let result = outcome.itemResult {
                    try keepResult.execute(arguments: [result.runID, result.stepID, result.key, result.status, result.response.map { Data($0) }, result.finishedAt])
                }
                if let parent = outcome.parentID { parents.insert(parent) }
                if let parent = outcome.endedChildOf {
                    try db.execute(sql: "UPDATE run_tasks SET due_at = min(due_at, ?), woken = 1 WHERE run_id = ?", arguments: [now, parent])
                }
                for child in outcome.children {
                    try db.execute(
                        sql: "INSERT INTO runs (id, org_id, workflow_name, status, started_at, finished_at, document) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        arguments: [child.run.id, child.run.orgID, child.run.workflowName, child.run.status, child.run.startedAt, child.run.finishedAt, Data(child.run.document)]
                    )
                    try spawn.execute(arguments: [child.task.runID, child.task.orgID, child.task.dueAt, Data(child.task.state), child.task.source?.topic, child.task.source?.partition, child.task.parentID, 0])
                }
                outbox += outcome.outbox
                written.insert(outcome.runID)
            }
            try Self.appendOutbox(outbox, db)
            try Self.startItems(of: parents, now: now, db)
            return written
        }
    }

    /// For each run in `parents`: starts its held-back items while fewer than its
    /// concurrency are executing (due or claimed; a waiting item holds no slot), and wakes
    /// it when it has no items left (its for_each ends).
    private static func startItems(of parents: Set<String>, now: Timestamp, _ db: Database) throws {
        let start = try db.cachedStatement(sql: """
            UPDATE run_tasks SET due_at = ?1
             WHERE run_id IN (
                SELECT run_id FROM run_tasks WHERE parent_id = ?2 AND due_at = ?3 ORDER BY run_id
                 LIMIT max(0, coalesce((SELECT slots FROM run_tasks WHERE parent_id = ?2 AND slots > 0 LIMIT 1), 0)
                   - (SELECT count(*) FROM run_tasks WHERE parent_id = ?2 AND slots > 0 AND due_at <= ?1)))
            """)
        let wake = try db.cachedStatement(sql: """
            UPDATE run_tasks SET due_at = min(due_at, ?), woken = 1
             WHERE run_id = ? AND NOT EXISTS (SELECT 1 FROM run_tasks WHERE parent_id = ? AND slots > 0)
            """)
        for parent in parents.sorted() {
            try start.execute(arguments: [now, parent, EngineTask.dormant])
            try wake.execute(arguments: [now, parent, parent])
        }
    }

    public func vendors(orgID: String, afterID: String, limit: Int) async throws -> [VendorRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT id, org_id, document, occurred_at FROM vendors WHERE org_id = ? AND id > ? ORDER BY id LIMIT ?", arguments: [orgID, afterID, limit]).map { row in
                VendorRecord(id: row[0], orgID: row[1], document: Array(row[2] as Data), occurredAt: row[3])
            }
        }
    }

    public func pendingItems(runID: String) async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM run_tasks WHERE parent_id = ? AND slots > 0", arguments: [runID]) ?? 0 }
    }

    public func itemCounts(runID: String, stepID: String) async throws -> ItemCounts {
        try await pool.read { db in
            let row = try Row.fetchOne(db, sql: """
                SELECT count(*), count(*) FILTER (WHERE status = 'success'), count(*) FILTER (WHERE status = 'failed'),
                       count(*) FILTER (WHERE status = 'skipped'), count(response)
                  FROM run_items WHERE run_id = ? AND step_id = ?
                """, arguments: [runID, stepID])
            guard let row else { return ItemCounts() }
            return ItemCounts(total: row[0], succeeded: row[1], failed: row[2], skipped: row[3], responses: row[4])
        }
    }

    public func itemResults(runID: String, stepID: String, afterKey: String, limit: Int) async throws -> [ItemResult] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT item_key, status, response, finished_at FROM run_items WHERE run_id = ? AND step_id = ? AND item_key > ? ORDER BY item_key LIMIT ?
                """, arguments: [runID, stepID, afterKey, limit]).map { row in
                ItemResult(runID: runID, stepID: stepID, key: row[0], status: row[1], response: (row[2] as Data?).map { Array($0) }, finishedAt: row[3])
            }
        }
    }

    public func releaseLeases() async throws -> Int {
        try await pool.write { db in
            try db.execute(sql: "UPDATE run_tasks SET lease_owner = NULL, lease_until = 0 WHERE lease_owner IS NOT NULL")
            return db.changesCount
        }
    }

    public func nextTaskDue() async throws -> Timestamp? {
        try await pool.read { db in try Int64.fetchOne(db, sql: "SELECT min(max(due_at, lease_until)) FROM run_tasks") }
    }

    public func engineQueue(now: Timestamp) async throws -> EngineQueueStats {
        try await pool.read { db in
            let row = try Row.fetchOne(db, sql: """
                SELECT count(*) FILTER (WHERE due_at <= ? AND lease_until <= ?),
                       count(*) FILTER (WHERE lease_until > ?),
                       count(*) FILTER (WHERE due_at > ? AND lease_until <= ?),
                       min(due_at) FILTER (WHERE due_at <= ? AND lease_until <= ?)
                FROM run_tasks
                """, arguments: [now, now, now, now, now, now, now])
            guard let row else { return EngineQueueStats() }
            let oldest: Int64? = row[3]
            return EngineQueueStats(runnable: row[0], running: row[1], waiting: row[2], oldestRunnableAge: oldest.map { max(0, now - $0) } ?? 0)
        }
    }

    public func outboxDepth() async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM outbox") ?? 0 }
    }

    public func task(runID: String) async throws -> EngineTask? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT \(Self.taskColumns) FROM run_tasks WHERE run_id = ?", arguments: [runID]).map { Self.task($0) }
        }
    }

    public func events(orgID: String, type: String, vendorID: String?, since: Timestamp, afterSequence: Int64, limit: Int) async throws -> [StoredEvent] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT sequence, org_id, event_id, event_type, vendor_id, run_id, data, received_at FROM engine_events
                 WHERE org_id = ? AND event_type = ? AND (? IS NULL OR vendor_id = ?) AND sequence > ? AND received_at >= ? ORDER BY sequence LIMIT ?
                """, arguments: [orgID, type, vendorID, vendorID, afterSequence, since, limit]).map { row in
                StoredEvent(sequence: row[0], event: EngineEvent(
                    orgID: row[1], eventID: row[2], type: row[3], vendorID: row[4], runID: row[5], data: Array(row[6] as Data), receivedAt: row[7]
                ))
            }
        }
    }

    // MARK: Queries

    public func run(id: String) async throws -> RunRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT id, org_id, workflow_name, status, started_at, finished_at, document FROM runs WHERE id = ?", arguments: [id]).map(Self.run)
        }
    }

    public func runs(statuses: [String], limit: Int, offset: Int) async throws -> [RunRecord] {
        try await pool.read { db in
            var sql = "SELECT id, org_id, workflow_name, status, started_at, finished_at, document FROM runs"
            var arguments: StatementArguments = []
            if !statuses.isEmpty {
                sql += " WHERE status IN (\(statuses.map { _ in "?" }.joined(separator: ",")))"
                arguments += StatementArguments(statuses)
            }
            sql += " ORDER BY started_at DESC, id LIMIT ? OFFSET ?"
            arguments += [limit, offset]
            return try Row.fetchAll(db, sql: sql, arguments: arguments).map(Self.run)
        }
    }

    public func runs(matching query: RunQuery) async throws -> (runs: [RunRecord], total: Int) {
        try await pool.read { db in
            var filter = " WHERE org_id = ?"
            var arguments: StatementArguments = [query.orgID]
            if let name = query.workflowName {
                filter += " AND workflow_name = ?"
                arguments += [name]
            }
            if !query.statuses.isEmpty {
                filter += " AND status IN (\(query.statuses.map { _ in "?" }.joined(separator: ",")))"
                arguments += StatementArguments(query.statuses)
            }
            if let from = query.startedFrom {
                filter += " AND started_at >= ?"
                arguments += [from]
            }
            if let until = query.startedUntil {
                filter += " AND started_at <= ?"
                arguments += [until]
            }
            let total = try Int.fetchOne(db, sql: "SELECT count(*) FROM runs" + filter, arguments: arguments) ?? 0
            let rows = try Row.fetchAll(
                db, sql: "SELECT id, org_id, workflow_name, status, started_at, finished_at, document FROM runs" + filter + " ORDER BY started_at DESC, id LIMIT ? OFFSET ?",
                arguments: arguments + [query.limit, query.offset]
            )
            return (rows.map(Self.run), total)
        }
    }

    public func assessment(id: String) async throws -> AssessmentRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT id, org_id, vendor_id, created_at, document FROM assessments WHERE id = ?", arguments: [id]).map { row in
                AssessmentRecord(id: row[0], orgID: row[1], vendorID: row[2], createdAt: row[3], document: Array(row[4] as Data))
            }
        }
    }

    private static func run(_ row: Row) -> RunRecord {
        RunRecord(id: row[0], orgID: row[1], workflowName: row[2], status: row[3], startedAt: row[4], finishedAt: row[5], document: Array(row[6] as Data))
    }
}

/// Headers as the v1 outbox stored them: a 2-byte name length, the name, a
/// 4-byte value length, the value. Read only by the v2 migration.
enum V1HeaderCoding {
    static func decode(_ bytes: [UInt8]) -> [OutboxHeader] {
        var headers: [OutboxHeader] = []
        var index = 0
        func read(_ width: Int) -> Int? {
            guard index + width <= bytes.count else { return nil }
            defer { index += width }
            return bytes[index..<index + width].reduce(0) { $0 << 8 | Int($1) }
        }
        while let nameLength = read(2), index + nameLength <= bytes.count {
            let name = String(decoding: bytes[index..<index + nameLength], as: UTF8.self)
            index += nameLength
            guard let valueLength = read(4), index + valueLength <= bytes.count else { break }
            headers.append(OutboxHeader(name: name, value: Array(bytes[index..<index + valueLength])))
            index += valueLength
        }
        return headers
    }
}
