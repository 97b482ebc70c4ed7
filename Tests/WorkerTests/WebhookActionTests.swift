import AsyncHTTPClient
import Crypto
import Foundation
import HTTPTestSupport
import Testing
import Workflows
@testable import Worker

/// `send_webhook` against a local HTTP receiver: what is sent (body, signature,
/// delivery id, headers) and how each answer is classified.
@Suite("Webhook action", .serialized)
struct WebhookActionTests {
    static let client = WebhookClient()

    func context(url: String, payload: JSONValue? = ["hello": "world"], headers: JSONValue? = nil, org: String = "cborg_b", maxBytes: Int = 1 << 20) throws -> StepContext {
        var with: [String: JSONValue] = ["url": .string(url)]
        if let payload { with["payload"] = payload }
        if let headers { with["headers"] = headers }
        let definition = WorkflowDefinition(
            orgID: org, name: "hook", id: "cbwd_1", enabled: true, trigger: .direct,
            conditions: nil, steps: [WorkflowStep(id: "notify", action: .sendWebhook, with: with)], file: "hook.yaml"
        )
        let start = RunEngine().start(PendingRun(id: "cbwr_h", definition: definition, input: ["n": 1], trigger: Array("{}".utf8), vendor: nil, assessment: nil, now: 100), headers: RunHeaders())
        return StepContext(run: start.state, step: definition.steps[0], state: start.state.steps[0], inputs: .object(with), now: 100_000, maxEffectBytes: maxBytes)
    }

    func action(hosts: Set<String> = [], timeout: Duration = .seconds(10)) -> WebhookAction {
        Self.client.action(allowedHosts: hosts, timeout: timeout) { $0 == "cborg_b" ? "whsec_beta" : nil }
    }

    @Test("a 2xx is delivered: JSON body, HMAC signature under the org's secret, a stable delivery id, the step's own headers")
    func delivered() async throws {
        let receiver = try await HTTPReceiver { _, _ in Reply(status: 204) }
        defer { Task { await receiver.close() } }
        let context = try context(url: receiver.url("/hook"), headers: ["X-Team": "privacy", "Coverbase-Delivery-Id": "forged", "content-type": "text/plain"])
        let outcome = await action().perform(context)
        guard case .succeeded(let success) = outcome else { Issue.record("\(outcome)"); return }
        #expect(success.output["status"] == 204)
        let request = try #require(receiver.requests.first)
        #expect(request.method == "POST")
        #expect(request.body == (["hello": "world"] as JSONValue).canonicalBytes)
        #expect(request.header("Content-Type") == "application/json")
        #expect(request.header("Coverbase-Delivery-Id") == context.deliveryID, "the step cannot replace the worker's headers")
        let expected = HMAC<SHA256>.authenticationCode(for: request.body, using: SymmetricKey(data: Array("whsec_beta".utf8)))
        #expect(request.header("Coverbase-Signature") == Identifier.hex(Array(expected)))
        #expect(request.header("X-Team") == "privacy")

        // Without a payload the body is the run object; an org without a secret sends no signature.
        _ = await action().perform(try self.context(url: receiver.url("/run"), payload: nil, org: "cborg_a"))
        let second = try #require(receiver.requests.last)
        #expect(try JSONValue.parse(second.body)["workflow_run_id"] == "cbwr_h")
        #expect(second.header("Coverbase-Signature") == nil)
    }

    @Test("408, 429, 5xx and timeouts are retriable; other 4xx and redirects fail at once", arguments: [
        (200, false, false), (408, true, true), (429, true, true), (500, true, true), (503, true, true), (400, true, false), (404, true, false), (302, true, false),
    ])
    func classification(status: Int, fails: Bool, retriable: Bool) async throws {
        let receiver = try await HTTPReceiver { _, _ in Reply(status: status) }
        defer { Task { await receiver.close() } }
        let outcome = await action().perform(try context(url: receiver.url("/s")))
        switch outcome {
        case .succeeded: #expect(!fails)
        case .failed(let message, let isRetriable):
            #expect(fails)
            #expect(isRetriable == retriable, "\(status): \(message)")
            #expect(message.contains("HTTP \(status)"))
        default: Issue.record("\(outcome)")
        }
    }

    @Test("a receiver slower than the timeout is a retriable failure; so is one that does not listen")
    func timeouts() async throws {
        let receiver = try await HTTPReceiver { _, _ in Reply(status: 200, delay: .seconds(2)) }
        defer { Task { await receiver.close() } }
        let slow = await action(timeout: .milliseconds(300)).perform(try context(url: receiver.url("/slow")))
        guard case .failed(let message, true) = slow else { Issue.record("\(slow)"); return }
        #expect(message.contains("timed out"))
        let closed = try await HTTPReceiver { _, _ in Reply(status: 200) }
        let port = closed.port
        await closed.close()
        let refused = await action(timeout: .seconds(2)).perform(try context(url: "http://127.0.0.1:\(port)/gone"))
        guard case .failed(_, true) = refused else { Issue.record("\(refused)"); return }
    }

    @Test("refused before any request: a host outside WEBHOOK_ALLOWED_HOSTS, a URL that is not http(s), a bad header, a body over MAX_MESSAGE_BYTES")
    func refusals() async throws {
        let receiver = try await HTTPReceiver { _, _ in Reply(status: 200) }
        defer { Task { await receiver.close() } }
        for (context, hosts, fragment) in [
            (try context(url: receiver.url("/x")), Set(["hooks.example.com"]), "not in WEBHOOK_ALLOWED_HOSTS"),
            (try context(url: "file:///etc/passwd"), Set<String>(), "http(s) URL"),
            (try context(url: "ftp://127.0.0.1/x"), Set<String>(), "http(s) URL"),
            (try context(url: receiver.url("/x"), headers: ["Bad Name": "v"]), Set<String>(), "not a valid HTTP header name"),
            (try context(url: receiver.url("/x"), headers: ["X-Inject": "a\r\nEvil: 1"]), Set<String>(), "without line breaks"),
            (try context(url: receiver.url("/x"), payload: .string(String(repeating: "x", count: 2000)), maxBytes: 1000), Set<String>(), "MAX_MESSAGE_BYTES"),
        ] {
            let outcome = await action(hosts: hosts).perform(context)
            guard case .failed(let message, false) = outcome else { Issue.record("\(outcome)"); continue }
            #expect(message.contains(fragment), "\(message)")
        }
        #expect(receiver.requests.isEmpty)
        let allowed = await action(hosts: ["127.0.0.1"]).perform(try context(url: receiver.url("/x")))
        guard case .succeeded = allowed else { Issue.record("\(allowed)"); return }
    }
}
