import Foundation
import Testing
@testable import Workflows

@Suite("Canonical JSON")
struct CanonicalJSONTests {
    @Test("key order does not change the canonical bytes")
    func keyOrder() throws {
        let a = try JSONValue.parse(Array(#"{"b":1,"a":{"y":[1,2],"x":"s"}}"#.utf8))
        let b = try JSONValue.parse(Array(#"{ "a" : { "x":"s", "y":[1, 2] }, "b" : 1 }"#.utf8))
        #expect(a.canonicalBytes == b.canonicalBytes)
        #expect(a.canonicalString == #"{"a":{"x":"s","y":[1,2]},"b":1}"#)
    }

    @Test("values round-trip; strings are escaped")
    func roundTrip() throws {
        let value: JSONValue = ["s": "quote \" backslash \\ newline \n tab \t bell \u{07} é", "n": .null, "t": true, "i": -42, "d": 1.5, "l": [[:], []]]
        #expect(try JSONValue.parse(value.canonicalBytes) == value)
        #expect(value.canonicalString.contains(#"\u0007"#))
    }

    @Test("1 and 1.0 are one number")
    func numbers() throws {
        #expect(try JSONValue.parse(Array("1.0".utf8)).canonicalString == "1")
        #expect(try JSONValue.parse(Array("1e2".utf8)).canonicalString == "100")
        #expect(try JSONValue.parse(Array("0.25".utf8)).canonicalString == "0.25")
    }

    @Test("paths reach into objects and lists")
    func paths() {
        let value: JSONValue = ["vendor": ["tags": ["a", "b"], "name": "Acme"]]
        #expect(value[path: ["vendor", "name"]] == "Acme")
        #expect(value[path: ["vendor", "tags", "1"]] == "b")
        #expect(value[path: ["vendor", "missing"]] == nil)
        #expect(value[path: ["vendor", "name", "deeper"]] == nil)
    }
}

@Suite("Conditions")
struct ConditionTests {
    let context: JSONValue = [
        "vendor": ["tier": "high", "tags": ["processes_pii", "eu"], "name": "Acme Payroll", "attributes": ["annual_spend": 250000, "country": "DE"], "empty": .null],
        "input": ["due_date": "2026-06-30"],
    ]

    func rule(_ field: String, _ op: ConditionOperator, _ value: JSONValue?) -> ConditionRule { ConditionRule(field: field, op: op, value: value) }

    @Test("each op, true and false", arguments: [
        ("vendor.tier", ConditionOperator.eq, JSONValue.string("high"), true), ("vendor.tier", .eq, "low", false),
        ("vendor.tier", .ne, "low", true), ("vendor.tier", .ne, "high", false), ("vendor.nothing", .ne, "x", true),
        ("vendor.tier", .in, ["critical", "high"], true), ("vendor.tier", .in, ["low"], false),
        ("vendor.tier", .notIn, ["low"], true), ("vendor.tier", .notIn, ["high"], false),
        ("vendor.tags", .contains, "processes_pii", true), ("vendor.tags", .contains, "us", false),
        ("vendor.name", .contains, "Pay", true), ("vendor.name", .contains, "pay", false),
        ("vendor.tags", .notContains, "us", true), ("vendor.tags", .notContains, "eu", false),
        ("vendor.attributes.annual_spend", .gt, 100000, true), ("vendor.attributes.annual_spend", .gt, 250000, false),
        ("vendor.attributes.annual_spend", .gte, 250000, true), ("vendor.attributes.annual_spend", .lt, 250000, false),
        ("vendor.attributes.annual_spend", .lte, 250000.0, true),
        ("input.due_date", .lt, "2026-07-01", true), ("input.due_date", .gt, "2026-07-01", false),
        ("vendor.attributes.annual_spend", .gt, "100", false),
        ("vendor.name", .matches, "^Acme\\s", true), ("vendor.name", .matches, "^Payroll", false),
        ("vendor.attributes.annual_spend", .matches, "250", false),
        ("vendor.attributes.annual_spend", .eq, 250000.0, true),
    ] as [(String, ConditionOperator, JSONValue, Bool)])
    func ops(field: String, op: ConditionOperator, value: JSONValue, expected: Bool) {
        #expect(ConditionEvaluator.matches(rule(field, op, value), context: context) == expected)
    }

    @Test("exists: present, absent, null, and exists: false")
    func exists() {
        #expect(ConditionEvaluator.matches(rule("vendor.tier", .exists, nil), context: context))
        #expect(!ConditionEvaluator.matches(rule("vendor.missing", .exists, nil), context: context))
        #expect(!ConditionEvaluator.matches(rule("vendor.empty", .exists, nil), context: context))
        #expect(ConditionEvaluator.matches(rule("vendor.missing", .exists, false), context: context))
    }

    @Test("a missing field fails positive ops")
    func missingField() {
        for op in [ConditionOperator.eq, .in, .contains, .gt, .gte, .lt, .lte, .matches] {
            #expect(!ConditionEvaluator.matches(rule("vendor.missing", op, "x"), context: context), "\(op)")
        }
    }

    @Test("match all and match any; no conditions match")
    func combinations() {
        let yes = rule("vendor.tier", .eq, "high"), no = rule("vendor.tier", .eq, "low")
        #expect(ConditionEvaluator.matches(ConditionSet(match: .all, rules: [yes, yes]), context: context))
        #expect(!ConditionEvaluator.matches(ConditionSet(match: .all, rules: [yes, no]), context: context))
        #expect(ConditionEvaluator.matches(ConditionSet(match: .any, rules: [no, yes]), context: context))
        #expect(!ConditionEvaluator.matches(ConditionSet(match: .any, rules: [no, no]), context: context))
        #expect(ConditionEvaluator.matches(nil, context: context))
    }
}

@Suite("Template rendering")
struct TemplateRenderTests {
    let context: JSONValue = ["vendor": ["name": "Acme", "tags": ["a"], "spend": 10, "none": .null], "input": ["filter": ["tags": ["pii"]]]]

    @Test("text with placeholders")
    func text() throws {
        #expect(try Template(parsing: "New vendor {{ vendor.name }} ({{vendor.spend}})").render(context) == "New vendor Acme (10)")
        #expect(try Template(parsing: "[{{ vendor.missing }}][{{ vendor.none }}]").render(context) == "[][]")
        #expect(try Template(parsing: "tags: {{ vendor.tags }}").render(context) == #"tags: ["a"]"#)
    }

    @Test("a lone placeholder keeps the value's type")
    func wholeValue() throws {
        #expect(try Template(parsing: "{{ input.filter }}").render(context) == ["tags": ["pii"]])
        #expect(try Template(parsing: "{{ vendor.spend }}").render(context) == 10)
        #expect(try Template(parsing: "{{ vendor.missing }}").render(context) == .null)
    }

    @Test("rendering walks lists and mappings")
    func nested() {
        let input: JSONValue = ["to": "{{ vendor.name }}", "list": ["{{ vendor.spend }}", "plain"], "n": 3]
        #expect(TemplateValue(input).render(context) == ["to": "Acme", "list": [10, "plain"], "n": 3])
    }
}

/// Runs `run` in the engine from its start, at `now` (milliseconds), until it ends or waits.
func execute(_ run: PendingRun, engine: RunEngine = RunEngine(), now: Int64? = nil) async -> (start: RunStart, advance: RunAdvance) {
    let start = engine.start(run, headers: RunHeaders())
    let advance = await engine.advance(start.state, now: now ?? run.now * 1000)
    return (start, advance)
}

func workflowDefinition(_ yaml: String) throws -> WorkflowDefinition {
    let (definition, problems) = parseWorkflow(yaml)
    #expect(problems.isEmpty, "\(problems)")
    return try #require(definition)
}

extension RunAdvance {
    var eventTypes: [String] { events.map(\.type) }
    func data(_ type: String) throws -> [JSONValue] { try events.filter { $0.type == type }.map { try JSONValue.parse($0.data) } }
}

@Suite("Run engine: steps")
struct RunExecutorTests {
    func definition(_ yaml: String) throws -> WorkflowDefinition { try workflowDefinition(yaml) }

    @Test("steps run in order; the assessment a step creates is visible to later steps")
    func order() async throws {
        let workflow = try definition("""
        name: demo
        trigger: { type: direct }
        steps:
          - { id: assess, action: create_assessment, with: { name: "Review {{ vendor.name }}", control_set_ids: [cbctst_9f4a1c0d7b2e4e9f8c1d2b3a4e5f6071] } }
          - { id: mail, action: send_email, with: { to: "{{ vendor.owner_email }}", subject: "Assessment {{ assessment.id }} / {{ steps.assess.name }}", vendor_id: forged } }
        """)
        let run = PendingRun(id: "cbwr_x", definition: workflow, input: [:], trigger: Array("{}".utf8), vendor: ["id": "cbvndr_1", "name": "Acme", "owner_email": "o@example.com"], assessment: nil, now: 1000)
        let (start, execution) = await execute(run)
        #expect(execution.state.status == .completed)
        #expect(execution.finished)
        let assessment = try #require(execution.assessments.first)
        #expect(assessment.id == Identifier.derive(prefix: "cbqsrw", from: ["cbwr_x", "assess"]))
        #expect(assessment.document["name"] == "Review Acme")
        #expect(execution.eventTypes == ["WorkflowRun.StepUpdated", "Email.SendRequested", "WorkflowRun.StepUpdated", "WorkflowRun.Completed"])
        let email = try #require(try execution.data("Email.SendRequested").first)
        #expect(email["subject"] == .string("Assessment \(assessment.id) / Review Acme"))
        #expect(email["delivery_id"] == .string(Identifier.derive(prefix: "cbevt", from: ["cbwr_x", "mail", "delivery"])))
        #expect(email["vendor_id"] == nil, "vendor_id is the worker's handle, not the step's input")
        let started = try JSONValue.parse(start.document), finished = try JSONValue.parse(execution.document)
        #expect(started["status"] == "started")
        #expect(started[path: ["steps", "1", "status"]] == .null)
        #expect(finished[path: ["steps", "1", "status"]] == "success")
        #expect(finished["completed_at"] == 1000)
        let updates = try execution.data("WorkflowRun.StepUpdated")
        #expect(updates.map { $0[path: ["step", "component_id"]] } == ["assess", "mail"])
        #expect(updates.allSatisfy { $0["workflow_run_id"] == "cbwr_x" && $0["workflow_name"] == "demo" && $0["status"] == "started" })
    }

    @Test("create_assessment fails, for good, when its templated ids render to what is not an id of their kind (the object is served as the API's)", arguments: [
        ("control_set_ids", ["soc2"]), ("service_ids", "cbsvc_9f4a1c0d7b2e4e9f8c1d2b3a4e5f6071"), ("assignee_id", "bob"), ("name", [1]),
    ] as [(String, JSONValue)])
    func assessmentInputs(_ key: String, _ rendered: JSONValue) async throws {
        let workflow = try definition("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: assess, action: create_assessment, with: { \(key): \"{{ input.v }}\" } }\n")
        let run = PendingRun(id: "cbwr_y", definition: workflow, input: ["v": rendered], trigger: Array("{}".utf8), vendor: ["id": "cbvndr_1"], assessment: nil, now: 1000)
        let (_, execution) = await execute(run)
        #expect(execution.state.status == .failed)
        #expect(execution.assessments.isEmpty)
        let message = try #require(execution.state.steps.first?.message.stringValue)
        #expect(message.hasPrefix("create_assessment '"), "\(message)")
    }

    @Test("create_assessment whose name renders to nothing takes the default name, as POST /v1/assessments does")
    func assessmentDefaultName() async throws {
        let workflow = try definition("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: assess, action: create_assessment, with: { name: \"{{ input.title }}\" } }\n")
        let run = PendingRun(id: "cbwr_z", definition: workflow, input: [:], trigger: Array("{}".utf8), vendor: ["id": "cbvndr_1"], assessment: nil, now: 1000)
        let (_, execution) = await execute(run)
        #expect(execution.state.status == .completed)
        #expect(execution.assessments.first?.document["name"] == "demo assessment")
    }

    @Test("the run object has the API's shape, in canonical JSON, as it started and as it ended")
    func runDocument() async throws {
        let workflow = try definition("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: stop, action: update_workflow_run, with: { status: canceled, message: enough } }\n  - { id: later, action: send_questionnaire }\n")
        let trigger: JSONValue = ["kind": "request", "idempotency_key": "k-1", "request_id": nil, "source": ["topic": "t", "partition": 0, "offset": 7]]
        let run = PendingRun(id: "cbwr_w", definition: workflow, input: ["b": [1, "x"], "a": nil], trigger: trigger.canonicalBytes, vendor: nil, assessment: nil, now: 42)
        let (start, execution) = await execute(run)
        func step(_ id: String, _ action: String, status: JSONValue, message: JSONValue) -> JSONValue {
            [
                "step_id": .string(Identifier.derive(prefix: "cbwrs", from: ["cbwr_w", id])), "component_id": .string(id), "component_name": .string(id),
                "action_type": .string(action), "status": status, "message": message, "artifacts": [], "created_at": 42, "updated_at": 42,
            ]
        }
        func document(_ status: String, completedAt: JSONValue, steps: [JSONValue]) -> JSONValue {
            [
                "workflow_run_id": "cbwr_w", "workflow_name": "demo", "workflow_definition_id": .string(workflow.id), "status": .string(status),
                "started_at": 42, "completed_at": completedAt, "input": run.input, "steps": .array(steps), "trigger": trigger,
            ]
        }
        let started = document("started", completedAt: nil, steps: [
            step("stop", "update_workflow_run", status: nil, message: nil), step("later", "send_questionnaire", status: nil, message: nil),
        ])
        let finished = document("canceled", completedAt: 42, steps: [
            step("stop", "update_workflow_run", status: "success", message: "enough"),
            step("later", "send_questionnaire", status: "skipped", message: "not run: the run had already ended"),
        ])
        #expect(execution.state.status == .canceled)
        #expect(start.document == started.canonicalBytes)
        #expect(execution.document == finished.canonicalBytes)
        #expect(execution.events.last?.data == finished.canonicalBytes)
        #expect(execution.eventTypes == ["WorkflowRun.StepUpdated", "WorkflowRun.StepUpdated", "WorkflowRun.Canceled"])
    }

    @Test("the same run executes to the same result (ids are derived, not random)")
    func deterministic() async throws {
        let workflow = try definition("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: hook, action: send_webhook, with: { url: 'https://example.com' } }\n")
        let run = PendingRun(id: "cbwr_y", definition: workflow, input: ["a": 1], trigger: Array("{}".utf8), vendor: nil, assessment: nil, now: 5)
        let first = await execute(run), second = await execute(run)
        #expect(first.advance.document == second.advance.document)
        #expect(first.advance.events == second.advance.events)
    }

    @Test("run_workflow without the worker's store is refused honestly: the step and the run fail")
    func runWorkflow() async throws {
        let workflow = try definition("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: child, action: run_workflow, with: { workflow: other } }\n  - { id: after, action: send_questionnaire }\n")
        let (_, execution) = await execute(PendingRun(id: "cbwr_z", definition: workflow, input: [:], trigger: Array("{}".utf8), vendor: nil, assessment: nil, now: 5))
        #expect(execution.state.status == .failed)
        let finished = try JSONValue.parse(execution.document)
        #expect(finished[path: ["steps", "0", "message"]]?.stringValue?.contains("needs the worker's store") == true)
        #expect(finished[path: ["steps", "1", "status"]] == "skipped")
    }
}

@Suite("Compiled step inputs")
struct TemplateValueTests {
    @Test("compiled inputs fill every placeholder, at any depth")
    func sameResult() {
        let context: JSONValue = ["vendor": ["name": "Acme", "tags": ["pii"]], "input": ["n": 3]]
        let inputs: JSONValue = ["to": "{{ vendor.name }}", "plain": "text", "nested": ["list": ["{{ input.n }}", 1, ["x": "{{ vendor.tags }}"]]], "n": 2.5, "bad": "{{ unclosed"]
        #expect(TemplateValue(inputs).render(context) == [
            "to": "Acme", "plain": "text", "nested": ["list": [3, 1, ["x": ["pii"]]]], "n": 2.5, "bad": "{{ unclosed",
        ])
        #expect(TemplateValue(["a": 1, "b": ["c"]]) == .literal(["a": 1, "b": ["c"]]), "values without placeholders stay literal")
    }

    @Test("a step's message is at most 1 KiB once encoded, control characters (six bytes each) included")
    func boundedMessages() {
        for text in [String(repeating: "x", count: 5000), String(repeating: "\u{1}", count: 1000), String(repeating: "\"", count: 2000)] {
            let bounded = RunEngine.bounded(.string(text))
            #expect(bounded.canonicalBytes.count <= BoundedText.messageBytes + 2, "\(bounded.canonicalBytes.count) bytes")
        }
        #expect(RunEngine.bounded("short") == "short")
        #expect(RunEngine.bounded(["a": 1]) == ["a": 1], "a small structured message is kept as it is")
    }
}
