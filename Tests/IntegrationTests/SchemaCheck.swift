import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Kafka
import Synchronization
import Testing
import Workflows

/// Holds what the integration tests see to `schemas/`: every message read from a
/// worker's status topic (`rs-…`) or dead-letter topic (`dl-…`) and every HTTP answer
/// is checked by a real JSON Schema 2020-12 validator (Python's `jsonschema`, run as
/// `scripts/schemas.py serve`, one process for the test run). A problem is recorded as
/// an issue of the test that saw the message, so a schema cannot drift from the code.
enum SchemaCheck {
    /// The schema of the messages of `topic`, if the tests' naming says it is a worker's output topic.
    static func messageKind(ofTopic topic: String) -> String? {
        if topic.hasPrefix("rs-") { return "status-event" }
        if topic.hasPrefix("dl-") { return "dead-letter" }
        return nil
    }

    /// Records an issue for each message of `batch` that its topic's schema rejects.
    static func check(_ batch: [KafkaMessage]) async {
        var requests: [JSONValue] = []
        var what: [String] = []
        for message in batch {
            guard let kind = messageKind(ofTopic: message.topic) else { continue }
            what.append("\(kind) at \(message.topic)/\(message.partition)@\(message.offset)")
            switch kind {
            case "dead-letter":
                // The headers, as the schema describes them (the value is the input's).
                requests.append(["message": "dead-letter", "instance": .object(Self.headers(of: message))])
            default:
                let value = (try? JSONValue.parse(message.value ?? [])) ?? .string("(not JSON: \(message.value?.count ?? 0) bytes)")
                requests.append(["message": .string(kind), "instance": value])
                what.append("the headers of \(kind) at \(message.topic)/\(message.partition)@\(message.offset)")
                // The worker's own headers: each once, event-type the body's.
                var headers = Self.headers(of: message)
                let names = message.headers.map { $0.key.lowercased() }
                if Set(names).count != names.count { headers["(a header repeated)"] = .string(names.joined(separator: ",")) }
                if headers["event-type"] != value["event_type"] { headers["(event-type is not the body's event_type)"] = value["event_type"] ?? .null }
                requests.append(["message": "status-event-headers", "instance": .object(headers)])
            }
        }
        guard !requests.isEmpty else { return }
        record(await validator.errors(requests), what)
    }

    /// Records an issue for each trigger request of `messages` (value and headers) that
    /// `trigger-request.schema.json` rejects: for inputs the tests know to be well formed,
    /// such as those `trigger-worker send` publishes.
    static func checkRequests(_ messages: [KafkaMessage]) async {
        var requests: [JSONValue] = []
        var what: [String] = []
        for message in messages {
            let value = (try? JSONValue.parse(message.value ?? [])) ?? .string("(not JSON)")
            requests += [["message": "trigger-request", "instance": value], ["message": "trigger-request-headers", "instance": .object(Self.headers(of: message))]]
            what += ["trigger request at \(message.topic)/\(message.partition)@\(message.offset)", "its headers"]
        }
        record(await validator.errors(requests), what)
    }

    /// A message's headers as the schemas describe them: names lower-cased, values as text.
    private static func headers(of message: KafkaMessage) -> [String: JSONValue] {
        var headers: [String: JSONValue] = [:]
        for header in message.headers { headers[header.key.lowercased()] = .string(String(decoding: header.value ?? [], as: UTF8.self)) }
        return headers
    }

    /// Records an issue when the HTTP answer is not what `schemas/openapi.json` documents
    /// for `method path` (status, content type, headers, body).
    static func checkHTTP(method: String, path: String, status: Int, headers: [String: String], body: String) async {
        let request: JSONValue = [
            "http": [
                "method": .string(method), "path": .string(path), "status": .int(Int64(status)),
                "content_type": .string(headers["content-type"] ?? ""), "headers": .object(headers.mapValues(JSONValue.string)),
            ],
            "body": .string(body),
        ]
        record(await validator.errors([request]), ["\(method) \(path) → \(status)"])
    }

    /// The problems the validator finds in the body `GET /openapi.json` served: not the
    /// bundle of `schemas/`, or not a valid OpenAPI 3.1 document.
    static func openAPIProblems(_ served: String) async -> [String] {
        (await validator.errors([["openapi": .string(served)]])).first ?? []
    }

    /// The validator's answers to `requests`, one list of problems each (empty: valid).
    static func errors(_ requests: [JSONValue]) async -> [[String]] { await validator.errors(requests) }

    private static func record(_ answers: [[String]], _ what: [String]) {
        for (problems, what) in zip(answers, what) where !problems.isEmpty {
            let listed = problems.prefix(10).joined(separator: "\n  ")
            Issue.record("schema: \(what) does not match schemas/:\n  \(listed)")
        }
    }

    private static let validator = Validator()

    /// One `scripts/schemas.py serve` for the test run, fed through a serial queue: its
    /// pipes are read and written with blocking calls, off the concurrency pool.
    final class Validator: Sendable {
        private struct Running: @unchecked Sendable {
            let input: FileHandle
            let output: FileHandle
            var buffered: [UInt8] = []
        }
        private let queue = DispatchQueue(label: "schema-validator")
        private let state = Mutex<Result<Running, ValidatorUnavailable>?>(nil)

        struct ValidatorUnavailable: Error, CustomStringConvertible { let description: String }

        func errors(_ requests: [JSONValue]) async -> [[String]] {
            await withCheckedContinuation { continuation in
                queue.async { continuation.resume(returning: self.exchange(requests)) }
            }
        }

        /// Writes every request, then reads as many answers (on `queue` only).
        private func exchange(_ requests: [JSONValue]) -> [[String]] {
            state.withLock { state in
                if state == nil { state = Self.start() }
                guard case .success(var running) = state else {
                    if case .failure(let failure) = state { return requests.map { _ in ["the schema validator is not available: \(failure)"] } }
                    return []
                }
                do {
                    var answers: [[String]] = []
                    // One request, then its answer: the validator never waits on a full pipe
                    // of answers while this side waits on a full pipe of requests.
                    for request in requests {
                        try running.input.write(contentsOf: Data(request.canonicalBytes + [0x0A]))
                        let line = try Self.readLine(&running)
                        let errors = (try? JSONValue.parse(line))?["errors"]?.arrayValue?.compactMap(\.stringValue)
                        answers.append(errors ?? ["the validator answered something else: \(String(decoding: line.prefix(200), as: UTF8.self))"])
                    }
                    state = .success(running)
                    return answers
                } catch {
                    state = .failure(ValidatorUnavailable(description: "scripts/schemas.py serve stopped: \(error)"))
                    return requests.map { _ in ["the schema validator stopped: \(error)"] }
                }
            }
        }

        private static func readLine(_ running: inout Running) throws -> [UInt8] {
            while true {
                if let newline = running.buffered.firstIndex(of: 0x0A) {
                    let line = Array(running.buffered[..<newline])
                    running.buffered.removeSubrange(...newline)
                    return line
                }
                let chunk = running.output.availableData
                guard !chunk.isEmpty else { throw ValidatorUnavailable(description: "its output ended") }
                running.buffered += chunk
            }
        }

        /// Starts the validator with posix_spawn, not Foundation's `Process`: on Linux a
        /// `Process` learns that its child ended when a socket the child inherited closes,
        /// and a child started meanwhile (this one lives for the whole test run) may inherit
        /// that socket too: the worker's end is then never seen, and `waitUntilExit` spins
        /// (swift-corelibs-foundation #4795). The validator closes every inherited
        /// descriptor but its pipes first thing, and Foundation does not track it.
        private static func start() -> Result<Running, ValidatorUnavailable> {
            let root = WorkerProcess.root
            let python = root.appendingPathComponent(".venv/bin/python").path
            guard FileManager.default.isExecutableFile(atPath: python) else {
                return .failure(ValidatorUnavailable(description: "\(python) is missing: run scripts/schemas.sh check (make test does) to install the validators"))
            }
            // A validator that died must be an error of the write, not the end of the test run.
            signal(SIGPIPE, SIG_IGN)
            var requests: [Int32] = [0, 0], answers: [Int32] = [0, 0]
            guard pipe(&requests) == 0, pipe(&answers) == 0 else {
                return .failure(ValidatorUnavailable(description: "pipe failed: errno \(errno)"))
            }
            // Not inherited by the workers the tests start (the child gets its copies as 0 and 1).
            for descriptor in requests + answers { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_adddup2(&actions, requests[0], 0)
            posix_spawn_file_actions_adddup2(&actions, answers[1], 1)
            let arguments = [python, root.appendingPathComponent("scripts/schemas.py").path, "serve"]
            var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
            defer { for pointer in argv { free(pointer) } }
            var pid: pid_t = 0
            let spawned = posix_spawn(&pid, python, &actions, nil, &argv, environ)
            close(requests[0])
            close(answers[1])
            guard spawned == 0 else {
                close(requests[1])
                close(answers[0])
                return .failure(ValidatorUnavailable(description: "\(python) scripts/schemas.py serve did not start: errno \(spawned)"))
            }
            return .success(Running(
                input: FileHandle(fileDescriptor: requests[1], closeOnDealloc: true), output: FileHandle(fileDescriptor: answers[0], closeOnDealloc: true)
            ))
        }
    }
}
