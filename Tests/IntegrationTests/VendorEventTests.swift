import Foundation
import Kafka
import Testing
import Workflows

/// Pattern 1 and the vendor events' dead letters (§3, §6), against a real broker.
@Suite("Vendor events (Pattern 1)", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason))
struct VendorEventTests {
    typealias H = WorkerHarness

    @Test("a matching Vendor.Created starts the bound workflow; a non-matching one starts nothing; a re-published event starts nothing new")
    func matching() async throws {
        let worker = try await H()
        worker.start()
        let vendor = H.vendor(name: "Acme Payroll", tier: "high")
        let eventID = Identifier.derive(prefix: "cbevt", from: ["matching"])
        let matching = try await worker.vendorEvent(eventID: eventID, vendor: vendor)
        let lowTier = try await worker.vendorEvent(vendor: H.vendor(name: "Tiny Co", tier: "low"))
        let noPII = try await worker.vendorEvent(vendor: H.vendor(name: "Plain Co", tags: []))
        let republished = try await worker.vendorEvent(eventID: eventID, vendor: vendor)
        // A marker after them all (one input partition): once its run ends, everything before it was handled.
        let marker = try await worker.vendorEvent(vendor: H.vendor(name: "Marker"))
        _ = try await worker.runEvents(try await waitForRun(worker, startedBy: marker))

        let runIDs = try await worker.storedRunsStarted(by: matching)
        #expect(runIDs.count == 1)
        #expect(try await waitForRun(worker, startedBy: matching) == runIDs.first)
        let events = try await worker.runEvents(try #require(runIDs.first))
        #expect(events.map { $0["event_type"]!.stringValue! } == [
            "WorkflowRun.Started", "WorkflowRun.StepUpdated", "Questionnaire.SendRequested", "WorkflowRun.StepUpdated",
            "Email.SendRequested", "WorkflowRun.StepUpdated", "WorkflowRun.Completed",
        ])
        let run = events.last!["data"]!
        #expect(run["workflow_name"] == "onboard-vendor")
        #expect(run["input"] == ["vendor": vendor], "an event-triggered run's input is the event's data")
        #expect(run["trigger"] == ["kind": "event", "event_id": .string(eventID), "request_id": .null, "source": H.source(matching)])
        #expect(run[path: ["steps", "0", "artifacts", "0", "artifact_type"]] == "assessment")
        let assessmentID = try #require(run[path: ["steps", "0", "artifacts", "0", "id"]]?.stringValue)
        let assessment = try #require(try await worker.store.assessment(id: assessmentID))
        #expect(try JSONValue.parse(assessment.document)["name"] == "Onboarding Acme Payroll")
        #expect(events[4][path: ["data", "subject"]] == "New vendor Acme Payroll")
        #expect(events[4][path: ["data", "delivery_id"]]?.stringValue.map { Identifier.isValid($0, prefix: "cbevt") } == true)

        #expect(try await worker.storedRunsStarted(by: lowTier).isEmpty, "tier low does not match")
        #expect(try await worker.storedRunsStarted(by: noPII).isEmpty, "no processes_pii tag does not match")
        #expect(try await worker.storedRunsStarted(by: republished).isEmpty, "the same event_id starts nothing new")
        #expect(worker.events.filter { $0["event_type"] == "WorkflowRun.Started" }.count == 2, "the matching event and the marker")
        try await worker.stop()
    }

    @Test("Vendor.Updated starts workflows bound to it and keeps the directory current; other event types are ignored")
    func updatedAndIgnored() async throws {
        let worker = try await H()
        worker.start()
        let vendorID = Identifier.derive(prefix: "cbvndr", from: ["updated"])
        let now = Int64(Date().timeIntervalSince1970)
        try await worker.vendorEvent(vendor: H.vendor(vendorID, name: "Old Name", tier: "low"), occurredAt: now - 20)
        let ignored = try await worker.vendorEvent(type: "Vendor.Deleted", vendor: H.vendor(vendorID))
        let updated = try await worker.vendorEvent(type: "Vendor.Updated", vendor: H.vendor(vendorID, name: "New Name", tier: "low"), occurredAt: now - 10)
        let audit = try await worker.runEvents(try await waitForRun(worker, startedBy: updated))
        #expect(audit.last?[path: ["data", "workflow_name"]] == "vendor-updated-audit")
        #expect(audit.first { $0["event_type"] == "WorkQueueItem.Created" }?[path: ["data", "title"]] == "Review changes to New Name")
        #expect(try await worker.storedRunsStarted(by: ignored).isEmpty)

        // The directory has the updated vendor: an assessment for it is created.
        let assessment = try await worker.request(H.assessmentCreate(["vendor_id": .string(vendorID), "control_set_ids": []]))
        let response = try await worker.response(to: assessment)
        #expect(response[path: ["data", "response", "status"]] == 201)
        #expect(response[path: ["data", "response", "body", "name"]] == "Assessment of New Name")
        #expect(worker.deadLetters.isEmpty, "an event type the worker does not act on is not an error")
        try await worker.stop()
    }

    @Test("dead letters: not JSON, not an event, too large, unknown org, missing or wrong signature; valid events after them are handled")
    func deadLetters() async throws {
        let worker = try await H { $0.maxMessageBytes = 2048 }
        worker.start()
        let notJSON = try await worker.rawVendorEvent(Array("not json".utf8), key: "v-1")
        let notObject = try await worker.rawVendorEvent(Array("\"Vendor.Created\"".utf8))
        let noVendor = try await worker.rawVendorEvent((["event_id": "cbevt_1", "event_type": "Vendor.Created", "occurred_at": 1, "org_id": .string(H.orgA), "data": [:]] as JSONValue).canonicalBytes)
        let tooLarge = try await worker.vendorEvent(vendor: H.vendor(name: String(repeating: "x", count: 3000)))
        let unknownOrg = try await worker.vendorEvent(org: "cborg_cccccccccccccccccccccccccccccccc", vendor: H.vendor())
        let unsigned = try await worker.vendorEvent(org: H.orgB, vendor: H.vendor())
        let wronglySigned = try await worker.vendorEvent(org: H.orgB, vendor: H.vendor(), signWith: "whsec_wrong")
        let signed = try await worker.vendorEvent(org: H.orgB, vendor: H.vendor(name: "Signed Co"), signWith: H.secretB)
        let plain = try await worker.vendorEvent(vendor: H.vendor(name: "After Co"))

        let signedRun = try await worker.runEvents(try await waitForRun(worker, startedBy: signed))
        #expect(signedRun.last?["event_type"] == "WorkflowRun.Completed")
        #expect(signedRun.last?["org_id"] == .string(H.orgB))
        _ = try await worker.runEvents(try await waitForRun(worker, startedBy: plain))

        let letters = try await worker.waitForDeadLetters(7)
        let codes = Dictionary(uniqueKeysWithValues: letters.map { ($0.header("source-offset")!, $0.header("error-code")!) })
        #expect(codes[String(notJSON.offset!)] == "invalid_json")
        #expect(codes[String(notObject.offset!)] == "invalid_event")
        #expect(codes[String(noVendor.offset!)] == "invalid_event")
        #expect(codes[String(tooLarge.offset!)] == "message_too_large")
        #expect(codes[String(unknownOrg.offset!)] == "invalid_event")
        #expect(codes[String(unsigned.offset!)] == "invalid_signature")
        #expect(codes[String(wronglySigned.offset!)] == "invalid_signature")
        #expect(letters.count == 7)
        let wrong = try #require(letters.first { $0.header("source-offset") == String(wronglySigned.offset!) })
        #expect(wrong.header("Coverbase-Signature") != nil, "the original headers are kept")
        #expect(wrong.header("source-topic") == worker.configuration.topics.vendorEvents)
        #expect(letters.first { $0.header("source-offset") == String(notJSON.offset!) }?.value == Array("not json".utf8))
        try await worker.stop()
    }
}
