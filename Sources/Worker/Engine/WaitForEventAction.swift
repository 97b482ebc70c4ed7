import Store
import Workflows

/// `wait_for_event` (§10): the step waits until an event of `event` for the run's org
/// whose `data` has every field of `match` (dotted paths, values templated) arrives
/// on the vendor-events topic, or its deadline (`until`, or `timeout` from when the
/// wait began) passes: then it fails `timed out`, or with `on_timeout: continue` is
/// skipped. Events that arrived after the run started count, even before the wait
/// began; an event whose `data.workflow_run_id` is set matches only that run. The
/// first match (in the order received) resumes the step and is its output and
/// artifact; intake keeps each event id once, so a re-published event counts once.
struct WaitForEventAction: StepAction {
    let store: any Store
    /// Events looked through per query.
    static let page = 500

    func perform(_ context: StepContext) async -> StepOutcome {
        let fields = context.inputFields
        guard let type = fields["event"]?.stringValue, WaitableEvent.all.contains(type) else {
            return .failed(message: "wait_for_event needs an event type it can wait for", retriable: false)
        }
        let match = fields["match"]?.objectValue ?? [:]
        let deadline: Int64
        if let wakeAt = context.state.wakeAt {
            deadline = wakeAt
        } else {
            switch context.deadline(durationKey: "timeout") {
            case .success(let instant): deadline = instant
            case .failure(let failure): return .failed(message: failure.message, retriable: false)
            }
        }
        // Narrows the events looked at (and the wake-ups) to one vendor's when `match` names one.
        let vendorID = match["vendor_id"]?.stringValue
        // The event that started the run does not resume its own wait.
        let trigger = context.run.trigger["event_id"]?.stringValue
        var after: Int64 = 0
        do {
            while true {
                let events = try await store.events(
                    orgID: context.run.orgID, type: type, vendorID: vendorID, since: context.run.startedAt * 1000, afterSequence: after, limit: Self.page
                )
                for stored in events {
                    let event = stored.event
                    if event.eventID == trigger { continue }
                    if let runID = event.runID, runID != context.run.runID { continue }
                    guard let data = try? JSONValue.parse(event.data), Self.matches(data, match) else { continue }
                    return .succeeded(StepSuccess(
                        message: .string("resumed by \(type) \(event.eventID)"),
                        artifacts: [["artifact_type": "event", "event_type": .string(type), "id": .string(event.eventID), "role": "result"]],
                        output: data
                    ))
                }
                if let last = events.last { after = last.sequence }
                guard events.count == Self.page else { break }
            }
        } catch {
            // The store did not answer: tried again under the step's retry (its deadline kept).
            return .failed(message: "wait_for_event could not read the events: \(error)", retriable: true)
        }
        guard context.now < deadline else {
            let message = "timed out waiting for \(type) (deadline \(deadline / 1000))"
            if fields["on_timeout"] == "continue" { return .skipped(message: .string(message)) }
            return .failed(message: message, retriable: false)
        }
        return .waits(until: deadline, waitingFor: waitingFor(type, match, deadline), subscription: WaitSubscription(eventType: type, vendorID: vendorID, seenSequence: after))
    }

    private func waitingFor(_ type: String, _ match: [String: JSONValue], _ deadline: Int64) -> JSONValue {
        ["event": .string(type), "match": .object(match), "until": .int(deadline / 1000)]
    }

    /// Every field of `match` (a dotted path into `data`) equals its value.
    static func matches(_ data: JSONValue, _ match: [String: JSONValue]) -> Bool {
        match.allSatisfy { path, value in data[path: path.split(separator: ".").map(String.init)] == value }
    }
}
