import Foundation
import PostgresTestSupport
@testable import Store
import Testing

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
}
