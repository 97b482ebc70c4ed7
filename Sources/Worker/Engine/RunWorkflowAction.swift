import Store
import Workflows

/// `run_workflow` `with: {workflow, input, wait: true}` (§10): starts a child run of the
/// same org (id derived from the run and the step, so a step performed again starts
/// no second child; trigger `{kind: "workflow", parent_run_id, step_id}`). With
/// `wait` the step waits, woken when the child ends, and ends with the child's status:
/// completed succeeds, failed or canceled fails the step.
struct RunWorkflowAction: StepAction {
    let catalog: WorkflowCatalog
    let store: any Store

    func perform(_ context: StepContext) async -> StepOutcome {
        let fields = context.inputFields
        if let childID = context.state.progress?["workflow_run_id"]?.stringValue {
            return await outcome(of: childID, context)
        }
        guard let name = fields["workflow"]?.stringValue, let workflow = catalog.workflow(orgID: context.run.orgID, name: name) else {
            return .failed(message: "run_workflow: workflow '\(BoundedText.identifier(fields["workflow"]?.templateText ?? ""))' not found", retriable: false)
        }
        guard workflow.enabled else { return .failed(message: "run_workflow: workflow '\(name)' is disabled", retriable: false) }
        let input = fields["input"].flatMap { $0 == .null ? nil : $0 } ?? .object([:])
        guard input.objectValue != nil else { return .failed(message: "run_workflow: input must be an object", retriable: false) }
        let childID = Identifier.derive(prefix: "cbwr", from: [context.run.runID, context.run.item?.key ?? "", context.step.id, "child"])
        let trigger: JSONValue = ["kind": "workflow", "parent_run_id": .string(context.run.runID), "step_id": .string(context.state.stepID)]
        let child = PendingRun(
            id: childID, definition: workflow, input: input, trigger: trigger.canonicalBytes,
            vendor: context.run.vendor == .null ? nil : context.run.vendor, assessment: nil, now: context.seconds
        )
        return .startsChild(child, waits: fields["wait"] != .bool(false))
    }

    /// The waited-for child: done when it ended.
    private func outcome(of childID: String, _ context: StepContext) async -> StepOutcome {
        let record: RunRecord?
        do {
            record = try await store.run(id: childID)
        } catch {
            return .failed(message: "run_workflow could not read its child run: \(error)", retriable: true)
        }
        let reference: JSONValue = ["workflow_run_id": .string(childID), "workflow_name": .string(record?.workflowName ?? "")]
        switch record?.status {
        case "completed"?:
            return .succeeded(StepSuccess(
                message: .string("run \(childID) completed"), artifacts: [["artifact_type": "workflow_run", "id": .string(childID), "role": "result"]],
                output: reference
            ))
        case let status? where status == "failed" || status == "canceled":
            return .failed(message: "run \(childID) \(status)", retriable: false)
        default:
            return .inProgress(progress: reference, spawn: [], waitingFor: reference)
        }
    }
}
