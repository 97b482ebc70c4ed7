/// Runs all of a workflow's steps in order, at once, and records each step's
/// outcome: assessments it created, events it asked to publish, its status and
/// message. A step that fails fails the run; `update_workflow_run` ends the run
/// with the status it names; the steps after either are `skipped`.
public struct SynchronousRunExecutor: RunExecutor {
    /// The most bytes an effect event's `data` may have. A step whose rendered inputs
    /// are larger fails instead of publishing an event no consumer could take.
    public var maxEffectBytes: Int

    /// - Parameter maxEffectBytes: the worker passes `MAX_MESSAGE_BYTES`.
    public init(maxEffectBytes: Int = 1 << 20) {
        self.maxEffectBytes = maxEffectBytes
    }

    public func execute(_ run: PendingRun) -> RunExecution {
        let definition = run.definition
        var context: [String: JSONValue] = [
            "input": run.input,
            "vendor": run.vendor ?? .null,
            "assessment": run.assessment ?? .null,
            "run": ["id": .string(run.id), "workflow_name": .string(definition.name)],
            "steps": .object([:]),
        ]
        var stepOutputs: [String: JSONValue] = [:]
        var steps: [StepRecord] = []
        var assessments: [CreatedAssessment] = []
        var effects: [RunEffect] = []
        var finalStatus: RunStatus?

        for step in definition.steps {
            let stepID = Identifier.derive(prefix: "cbwrs", from: [run.id, step.id])
            guard finalStatus == nil else {
                steps.append(StepRecord(step: step, id: stepID, status: "skipped", message: "not run: the run had already ended", artifacts: []))
                continue
            }
            context["steps"] = .object(stepOutputs)
            let inputs = step.inputs.render(.object(context))
            let outcome = perform(step, stepID: stepID, inputs: inputs, run: run, context: context)
            steps.append(StepRecord(step: step, id: stepID, status: outcome.failed ? "failed" : "success", message: Self.bounded(outcome.message), artifacts: outcome.artifacts))
            stepOutputs[step.id] = outcome.output
            if let assessment = outcome.assessment {
                assessments.append(assessment)
                context["assessment"] = assessment.document
            }
            effects += outcome.effects
            if outcome.failed { finalStatus = .failed }
            if let ends = outcome.endsRunWith { finalStatus = ends }
        }
        let status = finalStatus ?? .completed
        // Both documents carry the input: encoded once, spliced twice.
        let input = run.input.canonicalBytes
        return RunExecution(
            started: Self.runDocument(run, status: .started, steps: steps, pending: true, completedAt: nil, input: input),
            finished: Self.runDocument(run, status: status, steps: steps, pending: false, completedAt: run.now, input: input),
            status: status,
            assessments: assessments,
            effects: effects
        )
    }

    // MARK: Actions

    private struct Outcome {
        var failed = false
        var message: JSONValue = .null
        var artifacts: [JSONValue] = []
        var output: JSONValue = .object([:])
        var assessment: CreatedAssessment?
        var effects: [RunEffect] = []
        var endsRunWith: RunStatus?
    }

    private func perform(_ step: WorkflowStep, stepID: String, inputs: JSONValue, run: PendingRun, context: [String: JSONValue]) -> Outcome {
        var outcome = Outcome()
        let inputFields = inputs.objectValue ?? [:]
        func fail(_ message: String) {
            outcome.failed = true
            outcome.message = .string(message)
        }
        /// Records the event; fails the step instead when its data is over the limit.
        func effect(_ type: String, _ extra: [String: JSONValue]) -> Bool {
            var data = inputFields
            data["workflow_run_id"] = .string(run.id)
            data["step_id"] = .string(stepID)
            for (key, value) in extra { data[key] = value }
            let value = JSONValue.object(data)
            let encoded = value.canonicalBytes
            guard encoded.count <= maxEffectBytes else {
                fail("the step's \(type) event would be \(encoded.count) bytes; the limit is \(maxEffectBytes) (MAX_MESSAGE_BYTES)")
                return false
            }
            outcome.effects.append(RunEffect(eventType: type, stepID: stepID, data: value, encodedData: encoded))
            return true
        }
        let vendorID = context["vendor"]?[path: ["id"]]?.stringValue

        switch step.action {
        case .createAssessment:
            guard let vendorID else {
                fail("create_assessment needs a vendor, and this run has none")
                break
            }
            let id = Identifier.derive(prefix: "cbqsrw", from: [run.id, step.id])
            let name = inputFields["name"]?.stringValue ?? "\(run.definition.name) assessment"
            let document = AssessmentDocument.make(
                id: id, vendorID: vendorID, name: name,
                controlSetIDs: inputFields["control_set_ids"]?.arrayValue ?? [],
                serviceIDs: inputFields["service_ids"]?.arrayValue ?? [],
                assigneeID: inputFields["assignee_id"] ?? .null,
                workflowRunID: .string(run.id), now: run.now
            )
            outcome.assessment = CreatedAssessment(id: id, vendorID: vendorID, document: document)
            outcome.artifacts = [["artifact_type": "assessment", "id": .string(id), "role": "result"]]
            outcome.output = document
            outcome.message = .string("created assessment \(id)")
        case .sendQuestionnaire:
            guard effect("Questionnaire.SendRequested", ["vendor_id": vendorID.json]) else { break }
            outcome.message = "questionnaire send requested"
        case .sendEmail:
            guard let to = inputFields["to"]?.stringValue, !to.isEmpty else {
                fail("send_email has no recipient: 'to' is empty for this run")
                break
            }
            guard effect("Email.SendRequested", [:]) else { break }
            outcome.message = .string("email to \(to) requested")
        case .sendWebhook:
            let deliveryID = Identifier.derive(prefix: "cbevt", from: [run.id, step.id, "webhook"])
            guard effect("Webhook.SendRequested", ["delivery_id": .string(deliveryID)]) else { break }
            outcome.output = ["delivery_id": .string(deliveryID)]
            outcome.message = "webhook delivery requested"
        case .createWorkQueueItem:
            guard effect("WorkQueueItem.Created", ["vendor_id": vendorID.json]) else { break }
            outcome.message = "work queue item created"
        case .updateWorkflowRun:
            let status = inputFields["status"]?.stringValue.flatMap(RunStatus.init(rawValue:))
            guard let status, status != .started else {
                fail("update_workflow_run needs status completed, failed or canceled")
                break
            }
            outcome.endsRunWith = status
            outcome.message = inputFields["message"] ?? .string("run set to \(status.rawValue)")
        case .runWorkflow:
            fail("run_workflow is not supported by this engine yet; the durable engine will start child runs")
        }
        return outcome
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

    // MARK: Documents

    /// A step as it ended.
    private struct StepRecord {
        var step: WorkflowStep
        var id: String
        var status: String
        var message: JSONValue
        var artifacts: [JSONValue]
    }

    /// The run object of the API, written straight to canonical JSON (keys in order).
    /// `pending`: the steps as they were before the run, without status or outcome.
    private static func runDocument(
        _ run: PendingRun, status: RunStatus, steps: [StepRecord], pending: Bool, completedAt: Int64?, input: [UInt8]
    ) -> [UInt8] {
        var document = CanonicalJSONWriter(capacity: 1024 + input.count + run.trigger.count)
        document.object { object in
            object.key("completed_at"); if let completedAt { object.int(completedAt) } else { object.null() }
            object.key("input"); object.encoded(input)
            object.key("started_at"); object.int(run.now)
            object.key("status"); object.string(status.rawValue)
            object.key("steps")
            object.array { array in
                for record in steps {
                    array.object { step in
                        step.key("action_type"); step.string(record.step.action.rawValue)
                        step.key("artifacts"); step.array { artifacts in if !pending { for artifact in record.artifacts { artifacts.value(artifact) } } }
                        step.key("component_id"); step.string(record.step.id)
                        step.key("component_name"); step.string(record.step.id)
                        step.key("created_at"); step.int(run.now)
                        step.key("message"); step.value(pending ? .null : record.message)
                        step.key("status"); step.string(pending ? nil : record.status)
                        step.key("step_id"); step.string(record.id)
                        step.key("updated_at"); step.int(run.now)
                    }
                }
            }
            object.key("trigger"); object.encoded(run.trigger)
            object.key("workflow_definition_id"); object.string(run.definition.id)
            object.key("workflow_name"); object.string(run.definition.name)
            object.key("workflow_run_id"); object.string(run.id)
        }
        return document.bytes
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
