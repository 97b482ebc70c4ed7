import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Store
import Synchronization
import Workflows

/// The engine's service (§10): claims runs whose work is due, with a lease
/// (`STEP_LEASE`, renewed while they execute), performs their steps with bounded
/// concurrency (`ENGINE_CONCURRENCY`), and commits each round's outcomes (run
/// documents, engine states, assessments and events) in one store transaction.
///
/// It wakes when intake commits new runs (in process), when the earliest timer is
/// due, and otherwise polls: briefly on a shared store (another instance's intake
/// or a lease that ran out elsewhere), rarely on an embedded one. A run whose
/// instance died is claimed again once its lease has run out, by any instance.
public final class ExecutorService: Service, Sendable {
    private let store: any Store
    private let catalog: WorkflowCatalog
    private let engine: RunEngine
    private let outputs: Outputs
    private let clock: any WallClock
    private let lease: Duration
    private let concurrency: Int
    /// This instance's name in leases (host, process and a random part).
    public let owner: String
    private let logger: Logger
    private let doorbell = Doorbell()
    /// Runs claimed and not yet committed: run id → fence (renewed together).
    private let inFlight = Mutex<[String: Int64]>([:])
    private let paused: Bool

    private let stepsEnded = Counter(label: "trigger_worker_engine_steps_total")
    private let retries = Counter(label: "trigger_worker_engine_retries_total")
    private let leaseExpiries = Counter(label: "trigger_worker_engine_lease_expiries_total")
    private let lostClaims = Counter(label: "trigger_worker_engine_lost_claims_total")
    private let runsFinished = Counter(label: "trigger_worker_runs_finished_total")
    private let transactions = Counter(label: "trigger_worker_engine_transactions_total")
    private let runnable = Gauge(label: "trigger_worker_engine_steps", dimensions: [("state", "runnable")])
    private let running = Gauge(label: "trigger_worker_engine_steps", dimensions: [("state", "running")])
    private let waiting = Gauge(label: "trigger_worker_engine_steps", dimensions: [("state", "waiting")])
    private let oldestRunnable = Gauge(label: "trigger_worker_engine_oldest_runnable_seconds")

    /// How long an idle executor waits before looking at the store anyway.
    var idleInterval: Duration { store.isShared ? .seconds(1) : .seconds(30) }

    /// - Parameter paused: claims nothing (the benchmark measures intake alone with it).
    public init(configuration: WorkerConfiguration, catalog: WorkflowCatalog, store: any Store, clock: any WallClock = SystemWallClock(), engine: RunEngine? = nil, paused: Bool = false, logger: Logger) {
        self.store = store
        self.catalog = catalog
        self.engine = engine ?? RunEngine(maxEffectBytes: configuration.maxMessageBytes)
        self.outputs = Outputs(configuration: configuration)
        self.clock = clock
        self.lease = configuration.stepLease
        self.concurrency = configuration.engineConcurrency
        self.paused = paused
        self.logger = logger
        let host = ProcessInfo.processInfo.hostName.utf8.prefix(64)
        self.owner = "\(String(decoding: host, as: UTF8.self))/\(getpid())/\(Identifier.hex((0..<4).map { _ in UInt8.random(in: 0...255) }))"
    }

    /// Tells the executor that runs were started.
    public func notify() { doorbell.ring() }

    public func run() async throws {
        guard !paused else {
            logger.notice("The engine is paused: runs are created, and no step executes")
            try? await gracefulShutdown()
            return
        }
        try await store.waitUntilReady()
        if !store.isShared {
            // One instance per embedded store: what an earlier process held (it was
            // killed mid-round) is this one's at once, not after STEP_LEASE.
            let released = try await store.releaseLeases()
            if released > 0 { logger.notice("Released the leases an earlier process held", metadata: ["count": "\(released)"]) }
        }
        let renewal = Task { await self.renewLeases() }
        defer { renewal.cancel() }
        var backoff = Duration.milliseconds(200)
        var statsDue = ContinuousClock.now
        // A round in progress finishes at a graceful shutdown (its outcomes are written,
        // its leases released); only cancellation cuts it short.
        try await withGracefulShutdownHandler {
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                do {
                    if statsDue <= .now {
                        statsDue = .now + .seconds(5)
                        try await self.recordQueue()
                    }
                    let claimed = try await self.round()
                    backoff = .milliseconds(200)
                    if claimed == 0 { await self.idle() }
                } catch is CancellationError {
                    return
                } catch {
                    self.logger.warning("The engine cannot reach the store; retrying", metadata: ["error": "\(error)", "retry_in": "\(backoff)"])
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, .seconds(10))
                }
            }
        } onGracefulShutdown: {
            self.doorbell.ring()
        }
    }

    /// Claims what is due, performs it and commits it: one round.
    /// - Returns: how many runs were claimed.
    @discardableResult
    public func round() async throws -> Int {
        let now = clock.now()
        let tasks = try await store.claimTasks(owner: owner, now: now, leaseUntil: now + lease.wholeMilliseconds, limit: concurrency)
        guard !tasks.isEmpty else { return 0 }
        let expired = tasks.filter(\.tookOverExpiredLease)
        if !expired.isEmpty {
            leaseExpiries.increment(by: Int64(expired.count))
            logger.warning("Took over runs whose lease ran out (their instance stopped or stalled)", metadata: ["count": "\(expired.count)", "runs": "\(expired.prefix(5).map(\.runID).joined(separator: ","))"])
        }
        inFlight.withLock { inFlight in for task in tasks { inFlight[task.runID] = task.fence } }
        defer { inFlight.withLock { inFlight in for task in tasks { inFlight[task.runID] = nil } } }

        let outcomes = await withTaskGroup(of: (TaskOutcome, RunAdvance)?.self) { group in
            for task in tasks { group.addTask { await self.perform(task, now: now) } }
            var outcomes: [(TaskOutcome, RunAdvance)] = []
            for await outcome in group { if let outcome { outcomes.append(outcome) } }
            return outcomes
        }
        let written = try await store.commitTasks(outcomes.map(\.0), now: clock.now())
        transactions.increment()
        let lost = outcomes.count - written.count
        if lost > 0 {
            lostClaims.increment(by: Int64(lost))
            logger.warning("Outcomes not written: their lease ran out and another instance claimed the runs", metadata: ["count": "\(lost)"])
        }
        var ended = 0, retried = 0, finished = 0
        for (outcome, advance) in outcomes where written.contains(outcome.runID) {
            ended += advance.stepsEnded
            retried += advance.retries
            for (action, milliseconds) in advance.performed {
                Timer(label: "trigger_worker_engine_step_seconds", dimensions: [("action", action.rawValue)]).recordMilliseconds(milliseconds)
            }
            if advance.finished {
                finished += 1
                logger.info("Run finished", metadata: [LogKey.runID: "\(outcome.runID)", "status": "\(outcome.status)"])
            }
        }
        stepsEnded.increment(by: Int64(ended))
        retries.increment(by: Int64(retried))
        runsFinished.increment(by: Int64(finished))
        return tasks.count
    }

    /// One run's claim: its steps that can proceed now, as an outcome to commit.
    private func perform(_ task: EngineTask, now: Timestamp) async -> (TaskOutcome, RunAdvance)? {
        let state: RunState
        do {
            state = try RunState(decoding: task.state)
        } catch {
            // Never skipped silently, never dropped: the claim is left to run out, and the
            // run is looked at again after STEP_LEASE (by a build that can read it, say).
            logger.error("A run's engine state cannot be read; it is kept and tried again after STEP_LEASE", metadata: [LogKey.runID: "\(task.runID)", "error": "\(error)"])
            return nil
        }
        let definition = catalog.workflow(orgID: state.orgID, name: state.workflowName)
        let advance = await engine.advance(state, definition: definition, now: now)
        let outbox = advance.events.map { event in
            outputs.runEvent(event, orgID: state.orgID, runID: state.runID, headers: state.headers, source: task.source, now: now)
        }
        let assessments = advance.assessments.map { assessment in
            AssessmentRecord(id: assessment.id, orgID: state.orgID, vendorID: assessment.vendorID, createdAt: now / 1000, document: assessment.document.canonicalBytes)
        }
        let outcome = TaskOutcome(
            runID: task.runID, fence: task.fence, status: advance.state.status.rawValue, finishedAt: advance.state.completedAt,
            document: advance.document, next: advance.dueAt.map { (advance.state.encoded, $0) }, assessments: assessments, outbox: outbox
        )
        return (outcome, advance)
    }

    /// Waits for intake's signal, the earliest timer, or the idle interval.
    private func idle() async {
        var wait = idleInterval
        if let due = try? await store.nextTaskDue() {
            let untilDue = Duration.milliseconds(max(0, due - clock.now()))
            wait = min(wait, max(untilDue, .milliseconds(5)))
        }
        await doorbell.wait(timeout: wait)
    }

    /// Extends the leases of the runs in flight every third of `STEP_LEASE`.
    private func renewLeases() async {
        while !Task.isCancelled {
            guard (try? await Task.sleep(for: lease / 3)) != nil else { return }
            let held = inFlight.withLock { $0 }
            guard !held.isEmpty else { continue }
            do {
                let renewed = try await store.renewLeases(owner: owner, tasks: held, until: clock.now() + lease.wholeMilliseconds)
                if renewed.count < held.count {
                    logger.warning("Some leases could not be renewed: another instance claimed those runs", metadata: ["count": "\(held.count - renewed.count)"])
                }
            } catch {
                logger.warning("Leases could not be renewed", metadata: ["error": "\(error)"])
            }
        }
    }

    private func recordQueue() async throws {
        let stats = try await store.engineQueue(now: clock.now())
        runnable.record(stats.runnable)
        running.record(stats.running)
        waiting.record(stats.waiting)
        oldestRunnable.record(Double(stats.oldestRunnableAge) / 1000)
    }
}
