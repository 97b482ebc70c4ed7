import Foundation
import Logging
import NIOCore
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// The shared store: PostgreSQL through postgres-nio's `PostgresClient`, for several
/// worker instances in one consumer group.
///
/// It is a `Service`: `run()` runs the client's connection pool and applies the
/// migrations (under an advisory lock, so instances starting at once take turns);
/// every call waits until the migrations are done. A batch costs two round trips:
/// one statement loads what its decisions depend on (arrays with `= ANY` and
/// `unnest`), and one call of `tw_apply_batch` writes everything it changes, set by
/// set, in one transaction. Both are named prepared statements, parsed once per
/// connection.
public final class PostgresStore: Store, Service {
    /// The connection settings a `postgres://` URL gives.
    public let configuration: PostgresClient.Configuration
    private let client: PostgresClient
    private let logger: Logger
    /// Open once the pool runs.
    private let started = ReadyGate()
    /// Open once the pool runs and the migrations are done (or not wanted).
    private let ready = ReadyGate()
    /// Open once ``run()`` has set what it sets after the migrations (lz4; for tests).
    let startupPass = ReadyGate()
    private let migrateOnRun: Bool
    private let calls = Atomic<Int>(0)
    /// When (uptime, nanoseconds) the database's sessions were last reported after a timeout.
    private let lastSessionsReport = Atomic<UInt64>(0)
    /// How long a call may wait for the server (a connection, then its answer).
    private let timeout: Duration
    /// How long the migrations at start-up may wait for the server.
    private let startupTimeout: Duration
    /// The most bytes of values one statement of a batch's writes carries.
    private let maxStatementBytes: Int

    /// - Parameters:
    ///   - url: `postgres://user:password@host:port/database?sslmode=disable|prefer|require`.
    ///   - poolSize: the most connections the pool opens.
    ///   - migrate: whether `run()` applies the migrations (the `migrate` command applies them itself).
    ///   - timeout: how long a call waits for the server before it fails as
    ///     ``StoreError/Code/unavailable`` (the pool reconnects meanwhile, with backoff).
    ///   - startupTimeout: the same for the migrations at start-up (a database that
    ///     starts beside the worker may take a while to accept connections).
    ///   - maxStatementBytes: a batch whose values are larger is written in several
    ///     statements (one transaction still).
    public init(
        url: String, poolSize: Int = 8, migrate: Bool = true, timeout: Duration = .seconds(30), startupTimeout: Duration = .seconds(120),
        maxStatementBytes: Int = 128 << 20, logger: Logger
    ) throws {
        self.maxStatementBytes = maxStatementBytes
        self.timeout = timeout
        self.startupTimeout = startupTimeout
        var configuration = try Self.clientConfiguration(from: url)
        configuration.options.maximumConnections = max(1, poolSize)
        configuration.options.minimumConnections = 0
        // A call this side gave up on must not go on holding locks on the server (a
        // partition's mark row): the server ends a statement, a lock wait or an open
        // transaction left idle a little after the call's own deadline.
        let serverLimit = "\(timeout.components.seconds + 5)s"
        configuration.options.additionalStartupParameters = [
            ("statement_timeout", serverLimit), ("lock_timeout", serverLimit), ("idle_in_transaction_session_timeout", serverLimit),
        ]
        self.configuration = configuration
        client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.logger = logger
        migrateOnRun = migrate
    }

    public var isShared: Bool { true }

    public func waitUntilReady() async throws {
        if let error = await ready.wait() { throw error }
    }

    /// Round trips to the server so far (one per call: each is one statement), for the benchmark.
    public var roundTrips: Int { calls.load(ordering: .relaxed) }

    /// Runs the connection pool until graceful shutdown (or cancellation), after
    /// applying the migrations.
    /// - Throws: the migrations' failure: the store cannot be used.
    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                self.started.open(nil)
                if !self.migrateOnRun { self.ready.open(nil) }
                await self.client.run()
            }
            if migrateOnRun {
                do {
                    let applied = try await migrate()
                    if !applied.isEmpty {
                        logger.info("Store migrated", metadata: ["migrations": "\(applied.map { "\($0.version)-\($0.name)" }.joined(separator: ","))"])
                    }
                    ready.open(nil)
                } catch {
                    ready.open(error)
                    tasks.cancelAll()
                    throw error
                }
                // Once ready (its calls wait for that): no start waits for a table's lock.
                await compressLargeValuesWithLZ4()
                startupPass.open(nil)
            }
            try await tasks.waitForAll()
        }
    }

    /// Creates an empty database named `name` on the server of `serverURL`; returns its URL
    /// (for tests and the benchmark, which want a database of their own).
    public static func createDatabase(named name: String, serverURL: String, logger: Logger) async throws -> String {
        try await administer("CREATE DATABASE", name, serverURL: serverURL, logger: logger)
        guard var components = URLComponents(string: serverURL) else { throw StoreError(code: .invalidURL, message: "not a postgres:// URL") }
        components.path = "/\(name)"
        return components.string ?? serverURL
    }

    /// Drops the database named `name` on the server of `serverURL`, if it exists.
    public static func dropDatabase(named name: String, serverURL: String, logger: Logger) async throws {
        try await administer("DROP DATABASE IF EXISTS", name, "WITH (FORCE)", serverURL: serverURL, logger: logger)
    }

    /// Runs `command name` (a name of lower-case letters, digits and _ only: it is not a bound value).
    private static func administer(_ command: String, _ name: String, _ options: String = "", serverURL: String, logger: Logger) async throws {
        guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "_") }) else {
            throw StoreError(code: .invalidURL, message: "a database name of lower-case letters, digits and _ only")
        }
        // Two minutes, as migrations get: a database is created by copying its template
        // through the WAL, and dozens created at once by a test run on a loaded server
        // came close to 30 s (the semantic tests create one each).
        _ = try await withOwnClient(try clientConfiguration(from: serverURL), timeout: .seconds(120), what: command, logger: logger) { client in
            try await count(client.query(PostgresQuery(unsafeSQL: "\(command) \(name) \(options)"), logger: logger))
        }
    }

    /// The result of `body` on a client of its own (not the store's pool: that may be
    /// the one in trouble, or not exist), within `timeout`; the client stops after.
    private static func withOwnClient<T: Sendable>(
        _ configuration: PostgresClient.Configuration, timeout: Duration, what: String, logger: Logger,
        _ body: @escaping @Sendable (PostgresClient) async throws -> T
    ) async throws -> T {
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { await client.run() }
            defer { tasks.cancelAll() }
            return try await withDeadline(timeout, what: what) { try await body(client) }
        }
    }

    // MARK: Migrations

    /// Applies the migrations not applied yet, in one transaction holding an advisory
    /// lock: instances that start at once wait for each other, and the later ones find
    /// nothing to do. Needs ``run()`` to be running.
    /// - Returns: the migrations applied now (empty when the schema was current).
    @discardableResult
    public func migrate() async throws -> [(version: Int, name: String)] {
        if let error = await started.wait() { throw error }
        do {
            return try await Self.withDeadline(startupTimeout, what: "migrations") { try await self.migrations() }
        } catch {
            throw StoreError(code: .unavailable, message: "cannot migrate the PostgreSQL store at \(Self.describe(configuration)): \(Self.reason(error))")
        }
    }

    private func migrations() async throws -> [(version: Int, name: String)] {
        do {
            return try await client.withTransaction(logger: logger) { connection in
                // Migrations wait for each other and may take long: no server-side limit here.
                try await Self.count(connection.query("SET LOCAL statement_timeout = 0", logger: self.logger))
                try await Self.count(connection.query("SET LOCAL lock_timeout = 0", logger: self.logger))
                try await Self.count(connection.query("SELECT pg_advisory_xact_lock(\(PostgresSchema.migrationLock))", logger: self.logger))
                try await Self.count(connection.query(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
                    logger: self.logger
                ))
                var done: Set<Int> = []
                for try await version in try await connection.query("SELECT version FROM schema_migrations", logger: self.logger).decode(Int.self) {
                    done.insert(version)
                }
                if let newest = done.max(), newest > PostgresSchema.latestVersion {
                    throw StoreError(
                        code: .unavailable,
                        message: "the store's schema is at version \(newest), newer than this trigger-worker knows (\(PostgresSchema.latestVersion)): run the newer release"
                    )
                }
                var applied: [(version: Int, name: String)] = []
                for migration in PostgresSchema.migrations where !done.contains(migration.version) {
                    for statement in migration.statements {
                        try await Self.count(connection.query(PostgresQuery(unsafeSQL: statement), logger: self.logger))
                    }
                    try await Self.count(connection.query("INSERT INTO schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))", logger: self.logger))
                    applied.append((migration.version, migration.name))
                }
                return applied
            }
        }
    }

    /// A run-time setting of the store's connections (for tests).
    func serverSetting(_ name: String) async throws -> String {
        try await call {
            for try await value in try await self.client.query("SELECT current_setting(\(name))", logger: self.logger).decode(String.self) { return value }
            return ""
        }
    }

    /// Whether the server can compress with lz4 (PostgreSQL 14 or later, built with it).
    func serverHasLZ4() async throws -> Bool {
        try await call {
            let rows = try await self.client.query("""
                SELECT current_setting('server_version_num')::int >= 140000
                   AND coalesce((SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'), false)
                """, logger: self.logger)
            for try await lz4 in rows.decode(Bool.self) { return lz4 }
            return false
        }
    }

    /// Has large values (``PostgresSchema/largeValueColumns``) compressed with lz4 rather
    /// than the default pglz, where the server has lz4; new values only, stored ones stay
    /// readable as they are. Measured with `bench --engine-only --stores postgres` (60,000
    /// runs, two passes each): pglz was 9% of the machine's CPU while the engine ran alone
    /// (a quarter of the server's); the engine alone completed 4,138-4,487 runs/s with pglz
    /// and 5,344-5,514 with lz4, and intake with the engine on ÷ paused went from 0.82-0.85
    /// to 0.97-0.99.
    ///
    /// Not a migration: `SET COMPRESSION` takes its table's ACCESS EXCLUSIVE lock, and
    /// instances of an older release may be writing (a migration holding one table's lock
    /// while waiting for the next could deadlock with them). Each column is set by one
    /// statement committed by the server itself, on a connection of the pass's own that
    /// waits at most a second for a lock; a column left as it was is tried again at the
    /// next start. Only columns with no compression chosen are set, found in one query: one
    /// an operator set (to pglz, say) is left alone, and a start that finds them all set
    /// takes no lock and opens no connection.
    /// - Returns: the columns left unset although the server has lz4 (all it meant to set
    ///   when it could not tell which, or its connection failed).
    @discardableResult
    func compressLargeValuesWithLZ4() async -> [String] {
        let unset: [(table: String, column: String)]
        do {
            guard try await serverHasLZ4() else { return [] }
        } catch {
            if !Task.isCancelled { logger.notice("Could not tell whether the PostgreSQL server has lz4; large values stay compressed with pglz", metadata: ["error": "\(error)"]) }
            return []
        }
        do {
            unset = try await largeValueCompressions().filter(\.method.isEmpty).map { ($0.table, $0.column) }
        } catch {
            if !Task.isCancelled { logger.notice("Could not read which columns compress with lz4; large values stay compressed with pglz for now (tried again at the next start)", metadata: ["error": "\(error)"]) }
            return PostgresSchema.largeValueColumns.map { "\($0.table).\($0.column)" }
        }
        guard !unset.isEmpty else { return [] }
        var configuration = self.configuration
        configuration.options.maximumConnections = 1
        configuration.options.additionalStartupParameters = [("lock_timeout", "1s"), ("statement_timeout", "10s")]
        let logger = self.logger
        let left: [String]
        do {
            left = try await Self.withOwnClient(configuration, timeout: .seconds(15) * unset.count, what: "lz4 for large values", logger: logger) { client in
                var left: [String] = []
                for (table, column) in unset {
                    do {
                        // Names from the schema's own list, not from input.
                        let alter = "ALTER TABLE \(table) ALTER COLUMN \(column) SET COMPRESSION lz4"
                        try await Self.count(client.query(PostgresQuery(unsafeSQL: alter), logger: logger))
                    } catch {
                        // Stopping: what is left is set at the next start, without a notice for each.
                        if Task.isCancelled { return left }
                        left.append("\(table).\(column)")
                        logger.notice("Large values stay compressed with pglz for now (tried again at the next start)", metadata: ["column": "\(table).\(column)", "error": "\(error)"])
                    }
                }
                return left
            }
        } catch {
            if !Task.isCancelled { logger.notice("Large values stay compressed with pglz for now (tried again at the next start)", metadata: ["error": "\(error)"]) }
            return unset.map { "\($0.table).\($0.column)" }
        }
        return left
    }

    /// How each column of ``PostgresSchema/largeValueColumns`` compresses its large values,
    /// in its order, read in one query (PostgreSQL 14 or later): `l` (lz4), `p` (pglz), or
    /// empty (none chosen: the server's default, pglz unless configured otherwise).
    func largeValueCompressions() async throws -> [(table: String, column: String, method: String)] {
        let tables = PostgresSchema.largeValueColumns.map(\.table), columns = PostgresSchema.largeValueColumns.map(\.column)
        return try await call {
            let rows = try await self.client.query("""
                SELECT c.t, c.c, a.attcompression::text FROM unnest(\(tables)::text[], \(columns)::text[]) WITH ORDINALITY AS c(t, c, i)
                  JOIN pg_attribute a ON a.attrelid = c.t::regclass AND a.attname = c.c
                 ORDER BY c.i
                """, logger: self.logger)
            var compressions: [(table: String, column: String, method: String)] = []
            for try await (table, column, method) in rows.decode((String, String, String).self) { compressions.append((table, column, method)) }
            return compressions
        }
    }

    /// How the outbox's stored entries are compressed (`pg_column_compression`: `lz4`,
    /// `pglz`, or nil for a value kept as it is), one per entry (for tests).
    func outboxCompressions() async throws -> [String?] {
        try await call {
            var methods: [String?] = []
            for try await method in try await self.client.query("SELECT pg_column_compression(messages) FROM outbox ORDER BY id", logger: self.logger).decode(String?.self) {
                methods.append(method)
            }
            return methods
        }
    }

    /// Notes a migration as applied without applying it: for tests of a store that a
    /// newer release migrated.
    func recordMigrationForTesting(version: Int) async throws {
        _ = try await call {
            try await Self.count(self.client.query("INSERT INTO schema_migrations (version, name) VALUES (\(version), 'test')", logger: self.logger))
        }
    }

    /// The versions applied, in order (for `migrate --status` and tests).
    public func appliedMigrations() async throws -> [Int] {
        try await call {
            var versions: [Int] = []
            for try await version in try await self.client.query("SELECT version FROM schema_migrations ORDER BY version", logger: self.logger).decode(Int.self) {
                versions.append(version)
            }
            return versions
        }
    }

    // MARK: Batches

    public func load(_ query: BatchQuery, now: Timestamp) async throws -> BatchSnapshot {
        try await call {
            var snapshot = BatchSnapshot()
            let statement = LoadBatch(query: query, now: now)
            for try await row in try await self.client.execute(statement, logger: self.logger) {
                switch row.kind {
                case 0:
                    let partition = PartitionID(topic: row.text1 ?? "", partition: Int32(truncatingIfNeeded: row.int1 ?? 0))
                    snapshot.watermarks[partition] = row.int2 ?? 0
                    if let epoch = row.int3, epoch != 0 { snapshot.epochs[partition] = epoch }
                case 1:
                    guard let scopeBytes = row.bytes1, scopeBytes.readableBytes == 16 else { continue }
                    let scope = ScopeHash(bytes: Array(buffer: scopeBytes))
                    snapshot.records[scope] = IdempotencyRecord(
                        scope: scope, orgID: row.text1 ?? "", endpoint: row.text2 ?? "", key: row.text3 ?? "",
                        fingerprint: row.bytes2.map { Array(buffer: $0) } ?? [], responseStatus: Int(row.int1 ?? 0),
                        responseBody: row.bytes3.map { Array(buffer: $0) } ?? [], createdAt: row.int2 ?? 0, expiresAt: row.int3 ?? 0
                    )
                default:
                    let key = VendorKey(orgID: row.text1 ?? "", vendorID: row.text2 ?? "")
                    snapshot.vendors[key] = VendorRecord(
                        id: key.vendorID, orgID: key.orgID, document: row.bytes1.map { Array(buffer: $0) } ?? [], occurredAt: row.int1 ?? 0
                    )
                }
            }
            // Runs are asked for only by cancel requests (rare): a second statement then.
            if !query.runs.isEmpty {
                let ids = Array(query.runs)
                let rows = try await self.client.query(
                    """
                    SELECT r.id, r.org_id, r.workflow_name, r.status, r.started_at, r.finished_at, r.document,
                           t.run_id, t.org_id, t.due_at, t.state, t.source_topic, t.source_partition, t.fence, t.lease_owner, t.lease_until, t.parent_id, t.slots
                      FROM runs r LEFT JOIN run_tasks t ON t.run_id = r.id WHERE r.id = ANY(\(ids)::text[])
                    """,
                    logger: self.logger
                )
                for try await row in rows {
                    let columns = try row.decode((String, String, String, String, Int64, Int64?, ByteBuffer, String?, String?, Int64?, ByteBuffer?, String?, Int32?, Int64?, String?, Int64?, String?, Int32?).self)
                    var task: EngineTask?
                    if let taskRun = columns.7, let taskOrg = columns.8, let due = columns.9, let state = columns.10, let fence = columns.13 {
                        task = Self.task((taskRun, taskOrg, due, state, columns.11, columns.12, fence, columns.14, columns.15 ?? 0, columns.16, columns.17 ?? 0))
                    }
                    let record = Self.run((columns.0, columns.1, columns.2, columns.3, columns.4, columns.5, columns.6))
                    snapshot.runs[record.id] = RunSnapshot(record: record, task: task)
                }
            }
            return snapshot
        }
    }

    public func apply(_ writes: BatchWrites) async throws {
        guard !writes.isEmpty else { return }
        let parts = ApplyBatch.parts(writes, maxBytes: maxStatementBytes)
        try await call {
            if parts.count == 1 && writes.cancels.isEmpty && writes.events.isEmpty {
                // Consumed to the end: a conflict the function raises arrives with the result.
                for try await _ in try await self.client.execute(parts[0], logger: self.logger) {}
                return
            }
            // Too large for one statement (PostgreSQL takes at most 1 GiB per message):
            // several calls, one transaction.
            try await self.client.withTransaction(logger: self.logger) { connection in
                for part in parts {
                    for try await _ in try await connection.execute(part, logger: self.logger) {}
                }
                if !writes.events.isEmpty {
                    let events = writes.events
                    let rows = try await connection.query(
                        """
                        SELECT FROM tw_record_events(
                            \(events.map(\.orgID))::text[], \(events.map(\.eventID))::text[], \(events.map(\.type))::text[],
                            \(events.map { $0.vendorID ?? "" })::text[], \(events.map { $0.runID ?? "" })::text[],
                            \(events.map { ByteBuffer(bytes: $0.data) })::bytea[], \(events.map(\.receivedAt))::bigint[], \(writes.now)::bigint
                        )
                        """,
                        logger: self.logger
                    )
                    for try await _ in rows {}
                }
                if !writes.cancels.isEmpty {
                    let cancels = writes.cancels.sorted { $0.runID < $1.runID }
                    let runs = cancels.map(\.runID), fences = cancels.map(\.fence), finished = cancels.map(\.finishedAt)
                    let documents = cancels.map { ByteBuffer(bytes: $0.document) }
                    let rows = try await connection.query(
                        "SELECT FROM tw_cancel_runs(\(runs)::text[], \(fences)::bigint[], \(finished)::bigint[], \(documents)::bytea[])",
                        logger: self.logger
                    )
                    for try await _ in rows {}
                }
            }
        }
    }

    // MARK: Outbox

    public func pendingOutbox(limit: Int, selection: OutboxSelection) async throws -> [OutboxEntry] {
        try await call {
            let rows: PostgresRowSequence
            switch selection {
            case .owned(let sources):
                // Per owned partition, its oldest entries by the (source, id) index; and the
                // oldest entries of none by their partial index: never a scan of the outbox,
                // however long it has grown.
                let topics = sources.map(\.topic)
                let partitions = sources.map(\.partition)
                rows = try await self.client.query(
                    """
                    SELECT id, source_topic, source_partition, messages FROM (
                        SELECT o.* FROM unnest(\(topics)::text[], \(partitions)::integer[]) AS s(topic, part)
                        CROSS JOIN LATERAL (
                            SELECT id, source_topic, source_partition, messages FROM outbox
                             WHERE source_topic = s.topic AND source_partition = s.part ORDER BY id LIMIT \(limit)
                        ) AS o
                        UNION ALL
                        (SELECT id, source_topic, source_partition, messages FROM outbox WHERE source_topic IS NULL ORDER BY id LIMIT \(limit))
                    ) AS pending ORDER BY id LIMIT \(limit)
                    """,
                    logger: self.logger
                )
            case .orphaned(let inputTopics):
                // Rare, and read now and then (not every round): a scan is fine.
                rows = try await self.client.query(
                    """
                    SELECT id, source_topic, source_partition, messages FROM outbox
                     WHERE source_topic IS NOT NULL AND source_topic <> ALL(\(Array(inputTopics))::text[]) ORDER BY id LIMIT \(limit)
                    """,
                    logger: self.logger
                )
            case .all:
                rows = try await self.client.query(
                    "SELECT id, source_topic, source_partition, messages FROM outbox ORDER BY id LIMIT \(limit)", logger: self.logger
                )
            }
            var entries: [OutboxEntry] = []
            for try await (id, topic, partition, messages) in rows.decode((Int64, String?, Int32?, ByteBuffer).self) {
                let source = topic.flatMap { topic in partition.map { PartitionID(topic: topic, partition: $0) } }
                entries.append(OutboxEntry(id: id, source: source, messages: OutboxCoding.decode(Array(buffer: messages))))
            }
            return entries
        }
    }

    public func finishOutbox(done: [Int64], park: [ParkedOutput]) async throws {
        guard !done.isEmpty || !park.isEmpty else { return }
        _ = try await call {
            // One statement: the parked outputs are kept and the entries deleted together.
            try await Self.count(self.client.query(
                """
                WITH parked AS (
                    INSERT INTO parked_outputs (parked_at, error_code, error, message, source_topic, source_partition)
                    SELECT p.parked_at, p.code, p.error, p.message, nullif(p.topic, ''), nullif(p.part, -1)
                      FROM unnest(
                        \(park.map(\.parkedAt))::bigint[], \(park.map(\.errorCode))::text[], \(park.map(\.error))::text[],
                        \(park.map { ByteBuffer(bytes: OutboxCoding.encode([$0.message][...])) })::bytea[],
                        \(park.map { $0.message.source?.topic ?? "" })::text[], \(park.map { $0.message.source?.partition ?? -1 })::integer[]
                      ) AS p(parked_at, code, error, message, topic, part)
                )
                DELETE FROM outbox WHERE id = ANY(\(done)::bigint[])
                """,
                logger: self.logger
            ))
        }
    }

    public func parkedOutputs(limit: Int) async throws -> [ParkedOutput] {
        try await call {
            var outputs: [ParkedOutput] = []
            let rows = try await self.client.query(
                "SELECT id, parked_at, error_code, error, message, source_topic, source_partition FROM parked_outputs ORDER BY id LIMIT \(limit)", logger: self.logger
            )
            for try await (id, parkedAt, code, error, message, topic, partition) in rows.decode((Int64, Int64, String, String, ByteBuffer, String?, Int32?).self) {
                guard var message = OutboxCoding.decode(Array(buffer: message)).first else { continue }
                message.source = topic.flatMap { topic in partition.map { PartitionID(topic: topic, partition: $0) } }
                outputs.append(ParkedOutput(id: id, message: message, errorCode: code, error: error, parkedAt: parkedAt))
            }
            return outputs
        }
    }

    public func retryParked(id: Int64) async throws -> Bool {
        try await call {
            // A parked output is kept as a one-message entry blob: it moves back as it is.
            let rows = try await self.client.query(
                """
                WITH taken AS (DELETE FROM parked_outputs WHERE id = \(id) RETURNING message, source_topic, source_partition)
                INSERT INTO outbox (source_topic, source_partition, messages) SELECT source_topic, source_partition, message FROM taken RETURNING id
                """,
                logger: self.logger
            )
            return try await Self.count(rows) == 1
        }
    }

    public func dropParked(id: Int64) async throws -> Bool {
        try await call {
            try await Self.count(self.client.query("DELETE FROM parked_outputs WHERE id = \(id) RETURNING id", logger: self.logger)) == 1
        }
    }

    // MARK: Partitions

    public func partitionMarks(_ partitions: [PartitionID]) async throws -> [PartitionID: PartitionMark] {
        try await call {
            let rows = try await self.client.query(
                """
                SELECT topic, partition, next_offset, epoch, last_digest FROM partition_progress
                 WHERE (topic, partition) IN (SELECT * FROM unnest(\(partitions.map(\.topic))::text[], \(partitions.map(\.partition))::integer[]))
                """,
                logger: self.logger
            )
            var marks: [PartitionID: PartitionMark] = [:]
            for try await (topic, partition, next, epoch, digest) in rows.decode((String, Int32, Int64, Int64, ByteBuffer?).self) {
                marks[PartitionID(topic: topic, partition: partition)] = PartitionMark(next: next, epoch: epoch, lastDigest: digest.map { Array(buffer: $0) })
            }
            return marks
        }
    }

    public func resetPartition(_ partition: PartitionID, from mark: PartitionMark, next: Int64) async throws {
        let moved = try await call {
            try await Self.count(self.client.query(
                """
                UPDATE partition_progress SET next_offset = \(next), epoch = epoch + 1, last_digest = NULL
                 WHERE topic = \(partition.topic) AND partition = \(partition.partition) AND next_offset = \(mark.next) AND epoch = \(mark.epoch)
                RETURNING 1
                """,
                logger: self.logger
            ))
        }
        if moved != 1 {
            throw StoreError(code: .conflict, message: "the mark of \(partition.topic)[\(partition.partition)] moved since it was read")
        }
    }

    // MARK: Expiry and retention

    public func deleteExpiredIdempotencyRecords(now: Timestamp, limit: Int) async throws -> Int {
        try await call {
            try await Self.count(self.client.query(
                "DELETE FROM idempotency WHERE scope IN (SELECT scope FROM idempotency WHERE expires_at <= \(now) ORDER BY expires_at LIMIT \(limit)) RETURNING 1",
                logger: self.logger
            ))
        }
    }

    public func pruneRuns(finishedBefore before: Int64, limit: Int) async throws -> Int {
        try await call {
            try await Self.count(self.client.query(
                "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < \(before) ORDER BY finished_at LIMIT \(limit)) RETURNING 1",
                logger: self.logger
            ))
        }
    }

    public func pruneEngineHistory(before: Int64, limit: Int) async throws -> Int {
        try await call {
            let events = try await Self.count(self.client.query(
                "DELETE FROM engine_events WHERE sequence IN (SELECT sequence FROM engine_events WHERE received_at < \(before * 1000) ORDER BY sequence LIMIT \(limit)) RETURNING 1",
                logger: self.logger
            ))
            let items = try await Self.count(self.client.query(
                """
                DELETE FROM run_items WHERE (run_id, step_id, item_key) IN (
                    SELECT run_id, step_id, item_key FROM run_items WHERE finished_at < \(before) LIMIT \(max(0, limit - events))) RETURNING 1
                """,
                logger: self.logger
            ))
            return events + items
        }
    }

    public func pruneAssessments(createdBefore before: Int64, limit: Int) async throws -> Int {
        try await call {
            try await Self.count(self.client.query(
                "DELETE FROM assessments WHERE id IN (SELECT id FROM assessments WHERE created_at < \(before) ORDER BY created_at LIMIT \(limit)) RETURNING 1",
                logger: self.logger
            ))
        }
    }

    // MARK: Queries

    public func run(id: String) async throws -> RunRecord? {
        try await call {
            let rows = try await self.client.query(
                "SELECT id, org_id, workflow_name, status, started_at, finished_at, document FROM runs WHERE id = \(id)", logger: self.logger
            )
            for try await row in rows.decode((String, String, String, String, Int64, Int64?, ByteBuffer).self) { return Self.run(row) }
            return nil
        }
    }

    public func runs(statuses: [String], limit: Int, offset: Int) async throws -> [RunRecord] {
        try await call {
            let rows = try await self.client.query(
                """
                SELECT id, org_id, workflow_name, status, started_at, finished_at, document FROM runs
                 WHERE cardinality(\(statuses)::text[]) = 0 OR status = ANY(\(statuses)::text[])
                 ORDER BY started_at DESC, id LIMIT \(limit) OFFSET \(offset)
                """,
                logger: self.logger
            )
            var runs: [RunRecord] = []
            for try await row in rows.decode((String, String, String, String, Int64, Int64?, ByteBuffer).self) { runs.append(Self.run(row)) }
            return runs
        }
    }

    public func runs(matching query: RunQuery) async throws -> (runs: [RunRecord], total: Int) {
        try await call {
            // Absent filters are NULL (or an empty array) and match everything.
            let name = query.workflowName, from = query.startedFrom, until = query.startedUntil, statuses = query.statuses
            var total = 0
            let counted = try await self.client.query(
                """
                SELECT count(*) FROM runs WHERE org_id = \(query.orgID) AND (\(name)::text IS NULL OR workflow_name = \(name))
                   AND (cardinality(\(statuses)::text[]) = 0 OR status = ANY(\(statuses)::text[]))
                   AND (\(from)::bigint IS NULL OR started_at >= \(from)) AND (\(until)::bigint IS NULL OR started_at <= \(until))
                """,
                logger: self.logger
            )
            for try await count in counted.decode(Int64.self) { total = Int(count) }
            let rows = try await self.client.query(
                """
                SELECT id, org_id, workflow_name, status, started_at, finished_at, document
                  FROM runs WHERE org_id = \(query.orgID) AND (\(name)::text IS NULL OR workflow_name = \(name))
                   AND (cardinality(\(statuses)::text[]) = 0 OR status = ANY(\(statuses)::text[]))
                   AND (\(from)::bigint IS NULL OR started_at >= \(from)) AND (\(until)::bigint IS NULL OR started_at <= \(until))
                 ORDER BY started_at DESC, id LIMIT \(query.limit) OFFSET \(query.offset)
                """,
                logger: self.logger
            )
            var runs: [RunRecord] = []
            for try await row in rows.decode((String, String, String, String, Int64, Int64?, ByteBuffer).self) { runs.append(Self.run(row)) }
            return (runs, total)
        }
    }

    public func assessment(id: String) async throws -> AssessmentRecord? {
        try await call {
            let rows = try await self.client.query(
                "SELECT id, org_id, vendor_id, created_at, document FROM assessments WHERE id = \(id)", logger: self.logger
            )
            for try await (id, org, vendor, created, document) in rows.decode((String, String, String, Int64, ByteBuffer).self) {
                return AssessmentRecord(id: id, orgID: org, vendorID: vendor, createdAt: created, document: Array(buffer: document))
            }
            return nil
        }
    }

    private static func run(_ row: (String, String, String, String, Int64, Int64?, ByteBuffer)) -> RunRecord {
        RunRecord(id: row.0, orgID: row.1, workflowName: row.2, status: row.3, startedAt: row.4, finishedAt: row.5, document: Array(buffer: row.6))
    }

    // MARK: The engine's work

    private typealias TaskRow = (String, String, Int64, ByteBuffer, String?, Int32?, Int64, String?, Int64, String?, Int32)

    private static func task(_ row: TaskRow, tookOver: Bool = false) -> EngineTask {
        EngineTask(
            runID: row.0, orgID: row.1, dueAt: row.2, state: Array(buffer: row.3),
            source: row.4.map { PartitionID(topic: $0, partition: row.5 ?? 0) }, fence: row.6, leaseOwner: row.7, leaseUntil: row.8,
            tookOverExpiredLease: tookOver, parentID: row.9, slots: Int(row.10)
        )
    }

    public func claimTasks(owner: String, now: Timestamp, leaseUntil: Timestamp, limit: Int) async throws -> [EngineTask] {
        try await call {
            // SKIP LOCKED: instances claiming at once take different runs instead of waiting.
            let rows = try await self.client.query(
                """
                WITH c AS (
                    SELECT run_id, lease_owner AS previous, lease_until AS previous_until FROM run_tasks
                     WHERE due_at <= \(now) AND lease_until <= \(now)
                     ORDER BY due_at LIMIT \(limit) FOR UPDATE SKIP LOCKED
                )
                UPDATE run_tasks t SET lease_owner = \(owner), lease_until = \(leaseUntil), fence = t.fence + 1, woken = false
                  FROM c WHERE t.run_id = c.run_id
                RETURNING t.run_id, t.org_id, t.due_at, t.state, t.source_topic, t.source_partition, t.fence, t.lease_owner, t.lease_until,
                          t.parent_id, t.slots, c.previous IS NOT NULL AND c.previous_until <> \(EngineTask.handedBack)
                """,
                logger: self.logger
            )
            var tasks: [EngineTask] = []
            for try await row in rows.decode((String, String, Int64, ByteBuffer, String?, Int32?, Int64, String?, Int64, String?, Int32, Bool).self) {
                tasks.append(Self.task((row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9, row.10), tookOver: row.11))
            }
            return tasks.sorted { $0.dueAt < $1.dueAt }
        }
    }

    public func renewLeases(owner: String, tasks: [String: Int64], until: Timestamp) async throws -> Set<String> {
        guard !tasks.isEmpty else { return [] }
        let runs = Array(tasks.keys), fences = runs.map { tasks[$0]! }
        return try await call {
            let rows = try await self.client.query(
                """
                WITH held AS (
                    SELECT t.run_id FROM run_tasks t JOIN unnest(\(runs)::text[], \(fences)::bigint[]) AS c(run, fence)
                        ON t.run_id = c.run AND t.fence = c.fence AND t.lease_owner = \(owner) AND t.lease_until <> \(EngineTask.handedBack)
                     ORDER BY t.run_id FOR UPDATE OF t
                )
                UPDATE run_tasks t SET lease_until = \(until) FROM held WHERE t.run_id = held.run_id
                RETURNING t.run_id
                """,
                logger: self.logger
            )
            var renewed: Set<String> = []
            for try await runID in rows.decode(String.self) { renewed.insert(runID) }
            return renewed
        }
    }

    public func commitTasks(_ outcomes: [TaskOutcome], now: Timestamp) async throws -> Set<String> {
        var outcomes = outcomes.sorted { $0.runID < $1.runID }
        // Each pass drops the claims found lost; a conflict that persists (a deadlock
        // with another instance, settled as one) ends after a few passes.
        for _ in 0..<5 where !outcomes.isEmpty {
            do {
                let statement = CommitTasks(outcomes, now: now)
                let spawned = outcomes.flatMap(\.spawn).sorted { $0.runID < $1.runID }
                let results = outcomes.compactMap(\.itemResult)
                let parents = Set(outcomes.compactMap(\.parentID) + outcomes.filter { !$0.spawn.isEmpty }.map(\.runID)).sorted()
                let children = outcomes.flatMap(\.children)
                let endedChildrenOf = outcomes.compactMap(\.endedChildOf)
                try await call {
                    guard !parents.isEmpty || !children.isEmpty || !endedChildrenOf.isEmpty else {
                        for try await _ in try await self.client.execute(statement, logger: self.logger) {}
                        return
                    }
                    // Items created or ended: in the same transaction, kept and started.
                    try await self.client.withTransaction(logger: self.logger) { connection in
                        for try await _ in try await connection.execute(statement, logger: self.logger) {}
                        if !spawned.isEmpty {
                            let rows = try await connection.query(
                                """
                                INSERT INTO run_tasks (run_id, org_id, due_at, state, source_topic, source_partition, parent_id, slots)
                                SELECT s.run, s.org, \(EngineTask.dormant)::bigint, s.state, nullif(s.topic, ''), nullif(s.part, -1), nullif(s.parent, ''), s.slots
                                  FROM unnest(\(spawned.map(\.runID))::text[], \(spawned.map(\.orgID))::text[],
                                              \(spawned.map { ByteBuffer(bytes: $0.state) })::bytea[], \(spawned.map { $0.source?.topic ?? "" })::text[],
                                              \(spawned.map { $0.source?.partition ?? -1 })::integer[], \(spawned.map { $0.parentID ?? "" })::text[],
                                              \(spawned.map { Int32(clamping: $0.slots) })::integer[]) AS s(run, org, state, topic, part, parent, slots)
                                ON CONFLICT (run_id) DO NOTHING
                                """,
                                logger: self.logger
                            )
                            for try await _ in rows {}
                        }
                        if !results.isEmpty {
                            let rows = try await connection.query(
                                """
                                INSERT INTO run_items (run_id, step_id, item_key, status, response, finished_at)
                                SELECT r.run, r.step, r.key, r.status, nullif(r.response, ''::bytea), r.finished
                                  FROM unnest(\(results.map(\.runID))::text[], \(results.map(\.stepID))::text[], \(results.map(\.key))::text[],
                                              \(results.map(\.status))::text[], \(results.map { ByteBuffer(bytes: $0.response ?? []) })::bytea[],
                                              \(results.map(\.finishedAt))::bigint[]) AS r(run, step, key, status, response, finished)
                                ON CONFLICT DO NOTHING
                                """,
                                logger: self.logger
                            )
                            for try await _ in rows {}
                        }
                        for child in children {
                            let run = child.run, task = child.task
                            let inserted = try await connection.query(
                                """
                                WITH run AS (
                                    INSERT INTO runs (id, org_id, workflow_name, status, started_at, finished_at, document)
                                    VALUES (\(run.id), \(run.orgID), \(run.workflowName), \(run.status), \(run.startedAt), \(run.finishedAt), \(ByteBuffer(bytes: run.document)))
                                    ON CONFLICT DO NOTHING
                                )
                                INSERT INTO run_tasks (run_id, org_id, due_at, state, source_topic, source_partition, parent_id, slots)
                                VALUES (\(task.runID), \(task.orgID), \(task.dueAt), \(ByteBuffer(bytes: task.state)), \(task.source?.topic), \(task.source?.partition), \(task.parentID), 0)
                                ON CONFLICT (run_id) DO NOTHING
                                """,
                                logger: self.logger
                            )
                            for try await _ in inserted {}
                        }
                        if !endedChildrenOf.isEmpty {
                            let rows = try await connection.query(
                                "UPDATE run_tasks SET due_at = least(due_at, \(now)), woken = true WHERE run_id = ANY(\(endedChildrenOf)::text[])", logger: self.logger
                            )
                            for try await _ in rows {}
                        }
                        if !parents.isEmpty {
                            let rows = try await connection.query(
                                "SELECT FROM tw_start_items(\(parents)::text[], \(now)::bigint, \(EngineTask.dormant)::bigint)", logger: self.logger
                            )
                            for try await _ in rows {}
                        }
                    }
                }
                return Set(outcomes.map(\.runID))
            } catch let error as StoreError where error.code == .conflict {
                // A claim was lost: keep the outcomes whose claim still holds, and write those.
                let runs = outcomes.map(\.runID), fences = outcomes.map(\.fence)
                let held = try await call(what: "commitTasks(_:now:), the claims still held") {
                    let rows = try await self.client.query(
                        """
                        SELECT t.run_id FROM run_tasks t JOIN unnest(\(runs)::text[], \(fences)::bigint[]) AS c(run, fence)
                            ON t.run_id = c.run AND t.fence = c.fence
                        """,
                        logger: self.logger
                    )
                    var held: Set<String> = []
                    for try await runID in rows.decode(String.self) { held.insert(runID) }
                    return held
                }
                outcomes.removeAll { !held.contains($0.runID) }
            }
        }
        if outcomes.isEmpty { return [] }
        throw StoreError(code: .conflict, message: "the engine's outcomes met conflicts five times in a row")
    }

    public func releaseLeases() async throws -> Int {
        try await call {
            try await Self.count(self.client.query("UPDATE run_tasks SET lease_owner = NULL, lease_until = 0 WHERE lease_owner IS NOT NULL RETURNING 1", logger: self.logger))
        }
    }

    public func nextTaskDue() async throws -> Timestamp? {
        try await call {
            let rows = try await self.client.query("SELECT min(greatest(due_at, lease_until)) FROM run_tasks", logger: self.logger)
            for try await due in rows.decode(Int64?.self) { return due }
            return nil
        }
    }

    public func engineQueue(now: Timestamp) async throws -> EngineQueueStats {
        try await call {
            let rows = try await self.client.query(
                """
                SELECT count(*) FILTER (WHERE due_at <= \(now) AND lease_until <= \(now)),
                       count(*) FILTER (WHERE lease_until > \(now)),
                       count(*) FILTER (WHERE due_at > \(now) AND lease_until <= \(now)),
                       min(due_at) FILTER (WHERE due_at <= \(now) AND lease_until <= \(now))
                  FROM run_tasks
                """,
                logger: self.logger
            )
            for try await (runnable, running, waiting, oldest) in rows.decode((Int64, Int64, Int64, Int64?).self) {
                return EngineQueueStats(runnable: Int(runnable), running: Int(running), waiting: Int(waiting), oldestRunnableAge: oldest.map { max(0, now - $0) } ?? 0)
            }
            return EngineQueueStats()
        }
    }

    public func outboxDepth() async throws -> Int {
        try await call {
            let rows = try await self.client.query("SELECT count(*) FROM outbox", logger: self.logger)
            for try await count in rows.decode(Int64.self) { return Int(count) }
            return 0
        }
    }

    public func vendors(orgID: String, afterID: String, limit: Int) async throws -> [VendorRecord] {
        try await call {
            let rows = try await self.client.query(
                "SELECT id, org_id, document, occurred_at FROM vendors WHERE org_id = \(orgID) AND id > \(afterID) ORDER BY id LIMIT \(limit)", logger: self.logger
            )
            var vendors: [VendorRecord] = []
            for try await (id, org, document, occurred) in rows.decode((String, String, ByteBuffer, Int64).self) {
                vendors.append(VendorRecord(id: id, orgID: org, document: Array(buffer: document), occurredAt: occurred))
            }
            return vendors
        }
    }

    public func pendingItems(runID: String) async throws -> Int {
        try await call {
            let rows = try await self.client.query("SELECT count(*) FROM run_tasks WHERE parent_id = \(runID) AND slots > 0", logger: self.logger)
            for try await count in rows.decode(Int64.self) { return Int(count) }
            return 0
        }
    }

    public func itemCounts(runID: String, stepID: String) async throws -> ItemCounts {
        try await call {
            let rows = try await self.client.query(
                """
                SELECT count(*), count(*) FILTER (WHERE status = 'success'), count(*) FILTER (WHERE status = 'failed'),
                       count(*) FILTER (WHERE status = 'skipped'), count(response)
                  FROM run_items WHERE run_id = \(runID) AND step_id = \(stepID)
                """,
                logger: self.logger
            )
            for try await (total, succeeded, failed, skipped, responses) in rows.decode((Int64, Int64, Int64, Int64, Int64).self) {
                return ItemCounts(total: Int(total), succeeded: Int(succeeded), failed: Int(failed), skipped: Int(skipped), responses: Int(responses))
            }
            return ItemCounts()
        }
    }

    public func itemResults(runID: String, stepID: String, afterKey: String, limit: Int) async throws -> [ItemResult] {
        try await call {
            let rows = try await self.client.query(
                """
                SELECT item_key, status, response, finished_at FROM run_items
                 WHERE run_id = \(runID) AND step_id = \(stepID) AND item_key > \(afterKey) ORDER BY item_key LIMIT \(limit)
                """,
                logger: self.logger
            )
            var results: [ItemResult] = []
            for try await (key, status, response, finished) in rows.decode((String, String, ByteBuffer?, Int64).self) {
                results.append(ItemResult(runID: runID, stepID: stepID, key: key, status: status, response: response.map { Array(buffer: $0) }, finishedAt: finished))
            }
            return results
        }
    }

    public func events(orgID: String, type: String, vendorID: String?, since: Timestamp, afterSequence: Int64, limit: Int) async throws -> [StoredEvent] {
        try await call {
            let rows = try await self.client.query(
                """
                SELECT sequence, org_id, event_id, event_type, vendor_id, run_id, data, received_at FROM engine_events
                 WHERE org_id = \(orgID) AND event_type = \(type) AND (\(vendorID)::text IS NULL OR vendor_id = \(vendorID))
                   AND sequence > \(afterSequence) AND received_at >= \(since)
                 ORDER BY sequence LIMIT \(limit)
                """,
                logger: self.logger
            )
            var events: [StoredEvent] = []
            for try await row in rows.decode((Int64, String, String, String, String?, String?, ByteBuffer, Int64).self) {
                events.append(StoredEvent(sequence: row.0, event: EngineEvent(
                    orgID: row.1, eventID: row.2, type: row.3, vendorID: row.4, runID: row.5, data: Array(buffer: row.6), receivedAt: row.7
                )))
            }
            return events
        }
    }

    public func task(runID: String) async throws -> EngineTask? {
        try await call {
            let rows = try await self.client.query(
                "SELECT run_id, org_id, due_at, state, source_topic, source_partition, fence, lease_owner, lease_until, parent_id, slots FROM run_tasks WHERE run_id = \(runID)",
                logger: self.logger
            )
            for try await row in rows.decode(TaskRow.self) { return Self.task(row) }
            return nil
        }
    }

    // MARK: Plumbing

    /// Runs `body` once the migrations are done, and turns PostgreSQL's errors into
    /// ``StoreError``s: a changed read is a ``StoreError/Code/conflict``; everything
    /// else (the server gone, a failed statement) ``StoreError/Code/unavailable``.
    /// - Parameter what: the call, named in a timeout's message (the caller's name by default).
    private func call<T: Sendable>(what: String = #function, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        if let error = await ready.wait() { throw error }
        calls.add(1, ordering: .relaxed)
        do {
            return try await Self.withDeadline(timeout, what: what, body)
        } catch {
            let failure = Self.storeError(error)
            if failure.timedOut { reportSessions(after: what) }
            throw failure
        }
    }

    /// Logs what the server's sessions on this database were doing when `what` timed out
    /// (at most once a minute), read on a connection of its own: a session idle or
    /// reading from this side (`ClientRead`) while a call waits tells a client that lost
    /// its answer from a server that is slow (active) or blocked (`Lock`). Statements are
    /// shown as their text only, cut short, and only for this store's role (its values
    /// are bound, never in it; another client's text may hold values); 20 sessions at most.
    private func reportSessions(after what: String) {
        let now = DispatchTime.now().uptimeNanoseconds
        let last = lastSessionsReport.load(ordering: .relaxed)
        // `last` may be later than `now` (another call's report won meanwhile): no wrap-around.
        guard last == 0 || (now > last && now - last > 60_000_000_000),
              lastSessionsReport.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged
        else { return }
        var configuration = self.configuration
        configuration.options.maximumConnections = 1
        configuration.options.additionalStartupParameters = [("statement_timeout", "10s")]
        let logger = self.logger
        Task.detached {
            do {
                let sessions = try await Self.withOwnClient(configuration, timeout: .seconds(10), what: "pg_stat_activity", logger: logger) { client in
                    var sessions: [String] = []
                    let rows = try await client.query(
                        """
                        SELECT pid, coalesce(state, ''), coalesce(wait_event_type, '') || '/' || coalesce(wait_event, ''),
                               coalesce(extract(epoch FROM clock_timestamp() - query_start)::float8, 0),
                               CASE WHEN usename = current_user THEN left(coalesce(query, ''), 80) ELSE '(a session of another role)' END
                          FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() ORDER BY pid LIMIT 20
                        """,
                        logger: logger
                    )
                    for try await (pid, state, wait, seconds, query) in rows.decode((Int32, String, String, Double, String).self) {
                        sessions.append("\(pid) \(state) \(wait) for \(Int(seconds)) s: \(query)")
                    }
                    return sessions
                }
                logger.warning("The database's sessions when a call timed out", metadata: ["call": "\(what)", "sessions": "\(sessions.joined(separator: " | "))"])
            } catch {
                logger.warning("The database's sessions could not be read after a call timed out", metadata: ["call": "\(what)", "error": "\(Self.reason(error))"])
            }
        }
    }

    /// A failure as a ``StoreError``: a changed read (TW001, a unique row that exists,
    /// a serialization failure or deadlock) is a conflict; everything else unavailable.
    static func storeError(_ failure: any Error) -> StoreError {
        let failure = cause(of: failure)
        if let error = failure as? StoreError { return error }
        guard let error = failure as? PSQLError else { return StoreError(code: .unavailable, message: reason(failure)) }
        switch error.serverInfo?[.sqlState] {
        case PostgresSchema.conflictState?:
            return StoreError(code: .conflict, message: error.serverInfo?[.message] ?? "a read changed")
        case "23505"?:
            // A run or assessment id exists already: another writer handled these inputs.
            return StoreError(code: .conflict, message: "a row the batch creates exists already: \(error.serverInfo?[.detail] ?? "")")
        case "40001"?, "40P01"?:
            // Serialization failure, deadlock: decide again on fresh state.
            return StoreError(code: .conflict, message: error.serverInfo?[.message] ?? "serialization failure")
        default:
            return StoreError(code: .unavailable, message: reason(error))
        }
    }

    /// What failed inside a transaction (its body, else its commit, begin or rollback).
    static func cause(of error: any Error) -> any Error {
        guard let error = error as? PostgresTransactionError else { return error }
        return error.closureError ?? error.commitError ?? error.beginError ?? error.rollbackError ?? error
    }

    /// The result of `body`, or a ``StoreError/Code/unavailable`` once `timeout` passed
    /// (see ``Deadline/run(_:what:_:)``).
    static func withDeadline<T: Sendable>(_ timeout: Duration, what: String = "", _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await Deadline.run(timeout, what: what, body)
    }

    /// Reads a result to its end (which releases its connection and surfaces a failure
    /// of the statement); returns how many rows it had.
    @discardableResult
    private static func count(_ rows: PostgresRowSequence) async throws -> Int {
        var count = 0
        for try await _ in rows { count += 1 }
        return count
    }

    /// What went wrong, without the query's bound values (they hold payloads and keys).
    static func reason(_ error: any Error) -> String {
        if let error = error as? StoreError { return error.message }
        if let error = error as? PSQLError {
            if let info = error.serverInfo {
                return "\(info[.sqlState] ?? "?"): \(info[.message] ?? "server error")"
            }
            return "\(error.code)"
        }
        if error is PostgresTransactionError {
            let inner = cause(of: error)
            return inner is PostgresTransactionError ? "a transaction failed" : reason(inner)
        }
        return "\(error)"
    }

    static func describe(_ configuration: PostgresClient.Configuration) -> String {
        "\(configuration.host ?? configuration.unixSocketPath ?? "?"):\(configuration.port.map(String.init) ?? "-")/\(configuration.database ?? configuration.username)"
    }

    /// The client configuration of a `postgres://` or `postgresql://` URL.
    public static func clientConfiguration(from url: String) throws -> PostgresClient.Configuration {
        guard url.hasPrefix("postgres://") || url.hasPrefix("postgresql://"), let components = URLComponents(string: url) else {
            throw StoreError(code: .invalidURL, message: "not a postgres:// URL")
        }
        guard let host = components.host, !host.isEmpty else {
            throw StoreError(code: .invalidURL, message: "a postgres:// URL needs a host")
        }
        let user = components.user.flatMap { $0.removingPercentEncoding ?? $0 } ?? "postgres"
        let password = components.password.flatMap { $0.removingPercentEncoding ?? $0 }
        let database = components.path.split(separator: "/").first.map(String.init)
        let mode = components.queryItems?.first { $0.name == "sslmode" }?.value ?? "prefer"
        let tls: PostgresClient.Configuration.TLS
        switch mode {
        case "disable": tls = .disable
        case "prefer", "allow": tls = .prefer(.makeClientConfiguration())
        case "require", "verify-ca", "verify-full": tls = .require(.makeClientConfiguration())
        default: throw StoreError(code: .invalidURL, message: "sslmode must be disable, prefer or require")
        }
        return PostgresClient.Configuration(host: host, port: components.port ?? 5432, username: user, password: password, database: database, tls: tls)
    }
}

// MARK: - Prepared statements

/// Everything a batch's decisions depend on, in one statement: partition marks
/// (kind 0), live idempotency records (1) and vendors (2), in one row shape.
struct LoadBatch: PostgresPreparedStatement {
    static let name = "tw_load_batch_v1"
    static let sql = """
        SELECT 0::integer, topic, NULL::text, NULL::text, partition::bigint, next_offset, epoch, NULL::bytea, NULL::bytea, NULL::bytea
          FROM partition_progress WHERE (topic, partition) IN (SELECT * FROM unnest($1::text[], $2::integer[]))
        UNION ALL
        SELECT 1, org_id, endpoint, key, status::bigint, created_at, expires_at, scope, fingerprint, body
          FROM idempotency WHERE scope = ANY($3::bytea[]) AND expires_at > $4
        UNION ALL
        SELECT 2, org_id, id, NULL, occurred_at, NULL, NULL, document, NULL, NULL
          FROM vendors WHERE (org_id, id) IN (SELECT * FROM unnest($5::text[], $6::text[]))
        """

    struct Row {
        var kind: Int32
        var text1: String?
        var text2: String?
        var text3: String?
        var int1: Int64?
        var int2: Int64?
        var int3: Int64?
        var bytes1: ByteBuffer?
        var bytes2: ByteBuffer?
        var bytes3: ByteBuffer?
    }

    let query: BatchQuery
    let now: Timestamp

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 6)
        let partitions = Array(query.partitions)
        bindings.append(partitions.map(\.topic))
        bindings.append(partitions.map(\.partition))
        bindings.append(query.scopes.map { ByteBuffer(bytes: $0.bytes) })
        bindings.append(now)
        let vendors = Array(query.vendors)
        bindings.append(vendors.map(\.orgID))
        bindings.append(vendors.map(\.vendorID))
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row {
        let (kind, text1, text2, text3, int1, int2, int3, bytes1, bytes2, bytes3) = try row.decode(
            (Int32, String?, String?, String?, Int64?, Int64?, Int64?, ByteBuffer?, ByteBuffer?, ByteBuffer?).self
        )
        return Row(kind: kind, text1: text1, text2: text2, text3: text3, int1: int1, int2: int2, int3: int3, bytes1: bytes1, bytes2: bytes2, bytes3: bytes3)
    }
}

/// A batch's writes, as the arrays `tw_apply_batch` takes.
struct ApplyBatch: PostgresPreparedStatement {
    static let name = "tw_apply_batch_v4"
    static let sql = "SELECT FROM tw_apply_batch(" + (1...41).map { "$\($0)" }.joined(separator: ", ") + ")"
    typealias Row = Void

    let writes: BatchWrites
    /// The vendors, one per key: the last written wins, as when they are applied one by one.
    let vendors: [VendorRecord]
    /// The outbox entries' encoded blobs with their sources.
    let outbox: [(topic: String, partition: Int32, blob: ByteBuffer)]

    /// `writes` as statements of at most about `maxBytes` of values each (one unless the
    /// batch is larger): the first moves the marks; records, vendors, runs, assessments
    /// and outbox entries follow in order, so that applied in order in one transaction
    /// they write what one statement would.
    static func parts(_ writes: BatchWrites, maxBytes: Int) -> [ApplyBatch] {
        let entries = OutboxCoding.entries(writes.outbox).map { entry in
            (topic: entry.source?.topic ?? "", partition: entry.source?.partition ?? -1, blob: ByteBuffer(bytes: OutboxCoding.encode(entry.messages)))
        }
        var parts: [ApplyBatch] = []
        var current = writes
        current.records = []
        current.vendors = []
        current.runs = []
        current.assessments = []
        current.outbox = []
        current.tasks = []
        var currentOutbox: [(topic: String, partition: Int32, blob: ByteBuffer)] = []
        var bytes = 0
        func room(_ size: Int) {
            if bytes > 0, bytes + size > maxBytes {
                parts.append(ApplyBatch(current, outbox: currentOutbox))
                current = BatchWrites()
                current.now = writes.now
                currentOutbox = []
                bytes = 0
            }
            bytes += size
        }
        for record in writes.records {
            room(record.responseBody.count + record.key.utf8.count + record.orgID.utf8.count + record.endpoint.utf8.count + 64)
            current.records.append(record)
        }
        for vendor in writes.vendors {
            room(vendor.document.count + vendor.id.utf8.count + vendor.orgID.utf8.count + 16)
            current.vendors.append(vendor)
        }
        for run in writes.runs {
            room(run.document.count + run.id.utf8.count + run.orgID.utf8.count + run.workflowName.utf8.count + run.status.utf8.count + 32)
            current.runs.append(run)
        }
        for assessment in writes.assessments {
            room(assessment.document.count + assessment.id.utf8.count + assessment.orgID.utf8.count + assessment.vendorID.utf8.count + 16)
            current.assessments.append(assessment)
        }
        for entry in entries {
            room(entry.blob.readableBytes + entry.topic.utf8.count + 8)
            currentOutbox.append(entry)
        }
        for task in writes.tasks {
            room(task.state.count + task.runID.utf8.count + task.orgID.utf8.count + (task.source?.topic.utf8.count ?? 0) + 24)
            current.tasks.append(task)
        }
        parts.append(ApplyBatch(current, outbox: currentOutbox))
        return parts
    }

    private init(_ writes: BatchWrites, outbox: [(topic: String, partition: Int32, blob: ByteBuffer)]) {
        // Rows with unique keys go in key order: two batches that claim overlapping keys
        // then wait for each other instead of deadlocking (which would still be settled,
        // as a conflict, but only after PostgreSQL's deadlock timeout).
        var writes = writes
        writes.records.sort { $0.scope.bytes.lexicographicallyPrecedes($1.scope.bytes) }
        writes.runs.sort { $0.id < $1.id }
        writes.assessments.sort { $0.id < $1.id }
        writes.tasks.sort { $0.runID < $1.runID }
        self.writes = writes
        var latest: [VendorKey: Int] = [:]
        var vendors: [VendorRecord] = []
        for vendor in writes.vendors {
            let key = VendorKey(orgID: vendor.orgID, vendorID: vendor.id)
            if let index = latest[key] {
                if vendor.occurredAt >= vendors[index].occurredAt { vendors[index] = vendor }
            } else {
                latest[key] = vendors.count
                vendors.append(vendor)
            }
        }
        self.vendors = vendors.sorted { ($0.orgID, $0.id) < ($1.orgID, $1.id) }
        self.outbox = outbox
    }

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 41)
        let marks = writes.watermarks.sorted { $0.key < $1.key }
        bindings.append(marks.map(\.key.topic))
        bindings.append(marks.map(\.key.partition))
        bindings.append(marks.map { $0.value.expected ?? -1 })
        bindings.append(marks.map(\.value.next))
        bindings.append(marks.map { ByteBuffer(bytes: writes.lastDigests[$0.key] ?? []) })
        bindings.append(marks.map { writes.epochs[$0.key] ?? 0 })

        let records = writes.records
        bindings.append(records.map { ByteBuffer(bytes: $0.scope.bytes) })
        bindings.append(records.map(\.orgID))
        bindings.append(records.map(\.endpoint))
        bindings.append(records.map(\.key))
        bindings.append(records.map { ByteBuffer(bytes: $0.fingerprint) })
        bindings.append(records.map { Int32(truncatingIfNeeded: $0.responseStatus) })
        bindings.append(records.map { ByteBuffer(bytes: $0.responseBody) })
        bindings.append(records.map(\.createdAt))
        bindings.append(records.map(\.expiresAt))

        bindings.append(vendors.map(\.orgID))
        bindings.append(vendors.map(\.id))
        bindings.append(vendors.map { ByteBuffer(bytes: $0.document) })
        bindings.append(vendors.map(\.occurredAt))

        let runs = writes.runs
        bindings.append(runs.map(\.id))
        bindings.append(runs.map(\.orgID))
        bindings.append(runs.map(\.workflowName))
        bindings.append(runs.map(\.status))
        bindings.append(runs.map(\.startedAt))
        bindings.append(runs.map { $0.finishedAt ?? -1 })
        bindings.append(runs.map { ByteBuffer(bytes: $0.document) })

        let assessments = writes.assessments
        bindings.append(assessments.map(\.id))
        bindings.append(assessments.map(\.orgID))
        bindings.append(assessments.map(\.vendorID))
        bindings.append(assessments.map(\.createdAt))
        bindings.append(assessments.map { ByteBuffer(bytes: $0.document) })

        bindings.append(outbox.map(\.topic))
        bindings.append(outbox.map(\.partition))
        bindings.append(outbox.map(\.blob))
        let tasks = writes.tasks
        bindings.append(tasks.map(\.runID))
        bindings.append(tasks.map(\.orgID))
        bindings.append(tasks.map(\.dueAt))
        bindings.append(tasks.map { ByteBuffer(bytes: $0.state) })
        bindings.append(tasks.map { $0.source?.topic ?? "" })
        bindings.append(tasks.map { $0.source?.partition ?? -1 })
        bindings.append(writes.now)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws {}
}

/// What engine claims did, as the arrays `tw_commit_tasks` takes (runs in id order,
/// so two instances committing at once lock rows in one order).
struct CommitTasks: PostgresPreparedStatement {
    static let name = "tw_commit_tasks_v6"
    static let sql = "SELECT FROM tw_commit_tasks(" + (1...19).map { "$\($0)" }.joined(separator: ", ") + ")"
    typealias Row = Void

    let outcomes: [TaskOutcome]
    let now: Timestamp

    init(_ outcomes: [TaskOutcome], now: Timestamp) {
        self.outcomes = outcomes
        self.now = now
    }

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 19)
        bindings.append(outcomes.map(\.runID))
        bindings.append(outcomes.map(\.fence))
        bindings.append(outcomes.map { $0.next?.dueAt ?? -1 })
        bindings.append(outcomes.map { ByteBuffer(bytes: $0.next?.state ?? []) })
        bindings.append(outcomes.map(\.status))
        bindings.append(outcomes.map { $0.finishedAt ?? -1 })
        bindings.append(outcomes.map { ByteBuffer(bytes: $0.document ?? []) })
        let assessments = outcomes.flatMap(\.assessments).sorted { $0.id < $1.id }
        bindings.append(assessments.map(\.id))
        bindings.append(assessments.map(\.orgID))
        bindings.append(assessments.map(\.vendorID))
        bindings.append(assessments.map(\.createdAt))
        bindings.append(assessments.map { ByteBuffer(bytes: $0.document) })
        let entries = OutboxCoding.entries(outcomes.flatMap(\.outbox))
        bindings.append(entries.map { $0.source?.topic ?? "" })
        bindings.append(entries.map { $0.source?.partition ?? -1 })
        bindings.append(entries.map { ByteBuffer(bytes: OutboxCoding.encode($0.messages)) })
        bindings.append(outcomes.map { $0.subscription?.eventType ?? "" })
        bindings.append(outcomes.map { $0.subscription?.vendorID ?? "" })
        bindings.append(outcomes.map { $0.subscription?.seenSequence ?? 0 })
        bindings.append(now)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws {}
}

// MARK: - Readiness

/// Opens once; waiters before that wait, later ones pass at once. Carries the
/// reason the store cannot be used, if any.
final class ReadyGate: Sendable {
    private struct State {
        var outcome: (any Error)??
        var waiters: [(id: Int, continuation: CheckedContinuation<(any Error)?, Never>)] = []
    }

    private let state = Mutex(State())

    func open(_ error: (any Error)?) {
        let waiters = state.withLock { state -> [(id: Int, continuation: CheckedContinuation<(any Error)?, Never>)] in
            guard state.outcome == nil else { return [] }
            state.outcome = .some(error)
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.continuation.resume(returning: error) }
    }

    /// `nil` once open without an error; the error it was opened with otherwise
    /// (`CancellationError` when the waiting task is cancelled first).
    func wait() async -> (any Error)? {
        let id = Self.nextID.add(1, ordering: .relaxed).oldValue
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let outcome = state.withLock { state -> (any Error)?? in
                    if let outcome = state.outcome { return .some(outcome) }
                    if Task.isCancelled { return .some(CancellationError()) }
                    state.waiters.append((id, continuation))
                    return nil
                }
                if let outcome { continuation.resume(returning: outcome) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<(any Error)?, Never>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
            waiter?.resume(returning: CancellationError())
        }
    }

    private static let nextID = Atomic<Int>(0)
}
