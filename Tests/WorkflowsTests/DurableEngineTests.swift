import Foundation
import Synchronization
import Testing
@testable import Workflows

/// The engine's timers, retries and failure policies, driven by an explicit clock
/// (`now` is passed to each advance: nothing sleeps), with the state encoded and
/// decoded between claims as the store keeps it.
@Suite("Run engine: timers, retries, failures")
struct DurableEngineTests {
    static let t0: Int64 = 1_750_000_000_000

    /// Advances as the executor does: from the stored (encoded) state.
    func resume(_ advance: RunAdvance, _ definition: WorkflowDefinition, engine: RunEngine = RunEngine(), at now: Int64) async throws -> RunAdvance {
        let stored = try RunState(decoding: advance.state.encoded)
        #expect(stored == advance.state, "the state survives encoding")
        return await engine.advance(stored, now: now)
    }

    func pending(_ definition: WorkflowDefinition, input: JSONValue = [:]) -> PendingRun {
        PendingRun(id: "cbwr_t", definition: definition, input: input, trigger: Array("{}".utf8), vendor: ["id": "cbvndr_v"], assessment: nil, now: Self.t0 / 1000)
    }

    @Test("delay: the run waits (one StepUpdated with waiting_for), does nothing before its time, and goes on at it")
    func delay() async throws {
        let workflow = try workflowDefinition("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: pause, action: delay, with: { for: 1h } }\n  - { id: ask, action: send_questionnaire }\n")
        let (_, first) = await execute(pending(workflow), now: Self.t0)
        #expect(first.state.status == .waiting)
        #expect(first.dueAt == Self.t0 + 3_600_000)
        #expect(first.eventTypes == ["WorkflowRun.StepUpdated"])
        let waiting = try #require(try first.data("WorkflowRun.StepUpdated").first)
        #expect(waiting["status"] == "waiting")
        #expect(waiting[path: ["step", "status"]] == "running")
        #expect(waiting[path: ["step", "waiting_for", "delay_until"]] == .int(Self.t0 / 1000 + 3600))

        let early = try await resume(first, workflow, at: Self.t0 + 3_599_999)
        #expect(early.events.isEmpty)
        #expect(early.dueAt == Self.t0 + 3_600_000)
        #expect(early.state == first.state)

        let due = try await resume(first, workflow, at: Self.t0 + 3_600_000)
        #expect(due.finished)
        #expect(due.state.status == .completed)
        #expect(due.eventTypes == ["WorkflowRun.StepUpdated", "Questionnaire.SendRequested", "WorkflowRun.StepUpdated", "WorkflowRun.Completed"])
        #expect(due.state.steps[0].attempts == 1, "waking up is not another attempt")
    }

    @Test("delay until a date waits to the end of that day (UTC); a time already past does not wait")
    func delayUntil() async throws {
        let workflow = try workflowDefinition("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: pause, action: delay, with: { until: '{{ input.due }}' } }\n")
        let (_, dated) = await execute(pending(workflow, input: ["due": "2026-06-30"]), now: Self.t0)
        #expect(dated.dueAt == TimeSpec.parse(.string("2026-07-01T00:00:00Z")))
        let (_, past) = await execute(pending(workflow, input: ["due": 1_000]), now: Self.t0)
        #expect(past.state.status == .completed)
        let (_, bad) = await execute(pending(workflow, input: ["due": "next tuesday"]), now: Self.t0)
        #expect(bad.state.status == .failed)
        #expect(bad.state.steps[0].message.stringValue?.contains("not a time") == true)
    }

    /// Fails retriably until attempt `succeedOn`, or permanently when `permanent`.
    struct Flaky: StepAction {
        var succeedOn: Int
        var permanent = false
        func perform(_ context: StepContext) async -> StepOutcome {
            if permanent { return .failed(message: "refused", retriable: false) }
            return context.state.attempts >= succeedOn ? .succeeded(StepSuccess(message: .string("ok on \(context.state.attempts)"))) : .failed(message: "busy", retriable: true)
        }
    }

    @Test("a retriable failure is retried with exponential backoff and full jitter, up to max_attempts")
    func retries() async throws {
        let workflow = try workflowDefinition("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: call, action: send_webhook, with: { url: 'https://x.example' }, retry: { max_attempts: 3, initial: 2s, max: 3s } }\n")
        let engine = RunEngine(random: { 0.5 }, actions: [.sendWebhook: Flaky(succeedOn: 3)])
        let (_, first) = await execute(pending(workflow), engine: engine, now: Self.t0)
        #expect(first.events.isEmpty, "a failed attempt that will be retried publishes nothing")
        #expect(first.retries == 1)
        #expect(first.state.status == .waiting, "its only pending work is a timer")
        #expect(first.dueAt == Self.t0 + 1000, "half of the first bound, 2 s")
        #expect(first.state.steps[0].lastError == "busy")
        let second = try await resume(first, workflow, engine: engine, at: Self.t0 + 1000)
        #expect(second.dueAt == Self.t0 + 1000 + 1500, "half of min(4 s, max 3 s)")
        let third = try await resume(second, workflow, engine: engine, at: Self.t0 + 2500)
        #expect(third.state.status == .completed)
        #expect(third.state.steps[0].attempts == 3)
        #expect(third.state.steps[0].message == "ok on 3")
    }

    @Test("the last attempt fails the step and the run; on_failure: continue goes on; a permanent failure is not retried")
    func failures() async throws {
        let failing = try workflowDefinition("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: call, action: send_webhook, with: { url: 'https://x.example' }, retry: { max_attempts: 2, initial: 1s } }\n  - { id: after, action: send_questionnaire }\n")
        let engine = RunEngine(random: { 0 }, actions: [.sendWebhook: Flaky(succeedOn: 99)])
        let (_, first) = await execute(pending(failing), engine: engine, now: Self.t0)
        let last = try await resume(first, failing, engine: engine, at: Self.t0)
        #expect(last.state.status == .failed)
        #expect(last.state.steps[0].message == "busy (after 2 attempts)")
        #expect(last.state.steps[1].status == .skipped)

        let continuing = try workflowDefinition("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: call, action: send_webhook, with: { url: 'https://x.example' }, retry: { max_attempts: 5 }, on_failure: continue }\n  - { id: after, action: send_questionnaire }\n")
        let permanent = RunEngine(actions: [.sendWebhook: Flaky(succeedOn: 1, permanent: true)])
        let (_, went) = await execute(pending(continuing), engine: permanent, now: Self.t0)
        #expect(went.retries == 0)
        #expect(went.state.status == .completed)
        #expect(went.state.steps.map(\.status) == [.failed, .success])
    }

    @Test("a run goes on with the definition it started with: its steps are kept in its state, whatever is deployed later")
    func keepsItsDefinition() async throws {
        let workflow = try workflowDefinition("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: pause, action: delay, with: { for: 1m } }\n  - { id: ask, action: send_questionnaire, with: { template: v1 }, retry: { max_attempts: 2, initial: 3s }, on_failure: continue }\n")
        let (_, waiting) = await execute(pending(workflow), now: Self.t0)
        let stored = try RunState(decoding: waiting.state.encoded)
        #expect(stored.definition == workflow.steps, "steps, inputs, retry and on_failure survive the store")
        // The file is edited meanwhile (another template): the waiting run still sends v1.
        let resumed = await RunEngine().advance(stored, now: Self.t0 + 60_000)
        #expect(resumed.state.status == .completed)
        #expect(try resumed.data("Questionnaire.SendRequested").first?["template"] == "v1")
    }

    @Test("a step whose output is over MAX_MESSAGE_BYTES fails instead of growing the run's state")
    func boundedOutputs() async throws {
        struct Big: StepAction {
            func perform(_ context: StepContext) async -> StepOutcome {
                .succeeded(StepSuccess(message: "big", output: .string(String(repeating: "x", count: 2048))))
            }
        }
        let workflow = try workflowDefinition("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: a, action: create_work_queue_item }\n")
        let (_, run) = await execute(pending(workflow), engine: RunEngine(maxEffectBytes: 1024, actions: [.createWorkQueueItem: Big()]), now: Self.t0)
        #expect(run.state.status == .failed)
        #expect(run.state.steps[0].message.stringValue?.contains("output would be") == true)
        #expect(run.state.outputs.isEmpty)
    }

    @Test("a state from a newer release, or not a state, is refused")
    func unreadableState() throws {
        #expect(throws: RunStateError.self) { try RunState(decoding: Array("{\"v\":99}".utf8)) }
        #expect(throws: RunStateError.self) { try RunState(decoding: Array("[]".utf8)) }
    }

    @Test("times: epoch seconds, RFC 3339 with offsets and fractions, dates as the end of their day; nonsense is refused")
    func times() {
        #expect(TimeSpec.parse(.int(1_750_000_000)) == 1_750_000_000_000)
        #expect(TimeSpec.parse("1750000000") == 1_750_000_000_000)
        #expect(TimeSpec.parse("2026-06-30T12:00:00Z") == 1_782_820_800_000)
        #expect(TimeSpec.parse("2026-06-30T14:00:00.250+02:00") == 1_782_820_800_250)
        #expect(TimeSpec.parse("2026-06-30") == 1_782_864_000_000)
        #expect(TimeSpec.parse("2024-02-29") != nil)
        for bad: JSONValue in ["2026-02-30", "2026-13-01", "2026-06-30T25:00:00Z", "2026-06-30T12:00:00", "soon", "", .int(-5), .int(Int64.max), .double(1.5), .null] {
            #expect(TimeSpec.parse(bad) == nil, "\(bad)")
        }
    }

    @Test("backoff bounds: doubling from initial, capped at max, never negative, never overflowing")
    func backoff() {
        let policy = RetryPolicy(maxAttempts: 5, initial: .seconds(1), max: .seconds(300))
        #expect(policy.backoff(afterAttempt: 1, random: 0.999_999) <= 1000)
        #expect(policy.backoff(afterAttempt: 3, random: 0.999_999) <= 4000)
        #expect(policy.backoff(afterAttempt: 3, random: 0.999_999) > 3900)
        #expect(policy.backoff(afterAttempt: 60, random: 0.999_999) <= 300_000)
        #expect(policy.backoff(afterAttempt: 10_000, random: 1) == 300_000)
        #expect(policy.backoff(afterAttempt: 2, random: 0) == 0)
    }
}

@Suite("Workflow validation: engine options")
struct EngineValidationTests {
    @Test("delay needs exactly one of for and until, each well formed; its with takes nothing else")
    func delays() {
        for (with, fragment) in [
            ("{}", "exactly one of 'for'"),
            ("{ for: 1h, until: '2026-01-01' }", "exactly one of 'for'"),
            ("{ for: soon }", "must be a duration"),
            ("{ until: 'tuesday' }", "must be epoch seconds"),
            ("{ for: 1h, extra: 1 }", "takes no 'extra'"),
        ] {
            let (_, problems) = parseWorkflow("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: p, action: delay, with: \(with) }\n")
            #expect(problems.contains { $0.message.contains(fragment) }, "\(with): \(problems)")
        }
        let (definition, problems) = parseWorkflow("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: p, action: delay, with: { until: '{{ input.due_date }}' } }\n")
        #expect(problems.isEmpty && definition != nil)
    }

    @Test("retry and on_failure are read, with defaults, and checked")
    func options() throws {
        let (definition, problems) = parseWorkflow("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: a, action: send_webhook, with: { url: 'https://x' }, retry: { max_attempts: 2, initial: 5s, max: 1m }, on_failure: continue }\n  - { id: b, action: send_questionnaire }\n")
        #expect(problems.isEmpty, "\(problems)")
        let steps = try #require(definition).steps
        #expect(steps[0].retry == RetryPolicy(maxAttempts: 2, initial: .seconds(5), max: .seconds(60)))
        #expect(steps[0].onFailure == .continue)
        #expect(steps[1].retry == RetryPolicy())
        #expect(steps[1].onFailure == .fail)
        for (option, fragment) in [
            ("retry: { max_attempts: 0 }", "max_attempts must be 1 to"),
            ("retry: { initial: forever }", "retry.initial must be a duration"),
            ("retry: { initial: 10m, max: 1m }", "is longer than retry.max"),
            ("retry: { tries: 3 }", "tries"),
            ("on_failure: ignore", "on_failure must be fail or continue"),
        ] {
            let (_, problems) = parseWorkflow("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: a, action: send_questionnaire, \(option) }\n")
            #expect(problems.contains { $0.message.contains(fragment) }, "\(option): \(problems)")
        }
    }

    @Test("for_each: a filter of known keys (or a template), concurrency 1 to 1000, a do of steps without another for_each; aggregate from an earlier for_each")
    func fanOut() throws {
        let valid = """
        name: demo
        trigger: { type: direct }
        steps:
          - id: sweep
            action: for_each
            with:
              vendor_filter: { tags: [pii], tier_in: [high] }
              concurrency: 3
              do:
                - { id: ask, action: send_questionnaire, with: { to: "{{ vendor.id }}" } }
                - { id: answer, action: wait_for_event, with: { event: QuestionnaireResponse.Submitted, match: { vendor_id: "{{ vendor.id }}" }, timeout: 14d } }
          - { id: report, action: aggregate, with: { from: sweep } }
        """
        let (definition, problems) = parseWorkflow(valid)
        #expect(problems.isEmpty, "\(problems)")
        let sweep = try #require(definition?.steps.first)
        #expect(sweep.body.map(\.id) == ["ask", "answer"])
        #expect(sweep.with["do"] == nil, "do is the body, not an input rendered over the run")
        #expect(WorkflowStep(json: sweep.json) == sweep, "kept in a run's state as it was")
        for (yaml, fragment) in [
            ("  - { id: s, action: for_each, with: { vendor_filter: { colour: red }, do: { id: a, action: send_questionnaire } } }\n", "unknown key 'colour'"),
            ("  - { id: s, action: for_each, with: { vendor_filter: {}, concurrency: 0, do: { id: a, action: send_questionnaire } } }\n", "concurrency must be"),
            ("  - { id: s, action: for_each, with: { vendor_filter: {}, do: [] } }\n", "needs at least one step"),
            ("  - { id: s, action: for_each, with: { vendor_filter: {}, do: { id: a, action: for_each, with: { vendor_filter: {}, do: { id: b, action: delay, with: { for: 1s } } } } } }\n", "cannot hold for_each"),
            ("  - { id: s, action: for_each, with: { vendor_filter: {} } }\n", "needs 'do'"),
            ("  - { id: r, action: aggregate, with: { from: nowhere } }\n", "must name an earlier for_each"),
        ] {
            let (_, problems) = parseWorkflow("name: demo\ntrigger: { type: direct }\nsteps:\n" + yaml)
            #expect(problems.contains { $0.message.contains(fragment) }, "\(yaml): \(problems)")
        }
    }

    @Test("vendor filters: tags any, tags_all, tier_in, attributes equal; empty matches all")
    func filters() throws {
        let vendor: JSONValue = ["id": "cbvndr_x", "tier": "high", "tags": ["pii", "eu"], "attributes": ["country": "DE", "spend": 5]]
        func filter(_ value: JSONValue) throws -> VendorFilter { try #require(VendorFilter(value)) }
        #expect(try filter([:]).matches(vendor))
        #expect(try filter(["tags": ["pii", "other"]]).matches(vendor))
        #expect(try !filter(["tags": ["other"]]).matches(vendor))
        #expect(try filter(["tags_all": ["pii", "eu"]]).matches(vendor))
        #expect(try !filter(["tags_all": ["pii", "us"]]).matches(vendor))
        #expect(try filter(["tier_in": ["critical", "high"]]).matches(vendor))
        #expect(try !filter(["tier_in": ["low"]]).matches(vendor))
        #expect(try filter(["attributes": ["country": "DE"]]).matches(vendor))
        #expect(try !filter(["attributes": ["country": "FR"]]).matches(vendor))
        #expect(VendorFilter(["tags": "pii"]) == nil, "tags must be a list")
        #expect(VendorFilter(.null) == VendorFilter(), "no filter: every vendor")
    }

    @Test("items of a for_each: each has its own assessment and delivery ids, derived from the run, the step and its vendor")
    func itemIdentities() async throws {
        let workflow = try workflowDefinition("""
        name: demo
        trigger: { type: direct }
        steps:
          - id: sweep
            action: for_each
            with: { vendor_filter: {}, do: [ { id: assess, action: create_assessment }, { id: ask, action: send_questionnaire } ] }
        """)
        let engine = RunEngine()
        let parent = engine.start(PendingRun(id: "cbwr_p", definition: workflow, input: [:], trigger: Array("{}".utf8), vendor: nil, assessment: nil, now: 100), headers: RunHeaders()).state
        var assessments: [String] = [], deliveries: [JSONValue] = []
        for vendor in ["cbvndr_a", "cbvndr_b"] {
            let item = engine.startItem(of: parent, step: workflow.steps[0], vendor: ["id": .string(vendor)], now: 100_000)
            let advance = await engine.advance(item, now: 100_000)
            #expect(advance.itemResult?.status == "success")
            #expect(advance.events.allSatisfy { $0.type != "WorkflowRun.StepUpdated" }, "an item's own steps publish no StepUpdated")
            assessments += advance.assessments.map(\.id)
            deliveries += try advance.data("Questionnaire.SendRequested").compactMap { $0["delivery_id"] }
            #expect(try advance.data("Questionnaire.SendRequested").first?["vendor_id"] == .string(vendor))
        }
        #expect(Set(assessments).count == 2)
        #expect(Set(deliveries).count == 2)
    }

    @Test("a state written straight (definition from the cache) is byte for byte its canonical JSON, and reads back the same")
    func stateEncoding() async throws {
        let workflow = try workflowDefinition("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: pause, action: delay, with: { for: 1h } }\n  - { id: ask, action: send_questionnaire, with: { due: '{{ input.due }}' }, retry: { max_attempts: 2 } }\n")
        let run = PendingRun(id: "cbwr_enc", definition: workflow, input: ["due": "2026-06-30", "é": [1, 2.5, nil]], trigger: Array(#"{"kind":"request","source":{"offset":3}}"#.utf8),
                             vendor: ["id": "cbvndr_v", "tags": ["a"]], assessment: nil, now: 1_750_000_000)
        let engine = RunEngine()
        let start = engine.start(run, headers: RunHeaders(requestID: "r-1", idempotencyKey: nil, traceparent: "00-abc"))
        let waiting = await engine.advance(start.state, now: 1_750_000_000_000)
        let sweep = try workflowDefinition("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: each, action: for_each, with: { vendor_filter: {}, do: [ { id: answer, action: wait_for_event, with: { event: Vendor.Updated, timeout: 1d } } ] } }\n")
        var item = engine.startItem(of: waiting.state, step: sweep.steps[0], vendor: ["id": "cbvndr_i"], now: 1_750_000_000_000)
        item.steps[0].subscription = WaitSubscription(eventType: "Vendor.Updated", vendorID: "cbvndr_i", seenSequence: 42)
        item.steps[0].progress = ["cursor": "x"]
        for state in [start.state, waiting.state, item] {
            #expect(state.encoded == state.json.canonicalBytes)
            #expect(state.encoded == state.encoded, "the cached definition is spliced the same way")
            #expect(try RunState(decoding: state.encoded) == state)
        }
    }
}
