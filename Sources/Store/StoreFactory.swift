import Logging
import ServiceLifecycle

/// Opens the store a `STORE_URL` names.
public enum StoreFactory {
    /// `sqlite://relative/path.sqlite` (relative to the working directory) or `sqlite:///absolute/path.sqlite`.
    public static func sqlitePath(from url: String) throws(StoreError) -> String {
        guard url.hasPrefix("sqlite://") else {
            throw StoreError(code: .invalidURL, message: "not a sqlite:// URL")
        }
        let path = String(url.dropFirst("sqlite://".count))
        guard !path.isEmpty, path != "/" else { throw StoreError(code: .invalidURL, message: "sqlite:// URL without a path") }
        return path
    }

    /// Whether `url` names a PostgreSQL store.
    public static func isPostgres(_ url: String) -> Bool {
        url.hasPrefix("postgres://") || url.hasPrefix("postgresql://")
    }

    /// Opens the store for `url`. A PostgreSQL store is a `Service`: it must run (in the
    /// worker's service group, or through ``withStore(url:poolSize:logger:_:)``) to be used.
    /// - Parameter poolSize: the most connections a PostgreSQL store opens.
    public static func open(url: String, poolSize: Int = 8, migrate: Bool = true, logger: Logger = Logger(label: "trigger-worker.store")) throws -> any Store {
        if isPostgres(url) {
            return try PostgresStore(url: url, poolSize: poolSize, migrate: migrate, logger: logger)
        }
        return try SQLiteStore(path: sqlitePath(from: url))
    }

    /// Opens the store for `url`, runs it while `body` runs (a PostgreSQL store's
    /// connection pool), and closes it after: for commands that use a store once.
    public static func withStore<T>(
        url: String, poolSize: Int = 2, migrate: Bool = true, logger: Logger = Logger(label: "trigger-worker.store"),
        _ body: (any Store) async throws -> T
    ) async throws -> T {
        let store = try open(url: url, poolSize: poolSize, migrate: migrate, logger: logger)
        guard let service = store as? any Service else { return try await body(store) }
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await service.run() }
            defer { tasks.cancelAll() }
            return try await body(store)
        }
    }
}
