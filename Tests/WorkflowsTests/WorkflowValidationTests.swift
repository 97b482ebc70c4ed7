import Foundation
import Testing
@testable import Workflows

/// The fixtures live beside the test targets, not inside one (so SwiftPM does not treat them as resources).
let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures").path
let org = "cborg_0f1e2d3c4b5a69788796a5b4c3d2e1f0"

/// Parses one workflow text as if it were `<name>.yaml`, returning the definition or the problems.
func parseWorkflow(_ text: String, name: String = "demo") -> (WorkflowDefinition?, [DefinitionProblem]) {
    let reader = YAMLReader(file: "\(name).yaml")
    let definition = WorkflowParser(reader: reader, orgID: org, expectedName: name).parse(text)
    return (definition, reader.problems)
}

@Suite("Workflow definition validation")
struct WorkflowValidationTests {
    @Test("the broken fixtures: one problem per file, each with its line")
    func brokenFixtures() throws {
        let directory = "\(fixtures)/broken-workflows"
        let error = #expect(throws: DefinitionProblems.self) { try WorkflowCatalog.load(directory: directory, knownOrgs: [org]) }
        let problems = try #require(error).problems
        let byFile = Dictionary(grouping: problems) { URL(fileURLWithPath: $0.file).lastPathComponent }
        let expected: [String: (line: Int, text: String)] = [
            "unknown-key.yaml": (3, "unknown key 'retries'"),
            "wrong-type.yaml": (2, "'enabled' in the workflow must be true or false"),
            "unknown-op.yaml": (7, "unknown condition op 'startswith'"),
            "unknown-action.yaml": (7, "unknown action 'send_fax'"),
            "unknown-event.yaml": (4, "unknown trigger event 'Vendor.Deleted'"),
            "duplicate-step.yaml": (6, "duplicate step id 'notify' (first used on line 4)"),
            "name-mismatch.yaml": (2, "does not match the file name 'name-mismatch'"),
            "syntax-error.yaml": (3, "invalid YAML"),
        ]
        #expect(Set(byFile.keys) == Set(expected.keys))
        for (file, want) in expected {
            let found = try #require(byFile[file], "no problem reported for \(file)")
            #expect(found.count == 1, "\(file): \(found)")
            #expect(found[0].line == want.line, "\(file): \(found[0])")
            #expect(found[0].message.contains(want.text), "\(file): \(found[0])")
            #expect(found[0].description.hasPrefix("\(found[0].file):\(want.line): "))
        }
    }

    @Test("the examples are valid and model the three patterns")
    func examples() throws {
        let root = URL(fileURLWithPath: fixtures).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("examples/workflows").path
        let catalog = try WorkflowCatalog.load(directory: root, knownOrgs: [org])
        #expect(catalog.count == 3)
        let onboard = try #require(catalog.workflow(orgID: org, name: "onboard-vendor"))
        #expect(onboard.trigger == .event(.vendorCreated))
        #expect(onboard.conditions?.rules.map(\.op) == [.contains, .in])
        #expect(onboard.steps.map(\.action) == [.createAssessment, .sendQuestionnaire, .sendEmail, .sendWebhook])
        #expect(onboard.steps.last?.onFailure == .continue, "the demo goes on without a receiver")
        let sweep = try #require(catalog.workflow(orgID: org, name: "quarterly-privacy-sweep"))
        #expect(sweep.steps.map(\.action) == [.forEach, .aggregate, .createWorkQueueItem])
        #expect(sweep.steps[0].body.map(\.action) == [.sendQuestionnaire, .waitForEvent])
        #expect(catalog.workflows(orgID: org, boundTo: .vendorCreated).map(\.name) == ["onboard-vendor"])
        #expect(catalog.workflow(orgID: org, name: "quarterly-privacy-sweep")?.trigger == .direct)
        #expect(Identifier.isValid(onboard.id, prefix: "cbwd"))
    }

    @Test("a valid workflow parses with defaults")
    func validWorkflow() throws {
        let (definition, problems) = parseWorkflow("""
        name: demo
        trigger: { type: event, event: Vendor.Updated }
        steps:
          - { id: hook, action: send_webhook, with: { url: "https://example.com/{{ vendor.id }}" } }
        """)
        #expect(problems.isEmpty)
        let workflow = try #require(definition)
        #expect(workflow.enabled)
        #expect(workflow.conditions == nil)
        #expect(workflow.steps[0].with["url"] == .string("https://example.com/{{ vendor.id }}"))
    }

    @Test("the definition id changes with the content and is stable otherwise")
    func definitionID() throws {
        let text = "name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: a, action: create_assessment }\n"
        let first = try #require(parseWorkflow(text).0)
        let again = try #require(parseWorkflow(text).0)
        let changed = try #require(parseWorkflow(text + "description: changed\n").0)
        #expect(first.id == again.id)
        #expect(first.id != changed.id)
    }

    @Test("missing required parts are each reported", arguments: [
        ("trigger: { type: direct }\nsteps: [{ id: a, action: create_assessment }]", "is missing 'name'"),
        ("name: demo\nsteps: [{ id: a, action: create_assessment }]", "is missing 'trigger'"),
        ("name: demo\ntrigger: { type: direct }", "is missing 'steps'"),
        ("name: demo\ntrigger: { type: direct }\nsteps: []", "at least one step"),
        ("name: demo\ntrigger: { type: event }\nsteps: [{ id: a, action: create_assessment }]", "is missing 'event'"),
        ("name: demo\ntrigger: { type: direct }\nsteps: [{ id: a, action: send_email, with: { to: x@example.com } }]", "needs 'subject'"),
    ])
    func missingParts(text: String, message: String) {
        let (definition, problems) = parseWorkflow(text)
        #expect(definition == nil)
        #expect(problems.contains { $0.message.contains(message) }, "\(problems)")
    }

    @Test("condition values are checked against their op", arguments: [
        ("{ field: vendor.tier, op: in, value: high }", "needs a list"),
        ("{ field: vendor.name, op: matches, value: '[unclosed' }", "not a valid regular expression"),
        ("{ field: vendor.attributes.annual_spend, op: gt, value: [1] }", "needs a number or a string"),
        ("{ field: tier, op: eq, value: high }", "must start with one of"),
        ("{ field: vendor.tier, op: eq }", "is missing 'value'"),
    ])
    func conditionValues(rule: String, message: String) {
        let (_, problems) = parseWorkflow("""
        name: demo
        trigger: { type: event, event: Vendor.Created }
        conditions:
          rules:
            - \(rule)
        steps: [{ id: a, action: create_assessment }]
        """)
        #expect(problems.contains { $0.message.contains(message) && $0.line == 5 }, "\(problems)")
    }

    @Test("a malformed template is reported at its line")
    func badTemplate() {
        let (_, problems) = parseWorkflow("""
        name: demo
        trigger: { type: direct }
        steps:
          - id: mail
            action: send_email
            with: { to: "{{ vendor.owner_email", subject: hi }
        """)
        #expect(problems.contains { $0.line == 6 && $0.message.contains("bad template") }, "\(problems)")
    }

    @Test("create_assessment's ids written out in the file are checked at its line; templated ones are left to the run")
    func assessmentIDs() {
        let (_, problems) = parseWorkflow("""
        name: demo
        trigger: { type: direct }
        steps:
          - id: assess
            action: create_assessment
            with: { control_set_ids: [soc2], assignee_id: "{{ input.owner }}", name: null }
        """)
        #expect(problems.count == 1 && problems.first?.line == 6 && problems.first?.message.contains("'control_set_ids'") == true, "\(problems)")
        let (templated, none) = parseWorkflow("""
        name: demo
        trigger: { type: direct }
        steps:
          - { id: assess, action: create_assessment, with: { control_set_ids: "{{ input.sets }}", service_ids: [cbsvc_3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a88] } }
        """)
        #expect(templated != nil && none.isEmpty, "\(none)")
    }

    @Test("every problem of a file is listed, not just the first")
    func allProblems() {
        let (_, problems) = parseWorkflow("""
        name: other
        colour: blue
        trigger: { type: sometimes }
        steps:
          - { id: a, action: fly }
        """)
        #expect(problems.map(\.line).sorted() == [1, 2, 3, 5], "\(problems)")
    }
}

@Suite("Templates")
struct TemplateTests {
    @Test("literals and paths are split")
    func segments() throws {
        let template = try Template(parsing: "Onboarding {{ vendor.name }} ({{vendor.tier}})")
        #expect(template.segments == [.literal("Onboarding "), .path(["vendor", "name"]), .literal(" ("), .path(["vendor", "tier"]), .literal(")")])
        #expect(template.hasPlaceholders)
        #expect(try !Template(parsing: "plain").hasPlaceholders)
    }

    @Test("malformed placeholders are refused", arguments: ["{{ vendor.name", "{{ }}", "{{ vendor..name }}", "{{ vendor.name | upper }}"])
    func malformed(text: String) {
        #expect(throws: Template.ParseError.self) { try Template(parsing: text) }
    }
}

@Suite("Identifiers")
struct IdentifierTests {
    @Test("validity")
    func validity() {
        #expect(Identifier.isValid("cborg_0f1e2d3c4b5a69788796a5b4c3d2e1f0", prefix: "cborg"))
        #expect(!Identifier.isValid("cborg_0F1E2D3C4B5A69788796A5B4C3D2E1F0", prefix: "cborg"), "uppercase hex")
        #expect(!Identifier.isValid("cborg_0f1e", prefix: "cborg"))
        #expect(!Identifier.isValid("cbvndr_0f1e2d3c4b5a69788796a5b4c3d2e1f0", prefix: "cborg"))
    }

    @Test("derivation is SHA-256 over the parts, each prefixed with its length (8 bytes, big-endian)")
    func derivation() {
        // Known answer, from coreutils:
        // printf '\x00\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x00\x00\x00\x00\x00\x01b' | sha256sum → 3c9d591045bc8876f9d0399bbfb05c6a…
        let id = Identifier.derive(prefix: "cbwr", from: ["a", "b"])
        #expect(id == "cbwr_3c9d591045bc8876f9d0399bbfb05c6a")
        #expect(Identifier.isValid(id, prefix: "cbwr"))
        #expect(Identifier.derive(prefix: "cbwr", from: ["a", "c"]) != id)
    }
}
