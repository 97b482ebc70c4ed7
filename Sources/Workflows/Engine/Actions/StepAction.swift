/// One action of a workflow step: one small type per action behind this protocol.
/// An action is handed the step's rendered inputs and says what happened; the engine
/// turns that into the step's record, the run's transition and events.
public protocol StepAction: Sendable {
    func perform(_ context: StepContext) async -> StepOutcome
}

/// What an action sees of its run and step.
public struct StepContext: Sendable {
    public var run: RunState
    public var step: WorkflowStep
    public var state: StepState
    /// `with`, rendered over the run's context.
    public var inputs: JSONValue
    /// Milliseconds since the epoch (the engine's clock, injectable in tests).
    public var now: Int64
    /// The most bytes an effect event's `data` may have (`MAX_MESSAGE_BYTES`).
    public var maxEffectBytes: Int

    public init(run: RunState, step: WorkflowStep, state: StepState, inputs: JSONValue, now: Int64, maxEffectBytes: Int) {
        self.run = run
        self.step = step
        self.state = state
        self.inputs = inputs
        self.now = now
        self.maxEffectBytes = maxEffectBytes
    }

    public var inputFields: [String: JSONValue] { inputs.objectValue ?? [:] }
    /// The vendor the run is about, if any.
    public var vendorID: String? { run.vendor[path: ["id"]]?.stringValue }
    /// The stable handle of this step's effect outside the store (§10): the same on
    /// every retry and every re-publication.
    public var deliveryID: String {
        guard let item = run.item else { return Identifier.derive(prefix: "cbevt", from: [run.runID, step.id, "delivery"]) }
        return Identifier.derive(prefix: "cbevt", from: [run.runID, item.stepID, item.key, step.id, "delivery"])
    }
    /// Seconds since the epoch.
    public var seconds: Int64 { now / 1000 }
}

/// What a step did.
public enum StepOutcome: Sendable {
    /// The step succeeded.
    case succeeded(StepSuccess)
    /// The step failed; a retriable failure is tried again under the step's `retry:`.
    case failed(message: String, retriable: Bool)
    /// The step succeeded and ends the run with this status (`update_workflow_run`).
    case endsRun(RunStatus, message: JSONValue)
    /// The step waits until a time (milliseconds since the epoch); it is performed
    /// again then, with ``StepState/wakeAt`` set, and, when it waits for an event, each
    /// time such an event may have come (the run is woken by it).
    case waits(until: Int64, waitingFor: JSONValue, subscription: WaitSubscription? = nil)
    /// The step is skipped (a wait that timed out with `on_timeout: continue`); the run goes on.
    case skipped(message: JSONValue)
    /// The step goes on over several claims (a `for_each` creating its items page by
    /// page, then waiting for them): `progress` is kept for its next claim, `spawn` are
    /// the vendors of new items; without `waitingFor` it is claimed again at once, with
    /// it the run waits until woken (its last item ends).
    case inProgress(progress: JSONValue, spawn: [JSONValue], waitingFor: JSONValue?)
    /// The step starts a child run (`run_workflow`); with `waits` it waits for the child
    /// to end (it is performed again when woken, and looks), else it succeeds.
    case startsChild(PendingRun, waits: Bool)
}

/// The events that wake a run whose step waits for one.
public struct WaitSubscription: Sendable, Hashable {
    public var eventType: String
    /// Only events about this vendor (`nil`: any of the org's).
    public var vendorID: String?
    /// The last event the step looked at (its place in the order of receipt).
    public var seenSequence: Int64

    public init(eventType: String, vendorID: String?, seenSequence: Int64 = 0) {
        self.eventType = eventType
        self.vendorID = vendorID
        self.seenSequence = seenSequence
    }
}

/// The event types a step can wait for, on the vendor-events topic (§10).
public enum WaitableEvent {
    public static let questionnaireResponse = "QuestionnaireResponse.Submitted"
    public static let all: Set<String> = [questionnaireResponse, "Vendor.Created", "Vendor.Updated"]
}

/// A successful step's results.
public struct StepSuccess: Sendable {
    public var message: JSONValue
    public var artifacts: [JSONValue] = []
    /// What later steps see as `steps.<id>`.
    public var output: JSONValue = .object([:])
    public var assessment: CreatedAssessment?
    public var effects: [RunEffect] = []

    public init(message: JSONValue, artifacts: [JSONValue] = [], output: JSONValue = .object([:]), assessment: CreatedAssessment? = nil, effects: [RunEffect] = []) {
        self.message = message
        self.artifacts = artifacts
        self.output = output
        self.assessment = assessment
        self.effects = effects
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

extension StepContext {
    /// An effect event carrying the step's inputs and its handles, or a failure when
    /// its data would be over ``maxEffectBytes``.
    func effect(_ type: String, _ extra: [String: JSONValue] = [:]) -> Result<RunEffect, EffectTooLarge> {
        var data = inputFields
        data["workflow_run_id"] = .string(run.runID)
        data["step_id"] = .string(state.stepID)
        data["delivery_id"] = .string(deliveryID)
        // vendor_id is the worker's to say (the run's vendor, or the item's), never the step's input.
        data["vendor_id"] = nil
        if let item = run.item { data["vendor_id"] = .string(item.key) }
        for (key, value) in extra { data[key] = value }
        let value = JSONValue.object(data)
        let encoded = value.canonicalBytes
        guard encoded.count <= maxEffectBytes else {
            return .failure(EffectTooLarge(message: "the step's \(type) event would be \(encoded.count) bytes; the limit is \(maxEffectBytes) (MAX_MESSAGE_BYTES)"))
        }
        return .success(RunEffect(eventType: type, stepID: state.stepID, data: value, encodedData: encoded))
    }
}

extension StepContext {
    /// The instant a step's `with` names, in milliseconds: `durationKey` (a duration
    /// from now: `for`, `timeout`) or `until` (epoch seconds, RFC 3339 or a date).
    /// - Returns: the failure to report when neither is there or one is not well formed.
    public func deadline(durationKey: String) -> Result<Int64, StepFailure> {
        let action = step.action.rawValue
        if let text = inputFields[durationKey]?.stringValue {
            guard let duration = DurationParser.parse(text) else {
                return .failure(StepFailure(message: "\(action) '\(durationKey)' is not a duration (such as 30s, 1h or 7d) for this run"))
            }
            return .success(now + duration.wholeMilliseconds)
        }
        if let until = inputFields["until"] {
            guard let instant = TimeSpec.parse(until) else {
                return .failure(StepFailure(message: "\(action) 'until' is not a time (epoch seconds, RFC 3339 or YYYY-MM-DD) for this run"))
            }
            return .success(instant)
        }
        return .failure(StepFailure(message: "\(action) needs '\(durationKey)' or 'until'"))
    }
}

/// Why a step cannot go on (a permanent failure).
public struct StepFailure: Error {
    public var message: String
}

struct EffectTooLarge: Error {
    var message: String
}
