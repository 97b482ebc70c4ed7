import Foundation
import Kafka
import Logging
import ServiceLifecycle
import Store
import Synchronization
import Testing
import Worker
import Workflows

/// The worker's pipeline, wired as `trigger-worker run` wires it, on fresh topics,
/// a fresh consumer group and a fresh SQLite store, plus a reader of its outputs.
final class WorkerHarness: Sendable {
    static let orgA = "cborg_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    static let keyA = "ak_test_alpha_key"
    static let orgB = "cborg_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
    static let keyB = "ak_test_beta_key"
    static let secretB = "whsec_beta"
    static let fixtures = WorkerProcess.root.appendingPathComponent("Tests/Fixtures/pipeline").path

    let configuration: WorkerConfiguration
    let store: SQLiteStore
    /// Publishes inputs, as an outside system would.
    let client: KafkaProducer
    /// Reads the status and dead-letter topics.
    let outputs: TestMember
    /// The worker's services, as `run` wires them.
    let services: WorkerServices
    private let group: ServiceGroup
    private let running = Mutex<Task<Void, any Error>?>(nil)

    /// - Parameters:
    ///   - common: the brokers (default: the test run's broker).
    ///   - reusing: the topics and group of an earlier harness, to pick up where it left off.
    ///   - storePath: the SQLite file (default: a new one).
    init(
        common: KafkaConfiguration = TestBroker.common, reusing previous: WorkerConfiguration? = nil, storePath: String? = nil,
        _ configure: (inout WorkerConfiguration) -> Void = { _ in }
    ) async throws {
        let suffix = TestBroker.uniqueName("p")
        var configuration = WorkerConfiguration()
        configuration.kafka = common
        // Quick group joins on the local broker, as TestBroker.consumerConfiguration sets them.
        configuration.kafka.overrides = ["session.timeout.ms": "6000", "max.poll.interval.ms": "6000"]
        configuration.groupID = "worker-\(suffix)"
        configuration.topics.vendorEvents = "ve-\(suffix)"
        configuration.topics.triggerRequests = "tr-\(suffix)"
        configuration.topics.runStatus = "rs-\(suffix)"
        configuration.topics.deadLetter = "dl-\(suffix)"
        if let previous {
            configuration.groupID = previous.groupID
            configuration.topics = previous.topics
        }
        configuration.idempotencyTTL = .seconds(3600)
        configure(&configuration)
        self.configuration = configuration

        _ = try await KafkaAdmin.createTopics([
            KafkaTopicSpecification(name: configuration.topics.vendorEvents, partitions: 1),
            KafkaTopicSpecification(name: configuration.topics.triggerRequests, partitions: 2),
            KafkaTopicSpecification(name: configuration.topics.runStatus, partitions: 2),
            KafkaTopicSpecification(name: configuration.topics.deadLetter, partitions: 1),
        ], configuration: configuration.kafka, logger: TestBroker.logger)

        store = try SQLiteStore(path: storePath ?? FileManager.default.temporaryDirectory.appendingPathComponent("\(suffix).sqlite").path)
        let orgs = try OrgDirectory.load(path: "\(Self.fixtures)/orgs.yaml")
        let catalog = try WorkflowCatalog.load(directory: "\(Self.fixtures)/workflows", knownOrgs: orgs.ids)
        let logger = TestBroker.logger
        services = try WorkerServices(configuration: configuration, orgs: orgs, catalog: catalog, store: store, logger: logger)
        group = services.serviceGroup()
        // The test's client may send what the worker must refuse (values over MAX_MESSAGE_BYTES, huge headers).
        var clientCommon = common
        clientCommon.overrides["message.max.bytes"] = String(64 << 20)
        client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: clientCommon), logger: logger)
        outputs = try TestMember(group: "reader-\(suffix)", topics: [configuration.topics.runStatus, configuration.topics.deadLetter], common: common)
    }

    func start() {
        let group = self.group
        running.withLock { $0 = Task { try await group.run() } }
        outputs.start()
    }

    /// How the worker's service group ended (waits until it does).
    func ended() async -> Result<Void, any Error> {
        guard let running = running.withLock({ $0 }) else { return .success(()) }
        return await running.result
    }

    func stop() async throws {
        await group.triggerGracefulShutdown()
        try await running.withLock { $0 }?.value
        await outputs.stop()
        try await client.shutdown()
    }

    // MARK: Inputs

    /// Publishes a trigger request; returns where it landed.
    @discardableResult
    func request(_ value: [UInt8], apiKey: String? = keyA, idempotencyKey: String? = nil, headers extra: [KafkaHeader] = [], partition: Int32? = nil) async throws -> KafkaDeliveryReport {
        var headers = extra
        if let apiKey { headers.append(KafkaHeader(key: "Authorization", value: "Bearer \(apiKey)")) }
        if let idempotencyKey { headers.append(KafkaHeader(key: "Idempotency-Key", value: idempotencyKey)) }
        return try await client.send(KafkaProducerMessage(
            topic: configuration.topics.triggerRequests, partition: partition, key: Array((idempotencyKey ?? "no-key").utf8), value: value, headers: headers
        ))
    }

    @discardableResult
    func request(_ value: JSONValue, apiKey: String? = keyA, idempotencyKey: String? = nil, headers: [KafkaHeader] = [], partition: Int32? = nil) async throws -> KafkaDeliveryReport {
        try await request(value.canonicalBytes, apiKey: apiKey, idempotencyKey: idempotencyKey, headers: headers, partition: partition)
    }

    static func workflowRun(_ name: String, input: JSONValue? = nil) -> JSONValue {
        var request: [String: JSONValue] = ["request_type": "workflow_run", "workflow_name": .string(name)]
        if let input { request["body"] = ["input": input] }
        return .object(request)
    }

    static func assessmentCreate(_ body: JSONValue) -> JSONValue { ["request_type": "assessment_create", "body": body] }

    /// Publishes a vendor event (signed when `secret` is given).
    @discardableResult
    func vendorEvent(
        org: String = orgA, type: String = "Vendor.Created", eventID: String = Identifier.derive(prefix: "cbevt", from: [UUID().uuidString]),
        vendor: JSONValue, occurredAt: Int64 = Int64(Date().timeIntervalSince1970), signWith secret: String? = nil, signature: String? = nil
    ) async throws -> KafkaDeliveryReport {
        let value = ([
            "event_id": .string(eventID), "event_type": .string(type), "occurred_at": .int(occurredAt), "org_id": .string(org),
            "data": ["vendor": vendor],
        ] as JSONValue).canonicalBytes
        return try await rawVendorEvent(value, signature: signature ?? secret.map { Self.sign(value, secret: $0) })
    }

    @discardableResult
    func rawVendorEvent(_ value: [UInt8], key: String = "cbvndr", signature: String? = nil) async throws -> KafkaDeliveryReport {
        let headers = signature.map { [KafkaHeader(key: "Coverbase-Signature", value: $0)] } ?? []
        return try await client.send(KafkaProducerMessage(topic: configuration.topics.vendorEvents, key: Array(key.utf8), value: value, headers: headers))
    }

    static func sign(_ value: [UInt8], secret: String) -> String {
        // The same HMAC the worker checks, computed independently with CryptoKit-compatible swift-crypto.
        HMACHex.compute(value, secret: secret)
    }

    static func vendor(_ id: String = Identifier.derive(prefix: "cbvndr", from: [UUID().uuidString]), name: String = "Acme Payroll", tier: String = "high", tags: [String] = ["processes_pii"]) -> JSONValue {
        ["id": .string(id), "name": .string(name), "tier": .string(tier), "tags": .array(tags.map(JSONValue.string)), "owner_email": "risk-owner@example.com", "attributes": ["annual_spend": 250000]]
    }

    // MARK: Outputs

    /// Status-topic events, parsed, in the order read.
    var events: [JSONValue] {
        outputs.snapshot.received.filter { $0.topic == configuration.topics.runStatus }.compactMap { try? JSONValue.parse($0.value ?? []) }
    }

    /// Dead-letter messages.
    var deadLetters: [KafkaMessage] { outputs.snapshot.received.filter { $0.topic == configuration.topics.deadLetter } }

    /// Waits for the `TriggerRequest.Responded` of the request published at `report`.
    func response(to report: KafkaDeliveryReport, timeout: Duration = .seconds(30)) async throws -> JSONValue {
        let source = Self.source(report)
        let topic = configuration.topics.runStatus
        try await outputs.waitUntil("the response to \(report.topicPartition)@\(report.offset ?? -1)", timeout: timeout) { state in
            state.received.contains { $0.topic == topic && Self.isResponse($0, to: source) }
        }
        let message = outputs.snapshot.received.first { $0.topic == topic && Self.isResponse($0, to: source) }!
        return try JSONValue.parse(message.value ?? [])
    }

    /// Every `TriggerRequest.Responded` to the request at `report` read so far.
    func responses(to report: KafkaDeliveryReport) -> [KafkaMessage] {
        let source = Self.source(report)
        return outputs.snapshot.received.filter { $0.topic == configuration.topics.runStatus && Self.isResponse($0, to: source) }
    }

    /// Waits until the run `runID` has a terminal event, and returns its events in order.
    func runEvents(_ runID: String, timeout: Duration = .seconds(30)) async throws -> [JSONValue] {
        try await outputs.waitUntil("run \(runID) to end", timeout: timeout) { [self] _ in
            self.events.contains { $0["event_type"]?.stringValue.map(Self.isTerminal) == true && $0[path: ["data", "workflow_run_id"]]?.stringValue == runID }
        }
        return events.filter { $0[path: ["data", "workflow_run_id"]]?.stringValue == runID }
    }

    /// Waits until `count` dead letters were read.
    func waitForDeadLetters(_ count: Int, timeout: Duration = .seconds(30)) async throws -> [KafkaMessage] {
        let topic = configuration.topics.deadLetter
        try await outputs.waitUntil("\(count) dead letters", timeout: timeout) { $0.received.filter { $0.topic == topic }.count >= count }
        return deadLetters
    }

    /// Runs the store holds for the input at `report` (from their `trigger.source`):
    /// what the worker started, whether or not its events were read back yet. Once a
    /// later input of the same partition was handled, this is final for `report`.
    func storedRunsStarted(by report: KafkaDeliveryReport) async throws -> Set<String> {
        let source = Self.source(report)
        return Set(try await store.runs(statuses: [], limit: 10_000, offset: 0)
            .compactMap { try? JSONValue.parse($0.document) }
            .filter { $0[path: ["trigger", "source"]] == source }
            .compactMap { $0["workflow_run_id"]?.stringValue })
    }

    /// Runs started by the input at `report`, from the `WorkflowRun.Started` events read
    /// so far (events of other keys may be read in another order than they were handled).
    func runsStarted(by report: KafkaDeliveryReport) -> Set<String> {
        let source = Self.source(report)
        return Set(events.filter { $0["event_type"] == "WorkflowRun.Started" && $0[path: ["data", "trigger", "source"]] == source }
            .compactMap { $0[path: ["data", "workflow_run_id"]]?.stringValue })
    }

    static func source(_ report: KafkaDeliveryReport) -> JSONValue {
        ["topic": .string(report.topicPartition.topic), "partition": .int(Int64(report.topicPartition.partition)), "offset": .int(report.offset!)]
    }

    static func isResponse(_ message: KafkaMessage, to source: JSONValue) -> Bool {
        guard let event = try? JSONValue.parse(message.value ?? []) else { return false }
        return event["event_type"] == "TriggerRequest.Responded" && event[path: ["data", "request", "source"]] == source
    }

    static func isTerminal(_ type: String) -> Bool {
        ["WorkflowRun.Completed", "WorkflowRun.Failed", "WorkflowRun.Canceled"].contains(type)
    }
}

extension KafkaMessage {
    /// The value of the header `name`, as text.
    func header(_ name: String) -> String? { headers.first(named: name)?.stringValue }
}
