extension RunState {
    /// A state as stored. - Throws: ``RunStateError`` when it is not one this build can read.
    ///
    /// Read in place: the state's own object, its headers, item and steps are walked key
    /// by key, not built as JSON trees first, and the definition (a third of the bytes,
    /// the same for every run of a workflow) is taken from ``DefinitionCache`` when its
    /// bytes are the cached ones. `make bench` profiled the engine alone on SQLite:
    /// building the tree of each claimed state was 16% of its samples, the largest cost.
    /// What a field accepts, and what it defaults to, is as `json` writes it.
    public init(decoding bytes: [UInt8]) throws(RunStateError) {
        var fields = Fields()
        do {
            try JSONParser.reading(bytes) { (parser: inout JSONParser) throws(JSONParser.Failure) in
                try fields.read(&parser)
            }
        } catch {
            throw RunStateError("not a JSON object this build can read (\(error))")
        }
        guard let version = fields.version, version <= Self.version else {
            throw RunStateError("written by a newer release (format \(fields.version.map(String.init) ?? "?"))")
        }
        func required<Value>(_ value: Value?, _ key: String) throws(RunStateError) -> Value {
            guard let value else { throw RunStateError("'\(key)' is missing") }
            return value
        }
        runID = try required(fields.runID, "run_id")
        orgID = try required(fields.orgID, "org_id")
        workflowName = try required(fields.workflowName, "workflow_name")
        definitionID = try required(fields.definitionID, "definition_id")
        startedAt = try required(fields.startedAt, "started_at")
        completedAt = fields.completedAt
        status = try required(fields.status, "status")
        input = fields.input ?? .object([:])
        vendor = fields.vendor ?? .null
        assessment = fields.assessment ?? .null
        trigger = fields.trigger ?? .object([:])
        outputs = fields.outputs ?? [:]
        cursor = Int(try required(fields.cursor, "cursor"))
        headers = fields.headers
        if let error = fields.stepError { throw RunStateError(error) }
        steps = fields.steps
        let cacheKey = DefinitionCache.key(definitionID: definitionID, item: fields.itemStepID)
        // Compared in place: copied only when the cache does not have them.
        let stored = fields.definition.map { bytes[$0] }
        if let stored, let cached = DefinitionCache.steps(cacheKey, stored: stored) {
            definition = cached
        } else {
            var definition: [WorkflowStep] = []
            if let stored {
                guard let value = try? JSONValue.parse(Array(stored)) else { throw RunStateError("the definition is not JSON") }
                for item in value.arrayValue ?? [] {
                    guard let step = WorkflowStep(json: item) else { throw RunStateError("a step of the definition cannot be read") }
                    definition.append(step)
                }
                if !definition.isEmpty { DefinitionCache.keep(cacheKey, steps: definition) }
            }
            self.definition = definition
        }
        if let stepID = fields.itemStepID, let key = fields.itemKey { item = ItemInfo(stepID: stepID, key: key) }
        guard definition.count == steps.count else { throw RunStateError("the definition has \(definition.count) steps, the run \(steps.count)") }
        guard (0...steps.count).contains(cursor) else { throw RunStateError("the cursor is outside the steps") }
    }
}

/// A stored state's fields as read, before they are checked. A field written twice
/// counts as its last value (as a JSON object's key does).
private struct Fields {
    var version: Int64?
    var runID: String?
    var orgID: String?
    var workflowName: String?
    var definitionID: String?
    var startedAt: Int64?
    var completedAt: Int64?
    var status: RunStatus?
    var input: JSONValue?
    var vendor: JSONValue?
    var assessment: JSONValue?
    var trigger: JSONValue?
    var outputs: [String: JSONValue]?
    var cursor: Int64?
    var headers = RunHeaders()
    var steps: [StepState] = []
    /// Why a step cannot be read (reported after the version is checked, as a newer
    /// release's steps may be what this build cannot read).
    var stepError: String?
    /// Where the definition's bytes are, not parsed yet.
    var definition: Range<Int>?
    var itemStepID: String?
    var itemKey: String?

    mutating func read(_ parser: inout JSONParser) throws(JSONParser.Failure) {
        try parser.openObject()
        var first = true
        while let key = try parser.nextKey(&first) {
            switch key {
            case "v": version = try parser.value().intValue
            case "run_id": runID = try parser.value().stringValue
            case "org_id": orgID = try parser.value().stringValue
            case "workflow_name": workflowName = try parser.value().stringValue
            case "definition_id": definitionID = try parser.value().stringValue
            case "started_at": startedAt = try parser.value().intValue
            case "completed_at": completedAt = try parser.value().intValue
            case "status": status = try parser.value().stringValue.flatMap(RunStatus.init(rawValue:))
            case "input": input = try parser.value()
            case "vendor": vendor = try parser.value()
            case "assessment": assessment = try parser.value()
            case "trigger": trigger = try parser.value()
            case "outputs": outputs = try parser.value().objectValue
            case "cursor": cursor = try parser.value().intValue
            case "headers": try readHeaders(&parser)
            case "steps": try readSteps(&parser)
            case "definition":
                // Only delimited here, and checked later: a second one would go unchecked.
                guard definition == nil else { throw parser.failure("'definition' written twice") }
                definition = try parser.skipValue()
            case "item": try readItem(&parser)
            default: _ = try parser.value()
            }
        }
    }

    private mutating func readHeaders(_ parser: inout JSONParser) throws(JSONParser.Failure) {
        headers = RunHeaders()
        guard let object = try parser.value().objectValue else { return }
        headers = RunHeaders(
            requestID: object["request_id"]?.stringValue, idempotencyKey: object["idempotency_key"]?.stringValue,
            traceparent: object["traceparent"]?.stringValue
        )
    }

    private mutating func readItem(_ parser: inout JSONParser) throws(JSONParser.Failure) {
        let item = try parser.value()
        itemStepID = item["step_id"]?.stringValue
        itemKey = item["key"]?.stringValue
    }

    /// The steps, each object walked key by key.
    private mutating func readSteps(_ parser: inout JSONParser) throws(JSONParser.Failure) {
        steps = []
        stepError = nil
        guard !(try parser.readNull()) else { return }
        guard parser.isAtArray else {
            _ = try parser.value()  // not a list: no steps (as a missing one)
            return
        }
        try parser.openArray()
        var first = true
        while try parser.nextElement(&first) {
            guard parser.isAtObject else {
                _ = try parser.value()
                stepError = stepError ?? "a step is not an object"
                continue
            }
            var step = StepFields()
            try step.read(&parser)
            switch step.state() {
            case .success(let state): steps.append(state)
            case .failure(let error): stepError = stepError ?? error.reason
            }
        }
    }
}

/// One step's fields as read.
private struct StepFields {
    var componentID: String?
    var stepID: String?
    var action: String?
    var status: StepStatus?
    var message: JSONValue = .null
    var artifacts: [JSONValue] = []
    var createdAt: Int64?
    var updatedAt: Int64?
    var attempts: Int64?
    var nextAttemptAt: Int64?
    var wakeAt: Int64?
    var waitingFor: JSONValue?
    var lastError: String?
    var subscription: JSONValue?
    var progress: JSONValue?
    var recheck = false

    mutating func read(_ parser: inout JSONParser) throws(JSONParser.Failure) {
        try parser.openObject()
        var first = true
        while let key = try parser.nextKey(&first) {
            switch key {
            case "component_id": componentID = try parser.value().stringValue
            case "step_id": stepID = try parser.value().stringValue
            case "action": action = try parser.value().stringValue
            case "status": status = try parser.value().stringValue.flatMap(StepStatus.init(rawValue:))
            case "message": message = try parser.value()
            case "artifacts": artifacts = try parser.value().arrayValue ?? []
            case "created_at": createdAt = try parser.value().intValue
            case "updated_at": updatedAt = try parser.value().intValue
            case "attempts": attempts = try parser.value().intValue
            case "next_attempt_at": nextAttemptAt = try parser.value().intValue
            case "wake_at": wakeAt = try parser.value().intValue
            case "waiting_for": let value = try parser.value(); waitingFor = value == .null ? JSONValue?.none : value
            case "last_error": lastError = try parser.value().stringValue
            case "subscription": subscription = try parser.value()
            case "progress": let value = try parser.value(); progress = value == .null ? JSONValue?.none : value
            case "recheck": recheck = try parser.value() == .bool(true)
            default: _ = try parser.value()
            }
        }
    }

    func state() -> Result<StepState, RunStateError> {
        guard let action = action.flatMap(WorkflowAction.init(rawValue:)) else { return .failure(RunStateError("a step's action is unknown")) }
        guard let componentID else { return .failure(RunStateError("'component_id' is missing")) }
        guard let stepID else { return .failure(RunStateError("'step_id' is missing")) }
        guard let createdAt else { return .failure(RunStateError("'created_at' is missing")) }
        guard let updatedAt else { return .failure(RunStateError("'updated_at' is missing")) }
        var state = StepState(componentID: componentID, stepID: stepID, action: action, createdAt: createdAt, updatedAt: updatedAt)
        state.status = status
        state.message = message
        state.artifacts = artifacts
        state.attempts = Int(attempts ?? 0)
        state.nextAttemptAt = nextAttemptAt
        state.wakeAt = wakeAt
        state.waitingFor = waitingFor
        state.lastError = lastError
        state.progress = progress
        state.recheck = recheck
        if let type = subscription?["event_type"]?.stringValue {
            state.subscription = WaitSubscription(
                eventType: type, vendorID: subscription?["vendor_id"]?.stringValue, seenSequence: subscription?["seen"]?.intValue ?? 0
            )
        }
        return .success(state)
    }
}
