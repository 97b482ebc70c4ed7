import Crypto
import Foundation
import HTTPTestSupport
import Kafka
import PostgresTestSupport
import Store
import Testing
import Workflows

/// The engine through crashes, with the real broker and real stores: runs that wait
/// on durable timers finish exactly once after a kill -9 and a restart (SQLite), and
/// after one of two instances is killed (PostgreSQL: the survivor takes over).
@Suite("Durable engine", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason), .serialized)
struct DurableEngineIntegrationTests {
    typealias H = WorkerHarness
    typealias Cluster = ScaleOutTests.Cluster

    static func requests(_ cluster: Cluster, count: Int, tag: String) -> [KafkaProducerMessage] {
        (0..<count).map { index in
            KafkaProducerMessage(
                topic: cluster.requests, key: Array("\(tag)-\(index)".utf8),
                value: H.workflowRun("short-delay", input: ["n": .int(Int64(index))]).canonicalBytes,
                headers: [KafkaHeader(key: "Authorization", value: "Bearer \(H.keyA)"), KafkaHeader(key: "Idempotency-Key", value: "\(tag)-\(index)")]
            )
        }
    }

    /// Per run: its events' types and ids, in the order read.
    static func runEvents(_ reader: TestMember) -> [String: [(type: String, id: String)]] {
        var runs: [String: [(type: String, id: String)]] = [:]
        for message in reader.snapshot.received {
            guard let event = try? JSONValue.parse(message.value ?? []), let type = event["event_type"]?.stringValue, type != "TriggerRequest.Responded",
                  let run = event[path: ["data", "workflow_run_id"]]?.stringValue, let id = event["event_id"]?.stringValue else { continue }
            runs[run, default: []].append((type, id))
        }
        return runs
    }

    static func count(_ reader: TestMember, _ type: String, where condition: @escaping (JSONValue) -> Bool = { _ in true }) -> Int {
        Set(reader.snapshot.received.compactMap { message -> String? in
            guard let event = try? JSONValue.parse(message.value ?? []), event["event_type"]?.stringValue == type, condition(event) else { return nil }
            return event[path: ["data", "workflow_run_id"]]?.stringValue
        }).count
    }

    /// Each run: Started first, one distinct id per transition (re-publications repeat
    /// an id, never mint one), the waiting step, the effect and the end exactly once.
    static func checkExactlyOnce(_ runs: [String: [(type: String, id: String)]], count: Int) {
        #expect(runs.count == count)
        for (run, events) in runs {
            #expect(events.first?.type == "WorkflowRun.Started", "\(run) starts with Started")
            var distinct: [String: Set<String>] = [:]
            for event in events { distinct[event.type, default: []].insert(event.id) }
            #expect(distinct["WorkflowRun.Started"]?.count == 1)
            #expect(distinct["WorkflowRun.StepUpdated"]?.count == 3, "\(run): pause waiting, pause done, follow-up done; \(distinct)")
            #expect(distinct["WorkQueueItem.Created"]?.count == 1, "\(run): the effect once")
            #expect(distinct["WorkflowRun.Completed"]?.count == 1, "\(run): completed once")
            #expect(distinct["WorkflowRun.Failed"] == nil)
            let firstEnd = events.firstIndex { $0.type == "WorkflowRun.Completed" }
            let lastStart = events.lastIndex { $0.type == "WorkflowRun.Started" }
            #expect(firstEnd.flatMap { end in lastStart.map { end > $0 } } == true, "\(run): the end follows the start")
        }
    }

    @Test("kill -9 while 150 runs wait on their delay (8 s), then a restart: every timer fires, every run completes exactly once")
    func killDuringDelay() async throws {
        let storePath = FileManager.default.temporaryDirectory.appendingPathComponent("\(TestBroker.uniqueName("delay")).sqlite").path
        let cluster = try await Cluster("delay", storeURL: "sqlite://\(storePath)", partitions: 3)
        let count = 150
        let reader = try TestMember(group: "reader-\(cluster.suffix)", topics: [cluster.status])
        reader.start()
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        let first = try cluster.worker()
        for result in await client.send(Self.requests(cluster, count: count, tag: "delay")) { _ = try result.get() }
        // Killed once runs are waiting on their timers (an 8 s delay), before they all fired.
        try await reader.waitUntil("runs waiting on their delay", timeout: .seconds(60)) { _ in
            Self.count(reader, "WorkflowRun.StepUpdated") { $0[path: ["data", "status"]] == "waiting" } >= count / 3
        }
        first.crash()
        _ = try await first.waitForExit(timeout: .seconds(10))
        let completedBefore = Self.count(reader, "WorkflowRun.Completed")
        #expect(completedBefore < count, "the kill came before every run had completed (\(completedBefore))")

        let second = try cluster.worker()
        try await reader.waitUntil("every run to complete", timeout: .seconds(120)) { _ in Self.count(reader, "WorkflowRun.Completed") == count }
        second.interrupt()
        #expect(try await second.waitForExit(timeout: .seconds(15)) == 0)
        await reader.stop()
        try await client.shutdown()

        Self.checkExactlyOnce(Self.runEvents(reader), count: count)
        let store = try SQLiteStore(path: storePath)
        #expect(try await store.runs(statuses: ["completed"], limit: 500, offset: 0).count == count)
        #expect(try await store.nextTaskDue() == nil, "no engine work is left")
        #expect(try await store.pendingOutbox(limit: 10).isEmpty)
        print("delay crash: \(completedBefore) of \(count) runs had completed before the kill")
    }

    @Test("two instances on PostgreSQL, 200 runs with delays, one killed -9 mid-way: the survivor finishes every run exactly once",
          .enabled(if: TestPostgres.url != nil, TestPostgres.skipReason))
    func killOneOfTwo() async throws {
        let url = try await TestPostgres.freshDatabase()
        let cluster = try await Cluster("engine-pg", storeURL: url, partitions: 4)
        let count = 200
        let reader = try TestMember(group: "reader-\(cluster.suffix)", topics: [cluster.status])
        reader.start()
        let survivor = try cluster.worker()
        let victim = try cluster.worker()
        try await cluster.waitForSplit(survivor, victim)
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        for result in await client.send(Self.requests(cluster, count: count, tag: "pg")) { _ = try result.get() }
        try await reader.waitUntil("some runs to complete", timeout: .seconds(60)) { _ in Self.count(reader, "WorkflowRun.Completed") >= count / 4 }
        victim.crash()
        _ = try await victim.waitForExit(timeout: .seconds(10))
        let completedBefore = Self.count(reader, "WorkflowRun.Completed")

        try await reader.waitUntil("every run to complete", timeout: .seconds(120)) { _ in Self.count(reader, "WorkflowRun.Completed") == count }
        survivor.interrupt()
        #expect(try await survivor.waitForExit(timeout: .seconds(15)) == 0)
        await reader.stop()
        try await client.shutdown()

        Self.checkExactlyOnce(Self.runEvents(reader), count: count)
        let (completed, left, pending) = try await TestPostgres.withStore(url) { store in
            (try await store.runs(statuses: ["completed"], limit: 500, offset: 0).count, try await store.nextTaskDue(), try await store.pendingOutbox(limit: 10).count)
        }
        #expect(completed == count)
        #expect(left == nil, "no engine work is left")
        #expect(pending == 0)
        let tookOver = survivor.output.contains { $0.contains("Took over runs whose lease ran out") }
        print("engine fail-over: \(completedBefore) of \(count) runs had completed before the kill; survivor took over expired leases: \(tookOver)")
    }

    static func webhookRequest(_ cluster: Cluster, key: String, url: String) -> KafkaProducerMessage {
        KafkaProducerMessage(
            topic: cluster.requests, key: Array(key.utf8),
            value: H.workflowRun("webhook-call", input: ["url": .string(url), "note": .string("for \(key)")]).canonicalBytes,
            headers: [KafkaHeader(key: "Authorization", value: "Bearer ak_test_beta_key"), KafkaHeader(key: "Idempotency-Key", value: key)]
        )
    }

    static func terminal(_ reader: TestMember) -> [String: JSONValue] {
        var ends: [String: JSONValue] = [:]
        for message in reader.snapshot.received {
            guard let event = try? JSONValue.parse(message.value ?? []), let type = event["event_type"]?.stringValue,
                  ["WorkflowRun.Completed", "WorkflowRun.Failed"].contains(type), let run = event[path: ["data", "workflow_run_id"]]?.stringValue else { continue }
            ends[run] = event
        }
        return ends
    }

    @Test("send_webhook through the worker: signed with the org's secret, one delivery id across attempts, retried on 500 and on a timeout, not on 400")
    func webhooks() async throws {
        let receiver = try await HTTPReceiver { request, earlier in
            switch request.uri {
            case "/flaky": Reply(status: earlier < 2 ? 500 : 200)
            case "/slow": Reply(status: 200, delay: earlier == 0 ? .seconds(12) : .zero)  // the first attempt times out (10 s)
            case "/bad": Reply(status: 400)
            default: Reply(status: 200)
            }
        }
        defer { Task { await receiver.close() } }
        let storePath = FileManager.default.temporaryDirectory.appendingPathComponent("\(TestBroker.uniqueName("hooks")).sqlite").path
        let cluster = try await Cluster("hooks", storeURL: "sqlite://\(storePath)", partitions: 1)
        let reader = try TestMember(group: "reader-\(cluster.suffix)", topics: [cluster.status])
        reader.start()
        let worker = try cluster.worker()
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        let paths = ["/ok", "/flaky", "/slow", "/bad"]
        for result in await client.send(paths.map { Self.webhookRequest(cluster, key: "hook\($0.dropFirst())", url: receiver.url($0)) }) { _ = try result.get() }
        try await reader.waitUntil("the four runs to end", timeout: .seconds(90)) { _ in Self.terminal(reader).count == 4 }
        worker.interrupt()
        #expect(try await worker.waitForExit(timeout: .seconds(15)) == 0)
        await reader.stop()
        try await client.shutdown()

        let requests = Dictionary(grouping: receiver.requests, by: \.uri)
        #expect(requests["/ok"]?.count == 1)
        #expect(requests["/flaky"]?.count == 3, "500, 500, then 200")
        #expect(requests["/slow"]?.count == 2, "a timeout, then 200")
        #expect(requests["/bad"]?.count == 1, "a 400 is not retried")
        for (path, attempts) in requests {
            #expect(Set(attempts.map { $0.header("Coverbase-Delivery-Id") }).count == 1, "\(path): one delivery id across attempts")
            for attempt in attempts {
                let signature = HMAC<SHA256>.authenticationCode(for: attempt.body, using: SymmetricKey(data: Array(H.secretB.utf8)))
                #expect(attempt.header("Coverbase-Signature") == Identifier.hex(Array(signature)), "\(path): signed with the org's secret")
                #expect(attempt.header("Content-Type") == "application/json")
                #expect(attempt.header("X-Team") == "privacy")
                let body = try JSONValue.parse(attempt.body)
                #expect(body["note"] == .string("for hook\(path.dropFirst())"), "the payload is the templated one")
            }
        }
        #expect(Set(requests.values.compactMap { $0.first?.header("Coverbase-Delivery-Id") }).count == 4, "each run's delivery id is its own")
        let ends = Self.terminal(reader)
        let byPath = Dictionary(uniqueKeysWithValues: ends.values.map { event in
            (event[path: ["data", "input", "url"]]?.stringValue.map { String($0.split(separator: "/").last ?? "") } ?? "", event)
        })
        #expect(byPath["ok"]?["event_type"] == "WorkflowRun.Completed")
        #expect(byPath["flaky"]?["event_type"] == "WorkflowRun.Completed")
        #expect(byPath["slow"]?["event_type"] == "WorkflowRun.Completed")
        #expect(byPath["bad"]?["event_type"] == "WorkflowRun.Failed")
        #expect(byPath["bad"]?[path: ["data", "steps", "0", "message"]]?.stringValue?.contains("HTTP 400") == true)
        #expect(byPath["flaky"]?[path: ["data", "steps", "0", "message"]]?.stringValue?.contains("HTTP 200") == true)
        #expect(byPath.values.allSatisfy { $0[path: ["data", "steps", "0", "artifacts"]] == [] })
    }

    @Test("an instance killed -9 while its webhook call is in flight: its lease runs out, another instance takes the run over and calls again with the same delivery id",
          .enabled(if: TestPostgres.url != nil, TestPostgres.skipReason))
    func killDuringWebhook() async throws {
        let receiver = try await HTTPReceiver { _, earlier in Reply(status: 200, delay: earlier == 0 ? .seconds(60) : .zero) }
        defer { Task { await receiver.close() } }
        let url = try await TestPostgres.freshDatabase()
        let cluster = try await Cluster("hook-pg", storeURL: url, partitions: 1)
        let reader = try TestMember(group: "reader-\(cluster.suffix)", topics: [cluster.status])
        reader.start()
        let victim = try cluster.worker()
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        for result in await client.send([Self.webhookRequest(cluster, key: "hang", url: receiver.url("/hang"))]) { _ = try result.get() }
        try await receiver.waitUntil("the first call", timeout: .seconds(60)) { $0.count == 1 }
        victim.crash()
        _ = try await victim.waitForExit(timeout: .seconds(10))

        let survivor = try cluster.worker()
        try await reader.waitUntil("the run to end", timeout: .seconds(60)) { _ in Self.terminal(reader).count == 1 }
        try await survivor.waitForOutput("the take-over to be logged", timeout: .seconds(10)) { lines in lines.contains { $0.contains("Took over runs whose lease ran out") } }
        survivor.interrupt()
        #expect(try await survivor.waitForExit(timeout: .seconds(15)) == 0)
        await reader.stop()
        try await client.shutdown()

        let attempts = receiver.requests
        #expect(attempts.count == 2, "the dead instance's call, and the survivor's")
        #expect(Set(attempts.map { $0.header("Coverbase-Delivery-Id") }).count == 1, "the same delivery id: the receiver can drop the second")
        #expect(attempts[1].at - attempts[0].at >= .seconds(4), "the second call waited for the lease (5 s) to run out")
        #expect(Self.terminal(reader).values.first?["event_type"] == "WorkflowRun.Completed")
        let completions = reader.snapshot.received.compactMap { try? JSONValue.parse($0.value ?? []) }.filter { $0["event_type"] == "WorkflowRun.Completed" }
        #expect(Set(completions.map { $0["event_id"] }).count == 1, "completed once")
    }

    static func response(_ cluster: Cluster, vendor: String, eventID: String, answers: JSONValue = ["ok": true]) -> KafkaProducerMessage {
        let event: JSONValue = [
            "event_id": .string(eventID), "event_type": "QuestionnaireResponse.Submitted", "occurred_at": .int(Int64(Date().timeIntervalSince1970)),
            "org_id": .string(H.orgA),
            "data": ["questionnaire_id": .string(Identifier.derive(prefix: "cbqst", from: [eventID])), "vendor_id": .string(vendor),
                     "submitted_at": .int(Int64(Date().timeIntervalSince1970)), "answers": answers],
        ]
        return KafkaProducerMessage(topic: cluster.topics["VENDOR_EVENTS_TOPIC"]!, key: Array(vendor.utf8), value: event.canonicalBytes)
    }

    @Test("kill -9 while 20 runs wait for their vendor's response: responses sent while it is down and after the restart resume each exactly once; a re-published response counts once")
    func killDuringWait() async throws {
        let storePath = FileManager.default.temporaryDirectory.appendingPathComponent("\(TestBroker.uniqueName("wait")).sqlite").path
        let cluster = try await Cluster("wait", storeURL: "sqlite://\(storePath)", partitions: 2)
        let count = 20
        let vendors = (0..<count).map { Identifier.derive(prefix: "cbvndr", from: ["wait", String($0)]) }
        let reader = try TestMember(group: "reader-\(cluster.suffix)", topics: [cluster.status])
        reader.start()
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        let first = try cluster.worker()
        let requests = vendors.enumerated().map { index, vendor in
            KafkaProducerMessage(
                topic: cluster.requests, key: Array("w-\(index)".utf8), value: H.workflowRun("await-response", input: ["vendor_id": .string(vendor)]).canonicalBytes,
                headers: [KafkaHeader(key: "Authorization", value: "Bearer \(H.keyA)"), KafkaHeader(key: "Idempotency-Key", value: "w-\(index)")]
            )
        }
        for result in await client.send(requests) { _ = try result.get() }
        try await reader.waitUntil("every run to wait", timeout: .seconds(60)) { _ in
            Self.count(reader, "WorkflowRun.StepUpdated") { $0[path: ["data", "status"]] == "waiting" } == count
        }
        first.crash()
        _ = try await first.waitForExit(timeout: .seconds(10))

        // Half the responses while no worker runs; one of them twice (a re-publication).
        let duplicated = Identifier.derive(prefix: "cbevt", from: ["wait", "0"])
        var early = (0..<count / 2).map { Self.response(cluster, vendor: vendors[$0], eventID: Identifier.derive(prefix: "cbevt", from: ["wait", String($0)])) }
        early.append(Self.response(cluster, vendor: vendors[0], eventID: duplicated))
        for result in await client.send(early) { _ = try result.get() }
        let second = try cluster.worker()
        try await reader.waitUntil("the first half to complete", timeout: .seconds(60)) { _ in Self.count(reader, "WorkflowRun.Completed") == count / 2 }
        let late = (count / 2..<count).map { Self.response(cluster, vendor: vendors[$0], eventID: Identifier.derive(prefix: "cbevt", from: ["wait", String($0)])) }
        for result in await client.send(late) { _ = try result.get() }
        try await reader.waitUntil("every run to complete", timeout: .seconds(60)) { _ in Self.count(reader, "WorkflowRun.Completed") == count }
        second.interrupt()
        #expect(try await second.waitForExit(timeout: .seconds(15)) == 0)
        await reader.stop()
        try await client.shutdown()

        for (run, events) in Self.runEvents(reader) {
            var distinct: [String: Set<String>] = [:]
            for event in events { distinct[event.type, default: []].insert(event.id) }
            #expect(distinct["WorkflowRun.Completed"]?.count == 1, "\(run) completed once")
            #expect(distinct["WorkQueueItem.Created"]?.count == 1, "\(run): its step after the wait once")
        }
        let store = try SQLiteStore(path: storePath)
        #expect(try await store.runs(statuses: ["completed"], limit: 100, offset: 0).count == count)
        #expect(try await store.nextTaskDue() == nil)
        let kept = try await store.events(orgID: H.orgA, type: "QuestionnaireResponse.Submitted", vendorID: nil, since: 0, afterSequence: 0, limit: 100)
        #expect(kept.count == count, "the re-published response was kept once")
        for run in try await store.runs(statuses: [], limit: 100, offset: 0) {
            let document = try JSONValue.parse(run.document)
            let vendor = document[path: ["input", "vendor_id"]]?.stringValue
            let resumedBy = document[path: ["steps", "0", "artifacts", "0", "id"]]?.stringValue
            let expected = vendors.firstIndex(of: vendor ?? "").map { Identifier.derive(prefix: "cbevt", from: ["wait", String($0)]) }
            #expect(resumedBy == expected, "each run was resumed by its own vendor's response")
        }
    }

    static func vendorCreated(_ cluster: Cluster, id: String, tags: [String]) -> KafkaProducerMessage {
        let event: JSONValue = [
            "event_id": .string(Identifier.derive(prefix: "cbevt", from: ["vendor", id])), "event_type": "Vendor.Created",
            "occurred_at": .int(Int64(Date().timeIntervalSince1970)), "org_id": .string(H.orgA),
            "data": ["vendor": ["id": .string(id), "name": "Vendor", "tier": "low", "tags": .array(tags.map(JSONValue.string)), "attributes": [:]]],
        ]
        return KafkaProducerMessage(topic: cluster.topics["VENDOR_EVENTS_TOPIC"]!, key: Array(id.utf8), value: event.canonicalBytes)
    }

    @Test("the quarterly sweep through the worker: 40 of 50 vendors match, 30 respond before the due date (one twice): 40 questionnaires, report {total 40, responses 30}; a child run waited for")
    func sweepAndChild() async throws {
        let storePath = FileManager.default.temporaryDirectory.appendingPathComponent("\(TestBroker.uniqueName("sweep")).sqlite").path
        let cluster = try await Cluster("sweep", storeURL: "sqlite://\(storePath)", partitions: 1)
        let reader = try TestMember(group: "reader-\(cluster.suffix)", topics: [cluster.status])
        reader.start()
        let client = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        let worker = try cluster.worker()
        let vendors = (0..<50).map { Identifier.derive(prefix: "cbvndr", from: ["sweep", String($0)]) }
        for result in await client.send(vendors.enumerated().map { Self.vendorCreated(cluster, id: $1, tags: $0 < 40 ? ["processes_pii"] : ["other"]) }) { _ = try result.get() }
        // The directory first (another topic than the requests: no order between them).
        let store = try SQLiteStore(path: storePath)
        let deadline = ContinuousClock.now + .seconds(60)
        while try await store.vendors(orgID: H.orgA, afterID: "", limit: 100).count < 50 {
            guard ContinuousClock.now < deadline else { throw TimedOut(what: "the vendor directory") }
            try await Task.sleep(for: .milliseconds(50))  // polling the store: no event to await here
        }
        // The due date: an RFC 3339 time 25 s ahead (a date would mean the end of a day).
        let due = ISO8601DateFormatter().string(from: Date().addingTimeInterval(25))
        let sweep = KafkaProducerMessage(
            topic: cluster.requests, key: Array("sweep".utf8),
            value: H.workflowRun("privacy-sweep", input: ["vendor_filter": ["tags": ["processes_pii"]], "due_date": .string(due)]).canonicalBytes,
            headers: [KafkaHeader(key: "Authorization", value: "Bearer \(H.keyA)"), KafkaHeader(key: "Idempotency-Key", value: "sweep-q2")]
        )
        let child = KafkaProducerMessage(
            topic: cluster.requests, key: Array("parent".utf8),
            value: H.workflowRun("parent-flow", input: ["child": "child-flow", "n": 3, "wait": true]).canonicalBytes,
            headers: [KafkaHeader(key: "Authorization", value: "Bearer \(H.keyA)")]
        )
        for result in await client.send([sweep, child]) { _ = try result.get() }
        try await reader.waitUntil("40 questionnaires", timeout: .seconds(60)) { state in
            Set(state.received.compactMap { message -> JSONValue? in
                guard let event = try? JSONValue.parse(message.value ?? []), event["event_type"] == "Questionnaire.SendRequested", event[path: ["data", "vendor_id"]] != nil else { return nil }
                return event["event_id"]
            }).count >= 40
        }
        var responses = (0..<30).map { Self.response(cluster, vendor: vendors[$0], eventID: Identifier.derive(prefix: "cbevt", from: ["sweep-response", String($0)])) }
        responses.append(Self.response(cluster, vendor: vendors[0], eventID: Identifier.derive(prefix: "cbevt", from: ["sweep-response", "0"])))
        for result in await client.send(responses) { _ = try result.get() }
        try await reader.waitUntil("both runs to end", timeout: .seconds(90)) { _ in Self.terminal(reader).count == 3 }
        worker.interrupt()
        #expect(try await worker.waitForExit(timeout: .seconds(15)) == 0)
        await reader.stop()
        try await client.shutdown()

        let events = reader.snapshot.received.compactMap { try? JSONValue.parse($0.value ?? []) }
        let questionnaires = events.filter { $0["event_type"] == "Questionnaire.SendRequested" && $0[path: ["data", "vendor_id"]] != nil }
        let sweepRun = try #require(Self.terminal(reader).values.first { $0[path: ["data", "workflow_name"]] == "privacy-sweep" })
        let sweepQuestionnaires = questionnaires.filter { $0[path: ["data", "workflow_run_id"]] == sweepRun[path: ["data", "workflow_run_id"]] }
        #expect(Set(sweepQuestionnaires.compactMap { $0[path: ["data", "vendor_id"]]?.stringValue }) == Set(vendors.prefix(40)))
        #expect(Set(sweepQuestionnaires.compactMap { $0["event_id"] }).count == 40)
        #expect(sweepRun["event_type"] == "WorkflowRun.Completed")
        let report = try #require(sweepRun[path: ["data", "steps", "1", "artifacts", "0"]])
        #expect(report["total"] == 40)
        #expect(report["responses"] == 30, "the re-published response counted once")
        #expect(report["items"]?.arrayValue?.count == 40)
        #expect(sweepRun[path: ["data", "steps", "0", "artifacts", "0", "succeeded"]] == 40)

        let parentRun = try #require(Self.terminal(reader).values.first { $0[path: ["data", "workflow_name"]] == "parent-flow" })
        let childRun = try #require(Self.terminal(reader).values.first { $0[path: ["data", "workflow_name"]] == "child-flow" })
        #expect(parentRun["event_type"] == "WorkflowRun.Completed")
        #expect(childRun[path: ["data", "trigger", "parent_run_id"]] == parentRun[path: ["data", "workflow_run_id"]])
        let childEnd = events.firstIndex { $0["event_type"] == "WorkflowRun.Completed" && $0[path: ["data", "workflow_name"]] == "child-flow" }
        let parentEnd = events.firstIndex { $0["event_type"] == "WorkflowRun.Completed" && $0[path: ["data", "workflow_name"]] == "parent-flow" }
        #expect(childEnd != nil && parentEnd != nil)
        #expect(parentRun[path: ["data", "steps", "0", "artifacts", "0", "id"]] == childRun[path: ["data", "workflow_run_id"]], "the parent waited for its child")
    }
}
