import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A run's statuses (§10): `started → waiting ⇄ started → completed | failed | canceled`.
public enum RunStatus: String, Sendable, Hashable, CaseIterable {
    case started, waiting, completed, failed, canceled

    /// The `WorkflowRun.*` event type of this status (waiting has none: the step that
    /// waits says so in its `WorkflowRun.StepUpdated`).
    public var eventType: String {
        switch self {
        case .started, .waiting: "WorkflowRun.Started"
        case .completed: "WorkflowRun.Completed"
        case .failed: "WorkflowRun.Failed"
        case .canceled: "WorkflowRun.Canceled"
        }
    }

    public var isTerminal: Bool { self == .completed || self == .failed || self == .canceled }
}

/// A step's statuses: `nil` (pending) → `running` → `success | failed | skipped`.
public enum StepStatus: String, Sendable, Hashable {
    case running, success, failed, skipped

    public var isFinal: Bool { self != .running }
}

/// The headers of the input that started a run, carried on each of its events (§5).
public struct RunHeaders: Sendable, Hashable {
    public var requestID: String?
    public var idempotencyKey: String?
    public var traceparent: String?

    public init(requestID: String? = nil, idempotencyKey: String? = nil, traceparent: String? = nil) {
        self.requestID = requestID
        self.idempotencyKey = idempotencyKey
        self.traceparent = traceparent
    }
}

/// One step of a run, as the engine keeps it between claims.
public struct StepState: Sendable, Hashable {
    /// The definition's step id (`component_id`).
    public var componentID: String
    /// `cbwrs_` + 32 hex, derived from the run and the step.
    public var stepID: String
    public var action: WorkflowAction
    public var status: StepStatus?
    public var message: JSONValue = .null
    public var artifacts: [JSONValue] = []
    /// Seconds since the epoch.
    public var createdAt: Int64
    public var updatedAt: Int64
    /// Attempts made so far.
    public var attempts: Int = 0
    /// When the next attempt is due after a retriable failure (milliseconds since the epoch).
    public var nextAttemptAt: Int64?
    /// When a waiting step wakes up (a `delay`'s end, a wait's deadline), in milliseconds.
    public var wakeAt: Int64?
    /// What a waiting step waits for (`{"delay": until}` …), shown by `runs show`.
    public var waitingFor: JSONValue?
    /// The last retriable failure, while the step is retried.
    public var lastError: String?
    /// What wakes the step while it waits for an event.
    public var subscription: WaitSubscription?
    /// An action's own progress between claims (a `for_each`'s place in the directory).
    public var progress: JSONValue?
    /// Whether a waiting step is performed again whenever its run is claimed (woken by
    /// an event, or by the last item of a `for_each`), not only at `wakeAt`.
    public var recheck = false
}

/// What makes a run state an item of a `for_each` (§10): an idempotent sub-flow of the
/// run, with its own task, that runs the step's `do` for one vendor.
public struct ItemInfo: Sendable, Hashable {
    /// The `for_each` step's id.
    public var stepID: String
    /// The vendor id.
    public var key: String

    public init(stepID: String, key: String) {
        self.stepID = stepID
        self.key = key
    }

    /// The item's task id: the run's, its step's and its vendor's.
    public func taskID(runID: String) -> String { "\(runID)/\(stepID)/\(key)" }
}

/// Everything the engine needs to go on with a run on any instance, after any
/// restart: stored beside the run in the store, as canonical JSON.
public struct RunState: Sendable, Hashable {
    public var runID: String
    public var orgID: String
    public var workflowName: String
    /// The definition the run started with: a run never continues on another version.
    public var definitionID: String
    /// Seconds since the epoch.
    public var startedAt: Int64
    public var completedAt: Int64?
    public var status: RunStatus
    public var input: JSONValue
    public var vendor: JSONValue
    public var assessment: JSONValue
    public var trigger: JSONValue
    /// Each finished step's output, for `steps.<id>.*` in later templates and conditions.
    public var outputs: [String: JSONValue]
    /// The index of the step to go on with.
    public var cursor: Int
    public var steps: [StepState]
    /// The workflow's steps as they were when the run started: a run goes on with the
    /// definition it started with, whatever is deployed meanwhile (a file edited, a
    /// rolling upgrade), as Temporal's and DBOS's runs keep their code version.
    public var definition: [WorkflowStep]
    public var headers: RunHeaders
    /// Set for an item of a `for_each` (whose `runID` is its run's).
    public var item: ItemInfo?

    /// The format's version, written with every state (a newer one is refused).
    static let version: Int64 = 1
}

extension RunState {
    /// The state as stored: the same bytes as `json.canonicalBytes`, written straight
    /// into one buffer with the definition spliced from a cache (`make bench` profiled the
    /// engine: encoding and decoding states was its largest cost, a JSON tree built and
    /// its keys sorted per claim).
    public var encoded: [UInt8] {
        var writer = CanonicalJSONWriter(capacity: 2048 + input.canonicalBytes.count)
        writer.object { state in
            state.key("assessment"); state.value(assessment)
            state.key("completed_at"); if let completedAt { state.int(completedAt) } else { state.null() }
            state.key("cursor"); state.int(Int64(cursor))
            state.key("definition"); state.encoded(DefinitionCache.encoded(self))
            state.key("definition_id"); state.string(definitionID)
            state.key("headers")
            state.object { object in
                object.key("idempotency_key"); object.string(headers.idempotencyKey)
                object.key("request_id"); object.string(headers.requestID)
                object.key("traceparent"); object.string(headers.traceparent)
            }
            state.key("input"); state.value(input)
            state.key("item")
            if let item {
                state.object { object in
                    object.key("key"); object.string(item.key)
                    object.key("step_id"); object.string(item.stepID)
                }
            } else {
                state.null()
            }
            state.key("org_id"); state.string(orgID)
            state.key("outputs"); state.value(.object(outputs))
            state.key("run_id"); state.string(runID)
            state.key("started_at"); state.int(startedAt)
            state.key("status"); state.string(status.rawValue)
            state.key("steps"); state.array { array in for step in steps { array.value(step.json) } }
            state.key("trigger"); state.value(trigger)
            state.key("v"); state.int(Self.version)
            state.key("vendor"); state.value(vendor)
            state.key("workflow_name"); state.string(workflowName)
        }
        return writer.bytes
    }

    /// The state as a JSON tree: the layout ``encoded`` writes straight (the tests check
    /// that the two give the same bytes).
    var json: JSONValue {
        func optional(_ value: Int64?) -> JSONValue { value.map(JSONValue.int) ?? .null }
        func optional(_ value: String?) -> JSONValue { value.map(JSONValue.string) ?? .null }
        return [
            "v": .int(Self.version),
            "run_id": .string(runID), "org_id": .string(orgID), "workflow_name": .string(workflowName),
            "definition_id": .string(definitionID), "started_at": .int(startedAt), "completed_at": optional(completedAt),
            "status": .string(status.rawValue), "input": input, "vendor": vendor, "assessment": assessment, "trigger": trigger,
            "outputs": .object(outputs), "cursor": .int(Int64(cursor)),
            "definition": .array(definition.map(\.json)),
            "item": item.map { ["step_id": .string($0.stepID), "key": .string($0.key)] } ?? .null,
            "headers": ["request_id": optional(headers.requestID), "idempotency_key": optional(headers.idempotencyKey), "traceparent": optional(headers.traceparent)],
            "steps": .array(steps.map(\.json)),
        ]
    }
}

/// A stored run state this build cannot read.
public struct RunStateError: Error, Sendable, Hashable, CustomStringConvertible {
    public var reason: String
    init(_ reason: String) { self.reason = reason }
    public var description: String { "unreadable run state: \(reason)" }
}

extension WorkflowStep {
    /// The step as a run's state keeps it.
    var json: JSONValue {
        [
            "id": .string(id), "action": .string(action.rawValue), "with": .object(with),
            "retry": ["max_attempts": .int(Int64(retry.maxAttempts)), "initial_ms": .int(retry.initial.wholeMilliseconds), "max_ms": .int(retry.max.wholeMilliseconds)],
            "on_failure": .string(onFailure.rawValue),
            "do": .array(body.map(\.json)),
        ]
    }

    init?(json: JSONValue) {
        guard let id = json["id"]?.stringValue, let action = json["action"]?.stringValue.flatMap(WorkflowAction.init(rawValue:)),
              let with = json["with"]?.objectValue, let attempts = json[path: ["retry", "max_attempts"]]?.intValue,
              let initial = json[path: ["retry", "initial_ms"]]?.intValue, let max = json[path: ["retry", "max_ms"]]?.intValue,
              let onFailure = json["on_failure"]?.stringValue.flatMap(FailurePolicy.init(rawValue:))
        else { return nil }
        var body: [WorkflowStep] = []
        for item in json["do"]?.arrayValue ?? [] {
            guard let step = WorkflowStep(json: item) else { return nil }
            body.append(step)
        }
        self.init(id: id, action: action, with: with, retry: RetryPolicy(maxAttempts: Int(attempts), initial: .milliseconds(initial), max: .milliseconds(max)), onFailure: onFailure, body: body)
    }
}

extension StepState {
    /// The step as a run's state keeps it.
    var json: JSONValue {
        func optional(_ value: Int64?) -> JSONValue { value.map(JSONValue.int) ?? .null }
        func optional(_ value: String?) -> JSONValue { value.map(JSONValue.string) ?? .null }
        return [
            "component_id": .string(componentID), "step_id": .string(stepID), "action": .string(action.rawValue),
            "status": optional(status?.rawValue), "message": message, "artifacts": .array(artifacts),
            "created_at": .int(createdAt), "updated_at": .int(updatedAt), "attempts": .int(Int64(attempts)),
            "next_attempt_at": optional(nextAttemptAt), "wake_at": optional(wakeAt),
            "waiting_for": waitingFor ?? .null, "last_error": optional(lastError),
            "subscription": subscription.map { ["event_type": .string($0.eventType), "vendor_id": optional($0.vendorID), "seen": .int($0.seenSequence)] } ?? .null,
            "progress": progress ?? .null, "recheck": .bool(recheck),
        ]
    }
}

/// The definitions of runs, encoded and decoded once per process: a definition id is a
/// digest of its workflow file, so its steps never change (an item's are its
/// for_each's `do`, told apart by the step). A state's definition is taken from the
/// cache only when its bytes are the entry's, byte for byte, and an entry is spliced
/// into a state only for equal steps (the same array, from the cache, compares at once).
/// The cache is emptied when it grows large.
enum DefinitionCache {
    private static let entries = Mutex<[String: (steps: [WorkflowStep], encoded: [UInt8])]>([:])
    static let capacity = 4096

    static func key(definitionID: String, item: String?) -> String { definitionID + "/" + (item ?? "") }

    static func encoded(_ state: RunState) -> [UInt8] {
        let key = key(definitionID: state.definitionID, item: state.item?.stepID)
        if let entry = entries.withLock({ $0[key] }), entry.steps == state.definition { return entry.encoded }
        let encoded = canonical(state.definition)
        store(key, (state.definition, encoded))
        return encoded
    }

    /// The steps as a state writes them.
    private static func canonical(_ steps: [WorkflowStep]) -> [UInt8] { JSONValue.array(steps.map(\.json)).canonicalBytes }

    /// The steps whose canonical bytes are `stored`, when the cache has them under `key`.
    static func steps(_ key: String, stored: ArraySlice<UInt8>) -> [WorkflowStep]? {
        guard let entry = entries.withLock({ $0[key] }), entry.encoded.count == stored.count else { return nil }
        // memcmp: the generic elementsEqual compared the kilobyte byte by byte, on every claim.
        let equal = entry.encoded.withUnsafeBytes { cached in stored.withUnsafeBytes { stored in
            cached.isEmpty || memcmp(cached.baseAddress!, stored.baseAddress!, cached.count) == 0
        } }
        return equal ? entry.steps : nil
    }

    /// Keeps steps read from a state (by their canonical bytes, which later states are compared with).
    static func keep(_ key: String, steps: [WorkflowStep]) {
        store(key, (steps, canonical(steps)))
    }

    private static func store(_ key: String, _ entry: (steps: [WorkflowStep], encoded: [UInt8])) {
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[key] = entry
        }
    }
}
