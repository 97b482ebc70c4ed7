import ArgumentParser
import Foundation
import Kafka
import Logging
import Worker
import Workflows

/// `trigger-worker watch`: print the status (and dead-letter) topic as it is written.
struct WatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Print every event on RUN_STATUS_TOPIC (and dead letters with --dead-letters) until Ctrl-C."
    )

    @Option(help: "A YAML or JSON configuration file; the environment wins.") var config: String?
    @Flag(help: "Start from the oldest event instead of the next one.") var fromBeginning = false
    @Flag(name: .customLong("dead-letters"), help: "Also print DLQ_TOPIC, with the error headers.") var deadLetters = false
    @Flag(help: "Print each event as raw JSON instead of a summary line.") var json = false
    @Option(name: .customLong("run"), help: "Only the events of this run (cbwr_…), and the response that started it.") var runID: String?

    /// One line to standard output, unbuffered (watch output is often piped).
    static func write(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    func run() async throws {
        let configuration = try loadConfiguration(config)
        var logger = Logger(label: "trigger-worker-watch")
        logger.logLevel = .error
        var topics = [configuration.topics.runStatus]
        if deadLetters { topics.append(configuration.topics.deadLetter) }
        var consumerConfiguration = KafkaConsumerConfiguration(common: configuration.kafka, groupID: "trigger-worker-watch-\(UUID().uuidString.prefix(8))", topics: topics)
        consumerConfiguration.autoOffsetReset = fromBeginning ? .earliest : .latest
        let consumer = try KafkaConsumer(configuration: consumerConfiguration, logger: logger)
        let signals = [SIGINT, SIGTERM].map { signal in
            let source = DispatchSource.makeSignalSource(signal: signal)
            source.setEventHandler { consumer.triggerShutdown() }
            Foundation.signal(signal, SIG_IGN)
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        FileHandleOutput.standardError("watching \(topics.joined(separator: ", ")) (Ctrl-C to stop)\n")
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await consumer.run() }
            group.addTask {
                for await event in consumer.events {
                    guard case .messages(let batch) = event else { continue }
                    for message in batch {
                        let value = String(decoding: message.value ?? [], as: UTF8.self)
                        let envelope = try? JSONValue.parse(message.value ?? [])
                        if let runID, envelope.flatMap(EventSummary.runID) != runID { continue }
                        if message.topic == configuration.topics.deadLetter {
                            let errors = message.headers.filter { $0.key.hasPrefix("error-") || $0.key.hasPrefix("source-") }
                                .map { "\($0.key)=\($0.stringValue ?? "")" }.joined(separator: " ")
                            Self.write("DEAD LETTER [\(errors)] \(value)")
                        } else {
                            let type = message.headers.first(named: "event-type")?.stringValue ?? envelope?["event_type"]?.stringValue ?? "?"
                            if json || envelope == nil {
                                Self.write("\(type) \(value)")
                            } else if let envelope {
                                Self.write(EventSummary.line(type, envelope))
                            }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
    }
}
