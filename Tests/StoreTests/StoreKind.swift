import Foundation
import Logging
import PostgresTestSupport
import Testing
@testable import Store

/// A store the semantic tests run against.
enum StoreKind: String, Sendable, CustomTestStringConvertible {
    case sqlite
    case postgres

    /// SQLite always; PostgreSQL when `TEST_POSTGRES_URL` names a server. `make test`
    /// starts one and sets it, so nothing is left out there.
    static let available: [StoreKind] = TestPostgres.url == nil ? [.sqlite] : [.sqlite, .postgres]

    var testDescription: String { rawValue }

    /// A store of this kind on a fresh database, running until ``OpenedStore/close()``.
    func open() async throws -> OpenedStore {
        switch self {
        case .sqlite:
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("store-\(UUID()).sqlite").path
            return OpenedStore(store: try SQLiteStore(path: path), task: nil)
        case .postgres:
            // The tests are about outcomes, not latency: a call has waited past 30 s (the
            // default) on a loaded CI, and past 120 s more than once, in `load` after conflicting
            // applies (a wait not yet explained: the store now logs the server's sessions
            // when a call times out).
            let store = try PostgresStore(url: try await TestPostgres.freshDatabase(), poolSize: 4, timeout: .seconds(120), logger: TestPostgres.logger)
            let task = Task { try await store.run() }
            return OpenedStore(store: store, task: task)
        }
    }
}

/// A store and, for PostgreSQL, the task running its connection pool.
struct OpenedStore: Sendable {
    let store: any Store
    let task: Task<Void, any Error>?

    func close() { task?.cancel() }
}
