import ArgumentParser
import Foundation
import Store
import Worker
import Workflows

/// `trigger-worker runs show|list`: read runs from the store.
struct RunsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runs",
        abstract: "Read workflow runs from the store (STORE_URL).",
        subcommands: [Show.self, List.self]
    )

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a run as GET /v1/workflows/runs/{id} returns it.")

        @Option(help: "A YAML or JSON configuration file; the environment wins.") var config: String?
        @Argument(help: "The run id (cbwr_…).") var id: String

        func run() async throws {
            try await StoreFactory.withStore(url: try loadConfiguration(config).storeURL) { store in
                guard let run = try await store.run(id: id) else {
                    FileHandleOutput.standardError("trigger-worker: no run \(id)\n")
                    throw ExitCode(1)
                }
                print(String(decoding: run.document, as: UTF8.self))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List runs, newest first.")

        @Option(help: "A YAML or JSON configuration file; the environment wins.") var config: String?
        @Option(help: "Only runs with this status (repeatable): started, completed, failed, canceled.") var status: [String] = []
        @Option(help: "At most this many (1–500).") var limit = 100
        @Option(help: "Skip this many.") var offset = 0

        func validate() throws {
            guard (1...500).contains(limit) else { throw ValidationError("--limit must be from 1 to 500") }
            for value in status where RunStatus(rawValue: value) == nil {
                throw ValidationError("--status \(value) is not one of started, completed, failed, canceled")
            }
        }

        func run() async throws {
            try await StoreFactory.withStore(url: try loadConfiguration(config).storeURL) { store in
                let runs = try await store.runs(statuses: status, limit: limit, offset: offset)
                for run in runs {
                    print("\(run.id)  \(run.status.padding(toLength: 9, withPad: " ", startingAt: 0))  \(run.startedAt)  \(run.workflowName)")
                }
                if runs.isEmpty { print("no runs") }
            }
        }
    }
}
