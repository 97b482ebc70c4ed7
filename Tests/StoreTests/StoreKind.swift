import Foundation
import Logging
import PostgresNIO
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
            let store = try PostgresStore(url: try await TestPostgres.freshDatabase(), poolSize: 4, logger: TestPostgres.logger)
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

/// The test server `make test` starts (scripts/postgres.sh).
enum TestPostgres {
    static let url: String? = ProcessInfo.processInfo.environment["TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
    static let skipReason: Comment = "TEST_POSTGRES_URL is not set: run `make test`, which starts a private PostgreSQL"
    static let logger: Logger = {
        var logger = Logger(label: "store-tests")
        logger.logLevel = .warning  // the pool's reconnection attempts are info
        return logger
    }()

    /// Creates an empty database on the test server; returns its URL.
    static func freshDatabase() async throws -> String {
        guard let url else { throw StoreError(code: .unavailable, message: "\(skipReason)") }
        let name = "tw_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let client = PostgresClient(configuration: try PostgresStore.configuration(from: url), backgroundLogger: logger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { await client.run() }
            defer { tasks.cancelAll() }
            for try await _ in try await client.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: logger) {}
        }
        var components = URLComponents(string: url)!
        components.path = "/\(name)"
        return components.string!
    }
}
