import ArgumentParser
import Foundation
import Store
import Worker
import Workflows

/// `trigger-worker outbox list|retry|drop`: the parked outputs (§6), which the
/// broker refused for good and the publisher set aside.
struct OutboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "outbox",
        abstract: "Show and handle parked outputs: messages the broker refused for good (too large, invalid topic, not authorized).",
        subcommands: [List.self, Retry.self, Drop.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List parked outputs, oldest first.")

        @Option(help: "A YAML or JSON configuration file; the environment wins.") var config: String?
        @Option(help: "At most this many.") var limit = 100

        func run() async throws {
            try await StoreFactory.withStore(url: try loadConfiguration(config).storeURL) { store in
                let parked = try await store.parkedOutputs(limit: limit)
                if parked.isEmpty {
                    print("no parked outputs")
                    return
                }
                for output in parked {
                    print(OutboxCommand.describe(output))
                }
            }
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put a parked output back at the end of the outbox; a running worker publishes it within a second (it is parked again if refused again)."
        )

        @OptionGroup var parked: ParkedOutputOptions

        func run() async throws {
            try await parked.handle(done: "is back in the outbox") { try await $0.retryParked(id: $1) }
        }
    }

    struct Drop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a parked output for good.")

        @OptionGroup var parked: ParkedOutputOptions

        func run() async throws {
            try await parked.handle(done: "dropped") { try await $0.dropParked(id: $1) }
        }
    }

    /// The store and the id of the parked output `retry` and `drop` act on.
    struct ParkedOutputOptions: ParsableArguments {
        @Option(help: "A YAML or JSON configuration file; the environment wins.") var config: String?
        @Argument(help: "The parked output's id (from outbox list).") var id: Int64

        /// Runs `action` on the store; says `done` when it found the output, else fails with exit status 1.
        func handle(done: String, _ action: (any Store, Int64) async throws -> Bool) async throws {
            try await StoreFactory.withStore(url: try loadConfiguration(config).storeURL) { store in
                guard try await action(store, id) else {
                    FileHandleOutput.standardError("trigger-worker: no parked output \(id)\n")
                    throw ExitCode(1)
                }
                print("parked output \(id) \(done)")
            }
        }
    }

    /// One line: id, when, topic, key, size, event type and error; what an input
    /// controls (the key) is cut and its control characters escaped.
    static func describe(_ output: ParkedOutput) -> String {
        let message = output.message
        let when = Date(timeIntervalSince1970: Double(output.parkedAt) / 1000).formatted(.iso8601)
        let key = message.key.map { BoundedText.escapingControls(BoundedText.cut(String(decoding: $0, as: UTF8.self), maxBytes: 64)) } ?? "-"
        let type = message.headers.first { $0.name == "event-type" || $0.name == "error-code" }
            .map { BoundedText.escapingControls(BoundedText.cut(String(decoding: $0.value, as: UTF8.self), maxBytes: 64)) } ?? "-"
        return "\(output.id)  \(when)  topic=\(message.topic)  key=\(key)  bytes=\(message.byteCount)  type=\(type)  error=\(output.errorCode): \(BoundedText.escapingControls(output.error))"
    }
}
