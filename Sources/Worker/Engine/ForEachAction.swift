import Store
import Workflows

/// `for_each` (§10): one item per vendor of the org's directory that matches
/// `vendor_filter`, each running `do` in order as its own task (an idempotent sub-flow:
/// its id is the run's, the step's and the vendor's). The directory is gone through a
/// page at a time, one claim per page, so a fan-out of thousands is written in
/// transactions of hundreds of items; at most `concurrency` items execute at once (a
/// waiting one holds no slot). The step ends when every item has: artifact `{total,
/// succeeded, failed, skipped}`; it fails only with `fail_on_item_failure: true`.
struct ForEachAction: StepAction {
    let store: any Store
    /// Vendors read (and items created, at most) per claim.
    static let page = 500
    /// The most bytes of the run's input copied into its items, all told.
    static let maxCopiedInputBytes = 512 << 20

    func perform(_ context: StepContext) async -> StepOutcome {
        let fields = context.inputFields
        guard let filter = VendorFilter(fields["vendor_filter"]) else {
            let problem = fields["vendor_filter"].flatMap(VendorFilter.problem(in:)) ?? "must be a mapping"
            return .failed(message: "for_each vendor_filter \(problem) for this run", retriable: false)
        }
        let concurrency = Int(min(max(fields["concurrency"]?.intValue ?? 10, 1), 1000))
        var progress = context.state.progress?.objectValue ?? ["cursor": "", "created": 0, "listed": false]
        progress["concurrency"] = .int(Int64(concurrency))
        var created = Int(progress["created"]?.intValue ?? 0)
        do {
            if progress["listed"] != .bool(true) {
                let cursor = progress["cursor"]?.stringValue ?? ""
                // A page's items carry the run's input each: at most about 16 MiB of them per claim.
                let page = max(1, min(Self.page, (16 << 20) / (context.run.input.canonicalBytes.count + 2048)))
                let vendors = try await store.vendors(orgID: context.run.orgID, afterID: cursor, limit: page)
                let matching = vendors.compactMap { record -> JSONValue? in
                    guard let vendor = try? JSONValue.parse(record.document), filter.matches(vendor) else { return nil }
                    return vendor
                }
                created += matching.count
                let inputBytes = context.run.input.canonicalBytes.count
                if created * inputBytes > Self.maxCopiedInputBytes {
                    return .failed(message: "for_each would copy the run's input (\(inputBytes) bytes) into \(created) items: more than \(Self.maxCopiedInputBytes >> 20) MiB", retriable: false)
                }
                progress["cursor"] = .string(vendors.last?.id ?? cursor)
                progress["created"] = .int(Int64(created))
                let listed = vendors.count < page
                progress["listed"] = .bool(listed)
                if !listed || !matching.isEmpty {
                    return .inProgress(progress: .object(progress), spawn: matching, waitingFor: listed ? ["items": .int(Int64(created))] : nil)
                }
            }
            // Every item created: done when none is left (the last to end wakes the run).
            let remaining = try await store.pendingItems(runID: context.run.runID)
            guard remaining == 0 else {
                return .inProgress(progress: .object(progress), spawn: [], waitingFor: ["items": .int(Int64(created)), "remaining": .int(Int64(remaining))])
            }
            let counts = try await store.itemCounts(runID: context.run.runID, stepID: context.step.id)
            let artifact: JSONValue = [
                "artifact_type": "for_each", "total": .int(Int64(counts.total)), "succeeded": .int(Int64(counts.succeeded)),
                "failed": .int(Int64(counts.failed)), "skipped": .int(Int64(counts.skipped)),
            ]
            let summary = "\(counts.total) items: \(counts.succeeded) succeeded, \(counts.failed) failed, \(counts.skipped) skipped"
            if fields["fail_on_item_failure"] == .bool(true), counts.failed > 0 {
                return .failed(message: summary, retriable: false)
            }
            return .succeeded(StepSuccess(message: .string(summary), artifacts: [artifact], output: artifact))
        } catch {
            return .failed(message: "for_each could not read the store: \(error)", retriable: true)
        }
    }
}

/// `aggregate` `with: {from: <for_each step>}`: the quarterly report of the seed, over a
/// `for_each` and its waits: `{artifact_type: "report", total, succeeded, failed,
/// skipped, responses, items: [{vendor_id, status, response}]}`, where `responses`
/// counts items whose wait was resumed by an event. The items listed are bounded (half
/// of `MAX_MESSAGE_BYTES`): beyond, `items_truncated` says how many were left out.
struct AggregateAction: StepAction {
    let store: any Store
    static let page = 500

    func perform(_ context: StepContext) async -> StepOutcome {
        guard let from = context.inputFields["from"]?.stringValue else {
            return .failed(message: "aggregate needs 'from', a for_each step", retriable: false)
        }
        do {
            let counts = try await store.itemCounts(runID: context.run.runID, stepID: from)
            var items: [JSONValue] = []
            var bytes = 0
            let budget = context.maxEffectBytes / 2
            var after = ""
            var listed = 0
            scan: while true {
                let results = try await store.itemResults(runID: context.run.runID, stepID: from, afterKey: after, limit: Self.page)
                for result in results {
                    let response = result.response.flatMap { try? JSONValue.parse($0) } ?? .null
                    let item: JSONValue = ["vendor_id": .string(result.key), "status": .string(result.status), "response": response]
                    let size = item.canonicalBytes.count
                    if bytes + size > budget { break scan }
                    bytes += size
                    items.append(item)
                    listed += 1
                }
                guard results.count == Self.page, let last = results.last else { break }
                after = last.key
            }
            var report: [String: JSONValue] = [
                "artifact_type": "report", "total": .int(Int64(counts.total)), "succeeded": .int(Int64(counts.succeeded)),
                "failed": .int(Int64(counts.failed)), "skipped": .int(Int64(counts.skipped)), "responses": .int(Int64(counts.responses)),
                "items": .array(items),
            ]
            if listed < counts.total { report["items_truncated"] = .int(Int64(counts.total - listed)) }
            return .succeeded(StepSuccess(
                message: .string("\(counts.responses) responses from \(counts.total) items"), artifacts: [.object(report)], output: .object(report)
            ))
        } catch {
            return .failed(message: "aggregate could not read the store: \(error)", retriable: true)
        }
    }
}
