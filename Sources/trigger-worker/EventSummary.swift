import Workflows

/// One line per status event for people (`send` and `watch` without `--json`): its
/// type, its run, the run's status and its steps with marks, or a response's status
/// and what it says. Every value is cut to a bounded length: events come from outside.
enum EventSummary {
    /// The mark of a step's status: ✓ success, ✗ failed, – skipped, ⏳ waiting, · pending.
    static func mark(_ status: String?) -> String {
        switch status {
        case "success": "✓"
        case "failed": "✗"
        case "skipped": "–"
        case "running": "⏳"
        default: "·"
        }
    }

    static func line(_ type: String, _ envelope: JSONValue) -> String {
        func text(_ value: JSONValue?) -> String {
            switch value {
            case .string(let text)?: BoundedText.cut(text, maxBytes: 80)
            case .int(let number)?: String(number)
            case nil, .null?: "-"
            case let other?: BoundedText.cut(other.canonicalString, maxBytes: 80)
            }
        }
        let data = envelope["data"]
        var parts = [BoundedText.cut(type, maxBytes: 60)]
        switch type {
        case "TriggerRequest.Responded":
            let response = data?["response"]
            parts.append(text(response?["status"]))
            parts.append("key=\(text(data?[path: ["request", "idempotency_key"]]))")
            if let run = response?[path: ["body", "workflow_run_id"]] { parts.append("run=\(text(run))") }
            if let id = response?[path: ["body", "id"]] { parts.append("id=\(text(id))") }
            if let code = response?[path: ["body", "detail", "code"]] { parts.append("\(text(code)): \(text(response?[path: ["body", "detail", "message"]]))") }
            if case .array(let issues)? = response?[path: ["body", "detail"]], let first = issues.first {
                parts.append("\(text(first["loc"])) \(text(first["msg"]))" + (issues.count > 1 ? " (+\(issues.count - 1))" : ""))
            }
            if data?["replayed"] == .bool(true) { parts.append("(replayed)") }
        case "WorkflowRun.StepUpdated":
            let step = data?["step"]
            parts += [text(data?["workflow_run_id"]), text(data?["workflow_name"]), "\(mark(step?["status"]?.stringValue)) \(text(step?["component_id"]))"]
            if let waiting = step?["waiting_for"] { parts.append("waiting for \(text(waiting))") }
        case _ where type.hasPrefix("WorkflowRun."):
            parts += [text(data?["workflow_run_id"]), text(data?["workflow_name"]), text(data?["status"])]
            let steps = (data?["steps"]?.arrayValue ?? []).prefix(20).map { "\(mark($0["status"]?.stringValue)) \(text($0["component_id"]))" }
            if !steps.isEmpty { parts.append("[" + steps.joined(separator: "  ") + ((data?["steps"]?.arrayValue?.count ?? 0) > 20 ? "  …" : "") + "]") }
        default:
            if let run = data?["workflow_run_id"] { parts.append("run=\(text(run))") }
            parts.append("event=\(text(envelope["event_id"]))")
        }
        return parts.joined(separator: "  ")
    }

    /// The run an event is about, if any (for `watch --run`).
    static func runID(_ envelope: JSONValue) -> String? {
        envelope[path: ["data", "workflow_run_id"]]?.stringValue ?? envelope[path: ["data", "response", "body", "workflow_run_id"]]?.stringValue
    }
}
