import ArgumentParser
import Logging
import Store
import Worker

/// `trigger-worker migrate`: brings the store's schema up to date and exits. `run`
/// applies the same migrations at start-up; on PostgreSQL they are applied under an
/// advisory lock, so instances (or this command) starting at once take turns.
struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Apply the store's schema migrations (STORE_URL) and exit; safe to run while workers start."
    )

    @Option(help: "A YAML or JSON configuration file; the environment wins.") var config: String?

    func run() async throws {
        let configuration = try loadConfiguration(config)
        let logger = Logger(label: "trigger-worker.migrate")
        do {
            // A SQLite store is migrated as it opens; a PostgreSQL store here, explicitly.
            let applied = try await StoreFactory.withStore(url: configuration.storeURL, migrate: false, logger: logger) { store -> [String] in
                guard let postgres = store as? PostgresStore else { return [] }
                return try await postgres.migrate().map { "\($0.version)-\($0.name)" }
            }
            let target = WorkerConfiguration.redactedURL(configuration.storeURL)
            print(applied.isEmpty ? "store \(target) is up to date" : "store \(target): applied \(applied.joined(separator: ", "))")
        } catch {
            FileHandleOutput.standardError("trigger-worker: cannot migrate the store: \(error)\n")
            throw ExitCode(1)
        }
    }
}
