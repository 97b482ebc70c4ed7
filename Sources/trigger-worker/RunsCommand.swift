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
        static let configuration = CommandConfiguration(
            abstract: "Print a run: its status and steps (attempts, next attempt, what it waits for, deadline); --json for the run object."
        )

        @Option(help: "A YAML or JSON configuration file; the environment wins.") var config: String?
        @Flag(help: "Print the run object as GET /v1/workflows/runs/{id} returns it.") var json = false
        @Argument(help: "The run id (cbwr_…).") var id: String

        func run() async throws {
            try await StoreFactory.withStore(url: try loadConfiguration(config).storeURL) { store in
                guard let run = try await store.run(id: id) else {
                    FileHandleOutput.standardError("trigger-worker: no run \(id)\n")
                    throw ExitCode(1)
                }
                if json {
                    print(String(decoding: run.document, as: UTF8.self))
                    return
                }
                let document = (try? JSONValue.parse(run.document)) ?? .null
                // The engine's state, while the run has one (it goes when the run ends).
                let state = try await store.task(runID: id).flatMap { try? RunState(decoding: $0.state) }
                print("\(run.id)  \(run.workflowName)  \(run.status)")
                print("  started \(Self.time(run.startedAt))" + (run.finishedAt.map { ", finished \(Self.time($0))" } ?? ""))
                if let trigger = document["trigger"], trigger != .null { print("  trigger \(trigger.canonicalString)") }
                var rows = [["step", "action", "status", "attempts", "next attempt", "waiting for", "deadline", "message"]]
                for (index, step) in (document["steps"]?.arrayValue ?? []).enumerated() {
                    let engine = state?.steps.indices.contains(index) == true ? state?.steps[index] : nil
                    var waiting = engine?.waitingFor.map { $0.canonicalString } ?? ""
                    if step["action_type"] == "for_each", engine?.status == .running {
                        let counts = try await store.itemCounts(runID: id, stepID: step["component_id"]?.stringValue ?? "")
                        waiting = "items: \(counts.total) ended (\(counts.succeeded) ok, \(counts.failed) failed), \(try await store.pendingItems(runID: id)) to go"
                    }
                    rows.append([
                        step["component_id"]?.stringValue ?? "", step["action_type"]?.stringValue ?? "",
                        engine?.status?.rawValue ?? step["status"]?.stringValue ?? "pending",
                        engine.map { String($0.attempts) } ?? "",
                        engine?.nextAttemptAt.map { Self.time($0 / 1000) } ?? "",
                        String(waiting.prefix(60)),
                        engine?.wakeAt.flatMap { $0 < RunEngine.noDeadline ? Self.time($0 / 1000) : nil } ?? "",
                        String((step["message"]?.stringValue ?? "").prefix(60)),
                    ])
                }
                print(Self.table(rows))
            }
        }

        static func time(_ seconds: Int64) -> String {
            let formatter = ISO8601DateFormatter()
            return formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
        }

        /// Columns padded to their widest cell.
        static func table(_ rows: [[String]]) -> String {
            let widths = (0..<(rows.first?.count ?? 0)).map { column in rows.map { $0[column].count }.max() ?? 0 }
            return rows.map { row in
                zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
            }.joined(separator: "\n")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List runs, newest first.")

        @Option(help: "A YAML or JSON configuration file; the environment wins.") var config: String?
        @Option(help: "Only runs with this status (repeatable): started, waiting, completed, failed, canceled.") var status: [String] = []
        @Option(help: "At most this many (1–500).") var limit = 100
        @Option(help: "Skip this many.") var offset = 0

        func validate() throws {
            guard (1...500).contains(limit) else { throw ValidationError("--limit must be from 1 to 500") }
            for value in status where RunStatus(rawValue: value) == nil {
                throw ValidationError("--status \(value) is not one of started, waiting, completed, failed, canceled")
            }
        }

        func run() async throws {
            try await StoreFactory.withStore(url: try loadConfiguration(config).storeURL) { store in
                let runs = try await store.runs(statuses: status, limit: limit, offset: offset)
                if runs.isEmpty {
                    print("no runs")
                    return
                }
                print(Show.table([["run", "status", "started", "workflow"]] + runs.map { [$0.id, $0.status, Show.time($0.startedAt), $0.workflowName] }))
            }
        }
    }
}
