import ArgumentParser
import Foundation
import Kafka
import Logging
import Worker
import Workflows

/// `trigger-worker send …`: publish a well-formed input, print it, and (unless
/// `--no-wait`) print the response and the status events it caused.
struct SendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Publish a vendor event or a trigger request (for demos and smoke tests) and show what it caused.",
        subcommands: [VendorCreated.self, WorkflowRun.self, AssessmentCreate.self, QuestionnaireResponse.self, CancelRun.self, Requests.self]
    )

    struct Common: ParsableArguments {
        @Option(help: "A YAML or JSON configuration file (KAFKA_BROKERS, topics …); the environment wins.")
        var config: String?

        @Flag(help: "Print the status events as raw JSON (one per line) instead of a summary line each.")
        var json = false

        @Flag(inversion: .prefixedNo, help: "Wait for the response and the run's status events, and print them.")
        var wait = true

        @Option(help: "How long to wait for them, in seconds.")
        var timeout: Int = 30

        func loadConfiguration() throws -> WorkerConfiguration {
            try trigger_worker.loadConfiguration(config)
        }
    }

    struct RequestOptions: ParsableArguments {
        @Option(name: .customLong("api-key"), help: "The API key (Authorization: Bearer …); default: $TRIGGER_WORKER_API_KEY.")
        var apiKey: String?

        @Option(name: .customLong("idempotency-key"), help: "The Idempotency-Key header.")
        var idempotencyKey: String?

        @Option(name: .customLong("request-id"), help: "The Request-Id header, echoed in the outputs.")
        var requestID: String?

        func headers() throws -> [KafkaHeader] {
            guard let key = apiKey ?? ProcessInfo.processInfo.environment["TRIGGER_WORKER_API_KEY"] else {
                throw ValidationError("--api-key is required (or set TRIGGER_WORKER_API_KEY); the demo key is in examples/orgs.yaml")
            }
            var headers = [KafkaHeader(key: "Authorization", value: "Bearer \(key)")]
            if let idempotencyKey { headers.append(KafkaHeader(key: "Idempotency-Key", value: idempotencyKey)) }
            if let requestID { headers.append(KafkaHeader(key: "Request-Id", value: requestID)) }
            return headers
        }
    }

    // MARK: Pattern 1

    struct VendorCreated: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "vendor-created", abstract: "Publish a Vendor.Created event (Pattern 1).")

        @OptionGroup var common: Common
        @Option(help: "The org (cborg_…).") var org: String
        @Option(name: .customLong("vendor-id"), help: "The vendor id; default: a new one.") var vendorID: String?
        @Option(help: "The vendor's name.") var name = "Acme Payroll"
        @Option(help: "The vendor's tier.") var tier = "high"
        @Option(name: .customLong("tag"), help: "A tag (repeatable).") var tags: [String] = ["processes_pii"]
        @Option(name: .customLong("owner-email"), help: "The internal owner's email.") var ownerEmail = "risk-owner@example.com"
        @Option(name: .customLong("event-id"), help: "The event id; default: a new one.") var eventID: String?
        @Flag(help: "Send Vendor.Updated instead of Vendor.Created.") var updated = false
        @Option(name: .customLong("signing-secret"), help: "Sign the value with this webhook signing secret (Coverbase-Signature).") var signingSecret: String?

        func run() async throws {
            let configuration = try common.loadConfiguration()
            let event: JSONValue = [
                "event_id": .string(eventID ?? SendCommand.newID("cbevt")),
                "event_type": .string(updated ? "Vendor.Updated" : "Vendor.Created"),
                "occurred_at": .int(Int64(Date().timeIntervalSince1970)),
                "org_id": .string(org),
                "data": ["vendor": [
                    "id": .string(vendorID ?? SendCommand.newID("cbvndr")), "name": .string(name), "tier": .string(tier),
                    "tags": .array(tags.map(JSONValue.string)), "owner_email": .string(ownerEmail), "attributes": .object([:]),
                ]],
            ]
            let value = event.canonicalBytes
            var headers: [KafkaHeader] = []
            if let signingSecret {
                headers.append(KafkaHeader(key: "Coverbase-Signature", value: WebhookSignature.compute(value, secret: signingSecret)))
            }
            let key = event[path: ["data", "vendor", "id"]]!.stringValue!
            try await SendCommand.send(configuration, topic: configuration.topics.vendorEvents, key: key, value: value, headers: headers, common: common)
        }
    }

    // MARK: Pattern 3

    struct WorkflowRun: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "workflow-run", abstract: "Publish a workflow_run request (Pattern 3).")

        @OptionGroup var common: Common
        @OptionGroup var request: RequestOptions
        @Option(help: "The workflow to run.") var workflow: String
        @Option(help: "The run's input, as a JSON object.") var input = "{}"
        @Option(help: "Send this many requests (keys <idempotency-key>-1 … -N, or generated ones), with a progress line; their events are not waited for.")
        var count = 1

        func run() async throws {
            let configuration = try common.loadConfiguration()
            guard let input = try? JSONValue.parse(Array(input.utf8)) else { throw ValidationError("--input must be JSON") }
            let value: JSONValue = ["request_type": "workflow_run", "workflow_name": .string(workflow), "body": ["input": input]]
            guard count == 1 else {
                guard (1...1_000_000).contains(count) else { throw ValidationError("--count must be 1 to 1,000,000") }
                let prefix = request.idempotencyKey ?? "gen-\(UUID().uuidString.prefix(8).lowercased())"
                let headers = try request.headers().filter { $0.key != "Idempotency-Key" }
                let encoded = value.canonicalBytes
                let messages = (1...count).map { index in
                    let key = "\(prefix)-\(index)"
                    return KafkaProducerMessage(
                        topic: configuration.topics.triggerRequests, key: Array(key.utf8), value: encoded,
                        headers: headers + [KafkaHeader(key: "Idempotency-Key", value: key)]
                    )
                }
                try await SendCommand.sendMany(configuration, messages)
                return
            }
            try await SendCommand.send(
                configuration, topic: configuration.topics.triggerRequests, key: request.idempotencyKey ?? workflow,
                value: value.canonicalBytes, headers: try request.headers(), common: common
            )
        }
    }

    // MARK: Pattern 2

    struct AssessmentCreate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "assessment-create", abstract: "Publish an assessment_create request (Pattern 2).")

        @OptionGroup var common: Common
        @OptionGroup var request: RequestOptions
        @Option(name: .customLong("vendor-id"), help: "The vendor (it must have been seen in a vendor event).") var vendorID: String
        @Option(name: .customLong("control-set-id"), help: "A control set (repeatable).") var controlSetIDs: [String] = []
        @Option(name: .customLong("service-id"), help: "A service (repeatable).") var serviceIDs: [String] = []
        @Option(name: .customLong("trigger-workflow"), help: "A workflow to start alongside the assessment.") var triggerWorkflow: String?
        @Option(help: "The assessment's name.") var name: String?

        func run() async throws {
            let configuration = try common.loadConfiguration()
            var body: [String: JSONValue] = [
                "vendor_id": .string(vendorID),
                "control_set_ids": .array(controlSetIDs.map(JSONValue.string)),
                "service_ids": .array(serviceIDs.map(JSONValue.string)),
            ]
            if let triggerWorkflow { body["trigger_workflow"] = .string(triggerWorkflow) }
            if let name { body["name"] = .string(name) }
            let value: JSONValue = ["request_type": "assessment_create", "body": .object(body)]
            try await SendCommand.send(
                configuration, topic: configuration.topics.triggerRequests, key: request.idempotencyKey ?? vendorID,
                value: value.canonicalBytes, headers: try request.headers(), common: common
            )
        }
    }

    // MARK: Responses that steps wait for

    struct QuestionnaireResponse: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "questionnaire-response",
            abstract: "Publish a QuestionnaireResponse.Submitted event (what a wait_for_event step waits for)."
        )

        @OptionGroup var common: Common
        @Option(help: "The org (cborg_…).") var org: String
        @Option(name: .customLong("vendor-id"), help: "The vendor that answered (cbvndr_…).") var vendorID: String
        @Option(name: .customLong("run-id"), help: "The run it answers (cbwr_…): it then matches only that run's waits.") var runID: String?
        @Option(name: .customLong("questionnaire-id"), help: "The questionnaire (cbqst_…); default: a new one.") var questionnaireID: String?
        @Option(help: "The answers, as a JSON object.") var answers = #"{"q1":"yes"}"#
        @Option(name: .customLong("event-id"), help: "The event id; default: a new one (send the same one again to see it counted once).") var eventID: String?
        @Option(name: .customLong("signing-secret"), help: "Sign the value with this webhook signing secret (Coverbase-Signature).") var signingSecret: String?

        func run() async throws {
            let configuration = try common.loadConfiguration()
            guard let answers = try? JSONValue.parse(Array(answers.utf8)), answers.objectValue != nil else { throw ValidationError("--answers must be a JSON object") }
            var data: [String: JSONValue] = [
                "questionnaire_id": .string(questionnaireID ?? SendCommand.newID("cbqst")), "vendor_id": .string(vendorID),
                "submitted_at": .int(Int64(Date().timeIntervalSince1970)), "answers": answers,
            ]
            if let runID { data["workflow_run_id"] = .string(runID) }
            let event: JSONValue = [
                "event_id": .string(eventID ?? SendCommand.newID("cbevt")), "event_type": .string(WaitableEvent.questionnaireResponse),
                "occurred_at": .int(Int64(Date().timeIntervalSince1970)), "org_id": .string(org), "data": .object(data),
            ]
            let value = event.canonicalBytes
            var headers: [KafkaHeader] = []
            if let signingSecret {
                headers.append(KafkaHeader(key: "Coverbase-Signature", value: WebhookSignature.compute(value, secret: signingSecret)))
            }
            var quiet = common
            quiet.wait = false  // it starts nothing of its own: the runs it resumes go on in `watch`
            try await SendCommand.send(configuration, topic: configuration.topics.vendorEvents, key: vendorID, value: value, headers: headers, common: quiet)
        }
    }

    // MARK: Cancel

    struct CancelRun: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "cancel-run", abstract: "Publish a workflow_run_cancel request (≡ POST /v1/workflows/runs/{id}/cancel).")

        @OptionGroup var common: Common
        @OptionGroup var request: RequestOptions
        @Option(name: .customLong("run-id"), help: "The run to cancel (cbwr_…).") var runID: String

        func run() async throws {
            let configuration = try common.loadConfiguration()
            let value: JSONValue = ["request_type": "workflow_run_cancel", "body": ["workflow_run_id": .string(runID)]]
            try await SendCommand.send(
                configuration, topic: configuration.topics.triggerRequests, key: runID,
                value: value.canonicalBytes, headers: try request.headers(), common: common
            )
        }
    }

    // MARK: Many

    struct Requests: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "requests",
            abstract: "Publish the trigger requests of a file, one JSON object per line, with a progress line.",
            discussion: """
                Each line is a request as §4 has it ({"request_type": …, "body": …}), or {"headers": {…}, "value": {…}} \
                to give it headers of its own (Idempotency-Key, Request-Id, Authorization …). The API key of --api-key \
                (or $TRIGGER_WORKER_API_KEY) is used where a line gives none.
                """
        )

        @OptionGroup var common: Common
        @OptionGroup var request: RequestOptions
        @Argument(help: "The file (- for standard input).") var file: String

        func run() async throws {
            let configuration = try common.loadConfiguration()
            let text: String
            if file == "-" {
                text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
            } else {
                guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read \(file)") }
                text = String(decoding: data, as: UTF8.self)
            }
            let defaults = try request.headers()
            var messages: [KafkaProducerMessage] = []
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                guard !trimmed.isEmpty else { continue }
                guard let json = try? JSONValue.parse(Array(trimmed.utf8)), json.objectValue != nil else {
                    throw ValidationError("\(file):\(number + 1): not a JSON object")
                }
                let value = json["value"] ?? json
                var headers = (json["headers"]?.objectValue ?? [:]).sorted { $0.key < $1.key }.compactMap { name, value in
                    value.stringValue.map { KafkaHeader(key: name, value: $0) }
                }
                for header in defaults where !headers.contains(where: { $0.key.lowercased() == header.key.lowercased() }) { headers.append(header) }
                let key = headers.first { $0.key.lowercased() == "idempotency-key" }?.stringValue ?? "\(file):\(number + 1)"
                messages.append(KafkaProducerMessage(topic: configuration.topics.triggerRequests, key: Array(key.utf8), value: value.canonicalBytes, headers: headers))
            }
            guard !messages.isEmpty else { throw ValidationError("\(file) has no requests") }
            try await SendCommand.sendMany(configuration, messages)
        }
    }

    /// Publishes `messages` a thousand at a time, with a progress line on standard error;
    /// fails (exit 1) when any was not delivered, saying how many.
    static func sendMany(_ configuration: WorkerConfiguration, _ messages: [KafkaProducerMessage]) async throws {
        var logger = Logger(label: "trigger-worker-send")
        logger.logLevel = .error
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(common: configuration.kafka), logger: logger)
        let started = ContinuousClock.now
        var sent = 0, failed = 0
        var firstError: String?
        for start in stride(from: 0, to: messages.count, by: 1000) {
            let results = await producer.send(Array(messages[start..<min(start + 1000, messages.count)]))
            for result in results {
                switch result {
                case .success: sent += 1
                case .failure(let error): failed += 1; if firstError == nil { firstError = "\(error)" }
                }
            }
            let seconds = max(0.001, (ContinuousClock.now - started).seconds)
            FileHandleOutput.standardError(String(format: "\rsent %d/%d (%.0f/s)%@", sent, messages.count, Double(sent) / seconds, failed > 0 ? ", \(failed) failed" : ""))
        }
        try await producer.shutdown()
        FileHandleOutput.standardError("\n")
        print("sent \(sent) of \(messages.count) requests to \(configuration.topics.triggerRequests); follow them with `trigger-worker watch`")
        if failed > 0 {
            FileHandleOutput.standardError("\(failed) not delivered; the first: \(firstError ?? "?")\n")
            throw ExitCode(1)
        }
    }

    // MARK: Shared

    static func newID(_ prefix: String) -> String {
        prefix + "_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
    }

    static func send(_ configuration: WorkerConfiguration, topic: String, key: String, value: [UInt8], headers: [KafkaHeader], common: Common) async throws {
        var logger = Logger(label: "trigger-worker-send")
        logger.logLevel = .error
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(common: configuration.kafka), logger: logger)
        let report = try await producer.send(KafkaProducerMessage(topic: topic, key: Array(key.utf8), value: value, headers: headers))
        try await producer.shutdown()
        let offset = report.offset ?? -1
        print("sent to \(report.topicPartition) at offset \(offset)")
        for header in headers { print("  \(header.key): \(header.key == "Authorization" ? "Bearer ***" : header.stringValue ?? "")") }
        print("  \(String(decoding: value, as: UTF8.self))")
        guard common.wait else { return }
        try await StatusWatcher(configuration: configuration, logger: logger, json: common.json).watch(
            source: (topic: report.topicPartition.topic, partition: Int64(report.topicPartition.partition), offset: offset),
            timeout: .seconds(common.timeout)
        )
    }
}

/// Reads the status topic and prints what one input caused: its response and the
/// events of the runs it started, until every run has ended.
struct StatusWatcher {
    var configuration: WorkerConfiguration
    var logger: Logger
    /// Raw JSON lines instead of summaries.
    var json = false

    func watch(source: (topic: String, partition: Int64, offset: Int64), timeout: Duration) async throws {
        let group = "trigger-worker-send-\(UUID().uuidString.prefix(8))"
        var consumerConfiguration = KafkaConsumerConfiguration(common: configuration.kafka, groupID: group, topics: [configuration.topics.runStatus])
        consumerConfiguration.autoOffsetReset = .earliest
        let consumer = try KafkaConsumer(configuration: consumerConfiguration, logger: logger)
        let expected: JSONValue = ["topic": .string(source.topic), "partition": .int(source.partition), "offset": .int(source.offset)]
        print("waiting for the response and status events on \(configuration.topics.runStatus) …")

        let outcome: Bool = try await withThrowingTaskGroup(of: Bool.self) { tasks in
            tasks.addTask { try await consumer.run(); return false }
            tasks.addTask {
                var runs: Set<String> = []
                var ended: Set<String> = []
                var responded = source.topic == configuration.topics.vendorEvents
                for await event in consumer.events {
                    guard case .messages(let batch) = event else { continue }
                    for message in batch {
                        guard let envelope = try? JSONValue.parse(message.value ?? []), let type = envelope["event_type"]?.stringValue,
                              let data = envelope["data"] else { continue }
                        if type == "TriggerRequest.Responded", data[path: ["request", "source"]] == expected {
                            responded = true
                            print(line(type, envelope))
                            if let id = data[path: ["response", "body", "workflow_run_id"]]?.stringValue { runs.insert(id) }
                        } else if let runID = data["workflow_run_id"]?.stringValue,
                                  runs.contains(runID) || data[path: ["trigger", "source"]] == expected {
                            runs.insert(runID)
                            print(line(type, envelope))
                            if ["WorkflowRun.Completed", "WorkflowRun.Failed", "WorkflowRun.Canceled"].contains(type) { ended.insert(runID) }
                            // A run that waits (a delay, an event) may wait for days: stop following it here.
                            if type == "WorkflowRun.StepUpdated", data["status"] == "waiting" {
                                ended.insert(runID)
                                print("  (\(runID) is waiting; follow it with `trigger-worker watch` or `trigger-worker runs show \(runID)`)")
                            }
                        }
                    }
                    if responded, ended == runs, !(source.topic == configuration.topics.vendorEvents && runs.isEmpty) { return true }
                }
                return false
            }
            tasks.addTask {
                try await Task.sleep(for: timeout)
                return false
            }
            let done = try await tasks.next()!
            consumer.triggerShutdown()
            tasks.cancelAll()
            return done
        }
        if !outcome {
            print("no (further) status events within \(timeout); is the worker running?")
        }
    }

    func line(_ type: String, _ envelope: JSONValue) -> String {
        json ? "\(type): \(envelope.canonicalString)" : EventSummary.line(type, envelope)
    }
}
