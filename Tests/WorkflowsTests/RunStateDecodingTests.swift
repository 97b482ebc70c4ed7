import Testing
@testable import Workflows

/// The stored state is read in place (no tree for its own objects, the definition
/// from the cache when its bytes are the cached ones): it must read exactly what the
/// state says, whatever the key order, spacing or cache, and refuse what is broken.
@Suite("Run state: reading a stored state")
struct RunStateDecodingTests {
    static let now: Int64 = 1_750_000_000_000

    /// States of several shapes: new, waiting on a timer, an item waiting for an event.
    func states() async throws -> [RunState] {
        let workflow = try workflowDefinition("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: pause, action: delay, with: { for: 1h } }\n  - { id: ask, action: send_questionnaire, with: { due: '{{ input.due }}', \"q\\\"uote\": \"a\\\\b\" }, retry: { max_attempts: 2 } }\n")
        let run = PendingRun(id: "cbwr_dec", definition: workflow, input: ["due": "2026-06-30", "é": [1, 2.5, nil], "deep": ["a": ["b": [true, false]]]],
                             trigger: Array(#"{"kind":"request","source":{"offset":3}}"#.utf8), vendor: ["id": "cbvndr_v", "tags": ["a"]], assessment: ["id": "cbasmt_x"], now: Self.now)
        let engine = RunEngine()
        let start = engine.start(run, headers: RunHeaders(requestID: "r-1", idempotencyKey: "k\u{1F600}", traceparent: "00-abc"))
        let waiting = await engine.advance(start.state, now: Self.now)
        let sweep = try workflowDefinition("name: demo\ntrigger: { type: direct }\nsteps:\n  - { id: each, action: for_each, with: { vendor_filter: {}, do: [ { id: answer, action: wait_for_event, with: { event: Vendor.Updated, timeout: 1d } } ] } }\n")
        var item = engine.startItem(of: waiting.state, step: sweep.steps[0], vendor: ["id": "cbvndr_i"], now: Self.now)
        item.steps[0].subscription = WaitSubscription(eventType: "Vendor.Updated", vendorID: "cbvndr_i", seenSequence: 42)
        item.steps[0].progress = ["cursor": "x"]
        item.steps[0].lastError = "timed out"
        item.steps[0].attempts = 3
        item.steps[0].nextAttemptAt = Self.now + 5
        return [start.state, waiting.state, item]
    }

    /// JSON as another writer might lay it out: keys in reverse order, spaces everywhere.
    func loose(_ value: JSONValue) -> String {
        switch value {
        case .object(let object):
            "{ " + object.sorted { $0.key > $1.key }.map { " \(loose(.string($0.key))) :\n\t\(loose($0.value))" }.joined(separator: " ,") + " }"
        case .array(let items):
            "[ " + items.map(loose).joined(separator: " , ") + " ]"
        default:
            String(decoding: value.canonicalBytes, as: UTF8.self)
        }
    }

    @Test("a state reads back as written, from the cache and without it, whatever the key order and spacing")
    func readsWhatWasWritten() async throws {
        for state in try await states() {
            #expect(try RunState(decoding: state.encoded) == state)
            // Another layout: the definition's bytes are not the cached ones, so it is parsed.
            let other = Array(loose(state.json).utf8)
            #expect(other != state.encoded)
            #expect(try RunState(decoding: other) == state)
            // Unknown keys are passed over (a newer release of the same format may add some).
            var extended = state.json.objectValue!
            extended["zz_later"] = ["nested": [1, ["x": "]}\""]]]
            #expect(try RunState(decoding: JSONValue.object(extended).canonicalBytes) == state)
        }
    }

    @Test("the definition comes from the cache only when its bytes are the cached ones")
    func definitionNotTakenFromTheCacheByItsID() async throws {
        let state = try await states()[0]
        _ = try RunState(decoding: state.encoded)  // cached now
        // The same definition id, step ids and actions, another `with`: read as stored.
        var tree = state.json.objectValue!
        var definition = tree["definition"]!.arrayValue!
        var step = definition[1].objectValue!
        step["with"] = ["due": "changed"]
        definition[1] = .object(step)
        tree["definition"] = .array(definition)
        let read = try RunState(decoding: JSONValue.object(tree).canonicalBytes)
        #expect(read.definition[1].with == ["due": "changed"])
        #expect(read.definition[1].id == state.definition[1].id)
        // And the original still reads as itself afterwards.
        #expect(try RunState(decoding: state.encoded).definition == state.definition)
    }

    @Test("broken states are refused, wherever the damage is")
    func refusesBrokenStates() async throws {
        let state = try await states()[1]
        let bytes = state.encoded
        let text = String(decoding: bytes, as: UTF8.self)
        var broken: [String: [UInt8]] = [
            "trailing characters": bytes + Array(" x".utf8),
            "truncated": Array(bytes.dropLast(1)),
            "truncated in the definition": Array(text.prefix(upTo: text.range(of: "\"definition_id\"")!.lowerBound).utf8).dropLast(3).map { $0 },
            "not an object": Array("[]".utf8),
            "newer format": Array("{\"v\":99}".utf8),
            "no version": Array(text.replacingOccurrences(of: "\"v\":1,", with: "").utf8),
        ]
        func replacing(_ old: String, _ new: String) -> [UInt8] {
            #expect(text.contains(old), "the test's premise: \(old)")
            return Array(text.replacingOccurrences(of: old, with: new).utf8)
        }
        broken["definition not JSON"] = replacing("\"on_failure\":\"fail\"", "\"on_failure\":fail")
        broken["definition brackets crossed"] = replacing("\"do\":[]", "\"do\":[}")
        broken["definition unbalanced"] = replacing("\"do\":[]", "\"do\":[[]")
        broken["a broken definition before the real one"] = replacing("\"definition\":[", "\"definition\":[},\"definition\":[")
        broken["a step not an object"] = replacing("\"steps\":[{", "\"steps\":[1,{")
        broken["a step's action unknown"] = replacing("\"action\":\"delay\",\"artifacts\"", "\"action\":\"teleport\",\"artifacts\"")
        broken["run id missing"] = replacing("\"run_id\":\"cbwr_dec\"", "\"run_id\":null")
        broken["status unknown"] = replacing("\"status\":\"waiting\"", "\"status\":\"dreaming\"")
        broken["cursor outside"] = replacing("\"cursor\":0", "\"cursor\":7")
        broken["more definition steps than the run has"] = replacing("\"definition\":[", "\"definition\":[{\"action\":\"delay\",\"do\":[],\"id\":\"x\",\"on_failure\":\"fail\",\"retry\":{\"initial_ms\":1,\"max_attempts\":1,\"max_ms\":1},\"with\":{}},")
        broken["invalid UTF-8 in a key"] = Array(text.replacingOccurrences(of: "\"org_id\"", with: "\"org_\u{0}id\"").utf8).map { $0 == 0 ? 0xFF : $0 }
        broken["control character in a value"] = replacing("\"workflow_name\":\"demo\"", "\"workflow_name\":\"de\nmo\"")
        for (what, bytes) in broken {
            #expect(throws: RunStateError.self, "\(what)") { try RunState(decoding: bytes) }
        }
    }
}
