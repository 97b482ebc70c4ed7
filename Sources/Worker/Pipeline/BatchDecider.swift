import Kafka
import Logging
import Store
import Workflows

/// Decides what a batch changes, given the store's state: the heart of the
/// contract's rules (§3–§6). It does no I/O; ``Pipeline`` loads, calls it and
/// writes the result in one transaction.
///
/// Inputs are taken in order, and each sees the effects of the ones before it
/// (a second request with the same key in one batch replays the first).
struct BatchDecider: Sendable {
    var catalog: WorkflowCatalog
    var engine: RunEngine
    var outputs: Outputs
    var idempotencyTTL: Duration
    var mismatchPolicy: WorkerConfiguration.IdempotencyMismatchPolicy
    var logger: Logger

    /// What happened to each input, for logs and metrics.
    struct Tally: Sendable, Equatable {
        var alreadyDone = 0
        var runsStarted = 0
        var responses = 0
        var replays = 0
        var mismatches = 0
        var deadLetters = 0
        var ignored = 0
        var duplicateEvents = 0
        var runsCanceled = 0
        var responsesKept = 0
        /// Requests answered with a 4xx (not replays).
        var rejected = 0
        /// Inputs by topic and outcome (the `trigger_worker_messages_total` metric).
        var outcomes: [MessageOutcome: Int] = [:]

        /// What became of one input, read from the counters it moved (`before` is the
        /// tally before it was handled).
        func outcome(since before: Tally) -> String {
            if deadLetters > before.deadLetters { return "dead_lettered" }
            if replays > before.replays { return "replayed" }
            if ignored > before.ignored { return "ignored" }
            if duplicateEvents > before.duplicateEvents { return "duplicate" }
            if rejected > before.rejected { return "rejected" }
            if responses > before.responses { return "answered" }
            return "applied"
        }
    }

    /// A topic and what became of an input read from it.
    struct MessageOutcome: Hashable, Sendable {
        var topic: String
        var outcome: String
    }

    struct Decision: Sendable {
        var writes: BatchWrites
        var tally: Tally
        /// The answers of the requests that came over HTTP, by their minted id.
        var httpAnswers: [String: HTTPAnswer] = [:]
    }

    // MARK: What to read

    func query(for items: [(Source, Input)]) -> BatchQuery {
        var query = BatchQuery()
        for (source, input) in items {
            if source.http == nil { query.partitions.insert(source.partitionID) }
            switch input {
            case .vendorEvent(let event):
                query.scopes.insert(event.scope)
                query.vendors.insert(VendorKey(orgID: event.org.id, vendorID: event.vendorID))
            case .response(let event):
                query.scopes.insert(event.scope)
            case .request(let request):
                if let scope = request.scope { query.scopes.insert(scope) }
                if let vendorID = request.vendorID { query.vendors.insert(VendorKey(orgID: request.org.id, vendorID: vendorID)) }
                if let runID = request.runID { query.runs.insert(runID) }
            case .answered, .deadLetter, .ignored:
                break
            }
        }
        return query
    }

    // MARK: Deciding

    /// The partition whose owner publishes what an input caused: its own; for a request
    /// over HTTP, which has none, the requests topic's partition 0, which every topic
    /// has (one publisher, in order, for its outputs and its run's later ones).
    func owner(of source: Source) -> PartitionID {
        source.http == nil ? source.partitionID : PartitionID(topic: outputs.topics.triggerRequests, partition: 0)
    }

    func decide(_ items: [(Source, Input)], snapshot: BatchSnapshot, now: Timestamp) -> Decision {
        var state = State(snapshot: snapshot, now: now)
        for (source, input) in items {
            let partition = source.partitionID
            let next = state.watermarks[partition]?.next ?? snapshot.watermarks[partition]
            if source.http == nil, let next, source.offset < next {
                state.tally.alreadyDone += 1
                state.tally.outcomes[MessageOutcome(topic: partition.topic, outcome: "already_done"), default: 0] += 1
                continue
            }
            state.epoch = snapshot.epochs[partition] ?? 0
            let outputsBefore = state.writes.outbox.count
            let before = state.tally
            switch input {
            case .vendorEvent(let event): handle(event, &state)
            case .response(let event): handle(event, &state)
            case .request(let request): handle(request, &state)
            case .answered(let answered): respond(answered, &state)
            case .deadLetter(let letter) where source.http == nil:
                state.writes.outbox.append(outputs.deadLetter(letter))
                state.tally.deadLetters += 1
                logger.warning("Dead-lettered a vendor event", metadata: Self.metadata(source, [LogKey.error: "\(letter.code): \(letter.message)"]))
            case .deadLetter:
                break  // only vendor events are dead-lettered, and none comes over HTTP
            case .ignored(let type):
                state.tally.ignored += 1
                logger.debug("Ignored an event type the worker does not act on", metadata: Self.metadata(source, ["event_type": "\(type)"]))
            }
            // The input's outputs are published by whoever owns its partition (a run's
            // events, by whoever owns the partition of the input that started the run).
            for index in outputsBefore..<state.writes.outbox.count where state.writes.outbox[index].source == nil {
                state.writes.outbox[index].source = owner(of: source)
            }
            guard source.http == nil else {
                // No place in a log: no mark moves.
                state.tally.outcomes[MessageOutcome(topic: "http", outcome: state.tally.outcome(since: before)), default: 0] += 1
                continue
            }
            state.watermarks[partition] = (expected: snapshot.watermarks[partition], next: source.offset + 1)
            state.tally.outcomes[MessageOutcome(topic: partition.topic, outcome: state.tally.outcome(since: before)), default: 0] += 1
        }
        state.writes.watermarks = state.watermarks
        state.writes.now = now
        return Decision(writes: state.writes, tally: state.tally, httpAnswers: state.httpAnswers)
    }

    /// The batch's view of the store: the snapshot plus what the batch wrote so far.
    private struct State {
        var records: [ScopeHash: IdempotencyRecord]
        var vendors: [VendorKey: VendorRecord]
        /// Runs read for cancel requests, and those the batch started or canceled.
        var runs: [String: RunSnapshot]
        var watermarks: [PartitionID: (expected: Int64?, next: Int64)] = [:]
        var writes = BatchWrites()
        var tally = Tally()
        let now: Timestamp
        /// The epoch of the log of the input being decided (ids derive from it).
        var epoch: Int64 = 0
        /// HTTP requests' answers, by their minted id.
        var httpAnswers: [String: HTTPAnswer] = [:]

        init(snapshot: BatchSnapshot, now: Timestamp) {
            records = snapshot.records
            vendors = snapshot.vendors
            runs = snapshot.runs
            self.now = now
        }

        var seconds: Int64 { now / 1000 }

        /// Records `record` for the rest of the batch and for the transaction.
        mutating func claim(_ record: IdempotencyRecord) {
            records[record.scope] = record
            writes.records.append(record)
        }
    }

    private var ttlMilliseconds: Int64 { idempotencyTTL.milliseconds }

    // MARK: Pattern 1: vendor events

    private func handle(_ event: VendorEvent, _ state: inout State) {
        let source = event.source
        if state.records[event.scope] != nil {
            state.tally.duplicateEvents += 1
            logger.info("Duplicate vendor event; nothing started", metadata: Self.metadata(source, [LogKey.org: "\(event.org.id)", "event_id": "\(event.eventID)"]))
            return
        }
        // Keep the directory current (an older event never overwrites a newer one).
        let key = VendorKey(orgID: event.org.id, vendorID: event.vendorID)
        if (state.vendors[key]?.occurredAt ?? .min) <= event.occurredAt {
            let vendor = VendorRecord(id: event.vendorID, orgID: event.org.id, document: event.vendor.canonicalBytes, occurredAt: event.occurredAt)
            state.vendors[key] = vendor
            state.writes.vendors.append(vendor)
        }
        let context: JSONValue = [
            "vendor": event.vendor,
            "input": event.data,
            "event": ["event_id": .string(event.eventID), "event_type": .string(event.type.rawValue), "occurred_at": .int(event.occurredAt)],
        ]
        let trigger = source.triggerDocument(.event(id: event.eventID))
        let coordinates = source.coordinates(epoch: state.epoch)
        var runIDs: [JSONValue] = []
        for workflow in catalog.workflows(orgID: event.org.id, boundTo: event.type) where ConditionEvaluator.matches(workflow.conditions, context: context) {
            let runID = Identifier.derive(prefix: "cbwr", from: [event.org.id, Scopes.eventEndpoint, event.eventID, workflow.name] + coordinates)
            let run = PendingRun(id: runID, definition: workflow, input: event.data, trigger: trigger, vendor: event.vendor, assessment: nil, now: state.seconds)
            start(run, orgID: event.org.id, source: source, idempotencyKey: nil, &state)
            runIDs.append(.string(runID))
        }
        claimEvent(event.scope, orgID: event.org.id, eventID: event.eventID, encodedData: event.encodedData, occurredAt: event.occurredAt, runIDs: runIDs, &state)
        // Steps may wait for vendor events too.
        state.writes.events.append(EngineEvent(
            orgID: event.org.id, eventID: event.eventID, type: event.type.rawValue, vendorID: event.vendorID, runID: nil, data: event.encodedData, receivedAt: state.now
        ))
        logger.info("Vendor event handled", metadata: Self.metadata(source, [
            LogKey.org: "\(event.org.id)", "event_id": "\(event.eventID)", "event_type": "\(event.type.rawValue)", "runs_started": "\(runIDs.count)",
        ]))
    }

    /// The record lives until the event is too old to be taken (InputDecoder): an
    /// event dated ahead of now keeps its record that much longer.
    private func claimEvent(_ scope: ScopeHash, orgID: String, eventID: String, encodedData: [UInt8], occurredAt: Int64, runIDs: [JSONValue], _ state: inout State) {
        state.claim(IdempotencyRecord(
            scope: scope, orgID: orgID, endpoint: Scopes.eventEndpoint, key: eventID,
            fingerprint: Digest.sha256(encodedData), responseStatus: 200,
            responseBody: (["workflow_run_ids": .array(runIDs)] as JSONValue).canonicalBytes,
            createdAt: state.now, expiresAt: max(state.now, occurredAt * 1000) + ttlMilliseconds + Self.eventRecordMargin
        ))
    }

    // MARK: Responses that steps wait for

    /// A `QuestionnaireResponse.Submitted`: kept once (a re-published one is a
    /// duplicate), and the runs waiting for it woken.
    private func handle(_ event: ResponseEvent, _ state: inout State) {
        if state.records[event.scope] != nil {
            state.tally.duplicateEvents += 1
            logger.info("Duplicate event; counted once", metadata: Self.metadata(event.source, [LogKey.org: "\(event.org.id)", "event_id": "\(event.eventID)"]))
            return
        }
        claimEvent(event.scope, orgID: event.org.id, eventID: event.eventID, encodedData: event.encodedData, occurredAt: event.occurredAt, runIDs: [], &state)
        state.writes.events.append(EngineEvent(
            orgID: event.org.id, eventID: event.eventID, type: WaitableEvent.questionnaireResponse, vendorID: event.vendorID,
            runID: event.runID, data: event.encodedData, receivedAt: state.now
        ))
        state.tally.responsesKept += 1
        logger.info("Questionnaire response kept for the steps that wait for it", metadata: Self.metadata(event.source, [
            LogKey.org: "\(event.org.id)", "event_id": "\(event.eventID)", "vendor_id": "\(event.vendorID)",
        ]))
    }

    // MARK: Patterns 2 and 3: requests

    private func handle(_ request: TriggerRequest, _ state: inout State) {
        var answer = AnsweredRequest(
            source: request.source, orgID: request.org.id, requestType: request.type.rawValue,
            workflowName: request.workflowName, idempotencyKey: request.idempotencyKey, response: Responses.unauthorized
        )
        if let scope = request.scope, let original = state.records[scope] {
            let mismatch = original.fingerprint != request.fingerprint
            if mismatch {
                state.tally.mismatches += 1
                logger.warning("Idempotency key replayed with a different body", metadata: Self.metadata(request.source, [
                    LogKey.org: "\(request.org.id)", LogKey.idempotencyKey: "\(request.idempotencyKey ?? "")", "policy": "\(mismatchPolicy.rawValue)",
                ]))
            }
            if mismatch && mismatchPolicy == .reject {
                answer.response = Responses.idempotencyKeyReused(ttl: idempotencyTTL)
                respond(answer, fingerprintMismatch: true, &state)
                return
            }
            answer.response = Response(status: original.responseStatus, encodedBody: original.responseBody)
            state.tally.replays += 1
            respond(answer, replayed: true, fingerprintMismatch: mismatch, &state)
            return
        }

        let issues = Self.validate(request)
        guard issues.isEmpty else {
            answer.response = Responses.validation(issues)
            respond(answer, &state)
            return
        }

        var workflow: WorkflowDefinition?
        if let name = request.workflowName {
            guard let found = catalog.workflow(orgID: request.org.id, name: name) else {
                answer.response = Responses.workflowNotFound(name)
                respond(answer, &state)
                return
            }
            guard found.enabled else {
                answer.response = Responses.workflowDisabled(name)
                respond(answer, &state)
                return
            }
            workflow = found
        }

        let idParts = [request.org.id, request.endpoint, request.idempotencyKey ?? ""]
        let coordinates = request.source.coordinates(epoch: state.epoch)
        let trigger = request.source.triggerDocument(.request(idempotencyKey: request.idempotencyKey))
        switch request.type {
        case .workflowRun:
            let input = request.body["input"].flatMap { $0 == .null ? nil : $0 } ?? .object([:])
            let runID = Identifier.derive(prefix: "cbwr", from: idParts + [workflow!.name] + coordinates)
            let vendor = request.vendorID.flatMap { state.vendors[VendorKey(orgID: request.org.id, vendorID: $0)] }
            answer.response = Response(status: 201, body: [
                "workflow_run_id": .string(runID), "workflow_name": .string(workflow!.name), "status": "started",
                "started_at": .int(state.seconds), "input": input,
            ])
            store(answer.response, for: request, &state)
            respond(answer, &state)
            let run = PendingRun(id: runID, definition: workflow!, input: input, trigger: trigger, vendor: vendor.flatMap { try? JSONValue.parse($0.document) }, assessment: nil, now: state.seconds)
            start(run, orgID: request.org.id, source: request.source, idempotencyKey: request.idempotencyKey, &state)

        case .assessmentCreate:
            let vendorID = request.vendorID!
            guard let vendorRecord = state.vendors[VendorKey(orgID: request.org.id, vendorID: vendorID)] else {
                answer.response = Responses.vendorNotFound(vendorID)
                respond(answer, &state)
                return
            }
            let vendor = (try? JSONValue.parse(vendorRecord.document)) ?? ["id": .string(vendorID)]
            let assessmentID = Identifier.derive(prefix: "cbqsrw", from: idParts + coordinates)
            let runID = workflow.map { Identifier.derive(prefix: "cbwr", from: idParts + [$0.name] + coordinates) }
            let body = request.body
            let document = AssessmentDocument.make(
                id: assessmentID, vendorID: vendorID,
                name: body["name"]?.stringValue ?? "Assessment of \(vendor["name"]?.stringValue ?? vendorID)",
                controlSetIDs: body["control_set_ids"]?.arrayValue ?? [], serviceIDs: body["service_ids"]?.arrayValue ?? [],
                assigneeID: body["assignee_id"] ?? .null, workflowRunID: runID.json, now: state.seconds
            )
            answer.response = Response(status: 201, body: document)
            state.writes.assessments.append(AssessmentRecord(id: assessmentID, orgID: request.org.id, vendorID: vendorID, createdAt: state.seconds, document: answer.response.body))
            store(answer.response, for: request, &state)
            respond(answer, &state)
            if let workflow, let runID {
                let run = PendingRun(id: runID, definition: workflow, input: .object([:]), trigger: trigger, vendor: vendor, assessment: document, now: state.seconds)
                start(run, orgID: request.org.id, source: request.source, idempotencyKey: request.idempotencyKey, &state)
            }

        case .workflowRunCancel:
            cancel(request.runID!, request: request, answer: &answer, &state)
        }
    }

    /// `workflow_run_cancel` (§10): 200 with the run object, status `canceled` (its
    /// pending and waiting steps skipped, `WorkflowRun.Canceled` published); 404 for a
    /// run this org does not have (another org's included: existence never leaks); 409
    /// when the run has already finished. A step being executed meanwhile finishes,
    /// and its result is discarded (its claim's commit finds the run gone).
    private func cancel(_ runID: String, request: TriggerRequest, answer: inout AnsweredRequest, _ state: inout State) {
        guard let run = state.runs[runID], run.record.orgID == request.org.id else {
            answer.response = Responses.runNotFound(runID)
            respond(answer, &state)
            return
        }
        guard let task = run.task, !(RunStatus(rawValue: run.record.status)?.isTerminal ?? false) else {
            answer.response = Responses.runFinished(runID, status: run.record.status)
            respond(answer, &state)
            return
        }
        guard let runState = try? RunState(decoding: task.state) else {
            logger.error("A run to cancel has an engine state this build cannot read", metadata: Self.metadata(request.source, [LogKey.runID: "\(runID)"]))
            answer.response = Responses.error(500, "internal_error", "Workflow run '\(runID)' cannot be canceled by this worker (its state cannot be read).")
            respond(answer, &state)
            return
        }
        let canceled = engine.cancel(runState, now: state.now)
        answer.response = Response(status: 200, encodedBody: canceled.document)
        respond(answer, &state)
        // The run's events go with its other events: published by the owner of its input's partition, after them.
        let source = task.source ?? owner(of: request.source)
        for event in canceled.events {
            state.writes.outbox.append(outputs.runEvent(event, orgID: runState.orgID, runID: runID, headers: runState.headers, source: source, now: state.now))
        }
        state.writes.cancels.append(RunCancel(runID: runID, fence: task.fence, finishedAt: state.seconds, document: canceled.document))
        var record = run.record
        record.status = RunStatus.canceled.rawValue
        record.finishedAt = state.seconds
        record.document = canceled.document
        state.runs[runID] = RunSnapshot(record: record, task: nil)
        state.tally.runsCanceled += 1
        logger.info("Run canceled", metadata: Self.metadata(request.source, [LogKey.runID: "\(runID)", LogKey.org: "\(request.org.id)"]))
    }

    /// Only a 201 is stored under a key, so a rejected request can be fixed and retried with it.
    private func store(_ response: Response, for request: TriggerRequest, _ state: inout State) {
        guard let scope = request.scope, let key = request.idempotencyKey else { return }
        state.claim(IdempotencyRecord(
            scope: scope, orgID: request.org.id, endpoint: request.endpoint, key: key, fingerprint: request.fingerprint,
            responseStatus: response.status, responseBody: response.body,
            createdAt: state.now, expiresAt: state.now + ttlMilliseconds
        ))
    }

    /// Publishes the request's one `TriggerRequest.Responded` (and its dead letter, if any).
    private func respond(_ answer: AnsweredRequest, replayed: Bool = false, fingerprintMismatch: Bool = false, _ state: inout State) {
        let source = answer.source
        let endpoint = answer.requestType.flatMap(RequestType.init(rawValue:)).map { Scopes.endpoint(for: $0, workflowName: answer.workflowName) } ?? (answer.requestType ?? "")
        let eventID = Identifier.derive(prefix: "cbevt", from: [answer.orgID ?? "", endpoint, answer.idempotencyKey ?? ""] + source.coordinates(epoch: state.epoch) + ["TriggerRequest.Responded"])
        let key = answer.idempotencyKey.map { Array($0.utf8) } ?? source.key
        let response = answer.response
        if let http = source.http {
            // Over HTTP the answer is the response itself: no Responded event (§8).
            state.httpAnswers[http.id] = HTTPAnswer(status: response.status, body: response.body, replayed: replayed, fingerprintMismatch: fingerprintMismatch)
        } else {
        state.writes.outbox.append(outputs.event(
            id: eventID, type: "TriggerRequest.Responded", orgID: answer.orgID, key: key, now: state.now, source: source, idempotencyKey: answer.idempotencyKey
        ) { data in
            data.object { data in
                data.key("fingerprint_mismatch"); data.bool(fingerprintMismatch)
                data.key("replayed"); data.bool(replayed)
                data.key("request")
                data.object { request in
                    request.key("idempotency_key"); request.string(answer.idempotencyKey)
                    request.key("request_id"); request.string(source.requestID)
                    request.key("request_type"); request.string(answer.requestType)
                    request.key("source"); source.write(to: &request)
                    request.key("workflow_name"); request.string(answer.workflowName)
                }
                data.key("response")
                data.object { body in
                    // The response body as stored, spliced in (a replay is not parsed again).
                    body.key("body"); body.encoded(response.body)
                    body.key("status"); body.int(Int64(response.status))
                }
            }
        })
        }
        state.tally.responses += 1
        if answer.response.status >= 400, !replayed { state.tally.rejected += 1 }
        if let letter = answer.deadLetter, source.http == nil {
            state.writes.outbox.append(outputs.deadLetter(letter))
            state.tally.deadLetters += 1
        }
        let level: Logger.Level = answer.response.status >= 400 ? .info : .debug
        logger.log(level: level, "Request answered", metadata: Self.metadata(source, [
            LogKey.org: "\(answer.orgID ?? "-")", LogKey.idempotencyKey: "\(answer.idempotencyKey ?? "-")",
            "status": "\(answer.response.status)", "replayed": "\(replayed)",
        ]))
    }

    // MARK: Runs

    /// Creates a run: its document (status `started`, steps pending), its engine task
    /// (due at once) and `WorkflowRun.Started`. Its steps execute after the batch's
    /// commit, in the engine (§10): intake never waits for them.
    /// `idempotencyKey`: the request's, carried on the run's events as a header.
    private func start(_ run: PendingRun, orgID: String, source: Source, idempotencyKey: String?, _ state: inout State) {
        let headers = RunHeaders(
            requestID: source.requestID, idempotencyKey: idempotencyKey,
            traceparent: source.traceparent.map { String(decoding: $0, as: UTF8.self) }
        )
        let start = engine.start(run, headers: headers)
        state.writes.outbox.append(outputs.event(
            id: Identifier.derive(prefix: "cbevt", from: [run.id, RunStatus.started.eventType]), type: RunStatus.started.eventType,
            orgID: orgID, encodedData: start.document, key: Array(run.id.utf8), now: state.now, source: source, idempotencyKey: idempotencyKey
        ))
        state.writes.runs.append(RunRecord(
            id: run.id, orgID: orgID, workflowName: run.definition.name, status: RunStatus.started.rawValue,
            startedAt: run.now, finishedAt: nil, document: start.document
        ))
        let task = EngineTask(
            runID: run.id, orgID: orgID, dueAt: state.now, state: start.state.encoded,
            source: owner(of: source)
        )
        state.writes.tasks.append(task)
        state.runs[run.id] = RunSnapshot(record: state.writes.runs[state.writes.runs.count - 1], task: task)
        state.tally.runsStarted += 1
    }

    // MARK: Body validation (422)

    static func validate(_ request: TriggerRequest) -> [Responses.ValidationIssue] {
        if request.body == .null { return [.missing(["body"])] }
        guard let body = request.body.objectValue else {
            return [Responses.ValidationIssue(location: ["body"], message: "Input should be a valid dictionary or object to extract fields from", type: "model_attributes_type")]
        }
        var issues: [Responses.ValidationIssue] = []
        /// A string field; `prefix`: an id of that kind; `name`: at most 255 bytes without control characters.
        func string(_ field: String, required: Bool, prefix: String? = nil, name: Bool = false) {
            switch body[field] {
            case nil: if required { issues.append(.missing(["body", field])) }
            case .null?: if required { issues.append(.notString(["body", field])) }
            case .string(let text)?:
                if let prefix, !Identifier.isValid(text, prefix: prefix) { issues.append(.notIdentifier(["body", field], prefix: prefix)) }
                if name, !InputDecoder.isName(text) { issues.append(.tooLong(["body", field], maxBytes: InputDecoder.maxNameBytes)) }
            default: issues.append(.notString(["body", field]))
            }
        }
        /// A list of ids of the kind `prefix`.
        func idList(_ field: String, required: Bool, prefix: String) {
            switch body[field] {
            case nil: if required { issues.append(.missing(["body", field])) }
            case .null?: if required { issues.append(.notList(["body", field])) }
            case .array(let items)?:
                for (index, item) in items.enumerated() {
                    if let text = item.stringValue {
                        if !Identifier.isValid(text, prefix: prefix) { issues.append(.notIdentifier(["body", field, String(index)], prefix: prefix)) }
                    } else {
                        issues.append(.notString(["body", field, String(index)]))
                    }
                }
            default: issues.append(.notList(["body", field]))
            }
        }
        switch request.type {
        case .workflowRunCancel:
            string("workflow_run_id", required: true, prefix: "cbwr")
        case .workflowRun:
            if let input = body["input"], input != .null, input.objectValue == nil {
                issues.append(.notObject(["body", "input"]))
            }
        case .assessmentCreate:
            string("vendor_id", required: true, prefix: "cbvndr")
            idList("control_set_ids", required: true, prefix: "cbctst")
            string("name", required: false)
            idList("service_ids", required: false, prefix: "cbsvc")
            string("assignee_id", required: false, prefix: "cbuser")
            string("trigger_workflow", required: false, name: true)
            idList("supporting_document_ids", required: false, prefix: "cbvdoc")
        }
        // A long list of bad ids must not make a long response.
        if issues.count > Self.maxIssues { issues = Array(issues.prefix(Self.maxIssues)) }
        return issues
    }

    /// How much longer than the dedupe window an event's record lives: the event is
    /// refused as too old before its record can have expired, however late after its
    /// decoding a batch is decided (decided again after a conflict, say).
    static let eventRecordMargin: Timestamp = 60_000

    /// The most validation issues a 422 lists.
    static let maxIssues = 50

    static func metadata(_ source: Source, _ extra: Logger.Metadata = [:]) -> Logger.Metadata {
        var metadata: Logger.Metadata = [LogKey.topic: "\(source.topic)", LogKey.partition: "\(source.partition)", LogKey.offset: "\(source.offset)"]
        metadata.merge(extra) { $1 }
        return metadata
    }
}

extension TriggerRequest {
    /// The vendor an `assessment_create` names, or the `input.vendor_id` of a
    /// `workflow_run`, when it is a vendor id (`cbvndr_` + 32 hex).
    var vendorID: String? {
        let value = switch type {
        case .assessmentCreate: body["vendor_id"]?.stringValue
        case .workflowRun: body["input"]?["vendor_id"]?.stringValue
        case .workflowRunCancel: String?.none
        }
        return value.flatMap { Identifier.isValid($0, prefix: "cbvndr") ? $0 : nil }
    }
}
