/// A run the pipeline decided to start: everything the engine needs.
public struct PendingRun: Sendable {
    /// `cbwr_` + 32 hex, derived from the input's dedupe scope and source.
    public var id: String
    public var definition: WorkflowDefinition
    /// The run's input: an event's `data`, or a request's `body.input`.
    public var input: JSONValue
    /// `{kind, event_id | idempotency_key, request_id, source}`, in canonical JSON.
    public var trigger: [UInt8]
    /// The vendor the run is about, when there is one (from the event or the directory).
    public var vendor: JSONValue?
    /// The assessment a request created alongside the run (Pattern 2).
    public var assessment: JSONValue?
    /// Seconds since the epoch.
    public var now: Int64

    public init(id: String, definition: WorkflowDefinition, input: JSONValue, trigger: [UInt8], vendor: JSONValue?, assessment: JSONValue?, now: Int64) {
        self.id = id
        self.definition = definition
        self.input = input
        self.trigger = trigger
        self.vendor = vendor
        self.assessment = assessment
        self.now = now
    }
}

/// A run's statuses.
public enum RunStatus: String, Sendable, Hashable {
    case started, completed, failed, canceled

    /// The `WorkflowRun.*` event type of this status.
    public var eventType: String {
        switch self {
        case .started: "WorkflowRun.Started"
        case .completed: "WorkflowRun.Completed"
        case .failed: "WorkflowRun.Failed"
        case .canceled: "WorkflowRun.Canceled"
        }
    }
}

/// An assessment a step created.
public struct CreatedAssessment: Sendable, Hashable {
    public var id: String
    public var vendorID: String
    /// The assessment object of the API.
    public var document: JSONValue
}

/// An event a step's action published (`Email.SendRequested` …).
public struct RunEffect: Sendable, Hashable {
    public var eventType: String
    /// The step that caused it (its `cbwrs_` id), for a stable event id.
    public var stepID: String
    public var data: JSONValue
    /// `data` in canonical JSON, as it is published (encoded once, to check its size too).
    public var encodedData: [UInt8]
}

/// What executing a run produced.
public struct RunExecution: Sendable {
    /// The run object as it started (status `started`, steps pending), in canonical JSON.
    public var started: [UInt8]
    /// The run object at its end, in canonical JSON (stored and published as is).
    public var finished: [UInt8]
    public var status: RunStatus
    public var assessments: [CreatedAssessment]
    /// Events published by the steps, in step order, between Started and the terminal event.
    public var effects: [RunEffect]
}

/// Executes runs. This version runs every step at once inside the pipeline's
/// transaction; a durable, asynchronous engine can take its place.
public protocol RunExecutor: Sendable {
    func execute(_ run: PendingRun) -> RunExecution
}
