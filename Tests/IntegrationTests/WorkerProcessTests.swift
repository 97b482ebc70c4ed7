import Foundation
import Worker
import Kafka
import Synchronization
import Testing

/// Runs the built `trigger-worker` executable as a user would and reads its log.
final class WorkerProcess: Sendable {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let executable = root.appendingPathComponent(".build/debug/trigger-worker").path

    /// What the output reader shares with the test: the unfinished line and every complete one.
    private final class Output: Sendable {
        let pending = Mutex(Data())
        let lines = Mutex<[String]>([])
        let closed = Mutex(false)
        let changes = ChangeNotifier()
    }

    private let process: Process
    private let pipe: Pipe
    private let lines: AsyncStream<String>
    private let log = Output()

    init(arguments: [String], environment: [String: String]) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: Self.executable)
        process.arguments = arguments
        process.currentDirectoryURL = Self.root
        var merged = ProcessInfo.processInfo.environment
        merged.merge(environment) { _, new in new }
        process.environment = merged
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = pipe
        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        lines = stream
        let log = self.log
        let output = pipe.fileHandleForReading
        let read: @Sendable () -> Void
        // A thread of its own reads with blocking reads until end of file. (A
        // readabilityHandler is a dispatch read source: its descriptor could be closed
        // while the source was still registered, which crashed libdispatch's event loop.)
        read = {
            while true {
                let chunk = output.availableData
                if chunk.isEmpty {
                    continuation.finish()
                    log.closed.withLock { $0 = true }
                    log.changes.notify()
                    return
                }
                let complete: [String] = log.pending.withLock { buffer in
                    buffer.append(chunk)
                    var found: [String] = []
                    while let newline = buffer.firstIndex(of: 0x0A) {
                        found.append(String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self))
                        buffer.removeSubrange(buffer.startIndex...newline)
                    }
                    return found
                }
                for line in complete {
                    log.lines.withLock { $0.append(line) }
                    continuation.yield(line)
                }
                if !complete.isEmpty { log.changes.notify() }
            }
        }
        self.pipe = pipe
        try process.run()
        // The child has its copy of the write end; closing ours lets the reader see end of file.
        try pipe.fileHandleForWriting.close()
        Thread.detachNewThread(read)
    }

    var output: [String] { log.lines.withLock { $0 } }

    /// Waits for a log line that satisfies `predicate`; fails after `timeout`.
    func waitForLine(_ what: String, timeout: Duration, _ predicate: @escaping @Sendable (String) -> Bool) async throws -> String {
        let lines = self.lines
        return try await withThrowingTaskGroup(of: String.self) { group in
            group.addTask {
                for await line in lines where predicate(line) { return line }
                throw TimedOut(what: what + " (the worker exited)")
            }
            group.addTask {
                try await Task.sleep(for: timeout)  // a deadline, not a synchronisation
                throw TimedOut(what: what)
            }
            let line = try await group.next()!
            group.cancelAll()
            return line
        }
    }

    /// Waits until the output so far satisfies `condition` (re-checked after each new
    /// line); fails after `timeout`.
    func waitForOutput(_ what: String, timeout: Duration, _ condition: @escaping @Sendable ([String]) -> Bool) async throws {
        let log = self.log
        try await withDeadline(timeout, what) {
            var seen = log.changes.version
            while !condition(log.lines.withLock { $0 }) {
                if log.closed.withLock({ $0 }) { throw TimedOut(what: what + " (the worker exited)") }
                seen = await log.changes.waitForChange(after: seen)
                try Task.checkCancellation()
            }
        }
    }

    /// The partitions this worker owns, as its JSON log tells (assignments minus revocations).
    var ownedPartitions: Set<String> { Self.owned(in: output) }

    static func owned(in lines: [String]) -> Set<String> { AssignmentLog.owned(in: lines) }

    /// Whether the process exited by itself (not killed by a signal). Valid after it exited.
    var exitedNormally: Bool { process.terminationReason == .exit }

    /// The process id (for signals and resource limits).
    var pid: Int32 { process.processIdentifier }

    func interrupt() { process.interrupt() }
    /// SIGKILL: no shutdown, no flush, no commit.
    func crash() { if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) } }
    /// SIGTERM (a graceful stop), waited for up to 15 s (then SIGKILL). A worker that
    /// dies of another signal meanwhile (a trap) is reported with its last lines, so that
    /// a crash at shutdown leaves a trace even in a test that no longer looks.
    func kill() {
        guard process.isRunning else { return reportCrash() }
        process.terminate()
        let deadline = Date().addingTimeInterval(15)
        while isAlive, Date() < deadline { usleep(20_000) }
        if isAlive { Foundation.kill(process.processIdentifier, SIGKILL) }
        // Not waitUntilExit(): it spins forever when Foundation misses the end (Process.isAlive).
        let killed = Date().addingTimeInterval(10)
        while process.isRunning, Date() < killed { usleep(20_000) }
        if process.isRunning { return }  // ended, but unseen by Foundation: there is no status to report
        reportCrash()
    }

    private var isAlive: Bool { process.isAlive }

    private func reportCrash() {
        guard !process.isRunning, process.terminationReason == .uncaughtSignal,
              ![SIGTERM, SIGKILL, SIGINT].contains(process.terminationStatus) else { return }
        print("worker \(process.processIdentifier) died of signal \(process.terminationStatus); its last lines:\n" + output.suffix(8).joined(separator: "\n"))
    }

    /// Waits until the process exits and returns its status; fails after `timeout`.
    func waitForExit(timeout: Duration) async throws -> Int32 {
        let process = self.process
        let status = try await withDeadline(timeout, "the worker to exit") {
            // Polled, not waitUntilExit(), which spins forever when Foundation misses the end.
            await process.waitUntilEnded(limit: timeout)
            guard !process.isRunning else {
                throw TimedOut(what: process.isAlive ? "the worker to exit" : "Foundation to see the worker's end (swift-corelibs-foundation #4795)")
            }
            return process.terminationStatus
        }
        // The process may exit before its output is read to the end.
        var seen = log.changes.version
        while !log.closed.withLock({ $0 }) { seen = await log.changes.waitForChange(after: seen) }
        return status
    }
}

@Suite("The trigger-worker executable", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason), .serialized)
struct WorkerProcessTests {
    @Test("run: joins within 15 s, consumes and commits both input topics, stops within 5 s of SIGINT")
    func runAndInterrupt() async throws {
        let suffix = TestBroker.uniqueName("proc")
        let topics = ["VENDOR_EVENTS_TOPIC": "ve-\(suffix)", "TRIGGER_REQUESTS_TOPIC": "tr-\(suffix)", "RUN_STATUS_TOPIC": "rs-\(suffix)", "DLQ_TOPIC": "dl-\(suffix)"]
        let group = "group-\(suffix)"
        let worker = try WorkerProcess(arguments: ["run"], environment: topics.merging([
            "KAFKA_BROKERS": TestBroker.brokers!,
            "KAFKA_GROUP_ID": group,
            "TOPIC_PARTITIONS": "2",
            "WORKFLOWS_DIR": "examples/workflows",
            "ORGS_FILE": "examples/orgs.yaml",
            "RDKAFKA_MAX_POLL_INTERVAL_MS": "6000",
            "RDKAFKA_SESSION_TIMEOUT_MS": "6000",
            "LOG_FORMAT": "json",
            "HTTP_PORT": "0",
            "STORE_URL": "sqlite://\(FileManager.default.temporaryDirectory.path)/\(suffix).sqlite",
        ]) { $1 })
        defer { worker.kill() }

        let joined = try await worker.waitForLine("the group join", timeout: .seconds(15)) { $0.contains("Joined the consumer group") }
        for topic in [topics["VENDOR_EVENTS_TOPIC"]!, topics["TRIGGER_REQUESTS_TOPIC"]!] {
            #expect(joined.contains("\(topic)[0]") && joined.contains("\(topic)[1]"), "not assigned both partitions of \(topic): \(joined)")
        }
        #expect(try JSONSerialization.jsonObject(with: Data(joined.utf8)) is [String: Any], "LOG_FORMAT=json gives JSON lines")

        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(common: TestBroker.common), logger: TestBroker.logger)
        for topic in [topics["VENDOR_EVENTS_TOPIC"]!, topics["TRIGGER_REQUESTS_TOPIC"]!] {
            try await produce(producer, topic: topic, partitions: [0, 1], count: 3, tag: "m")
        }
        try await producer.shutdown()
        // The values are not valid inputs: each vendor event is dead-lettered and each
        // request answered 400 (and dead-lettered). Wait until all twelve were handled.
        let handled = Mutex(0)
        _ = try await worker.waitForLine("twelve handled messages", timeout: .seconds(30)) { line in
            guard line.contains("Dead-lettered a vendor event") || line.contains("Request answered") else { return false }
            return handled.withLock { $0 += 1; return $0 >= 12 }
        }

        let interrupted = ContinuousClock.now
        worker.interrupt()
        let status = try await worker.waitForExit(timeout: .seconds(5))
        #expect(status == 0)
        #expect(ContinuousClock.now - interrupted < .seconds(5))
        let log = worker.output.joined(separator: "\n")
        #expect(log.contains("Left the consumer group"))
        #expect(log.contains("Kafka producer flushed"))
        #expect(log.contains("trigger-worker stopped"))
        // RDKAFKA_MAX_POLL_INTERVAL_MS and RDKAFKA_SESSION_TIMEOUT_MS are consumer-only:
        // the producer is not handed them, so librdkafka does not warn about them.
        #expect(!log.contains("CONFWARN"), "start-up is quiet")

        // The group's committed offsets cover everything consumed.
        let reader = try KafkaConsumer(configuration: TestBroker.consumerConfiguration(group: group, topics: []), logger: TestBroker.logger)
        let partitions = [topics["VENDOR_EVENTS_TOPIC"]!, topics["TRIGGER_REQUESTS_TOPIC"]!].flatMap { topic in
            [0, 1].map { KafkaTopicPartition(topic: topic, partition: Int32($0)) }
        }
        let committed = try await reader.committedOffsets(for: partitions)
        for partition in partitions {
            #expect(committed[partition] == 3, "\(partition) committed at \(String(describing: committed[partition]))")
        }
    }

    @Test("validate: the examples pass; the broken fixtures fail with file and line")
    func validate() async throws {
        let good = try WorkerProcess(arguments: ["validate", "--workflows", "examples/workflows", "--orgs", "examples/orgs.yaml"], environment: [:])
        #expect(try await good.waitForExit(timeout: .seconds(30)) == 0)

        let bad = try WorkerProcess(arguments: ["validate", "--workflows", "Tests/Fixtures/broken-workflows", "--orgs", "Tests/Fixtures/orgs.yaml"], environment: [:])
        #expect(try await bad.waitForExit(timeout: .seconds(30)) == 1)
        let output = bad.output
        for file in ["unknown-key.yaml:3:", "wrong-type.yaml:2:", "unknown-op.yaml:7:", "unknown-action.yaml:7:", "unknown-event.yaml:4:", "duplicate-step.yaml:6:", "name-mismatch.yaml:2:", "syntax-error.yaml:3:"] {
            #expect(output.contains { $0.contains(file) }, "no problem reported at \(file)")
        }
        #expect(output.last == "8 problem(s) found")
    }
}

extension Process {
    /// Whether the process still runs. Foundation's `isRunning` alone is not enough on
    /// Linux: it learns of the end when a socket the child inherited closes, and a
    /// process started at the same moment may have inherited that socket too
    /// (swift-corelibs-foundation #4795); a process that ended is then a zombie that
    /// Foundation still calls running, and `waitUntilExit()` spins forever.
    var isAlive: Bool {
        guard isRunning else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(processIdentifier)/stat", encoding: .utf8) else { return false }
        // The state follows the command's closing parenthesis: "pid (comm) S …".
        guard let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first != "Z"
    }

    /// Waits until Foundation saw the process end, for at most `limit` (or until cancelled).
    func waitUntilEnded(limit: Duration) async {
        let deadline = ContinuousClock.now + limit
        while isRunning, ContinuousClock.now < deadline, !Task.isCancelled { try? await Task.sleep(for: .milliseconds(20)) }
    }
}
