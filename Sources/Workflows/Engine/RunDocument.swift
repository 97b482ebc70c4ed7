/// The run object of the API (`GET /v1/workflows/runs/{id}`, the `WorkflowRun.*`
/// events' `data`), written straight to canonical JSON from a run's state.
public enum RunDocument {
    public static func encode(_ state: RunState) -> [UInt8] {
        let input = state.input.canonicalBytes
        var document = CanonicalJSONWriter(capacity: 1024 + input.count + state.steps.count * 320)
        document.object { object in
            object.key("completed_at"); if let completedAt = state.completedAt { object.int(completedAt) } else { object.null() }
            object.key("input"); object.encoded(input)
            object.key("started_at"); object.int(state.startedAt)
            object.key("status"); object.string(state.status.rawValue)
            object.key("steps")
            object.array { array in
                for step in state.steps { writeStep(step, pending: step.status == nil, into: &array) }
            }
            object.key("trigger"); object.value(state.trigger)
            object.key("workflow_definition_id"); object.string(state.definitionID)
            object.key("workflow_name"); object.string(state.workflowName)
            object.key("workflow_run_id"); object.string(state.runID)
        }
        return document.bytes
    }

    /// The §5 step object; a step that waits says what for (`waiting_for`).
    static func writeStep(_ step: StepState, pending: Bool, into writer: inout CanonicalJSONWriter) {
        writer.object { object in
            object.key("action_type"); object.string(step.action.rawValue)
            object.key("artifacts"); object.array { artifacts in if !pending { for artifact in step.artifacts { artifacts.value(artifact) } } }
            object.key("component_id"); object.string(step.componentID)
            object.key("component_name"); object.string(step.componentID)
            object.key("created_at"); object.int(step.createdAt)
            object.key("message"); object.value(pending ? .null : step.message)
            object.key("status"); object.string(pending ? nil : step.status?.rawValue)
            object.key("step_id"); object.string(step.stepID)
            object.key("updated_at"); object.int(step.updatedAt)
            if let waitingFor = step.waitingFor, step.status == .running { object.key("waiting_for"); object.value(waitingFor) }
        }
    }
}
