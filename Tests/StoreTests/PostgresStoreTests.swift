import Foundation
import Logging
import PostgresNIO
import PostgresTestSupport
@testable import Store
import Synchronization
import Testing

/// What a ``KeptLogs`` handler kept.
final class KeptLines: Sendable {
    let lines = Mutex<[String]>([])
}

/// Keeps the messages and metadata of what is logged through it, one line each.
struct KeptLogs: LogHandler {
    let kept: KeptLines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        let fields = (metadata.merging(event.metadata ?? [:]) { $1 }).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        kept.lines.withLock { $0.append("\(event.message) \(fields.joined(separator: " "))") }
    }
}

/// A lock that another session holds in a transaction of its own (an older instance, a
/// stalled client) until it is let go.
struct HeldLock {
    private let release: AsyncStream<Void>.Continuation
    private let holding: Task<Void, any Error>

    /// Runs `statement` (a `LOCK TABLE …`) in a transaction of `client`; returns once the
    /// lock is held.
    static func take(_ statement: String, on client: PostgresClient) async throws -> HeldLock {
        let release = AsyncStream<Void>.makeStream()
        let locked = AsyncStream<Void>.makeStream()
        let holding = Task {
            // Whatever happens, the wait below ends (a lock not taken fails the test, not hangs it).
            defer { locked.continuation.finish() }
            try await client.withTransaction(logger: TestPostgres.logger) { connection in
                try await connection.query(PostgresQuery(unsafeSQL: statement), logger: TestPostgres.logger)
                locked.continuation.yield()
                for await _ in release.stream { break }
            }
        }
        let held = HeldLock(release: release.continuation, holding: holding)
        for await _ in locked.stream { return held }
        try await held.end()  // the transaction's error, if it failed
        throw StoreError(code: .unavailable, message: "the other session did not take the lock")
    }

    /// Lets the lock go without waiting (a test leaving early).
    func letGo() { release.finish() }

    /// Ends the transaction and waits for it.
    func end() async throws {
        release.finish()
        try await holding.value
    }
}

@Suite("PostgreSQL store")
struct PostgresStoreTests {
    @Test("postgres:// URLs: user, password, host, port, database and sslmode; anything else is refused")
    func urls() throws {
        let configuration = try PostgresStore.clientConfiguration(from: "postgres://worker:s%40cret@db.example:6543/triggers?sslmode=disable")
        #expect(configuration.username == "worker")
        #expect(configuration.password == "s@cret")
        #expect(configuration.host == "db.example")
        #expect(configuration.port == 6543)
        #expect(configuration.database == "triggers")
        let defaults = try PostgresStore.clientConfiguration(from: "postgresql://db")
        #expect(defaults.port == 5432 && defaults.username == "postgres" && defaults.database == nil)
        #expect(throws: StoreError.self) { try PostgresStore.clientConfiguration(from: "postgres:///nohost") }
        #expect(throws: StoreError.self) { try PostgresStore.clientConfiguration(from: "postgres://db/x?sslmode=sometimes") }
        #expect(throws: StoreError.self) { try PostgresStore.clientConfiguration(from: "mysql://db/x") }
    }

    @Test("instances that start at once migrate in turns: each migration is applied once, the others find the schema current",
          .enabled(if: TestPostgres.url != nil, TestPostgres.skipReason))
    func concurrentMigrations() async throws {
        let url = try await TestPostgres.freshDatabase()
        let stores = try (0..<4).map { _ in try PostgresStore(url: url, poolSize: 2, migrate: false, logger: TestPostgres.logger) }
        let applied = try await withThrowingTaskGroup(of: [Int].self) { group in
            for store in stores { group.addTask { try await store.run(); return [] } }
            defer { group.cancelAll() }
            var results: [[Int]] = []
            try await withThrowingTaskGroup(of: [Int].self) { migrations in
                for store in stores { migrations.addTask { try await store.migrate().map(\.version) } }
                for try await versions in migrations { results.append(versions) }
            }
            return results
        }
        #expect(applied.flatMap { $0 }.sorted() == PostgresSchema.migrations.map(\.version), "every migration applied exactly once")
        #expect(applied.filter(\.isEmpty).count == 3)
    }

    @Test("a server that does not answer is a store error within the timeout, not a hang: at start-up and for each call")
    func unreachable() async throws {
        // Port 1: nothing listens there; the pool keeps reconnecting with backoff meanwhile.
        let url = "postgres://nobody@127.0.0.1:1/none?sslmode=disable"
        let starting = try PostgresStore(url: url, poolSize: 1, timeout: .seconds(1), startupTimeout: .seconds(1), logger: TestPostgres.logger)
        let outcome = await Task { try await starting.run() }.result
        guard case .failure(let error) = outcome else {
            Issue.record("the store ran without a server")
            return
        }
        #expect((error as? StoreError)?.code == .unavailable)

        let running = try PostgresStore(url: url, poolSize: 1, migrate: false, timeout: .seconds(1), logger: TestPostgres.logger)
        let pool = Task { try await running.run() }
        defer { pool.cancel() }
        await #expect(throws: StoreError.self) { _ = try await running.pendingOutbox(limit: 1) }
    }

    @Test("a call's deadline: a quick answer is never lost to the race with its timer; a slow one fails at the deadline, naming the call; cancellation ends the wait")
    func deadlines() async throws {
        for round in 0..<5000 {
            #expect(try await PostgresStore.withDeadline(.seconds(10)) { round } == round)
        }
        let started = ContinuousClock.now
        let late = await #expect(throws: StoreError.self) {
            try await PostgresStore.withDeadline(.milliseconds(50), what: "load(_:now:)") { try await Task.sleep(for: .seconds(30)); return 0 }
        }
        #expect(started.duration(to: .now) < .seconds(10))
        #expect(late?.code == .unavailable && late?.timedOut == true)
        #expect(late?.message.contains("(load(_:now:))") == true, "the timeout names the call that hung: \(late?.message ?? "")")
        let waiting = Task { try await PostgresStore.withDeadline(.seconds(30)) { try await Task.sleep(for: .seconds(30)); return 0 } }
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
    }

    @Test("a call that times out logs what the database's sessions were doing: here another session holding the lock the call waits on",
          .enabled(if: TestPostgres.url != nil, TestPostgres.skipReason))
    func timeoutReportsSessions() async throws {
        let url = try await TestPostgres.freshDatabase()
        let kept = KeptLines()
        let logger = Logger(label: "timeouts") { _ in KeptLogs(kept: kept) }
        let store = try PostgresStore(url: url, poolSize: 2, timeout: .seconds(1), logger: logger)
        let pool = Task { try await store.run() }
        defer { pool.cancel() }
        try await store.waitUntilReady()
        // Another session locks the table the call reads, until the call has timed out.
        let locker = PostgresClient(configuration: try PostgresStore.clientConfiguration(from: url), backgroundLogger: TestPostgres.logger)
        let lockerPool = Task { await locker.run() }
        defer { lockerPool.cancel() }
        let held = try await HeldLock.take("LOCK TABLE idempotency IN ACCESS EXCLUSIVE MODE", on: locker)
        defer { held.letGo() }
        var query = BatchQuery()
        query.scopes = [ScopeHash(bytes: Array(repeating: 7, count: 16))]
        let failure = await #expect(throws: StoreError.self) { _ = try await store.load(query, now: 1) }
        #expect(failure?.timedOut == true, "\(String(describing: failure))")
        // The report is read on a connection of its own, after the call failed.
        let deadline = ContinuousClock.now + .seconds(60)
        func report() -> String? { kept.lines.withLock { $0.first { $0.hasPrefix("The database's sessions") } } }
        while report() == nil, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        try await held.end()
        let line = try #require(report())
        #expect(line.contains("call=load(_:now:)"), "\(line)")
        // The session holding the lock, as the server sees it. (The call itself shows as
        // waiting on Lock/relation only until the server ends it, 5 s after the deadline: a
        // loaded machine may read the sessions later than that.)
        #expect(line.contains("idle in transaction Client/ClientRead") && line.contains("LOCK TABLE idempotency"), "\(line)")
    }

    @Test("a batch too large for one statement is written in several, in one transaction: all of it, or nothing when a part conflicts",
          .enabled(if: TestPostgres.url != nil, TestPostgres.skipReason))
    func largeBatches() async throws {
        let url = try await TestPostgres.freshDatabase()
        let store = try PostgresStore(url: url, poolSize: 2, maxStatementBytes: 1 << 20, logger: TestPostgres.logger)
        let pool = Task { try await store.run() }
        defer { pool.cancel() }
        let partition = PartitionID(topic: "t", partition: 0)
        func run(_ id: String) -> RunRecord {
            RunRecord(id: id, orgID: "o", workflowName: "w", status: "completed", startedAt: 1, finishedAt: 1, document: Array(repeating: 7, count: 400_000))
        }
        var writes = BatchWrites()
        writes.watermarks[partition] = (expected: nil, next: 5)
        writes.runs = (0..<5).map { run("cbwr_big\($0)") }
        writes.outbox = (0..<4).map { OutboxMessage(topic: "out", key: nil, value: Array(repeating: UInt8($0), count: 600_000), headers: [], source: partition) }
        #expect(ApplyBatch.parts(writes, maxBytes: 1 << 20).count >= 4)
        try await store.apply(writes)
        #expect(try await store.runs(statuses: [], limit: 10, offset: 0).count == 5)
        let entries = try await store.pendingOutbox(limit: 10)
        #expect(entries.flatMap(\.messages).map(\.value) == writes.outbox.map(\.value), "every message, in order")
        #expect(entries.allSatisfy { $0.source == partition })

        // The last part's run exists already: the parts before it, the mark included, roll back.
        var clash = BatchWrites()
        clash.watermarks[partition] = (expected: 5, next: 9)
        clash.runs = [run("cbwr_new0"), run("cbwr_new1"), run("cbwr_new2"), run("cbwr_big4")]
        await #expect(throws: StoreError.self) { try await store.apply(clash) }
        #expect(try await store.run(id: "cbwr_new0") == nil)
        #expect(try await store.partitionMarks([partition])[partition]?.next == 5)
    }

    @Test("a store migrated by a newer release is refused with a message that says so", .enabled(if: TestPostgres.url != nil, TestPostgres.skipReason))
    func newerSchema() async throws {
        let url = try await TestPostgres.freshDatabase()
        try await TestPostgres.withStore(url) { store in
            try await store.waitUntilReady()
        }
        let future = try PostgresStore(url: url, poolSize: 1, migrate: false, logger: TestPostgres.logger)
        let pool = Task { try await future.run() }
        defer { pool.cancel() }
        try await future.recordMigrationForTesting(version: PostgresSchema.latestVersion + 1)
        await #expect(throws: StoreError.self) { try await future.migrate() }
        do {
            _ = try await future.migrate()
        } catch let error as StoreError {
            #expect(error.message.contains("newer than this trigger-worker knows"))
        }
    }

    @Test("large values (outbox entries, task states, documents) are compressed with lz4 where the server has it, not pglz; a column whose table another session holds is left for the next start, not waited for; one set to pglz on purpose is left alone",
          .enabled(if: TestPostgres.url != nil, TestPostgres.skipReason))
    func lz4Values() async throws {
        let url = try await TestPostgres.freshDatabase()
        let store = try PostgresStore(url: url, poolSize: 2, logger: TestPostgres.logger)
        let pool = Task { try await store.run() }
        defer { pool.cancel() }
        try await store.waitUntilReady()
        if let error = await store.startupPass.wait() { throw error }
        guard try await store.serverHasLZ4() else {
            // PostgreSQL 13, or a server built without lz4: nothing to set (and no catalog column to read).
            #expect(await store.compressLargeValuesWithLZ4() == [])
            return
        }
        for (table, column) in PostgresSchema.largeValueColumns {
            #expect(try await store.columnCompression(table: table, column: column) == "l", "\(table).\(column), set at the start")
        }
        // An entry of events: large and repetitive, so stored compressed.
        let partition = PartitionID(topic: "t", partition: 0)
        var writes = BatchWrites()
        writes.watermarks[partition] = (expected: nil, next: 1)
        writes.outbox = (0..<40).map { index in
            OutboxMessage(topic: "workflow-run-status", key: Array("cbwr_\(index)".utf8), value: Array(#"{"data":{"status":"started","step":{}},"event_type":"WorkflowRun.StepUpdated"}"#.utf8), headers: [], source: partition)
        }
        try await store.apply(writes)
        #expect(try await store.outboxCompressions() == ["lz4"])
        #expect(try await store.pendingOutbox(limit: 1).flatMap(\.messages).map(\.value) == writes.outbox.map(\.value))

        // Another session (an older instance, say) holds the outbox: that column is left
        // after a second's wait, the others are set; pglz chosen on purpose stays.
        let other = PostgresClient(configuration: try PostgresStore.clientConfiguration(from: url), backgroundLogger: TestPostgres.logger)
        let otherPool = Task { await other.run() }
        defer { otherPool.cancel() }
        try await other.query("ALTER TABLE outbox ALTER COLUMN messages SET COMPRESSION default", logger: TestPostgres.logger)
        try await other.query("ALTER TABLE runs ALTER COLUMN document SET COMPRESSION default", logger: TestPostgres.logger)
        try await other.query("ALTER TABLE vendors ALTER COLUMN document SET COMPRESSION pglz", logger: TestPostgres.logger)
        let held = try await HeldLock.take("LOCK TABLE outbox IN ACCESS SHARE MODE", on: other)
        defer { held.letGo() }
        let started = ContinuousClock.now
        #expect(await store.compressLargeValuesWithLZ4() == ["outbox.messages"])
        #expect(ContinuousClock.now - started < .seconds(10), "waited for the lock about a second, not for its holder")
        #expect(try await store.columnCompression(table: "runs", column: "document") == "l")
        #expect(try await store.columnCompression(table: "outbox", column: "messages") == "")
        #expect(try await store.columnCompression(table: "vendors", column: "document") == "p")
        try await held.end()

        // The next start sets what was left.
        let restarted = try PostgresStore(url: url, poolSize: 1, logger: TestPostgres.logger)
        let restartedPool = Task { try await restarted.run() }
        defer { restartedPool.cancel() }
        if let error = await restarted.startupPass.wait() { throw error }
        #expect(try await restarted.columnCompression(table: "outbox", column: "messages") == "l")
        #expect(try await restarted.columnCompression(table: "vendors", column: "document") == "p")
    }
}

extension PostgresStore {
    /// How one of the large-value columns compresses (`l`, `p`, or empty for none chosen).
    func columnCompression(table: String, column: String) async throws -> String {
        guard let found = try await largeValueCompressions().first(where: { $0.table == table && $0.column == column }) else {
            throw StoreError(code: .unavailable, message: "no large-value column \(table).\(column)")
        }
        return found.method
    }
}

extension PostgresStoreTests {
    @Test("the server ends what a call gave up on: statements, lock waits and idle transactions are limited a little past the call's deadline",
          .enabled(if: TestPostgres.url != nil, TestPostgres.skipReason))
    func serverSideLimits() async throws {
        let url = try await TestPostgres.freshDatabase()
        let store = try PostgresStore(url: url, poolSize: 1, timeout: .seconds(7), logger: TestPostgres.logger)
        let pool = Task { try await store.run() }
        defer { pool.cancel() }
        for setting in ["statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"] {
            #expect(try await store.serverSetting(setting) == "12s", "\(setting)")
        }
    }
}

@Suite("Store test coverage")
struct StoreCoverageTests {
    @Test("the store semantics run against PostgreSQL too", .enabled(if: TestPostgres.url != nil, TestPostgres.skipReason))
    func postgresIncluded() {
        #expect(StoreKind.available.contains(.postgres))
    }
}
