/// `send_questionnaire`, `send_email`, `create_work_queue_item` and (until webhooks are
/// called directly) `send_webhook`: each publishes one effect event for a system
/// outside the worker to act on, with the step's inputs and a stable `delivery_id`.
struct EffectAction: StepAction {
    var eventType: String
    /// An input that must be a non-empty string (`send_email`'s `to`).
    var requiredText: String?
    /// Whether the event names the run's vendor.
    var namesVendor: Bool
    /// The step's message once the event is recorded.
    var describe: @Sendable (StepContext) -> String

    func perform(_ context: StepContext) async -> StepOutcome {
        if let requiredText, (context.inputFields[requiredText]?.stringValue ?? "").isEmpty {
            return .failed(message: "\(context.step.action.rawValue) has no '\(requiredText)': it is empty for this run", retriable: false)
        }
        switch context.effect(eventType, namesVendor ? ["vendor_id": context.vendorID.json] : [:]) {
        case .failure(let tooLarge):
            return .failed(message: tooLarge.message, retriable: false)
        case .success(let effect):
            return .succeeded(StepSuccess(message: .string(describe(context)), output: ["delivery_id": .string(context.deliveryID)], effects: [effect]))
        }
    }

    static let questionnaire = EffectAction(eventType: "Questionnaire.SendRequested", namesVendor: true) { _ in "questionnaire send requested" }
    static let email = EffectAction(eventType: "Email.SendRequested", requiredText: "to", namesVendor: false) { context in
        "email to \(context.inputFields["to"]?.stringValue ?? "") requested"
    }
    static let workQueueItem = EffectAction(eventType: "WorkQueueItem.Created", namesVendor: true) { _ in "work queue item created" }
    static let webhookRequested = EffectAction(eventType: "Webhook.SendRequested", namesVendor: false) { _ in "webhook delivery requested" }
}

/// `create_assessment`: an assessment of the run's vendor, with an id derived from the run and step.
struct CreateAssessmentAction: StepAction {
    func perform(_ context: StepContext) async -> StepOutcome {
        guard let vendorID = context.vendorID else {
            return .failed(message: "create_assessment needs a vendor, and this run has none", retriable: false)
        }
        let fields = context.inputFields
        // The assessment object is served as the API's (GET /v1/assessments/{id}): its ids
        // have their formats, whatever a template made of them.
        if let problem = Self.problem(fields) {
            return .failed(message: "create_assessment \(problem) for this run", retriable: false)
        }
        // One per run and step; in a for_each, one per item too.
        let parts = context.run.item.map { [context.run.runID, $0.stepID, $0.key, context.step.id] } ?? [context.run.runID, context.step.id]
        let id = Identifier.derive(prefix: "cbqsrw", from: parts)
        let document = AssessmentDocument.make(
            id: id, vendorID: vendorID, name: fields["name"]?.stringValue ?? "\(context.run.workflowName) assessment",
            controlSetIDs: fields["control_set_ids"]?.arrayValue ?? [], serviceIDs: fields["service_ids"]?.arrayValue ?? [],
            assigneeID: fields["assignee_id"] ?? .null, workflowRunID: .string(context.run.runID), now: context.seconds
        )
        return .succeeded(StepSuccess(
            message: .string("created assessment \(id)"), artifacts: [["artifact_type": "assessment", "id": .string(id), "role": "result"]],
            output: document, assessment: CreatedAssessment(id: id, vendorID: vendorID, document: document)
        ))
    }

    /// What is wrong with the step's inputs, if anything: `control_set_ids` and
    /// `service_ids` lists of ids of their kinds, `assignee_id` a user id (or null),
    /// `name` a string (or null: the default name). `validate` asks it of the inputs
    /// written out in the file; a run, of them all as they rendered.
    static func problem(_ fields: [String: JSONValue]) -> String? {
        for (key, prefix) in [("control_set_ids", "cbctst"), ("service_ids", "cbsvc")] {
            guard let value = fields[key], value != .null else { continue }
            guard let items = value.arrayValue, items.allSatisfy({ $0.stringValue.map { Identifier.isValid($0, prefix: prefix) } ?? false }) else {
                return "'\(key)' must be a list of \(prefix)_ ids (\(prefix)_ followed by 32 lowercase hex digits)"
            }
        }
        if let assignee = fields["assignee_id"], assignee != .null, !(assignee.stringValue.map { Identifier.isValid($0, prefix: "cbuser") } ?? false) {
            return "'assignee_id' must be a cbuser_ id or null"
        }
        if let name = fields["name"], name != .null, name.stringValue == nil { return "'name' must be a string" }
        return nil
    }
}

/// `update_workflow_run`: ends the run with the status it names.
struct UpdateRunAction: StepAction {
    func perform(_ context: StepContext) async -> StepOutcome {
        let fields = context.inputFields
        guard let status = fields["status"]?.stringValue.flatMap(RunStatus.init(rawValue:)), status.isTerminal else {
            return .failed(message: "update_workflow_run needs status completed, failed or canceled", retriable: false)
        }
        return .endsRun(status, message: fields["message"] ?? .string("run set to \(status.rawValue)"))
    }
}

/// `delay`: a durable timer, `for` a duration or `until` a time. The step waits (its
/// run too, when nothing else can proceed) and succeeds once the time has come.
struct DelayAction: StepAction {
    func perform(_ context: StepContext) async -> StepOutcome {
        if let wakeAt = context.state.wakeAt {
            guard context.now >= wakeAt else { return .waits(until: wakeAt, waitingFor: ["delay_until": .int(wakeAt / 1000)]) }
            return .succeeded(StepSuccess(message: .string("waited until \(wakeAt / 1000)")))
        }
        let until: Int64
        switch context.deadline(durationKey: "for") {
        case .success(let instant): until = instant
        case .failure(let failure): return .failed(message: failure.message, retriable: false)
        }
        guard until > context.now else { return .succeeded(StepSuccess(message: .string("nothing to wait for: \(until / 1000) has passed"))) }
        return .waits(until: until, waitingFor: ["delay_until": .int(until / 1000)])
    }
}

/// `wait_for_event`, `for_each`, `aggregate` and `run_workflow` without a store (an
/// engine built for tests): the worker replaces them with its own, which read it.
struct NoEventsAction: StepAction {
    func perform(_ context: StepContext) async -> StepOutcome {
        .failed(message: "\(context.step.action.rawValue) needs the worker's store", retriable: false)
    }
}

/// The assessment object of the API, shared by `POST /v1/assessments` and the `create_assessment` step.
public enum AssessmentDocument {
    public static func make(
        id: String, vendorID: String, name: String, controlSetIDs: [JSONValue], serviceIDs: [JSONValue],
        assigneeID: JSONValue, workflowRunID: JSONValue, now: Int64
    ) -> JSONValue {
        [
            "id": .string(id),
            "vendor_id": .string(vendorID),
            "name": .string(name),
            "status": "created",
            "control_set_ids": .array(controlSetIDs),
            "service_ids": .array(serviceIDs),
            "assignee_id": assigneeID,
            "score_percent": .null,
            "findings_count": 0,
            "initiated_at": .int(now),
            "created_at": .int(now),
            "updated_at": .int(now),
            "workflow_run_id": workflowRunID,
        ]
    }
}
