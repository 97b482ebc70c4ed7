import Foundation
import Logging
import Store
import Testing

/// The test server `make test` starts (scripts/postgres.sh).
public enum TestPostgres {
    public static let url: String? = ProcessInfo.processInfo.environment["TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
    public static let skipReason: Comment = "TEST_POSTGRES_URL is not set: run `make test`, which starts a private PostgreSQL"
    public static let logger: Logger = {
        var logger = Logger(label: "store-tests")
        // Info: the pool's failed connection attempts are info, and they are what a
        // call that timed out waiting for a connection leaves to go on.
        logger.logLevel = .info
        return logger
    }()

    /// Creates an empty database on the test server; returns its URL.
    public static func freshDatabase() async throws -> String {
        guard let url else { throw StoreError(code: .unavailable, message: "\(skipReason)") }
        return try await PostgresStore.createDatabase(named: "tw_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased(), serverURL: url, logger: logger)
    }
}

extension TestPostgres {
    /// Runs `body` with a store on the database at `url` (its pool running meanwhile).
    public static func withStore<T>(_ url: String, _ body: (PostgresStore) async throws -> T) async throws -> T {
        let store = try PostgresStore(url: url, poolSize: 2, logger: logger)
        let pool = Task { try await store.run() }
        defer { pool.cancel() }
        return try await body(store)
    }
}
