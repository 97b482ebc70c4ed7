import Foundation
import Logging
import Store
import Synchronization
import Worker

/// CPU time spent by the worker, PostgreSQL and the broker over a pass, read from
/// `/proc` (Linux): how the machine's cores were split between them.
struct CPUSplit: CustomStringConvertible {
    private let workers: [Int32]
    private let start: (worker: Double, postgres: Double, broker: Double)
    private let started = ContinuousClock.now
    private var end: (worker: Double, postgres: Double, broker: Double)?
    private var wall: Double = 0

    /// - Parameter workers: the worker's processes (default: this one).
    init(workers: [Int32] = [getpid()]) {
        self.workers = workers
        start = Self.sample(workers)
    }

    /// The split since `init`.
    func since() -> CPUSplit {
        var copy = self
        copy.end = Self.sample(workers)
        copy.wall = (ContinuousClock.now - started).seconds
        return copy
    }

    /// Microseconds of all three (worker, PostgreSQL, broker) per unit of work: what a
    /// request or a run costs, less sensitive than a rate to a machine shared with others.
    func microseconds(per units: Int) -> Double {
        guard let seconds, units > 0 else { return 0 }
        return seconds * 1e6 / Double(units)
    }

    /// CPU seconds of all three together, once ended.
    private var seconds: Double? {
        end.map { $0.worker + $0.postgres + $0.broker - start.worker - start.postgres - start.broker }
    }

    var description: String {
        guard let end, let seconds else { return "-" }
        return String(
            format: "worker %.1f s, postgres %.1f s, broker %.1f s in %.1f s (%.1f cores)",
            end.worker - start.worker, end.postgres - start.postgres, end.broker - start.broker, wall, seconds / max(wall, 0.001)
        )
    }

    private static func sample(_ workers: [Int32]) -> (worker: Double, postgres: Double, broker: Double) {
        var postgres = 0.0, broker = 0.0
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap(Int32.init) ?? []
        for pid in pids {
            let name = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            if name == "postgres" { postgres += processSeconds(pid, children: true) }
            if name == "tansu" { broker += processSeconds(pid) }
        }
        return (workers.map { processSeconds($0) }.reduce(0, +), postgres, broker)
    }

    /// User and system CPU seconds of `pid` (with its reaped children's, for PostgreSQL's
    /// postmaster, whose backends come and go); 0 when it is gone.
    static func processSeconds(_ pid: Int32, children: Bool = false) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
        // After the command's closing parenthesis: state, then fields 4 on; utime and stime are 14 and 15, cutime and cstime 16 and 17.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 14 else { return 0 }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        var total = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
        if children { total += (Double(fields[13]) ?? 0) + (Double(fields[14]) ?? 0) }
        return total / ticks
    }
}

/// A `trigger-worker run` process started by the bench, its output kept.
final class BenchWorkerProcess: Sendable {
    private let process: Process
    private final class Lines: Sendable { let all = Mutex<[String]>([]) }
    private let lines = Lines()

    init(environment: [String: String]) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = ["run"]
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        try pipe.fileHandleForWriting.close()
        let output = pipe.fileHandleForReading
        let lines = self.lines
        Thread.detachNewThread {
            var pending = Data()
            while true {
                let chunk = output.availableData
                if chunk.isEmpty { return }
                pending.append(chunk)
                while let newline = pending.firstIndex(of: 0x0A) {
                    let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                    pending.removeSubrange(pending.startIndex...newline)
                    lines.all.withLock { $0.append(line) }
                }
            }
        }
    }

    var pid: Int32 { process.processIdentifier }
    var output: [String] { lines.all.withLock { $0 } }

    /// SIGTERM, then SIGKILL if it has not exited within 15 s.
    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning, Date() < deadline { usleep(50_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Waits until `workers` own the `partitions` of `topic` between them, each some
    /// (looking at their logs every 50 ms); fails after 90 s.
    static func waitForSplit(_ workers: [BenchWorkerProcess], topic: String, partitions: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(90)
        while ContinuousClock.now < deadline {
            let owned = workers.map { AssignmentLog.owned(in: $0.output).filter { $0.hasPrefix("\(topic)[") } }
            let union = owned.reduce(into: Set<String>()) { $0.formUnion($1) }
            if owned.allSatisfy({ !$0.isEmpty }), union.count == partitions, owned.map(\.count).reduce(0, +) == partitions { return }
            for worker in workers where !worker.process.isRunning {
                throw ValidationErrorText("a bench worker exited: \(worker.output.suffix(5).joined(separator: "\n"))")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ValidationErrorText("the bench workers did not split \(topic) within 90 s")
    }
}

struct ValidationErrorText: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Watches a PostgreSQL store from outside while worker processes fill it.
enum StoreWatch {
    /// Seconds from the first handled request until `count` are handled (the partitions'
    /// marks add up to it) and the outbox is empty; looks every 20 ms (cheap reads: the
    /// marks by key and the outbox's first row).
    static func timeUntilDone(url: String, count: Int, topic: String, partitions: Int32, logger: Logger) async throws -> Double {
        let store = try PostgresStore(url: url, poolSize: 1, migrate: false, logger: logger)
        let pool = Task { try await store.run() }
        defer { pool.cancel() }
        let ids = (0..<partitions).map { PartitionID(topic: topic, partition: $0) }
        var first: ContinuousClock.Instant?
        let deadline = ContinuousClock.now + .seconds(600)
        while ContinuousClock.now < deadline {
            let handled = try await store.partitionMarks(ids).values.map(\.next).reduce(0, +)
            if handled > 0, first == nil { first = .now }
            if handled >= count, try await store.pendingOutbox(limit: 1).isEmpty, let first {
                return (ContinuousClock.now - first).seconds
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ValidationErrorText("the workers did not handle \(count) requests within 600 s")
    }
}
