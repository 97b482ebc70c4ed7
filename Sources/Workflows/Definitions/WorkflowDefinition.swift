/// A workflow as written in `WORKFLOWS_DIR/<org_id>/<name>.yaml`.
public struct WorkflowDefinition: Sendable, Hashable {
    /// The org the workflow belongs to (its folder's name).
    public var orgID: String
    /// The workflow's name (its file's name without `.yaml`).
    public var name: String
    /// A stable id, `cbwd_` + 32 hex, derived from the org, the name and the file's content.
    public var id: String
    /// Disabled workflows are never started: by name they answer `409 workflow_disabled`.
    public var enabled: Bool
    /// What starts a run.
    public var trigger: WorkflowTrigger
    /// What must hold for an event to start a run; `nil` means always.
    public var conditions: ConditionSet?
    /// The steps, run in order.
    public var steps: [WorkflowStep]
    /// The file it was read from.
    public var file: String

    /// The most steps a workflow may have: a run document (every step with its
    /// message) then stays within the room the worker keeps beside an echoed input.
    public static let maxSteps = 100
    /// The most bytes of a step id (it is the steps' `component_id`).
    public static let maxStepIDBytes = 64

    public init(orgID: String, name: String, id: String, enabled: Bool, trigger: WorkflowTrigger, conditions: ConditionSet?, steps: [WorkflowStep], file: String) {
        self.orgID = orgID
        self.name = name
        self.id = id
        self.enabled = enabled
        self.trigger = trigger
        self.conditions = conditions
        self.steps = steps
        self.file = file
    }
}

/// The vendor events a workflow can be bound to.
public enum VendorEventType: String, Sendable, Hashable, CaseIterable {
    case vendorCreated = "Vendor.Created"
    case vendorUpdated = "Vendor.Updated"
}

/// What starts a workflow's runs.
public enum WorkflowTrigger: Sendable, Hashable {
    /// Every matching vendor event of the org starts a run (Pattern 1).
    case event(VendorEventType)
    /// Runs start only when invoked by name (Patterns 2 and 3).
    case direct
}

/// Rules combined with "match all" or "match any".
public struct ConditionSet: Sendable, Hashable {
    public enum Match: String, Sendable, Hashable, CaseIterable {
        case all
        case any
    }

    public var match: Match
    public var rules: [ConditionRule]

    public init(match: Match, rules: [ConditionRule]) {
        self.match = match
        self.rules = rules
    }
}

/// One condition: a path into the run context, an operator and a value.
public struct ConditionRule: Sendable, Hashable {
    /// A dotted path: `vendor.tier`, `input.due_date`, `steps.assess.id` …
    public var field: String
    public var op: ConditionOperator
    /// The value to compare with; `nil` only for ``ConditionOperator/exists``.
    public var value: JSONValue?

    public init(field: String, op: ConditionOperator, value: JSONValue?) {
        self.field = field
        self.op = op
        self.value = value
    }
}

/// The condition operators of the contract.
public enum ConditionOperator: String, Sendable, Hashable, CaseIterable {
    case eq, ne, `in`, notIn = "not_in", contains, notContains = "not_contains", exists, gt, gte, lt, lte, matches
}

/// One step of a workflow.
public struct WorkflowStep: Sendable, Hashable {
    /// Unique within the workflow; later steps and conditions refer to it as `steps.<id>`.
    public var id: String
    public var action: WorkflowAction
    /// The action's input; strings may hold `{{ path }}` templates.
    public var with: [String: JSONValue] {
        didSet { inputs = TemplateValue(.object(with)) }
    }
    /// ``with`` with its templates compiled.
    public private(set) var inputs: TemplateValue
    /// How often, and how far apart, a retriable failure is tried again (`retry:`).
    public var retry: RetryPolicy
    /// What a failed step does to its run (`on_failure:`).
    public var onFailure: FailurePolicy
    /// A `for_each`'s `do`: the steps each item runs in order (not in ``with``, whose
    /// templates render over the run, while these render over each item).
    public var body: [WorkflowStep]

    public init(id: String, action: WorkflowAction, with: [String: JSONValue], retry: RetryPolicy = RetryPolicy(), onFailure: FailurePolicy = .fail, body: [WorkflowStep] = []) {
        self.id = id
        self.action = action
        self.with = with
        self.inputs = TemplateValue(.object(with))
        self.retry = retry
        self.onFailure = onFailure
        self.body = body
    }
}

/// A step's `retry:` option: attempts in all, and the bounds of the exponential
/// backoff between them (full jitter: each wait is random between 0 and the bound).
public struct RetryPolicy: Sendable, Hashable {
    /// Attempts in all, the first included (1 = never retried).
    public var maxAttempts: Int
    /// The bound of the first wait; it doubles after each attempt.
    public var initial: Duration
    /// The largest bound.
    public var max: Duration

    /// The most attempts a workflow may ask for.
    public static let attemptsLimit = 100

    public init(maxAttempts: Int = 5, initial: Duration = .seconds(1), max: Duration = .seconds(300)) {
        self.maxAttempts = maxAttempts
        self.initial = initial
        self.max = max
    }

    /// The wait before attempt `attempt + 1` after attempt `attempt` (1-based) failed:
    /// `random` (in 0..<1) times `min(max, initial × 2^(attempt-1))`, in milliseconds.
    public func backoff(afterAttempt attempt: Int, random: Double) -> Int64 {
        let initial = self.initial.wholeMilliseconds, max = self.max.wholeMilliseconds
        let doublings = Swift.min(Swift.max(attempt - 1, 0), 40)
        let (scaled, overflow) = initial.multipliedReportingOverflow(by: Int64(1) << doublings)
        let bound = overflow ? max : Swift.min(scaled, max)
        return Int64((Double(bound) * Swift.min(Swift.max(random, 0), 1)).rounded(.down))
    }
}

/// What a step that failed (for good) does to its run.
public enum FailurePolicy: String, Sendable, Hashable, CaseIterable {
    /// The run fails; the steps after it are skipped.
    case fail
    /// The run goes on with the next step.
    case `continue`
}

/// The actions a step can take.
public enum WorkflowAction: String, Sendable, Hashable, CaseIterable {
    case createAssessment = "create_assessment"
    case sendQuestionnaire = "send_questionnaire"
    case sendEmail = "send_email"
    case sendWebhook = "send_webhook"
    case runWorkflow = "run_workflow"
    case updateWorkflowRun = "update_workflow_run"
    case createWorkQueueItem = "create_work_queue_item"
    case delay
    case waitForEvent = "wait_for_event"
    case forEach = "for_each"
    case aggregate

    /// Keys of `with` that the action cannot do without.
    public var requiredInputs: [String] {
        switch self {
        case .sendEmail: ["to", "subject"]
        case .sendWebhook: ["url"]
        case .runWorkflow: ["workflow"]
        case .waitForEvent: ["event"]
        case .forEach: ["vendor_filter", "do"]
        case .aggregate: ["from"]
        case .updateWorkflowRun: ["status"]
        case .createAssessment, .sendQuestionnaire, .createWorkQueueItem, .delay: []
        }
    }

    /// The keys `with` may hold, when the action takes only known ones (`nil`: any,
    /// for actions whose inputs become an event's data).
    public var knownInputs: Set<String>? {
        switch self {
        case .delay: ["for", "until"]
        case .waitForEvent: ["event", "match", "until", "timeout", "on_timeout"]
        case .forEach: ["vendor_filter", "do", "concurrency", "fail_on_item_failure"]
        case .aggregate: ["from"]
        case .updateWorkflowRun: ["status", "message"]
        case .runWorkflow: ["workflow", "input", "wait"]
        case .sendWebhook: ["url", "payload", "headers"]
        case .createAssessment, .sendQuestionnaire, .sendEmail, .createWorkQueueItem: nil
        }
    }
}
