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

/// A run as intake creates it: the state the engine goes on from, and the run object
/// of `WorkflowRun.Started` (steps pending).
public struct RunStart: Sendable {
    public var state: RunState
    /// In canonical JSON, stored and published as is.
    public var document: [UInt8]
}

/// An event of a run, for the status topic (keyed by the run id).
public struct RunEvent: Sendable, Hashable {
    public var type: String
    /// What its `event_id` derives from: the same transition always has the same id.
    public var idParts: [String]
    /// `data`, in canonical JSON.
    public var data: [UInt8]

    public init(type: String, idParts: [String], data: [UInt8]) {
        self.type = type
        self.idParts = idParts
        self.data = data
    }
}

/// What one claim of a run did.
public struct RunAdvance: Sendable {
    public var state: RunState
    /// In order: each step's `StepUpdated` with its effects before it, then the terminal event.
    public var events: [RunEvent] = []
    public var assessments: [CreatedAssessment] = []
    /// The run object now, in canonical JSON.
    public var document: [UInt8] = []
    /// When the run is to be claimed again (milliseconds since the epoch); `nil` once it ended.
    public var dueAt: Int64?
    /// Steps that ended (success, failed, skipped) in this claim.
    public var stepsEnded = 0
    /// Attempts that failed and were scheduled again.
    public var retries = 0
    /// What the run waits for when it waits for an event (`nil` otherwise).
    public var subscription: WaitSubscription?
    /// Items a `for_each` created in this claim (their first states).
    public var spawned: [RunState] = []
    /// Child runs a `run_workflow` started in this claim.
    public var children: [RunStart] = []
    /// For an item that ended: its status (`success`, `failed`, `skipped`) and the event
    /// that resumed its wait, if one did (what `aggregate` counts as a response).
    public var itemResult: (status: String, response: JSONValue?)?
    /// Per action, the steps performed and how long each took in the action (milliseconds).
    public var performed: [(action: WorkflowAction, milliseconds: Int64)] = []

    public var finished: Bool { dueAt == nil }

    public init(state: RunState) {
        self.state = state
    }
}

/// What a run *does*: from its state, the steps that can proceed now, each step's
/// outcome recorded with the events it produces, until the run ends, waits, or a step
/// is to be retried later. It does no I/O of its own beyond its actions', so a store
/// transaction can commit all that a claim did, or none of it.
public struct RunEngine: Sendable {
    /// The most bytes an effect event's `data` may have (`MAX_MESSAGE_BYTES`).
    public var maxEffectBytes: Int
    /// Full jitter: a number in 0..<1 per retry (injectable for tests).
    public var random: @Sendable () -> Double
    /// The action of each kind.
    public var actions: [WorkflowAction: any StepAction]
    /// The most steps one claim performs before it hands the run back (a run of many
    /// instant steps does not hold an executor slot for long).
    public var maxStepsPerClaim = WorkflowDefinition.maxSteps

    public init(maxEffectBytes: Int = 1 << 20, random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }, actions: [WorkflowAction: any StepAction] = [:]) {
        self.maxEffectBytes = maxEffectBytes
        self.random = random
        var all: [WorkflowAction: any StepAction] = [
            .createAssessment: CreateAssessmentAction(),
            .sendQuestionnaire: EffectAction.questionnaire,
            .sendEmail: EffectAction.email,
            .sendWebhook: EffectAction.webhookRequested,
            .createWorkQueueItem: EffectAction.workQueueItem,
            .updateWorkflowRun: UpdateRunAction(),
            .delay: DelayAction(),
            .runWorkflow: NoEventsAction(),
            .waitForEvent: NoEventsAction(),
            .forEach: NoEventsAction(),
            .aggregate: NoEventsAction(),
        ]
        all.merge(actions) { $1 }
        self.actions = all
    }

    // MARK: Start

    /// The run as intake writes it: status `started`, every step pending.
    public func start(_ run: PendingRun, headers: RunHeaders) -> RunStart {
        let trigger = (try? JSONValue.parse(run.trigger)) ?? .object([:])
        let state = RunState(
            runID: run.id, orgID: run.definition.orgID, workflowName: run.definition.name, definitionID: run.definition.id,
            startedAt: run.now, completedAt: nil, status: .started, input: run.input, vendor: run.vendor ?? .null,
            assessment: run.assessment ?? .null, trigger: trigger, outputs: [:], cursor: 0,
            steps: run.definition.steps.map { step in
                StepState(componentID: step.id, stepID: Identifier.derive(prefix: "cbwrs", from: [run.id, step.id]), action: step.action, createdAt: run.now, updatedAt: run.now)
            },
            definition: run.definition.steps,
            headers: headers,
            item: nil
        )
        return RunStart(state: state, document: RunDocument.encode(state))
    }

    /// When a step that waits without a deadline is due (the year 9999): it is woken.
    public static let noDeadline: Int64 = 253_402_300_799_000

    /// The first state of `parent`'s item for `vendor` of the `for_each` `step`: its `do`
    /// steps, the run's input, the item's vendor as `vendor`.
    public func startItem(of parent: RunState, step: WorkflowStep, vendor: JSONValue, now: Int64) -> RunState {
        let key = vendor["id"]?.stringValue ?? ""
        return RunState(
            runID: parent.runID, orgID: parent.orgID, workflowName: parent.workflowName, definitionID: parent.definitionID,
            startedAt: parent.startedAt, completedAt: nil, status: .started, input: parent.input, vendor: vendor,
            assessment: parent.assessment, trigger: .null, outputs: [:], cursor: 0,
            steps: step.body.map { inner in
                StepState(
                    componentID: inner.id, stepID: Identifier.derive(prefix: "cbwrs", from: [parent.runID, step.id, key, inner.id]),
                    action: inner.action, createdAt: now / 1000, updatedAt: now / 1000
                )
            },
            definition: step.body, headers: parent.headers, item: ItemInfo(stepID: step.id, key: key)
        )
    }

    // MARK: Advance

    /// Performs the steps of `state` that can proceed at `now` (milliseconds), with the
    /// definition the run started with (kept in its state).
    public func advance(_ state: RunState, now: Int64) async -> RunAdvance {
        var advance = RunAdvance(state: state)
        guard !state.status.isTerminal else {
            advance.document = RunDocument.encode(state)
            return advance
        }
        let definition = state.definition
        var performed = 0
        while advance.state.cursor < advance.state.steps.count {
            let index = advance.state.cursor
            let step = definition[index]
            let record = advance.state.steps[index]
            // A step waiting for an event is performed again whenever the run is claimed
            // (an event may have woken it); a delay only at its time.
            if let wakeAt = record.wakeAt, now < wakeAt, !record.recheck {
                advance.dueAt = wakeAt
                return finish(&advance)
            }
            if let next = record.nextAttemptAt, now < next {
                advance.dueAt = next
                return finish(&advance)
            }
            if performed == maxStepsPerClaim {
                advance.dueAt = now
                return finish(&advance)
            }
            performed += 1
            if advance.state.status == .waiting { advance.state.status = .started }
            await perform(step, at: index, &advance, now: now)
            if advance.state.status.isTerminal { return finish(&advance) }
            if advance.state.cursor == index, advance.dueAt != nil { return finish(&advance) }
            advance.dueAt = nil
        }
        end(&advance, status: .completed, now: now)
        return finish(&advance)
    }

    private func perform(_ step: WorkflowStep, at index: Int, _ advance: inout RunAdvance, now: Int64) async {
        var record = advance.state.steps[index]
        let resuming = record.wakeAt != nil
        if !resuming { record.attempts += 1 }
        record.nextAttemptAt = nil
        let context = StepContext(
            run: advance.state, step: step, state: record, inputs: step.inputs.render(Self.context(advance.state)),
            now: now, maxEffectBytes: maxEffectBytes
        )
        let action = actions[step.action] ?? NoEventsAction()
        let began = ContinuousClock.now
        let outcome = await action.perform(context)
        advance.performed.append((step.action, (ContinuousClock.now - began).wholeMilliseconds))
        let seconds = now / 1000
        record.updatedAt = seconds
        switch outcome {
        case .succeeded(let success) where success.output.canonicalBytes.count > maxEffectBytes:
            // What later steps see is kept in the run's state: bounded like an event.
            await fail(step, &record, at: index, &advance, message: "the step's output would be \(success.output.canonicalBytes.count) bytes; the limit is \(maxEffectBytes) (MAX_MESSAGE_BYTES)", now: now)
        case .succeeded(let success):
            record.status = .success
            record.message = Self.bounded(success.message)
            record.artifacts = success.artifacts
            record.wakeAt = nil
            record.waitingFor = nil
            record.subscription = nil
            record.lastError = nil
            advance.state.outputs[step.id] = success.output
            if let assessment = success.assessment {
                advance.assessments.append(assessment)
                advance.state.assessment = assessment.document
            }
            for effect in success.effects {
                advance.events.append(RunEvent(type: effect.eventType, idParts: [advance.state.runID, effect.stepID, effect.eventType], data: effect.encodedData))
            }
            advance.state.steps[index] = record
            advance.state.cursor = index + 1
            stepUpdated(&advance, index)
        case .endsRun(let status, let message):
            record.status = .success
            record.message = Self.bounded(message)
            advance.state.steps[index] = record
            advance.state.cursor = index + 1
            advance.state.status = status  // the step's event shows the run as the step left it
            stepUpdated(&advance, index)
            end(&advance, status: status, now: now)
        case .waits(let until, let waitingFor, let subscription):
            let first = record.wakeAt == nil
            record.status = .running
            record.wakeAt = until
            record.waitingFor = waitingFor
            record.subscription = subscription
            record.recheck = subscription != nil
            advance.state.steps[index] = record
            advance.state.status = .waiting
            advance.dueAt = until
            advance.subscription = subscription
            if first { stepUpdated(&advance, index) }
        case .inProgress(let progress, let spawn, let waitingFor):
            record.status = .running
            record.progress = progress
            for vendor in spawn { advance.spawned.append(startItem(of: advance.state, step: step, vendor: vendor, now: now)) }
            if let waitingFor {
                waitUntilWoken(&record, at: index, for: waitingFor, &advance)
            } else {
                // More to do: claimed again at once. (Its StepUpdated comes when it starts
                // waiting, with what it waits for: one event per transition.)
                advance.state.steps[index] = record
                advance.dueAt = now
            }
        case .startsChild(let child, let waits):
            let started = start(child, headers: advance.state.headers)
            advance.children.append(started)
            let reference: JSONValue = ["workflow_run_id": .string(child.id), "workflow_name": .string(child.definition.name)]
            if waits {
                record.status = .running
                record.progress = reference
                waitUntilWoken(&record, at: index, for: reference, &advance)
            } else {
                record.status = .success
                record.message = .string("started run \(child.id) of \(child.definition.name)")
                record.artifacts = [["artifact_type": "workflow_run", "id": .string(child.id), "role": "result"]]
                advance.state.outputs[step.id] = reference
                advance.state.steps[index] = record
                advance.state.cursor = index + 1
                stepUpdated(&advance, index)
            }
        case .skipped(let message):
            record.status = .skipped
            record.message = Self.bounded(message)
            record.wakeAt = nil
            record.waitingFor = nil
            record.subscription = nil
            record.recheck = false
            advance.state.steps[index] = record
            advance.state.cursor = index + 1
            stepUpdated(&advance, index)
        case .failed(let message, let retriable):
            if retriable, record.attempts < step.retry.maxAttempts {
                record.status = .running
                record.lastError = BoundedText.cut(message, maxBytes: BoundedText.messageBytes)
                record.nextAttemptAt = now + step.retry.backoff(afterAttempt: record.attempts, random: random())
                advance.state.steps[index] = record
                // Its only pending work is a timer: the run waits (§10).
                advance.state.status = .waiting
                advance.dueAt = record.nextAttemptAt
                advance.retries += 1
                return
            }
            let attempts = record.attempts > 1 ? " (after \(record.attempts) attempts)" : ""
            await fail(step, &record, at: index, &advance, message: message + attempts, now: now)
        }
    }

    /// The step waits without a deadline, performed again whenever its run is woken (its
    /// last item ended, its child run ended); its StepUpdated when it starts waiting.
    private func waitUntilWoken(_ record: inout StepState, at index: Int, for waitingFor: JSONValue, _ advance: inout RunAdvance) {
        let began = record.wakeAt == nil
        record.waitingFor = waitingFor
        record.recheck = true
        record.wakeAt = Self.noDeadline
        advance.state.steps[index] = record
        advance.state.status = .waiting
        advance.dueAt = Self.noDeadline
        if began { stepUpdated(&advance, index) }
    }

    /// The step fails for good: the run fails unless the step says `on_failure: continue`.
    private func fail(_ step: WorkflowStep, _ record: inout StepState, at index: Int, _ advance: inout RunAdvance, message: String, now: Int64) async {
        record.status = .failed
        record.wakeAt = nil
        record.waitingFor = nil
        record.subscription = nil
        record.recheck = false
        record.progress = nil
        record.message = Self.bounded(.string(message))
        advance.state.steps[index] = record
        advance.state.cursor = index + 1
        if step.onFailure == .fail { advance.state.status = .failed }
        stepUpdated(&advance, index)
        if step.onFailure == .fail { end(&advance, status: .failed, now: now) }
    }

    /// The run canceled at `now` (milliseconds): its pending and waiting steps skipped,
    /// `WorkflowRun.Canceled` last.
    public func cancel(_ state: RunState, now: Int64) -> RunAdvance {
        var advance = RunAdvance(state: state)
        end(&advance, status: .canceled, now: now, skippedBecause: "not run: the run was canceled")
        return advance
    }

    /// Ends the run: the steps not run are skipped (each with its event), then the terminal event.
    func end(_ advance: inout RunAdvance, status: RunStatus, now: Int64, skippedBecause reason: String = "not run: the run had already ended") {
        let seconds = now / 1000
        advance.state.status = status
        for index in advance.state.steps.indices where !(advance.state.steps[index].status?.isFinal ?? false) {
            advance.state.steps[index].status = .skipped
            advance.state.steps[index].message = .string(reason)
            advance.state.steps[index].updatedAt = seconds
            advance.state.steps[index].wakeAt = nil
            advance.state.steps[index].waitingFor = nil
            advance.state.steps[index].nextAttemptAt = nil
            advance.state.steps[index].subscription = nil
            advance.state.steps[index].recheck = false
            stepUpdated(&advance, index)
        }
        advance.state.cursor = advance.state.steps.count
        advance.state.status = status
        advance.state.completedAt = seconds
        advance.dueAt = nil
        if advance.state.item != nil {
            // An item ends into its run's for_each: a result, not a run event.
            let resumed = zip(advance.state.definition, advance.state.steps).first { $0.action == .waitForEvent && $1.status == .success }
            advance.itemResult = (status == .completed ? "success" : status == .failed ? "failed" : "skipped", resumed.flatMap { advance.state.outputs[$0.0.id] })
            return
        }
        let document = RunDocument.encode(advance.state)
        advance.events.append(RunEvent(type: status.eventType, idParts: [advance.state.runID, status.eventType], data: document))
        advance.document = document  // the run as it ended: not encoded again
    }

    private func finish(_ advance: inout RunAdvance) -> RunAdvance {
        // An item has no run object; a run that ended has it from its terminal event.
        if advance.state.item == nil, !(advance.state.status.isTerminal && !advance.document.isEmpty) {
            advance.document = RunDocument.encode(advance.state)
        }
        return advance
    }

    /// `WorkflowRun.StepUpdated` for step `index` as it is now.
    private func stepUpdated(_ advance: inout RunAdvance, _ index: Int) {
        let step = advance.state.steps[index]
        if step.status?.isFinal ?? false { advance.stepsEnded += 1 }
        // An item's steps are its own: only the for_each step says how they went.
        guard advance.state.item == nil else { return }
        var data = CanonicalJSONWriter(capacity: 512)
        data.object { object in
            object.key("status"); object.string(advance.state.status.rawValue)
            object.key("step"); RunDocument.writeStep(step, pending: false, into: &object)
            object.key("workflow_name"); object.string(advance.state.workflowName)
            object.key("workflow_run_id"); object.string(advance.state.runID)
        }
        let status = step.status?.rawValue ?? "pending"
        advance.events.append(RunEvent(type: "WorkflowRun.StepUpdated", idParts: [advance.state.runID, step.stepID, "WorkflowRun.StepUpdated", status], data: data.bytes))
    }

    /// The context templates and conditions see.
    static func context(_ state: RunState) -> JSONValue {
        [
            "input": state.input,
            "vendor": state.vendor,
            "assessment": state.assessment,
            "run": ["id": .string(state.runID), "workflow_name": .string(state.workflowName)],
            "steps": .object(state.outputs),
        ]
    }

    /// A step's message as the run document keeps it: at most 1 KiB once encoded,
    /// since a message may repeat what an input holds (`email to {{ … }}`), and an
    /// input's control characters take six bytes each in JSON.
    static func bounded(_ message: JSONValue) -> JSONValue {
        var text: String
        switch message {
        case .null: return .null
        case .string(let string): text = string
        default:
            if message.canonicalBytes.count <= BoundedText.messageBytes { return message }
            text = message.canonicalString
        }
        var budget = BoundedText.messageBytes
        while JSONValue.string(text).canonicalBytes.count > BoundedText.messageBytes + 2, budget > 16 {
            budget /= 2
            text = BoundedText.cut(text, maxBytes: budget)
        }
        return .string(text)
    }
}
