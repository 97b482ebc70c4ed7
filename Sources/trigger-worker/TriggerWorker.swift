import ArgumentParser

/// The `trigger-worker` command line.
@main
struct TriggerWorker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trigger-worker",
        abstract: "Starts Coverbase workflows from Kafka messages: vendor events, assessment requests and named workflow runs.",
        subcommands: [RunCommand.self, MigrateCommand.self, ValidateCommand.self, SendCommand.self, WatchCommand.self, RunsCommand.self, OutboxCommand.self, APIKeyCommand.self, BenchCommand.self],
        defaultSubcommand: nil
    )
}
