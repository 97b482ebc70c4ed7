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
    /// Runs finished by the engine, by terminal status (`trigger_worker_runs_finished_total{status}`).
    private let runsFinished = Dictionary(uniqueKeysWithValues: [RunStatus.completed, .failed, .canceled].map {
        ($0, Counter(label: "trigger_worker_runs_finished_total", dimensions: [("status", $0.rawValue)]))
    })
    /// The engine's store transactions (a histogram).
    private let engineTransactions = Timer(label: "trigger_worker_store_transaction_seconds", dimensions: [("kind", "engine")])
    private let transactions = Counter(label: "trigger_worker_engine_transactions_total")
    private let stepsPerTransaction = Recorder(label: "trigger_worker_engine_steps_per_transaction")
    private let runnable = Gauge(label: "trigger_worker_engine_steps", dimensions: [("state", "runnable")])
    private let running = Gauge(label: "trigger_worker_engine_steps", dimensions: [("state", "running")])
    private let waiting = Gauge(label: "trigger_worker_engine_steps", dimensions: [("state", "waiting")])
    private let oldestRunnable = Gauge(label: "trigger_worker_engine_oldest_runnable_seconds")
    /// Step latency by action, made once (not per step performed).
    private let stepTimers = Dictionary(uniqueKeysWithValues: WorkflowAction.allCases.map {
        ($0, Timer(label: "trigger_worker_engine_step_seconds", dimensions: [("action", $0.rawValue)]))
    })

    /// What the engine committed so far (for the benchmark and tests).
    public struct Statistics: Sendable, Hashable {
        /// Store transactions that wrote claims' outcomes.
        public var transactions = 0
        /// Claims' outcomes written (runs and items).
        public var outcomes = 0
        /// Steps performed in them.
        public var steps = 0
        /// Rests that held a due claim back, yielding to intake's backlog.
        public var rests = 0
    }

    private let statistics = Mutex(Statistics())

    /// What the engine committed so far.
    public var committed: Statistics { statistics.withLock { $0 } }

    /// How long an idle executor waits before looking at the store anyway.
    let idleInterval: Duration

    /// Told after each commit that wrote events: the outbox has rows.
    private let outboxReady: @Sendable () -> Void

    /// - Parameters:
    ///   - paused: claims nothing (the benchmark measures intake alone with it).
    ///   - maxBatchSize: the consumer's largest batch (a batch of 80% of it means a backlog).
    ///   - yieldFactor: the rest after a round while intake has a backlog, in rounds
    ///     (by default 3 on a shared store, 0.5 on an embedded one).
    ///   - longestRest: the longest such rest.
    ///   - idleInterval: how long an idle executor waits before looking at the store anyway
    ///     (by default 1 s on a shared store, 30 s on an embedded one).
    ///   - queueRecheck: how long a claimed run may wait for a slot unchecked (tests: zero,
    ///     every run is checked).
    ///   - outboxReady: called after each commit that wrote events (the publisher's doorbell).
    public init(
        configuration: WorkerConfiguration, catalog: WorkflowCatalog, store: any Store, clock: any WallClock = SystemWallClock(), engine: RunEngine? = nil,
        paused: Bool = false, maxBatchSize: Int = 500, yieldFactor: Double? = nil,
        longestRest: Duration = ExecutorService.defaultLongestRest, idleInterval: Duration? = nil,
        queueRecheck: Duration = ExecutorService.defaultQueueRecheck, logger: Logger,
        outboxReady: @escaping @Sendable () -> Void = {}
    ) {
        self.yieldFactor = yieldFactor ?? Self.defaultYieldFactor(for: store)
        self.queueRecheck = queueRecheck
        self.longestRest = longestRest
        self.idleInterval = idleInterval ?? (store.isShared ? .seconds(1) : .seconds(30))
        self.backlogBatch = max(1, maxBatchSize * 4 / 5)
        self.outboxReady = outboxReady
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

    /// Until when (uptime, nanoseconds) intake counts as busy.
    private let intakeBusyUntil = Atomic<UInt64>(0)

    /// A batch of at least this many messages means intake has a backlog: the consumer's
    /// poll came back (nearly) full. Steady traffic with no lag gives smaller batches.
    private let backlogBatch: Int

    /// How long after such a batch intake still counts as busy.
    static let busyForNanoseconds: UInt64 = 500_000_000

    /// Tells the executor that intake wrote a batch: runs were started (it looks for
    /// them), and a large batch means intake has a backlog.
    public func intakeWrote(messages: Int, startedRuns: Bool) {
        if messages >= backlogBatch {
            intakeBusyUntil.store(DispatchTime.now().uptimeNanoseconds + Self.busyForNanoseconds, ordering: .relaxed)
        }
        if startedRuns { doorbell.ring() }
    }

    /// Makes intake count as busy until the process ends (tests: a backlog that needs no
    /// batches to keep it up).
    func holdIntakeBusy() { intakeBusyUntil.store(.max, ordering: .relaxed) }

    /// Whether intake wrote a large batch lately: the engine then yields the store to it.
    private var intakeBusy: Bool { DispatchTime.now().uptimeNanoseconds < intakeBusyUntil.load(ordering: .relaxed) }

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
        let stats = Task { await self.recordQueueEvery(.seconds(5)) }
        defer { stats.cancel() }
        // Runs in progress finish at a graceful shutdown (their outcomes are written,
        // their leases released); only cancellation cuts them short.
        await withGracefulShutdownHandler {
            await self.schedule()
        } onGracefulShutdown: {
            self.doorbell.ring()
        }
    }

    /// What the scheduler's children report.
    private enum Event: Sendable {
        /// A run's claim was performed (`nil`: nothing to commit: its state could not be
        /// read, or the claim was lost while it waited for a slot).
        case performed(runID: String, fence: Int64, Performed?)
        /// A claim returned the runs it claimed (`limit`: the most it asked for).
        case claimed([EngineTask], limit: Int)
        /// A claim failed.
        case claimFailed(any Error)
        /// Woken: intake started runs, a timer is due, or the idle interval passed.
        case woken
        /// A claim that failed is tried again.
        case retry
        /// Time to commit what was performed.
        case flush
        /// A commit ended; `wroteTimer`: it made a run due again before the idle interval
        /// ends (a delay, a deadline, a retry's backoff).
        case committed(wroteTimer: Bool)
        /// The rest (yielding to intake) or round hold set to end at `until` ended.
        case rested(until: ContinuousClock.Instant)
    }

    /// Whether a claim runs beside the loop, as a child, one at a time: the loop goes on
    /// starting queued runs and collecting what was performed (and the commit that ended)
    /// while the store claims. On an embedded store (SQLite, one writer: a claim waits
    /// behind the commit before it), measured with `bench --engine-only`, SQLite, 30,000
    /// runs, interleaved passes: the engine alone completed 6,612-7,541 runs/s when the loop
    /// awaited each claim, 6,909-7,960 with claims beside it. Not on a shared store: on
    /// PostgreSQL, 100,000 runs, 4,545-4,959 runs/s awaited and 2,796-4,957 beside it (two
    /// passes of four under 3,200), a slowdown not understood yet.
    private var claimsBeside: Bool { !store.isShared }

    /// How many runs are claimed at most, per slot: claims run ahead of the slots, so
    /// that one claim (a store transaction) feeds many slots and a slot that frees finds
    /// its next run without a round trip. Measured (`bench --engine-only`, 100,000 runs
    /// of three in-store steps on SQLite): runs completed ÷ accepted went from 0.40 with
    /// claims of at most `ENGINE_CONCURRENCY` to 0.47 with four times that.
    static let claimAhead = 4

    /// How long the engine rests after each round while intake has a backlog, in rounds
    /// (up to ``longestRest``), on a shared store: intake keeps the server, the store and
    /// the CPU to itself for three quarters of the time. Measured (`bench --engine-only`,
    /// 30,000 runs, two cores), intake with the engine on ÷ paused on PostgreSQL: 0.67-0.75
    /// when the engine only claimed no more than its slots and not while committing,
    /// 0.62-0.69 in rounds without rests, 0.71-0.87 with rests of 2, 0.83-1.05 with 3.
    /// Rests are capped at a second: capped at 2 s they slowed a loaded CI's crash test
    /// past its waits; at half a second, 100,000 runs on PostgreSQL kept intake at 0.73
    /// (0.77-0.98 capped at a second). It leaves intake little room there all the same:
    /// 0.68-0.92 in today's 60,000 and 100,000-run passes with rests of 3.
    public static let sharedStoreYieldFactor = 3.0
    /// The rest on an embedded store, where intake and the engine share the process's
    /// writer and CPU and no server: intake keeps them to itself a third of the time.
    /// Measured (`bench --engine-only`, 100,000 runs of the demo flow on SQLite, two passes
    /// each of 3, 0.5 and 0.25), intake with the engine on ÷ paused and runs completed ÷
    /// accepted: 0.88-0.89 and 0.48-0.49 with rests of 3; 0.85-0.89 and 0.50-0.52 with 0.5;
    /// 0.82-0.84 and 0.52-0.54 with 0.25. The engine's targets (issue 10's expectations:
    /// intake ≥ 0.8 × paused, runs completed ≥ 0.5 × accepted) both held with 0.5 and
    /// 0.25; 0.5 leaves intake more room. In five `make bench` runs with it: 0.84-0.94 and
    /// 0.51-0.53, so the runs' margin is thin.
    public static let embeddedStoreYieldFactor = 0.5
    /// The rest for `store`: shared or embedded (see above).
    public static func defaultYieldFactor(for store: any Store) -> Double {
        store.isShared ? sharedStoreYieldFactor : embeddedStoreYieldFactor
    }
    /// ``defaultYieldFactor(for:)`` unless a test chose another.
    let yieldFactor: Double
    /// The longest a slow step holds its round open (keeps the next claim back).
    static let longestRoundHold = Duration.seconds(1)
    /// The longest rest between two rounds.
    public static let defaultLongestRest = Duration.seconds(1)
    /// ``defaultLongestRest`` unless a test chose another.
    let longestRest: Duration

    /// Claims runs ahead of free slots (at most `ENGINE_CONCURRENCY` × ``claimAhead``
    /// held), performs at most `ENGINE_CONCURRENCY` at once, each in a child task, and
    /// commits finished claims together, a few milliseconds after the first of them
    /// finished, one commit at a time beside the claiming and performing: a slow step
    /// (a webhook that takes its 10 s) holds its own slot, not the others' commits.
    ///
    /// On an embedded store a claim is a child too, one at a time (``claimsBeside``).
    private func schedule() async {
        await withTaskGroup(of: Event.self) { group in
            var running = 0
            var queued: [(task: EngineTask, claimed: ContinuousClock.Instant)] = []  // claimed, waiting for a slot (oldest first)
            var next = 0  // the first of `queued` not started
            var waiting = false  // a child waits for the doorbell
            var retrying = false  // a child waits to claim again after a failed claim
            var flushArmed = false
            var committing = false
            var claiming = false  // a claim (a store transaction) is in flight
            var claimDue = true
            var pending: [Performed] = []
            var backoff = Duration.milliseconds(200)
            // Rounds (yielding to intake's backlog): when the last claim was made, until when
            // the engine rests before the next.
            var claimedAt = ContinuousClock.now
            var resumeAt = ContinuousClock.now
            var restTimer: ContinuousClock.Instant?  // the earliest rest timer set
            var countedRest: ContinuousClock.Instant?  // the last rest counted in the statistics
            var round: Set<String> = []  // the last claim's runs not performed yet
            /// Commits what was performed, in a child task (one commit at a time).
            func commitPending() {
                let batch = pending
                pending = []
                committing = true
                let now = clock.now(), idle = idleInterval.wholeMilliseconds
                let wroteTimer = batch.contains { ($0.outcome.next?.dueAt).map { $0 > now && $0 - now < idle } ?? false }
                group.addTask { await self.commit(batch); return .committed(wroteTimer: wroteTimer) }
            }
            /// Claims again: at once, unless `staleIdleWait` and an idle wait is running, which
            /// then is rung and claims when it ends (one claim, not two).
            func claimAgain(staleIdleWait: Bool) {
                if staleIdleWait, waiting { doorbell.ring() } else { claimDue = true }
            }
            /// Queues what a claim returned.
            func claimed(_ tasks: [EngineTask], limit: Int) {
                claiming = false
                backoff = .milliseconds(200)
                // A full claim may have left more that is due: claim again when runs are
                // performed (as when asked to while this claim was in flight).
                if tasks.count == limit { claimDue = true }
                if next > 0 { queued.removeFirst(next); next = 0 }
                round = Set(tasks.map(\.runID))
                let now = ContinuousClock.now
                queued.append(contentsOf: tasks.map { ($0, now) })
            }
            func claimFailed(_ error: any Error) {
                claiming = false
                logger.warning("The engine cannot reach the store; retrying", metadata: [LogKey.error: "\(error)", "retry_in": "\(backoff)"])
                claimDue = false
                // Its own timer: an idle wait already running may last the idle interval.
                // The backoff grows with each retry, not with each claim that fails.
                if !retrying {
                    let wait = backoff
                    backoff = min(backoff * 2, .seconds(10))
                    retrying = true
                    group.addTask {
                        try? await cancelWhenGracefulShutdown { try await Task.sleep(for: wait) }
                        return .retry
                    }
                }
            }
            let most = concurrency * Self.claimAhead
            while true {
                let stopping = Task.isCancelled || Task.isShuttingDownGracefully
                let held = running + queued.count - next
                // Intake first (§10: intake never waits for execution). While it has a backlog
                // the engine works in rounds, a claim performed and committed, each followed by
                // a rest of ``yieldFactor`` times the round; then it catches up.
                let rounds = intakeBusy
                let resting = rounds && ContinuousClock.now < resumeAt
                // A round is open until its runs are performed (a slow step holds it for
                // ``longestRoundHold`` at most) and committed.
                let roundHeldUntil = claimedAt + Self.longestRoundHold
                let roundHeld = rounds && !round.isEmpty && ContinuousClock.now < roundHeldUntil
                let roundOpen = roundHeld || flushArmed || !pending.isEmpty
                if resting || roundHeld, claimDue, !stopping {
                    // Looked at again when the rest ends, or when a slow step stops holding the
                    // round (a round committed early ends at its rest, not at the hold's end).
                    let until = resting ? resumeAt : roundHeldUntil
                    if restTimer.map({ until < $0 }) ?? true {
                        restTimer = until
                        // Ended by a graceful shutdown too: a rest holds nothing to finish.
                        group.addTask {
                            try? await cancelWhenGracefulShutdown { try await Task.sleep(until: until) }
                            return .rested(until: until)
                        }
                    }
                }
                // With a backlog, claims are made in halves (one claim for many runs, not one per run).
                let mayClaim = !stopping && !claiming && claimDue && held <= most / 2 && !(rounds && (committing || roundOpen))
                if mayClaim, resting, countedRest != resumeAt {
                    // A rest that holds a claim back (counted once).
                    countedRest = resumeAt
                    statistics.withLock { $0.rests += 1 }
                }
                if mayClaim, !resting {
                    claiming = true
                    claimDue = false
                    claimedAt = ContinuousClock.now
                    let limit = most - held
                    if claimsBeside {
                        group.addTask {
                            do { return .claimed(try await self.claim(limit: limit), limit: limit) } catch { return .claimFailed(error) }
                        }
                    } else {
                        do { claimed(try await claim(limit: limit), limit: limit) } catch { claimFailed(error) }
                    }
                }
                // Stopping: claimed runs not started yet are handed back at once (their leases
                // end now, for any instance or the next start); only those executing finish.
                if stopping, next < queued.count {
                    let unstarted = Array(queued[next...].map(\.task))
                    queued.removeAll()
                    next = 0
                    await release(unstarted)
                }
                while running < concurrency, next < queued.count {
                    let (task, claimed) = queued[next]
                    next += 1
                    running += 1
                    // A run that waited for a slot is checked first: cancelled or claimed
                    // elsewhere meanwhile, it is not performed (no effect after its cancel).
                    let verify = ContinuousClock.now - claimed >= queueRecheck
                    // Below intake's tasks: a backlog of runs yields the CPU to new requests.
                    group.addTask(priority: .low) {
                        .performed(runID: task.runID, fence: task.fence, await self.performIfHeld(task, verify: verify))
                    }
                }
                // Not while a failed claim waits for its retry: a store that answers reads and
                // refuses claims would otherwise be claimed from every few milliseconds.
                if !stopping, !claimDue, !waiting, !retrying, !claiming {
                    waiting = true
                    group.addTask { await self.idle(); return .woken }
                }
                if stopping, running == 0, next == queued.count, !committing, !claiming {
                    if pending.isEmpty { break }
                    if !flushArmed {
                        await commit(pending)
                        break
                    }
                }
                guard let event = await group.next() else { break }
                switch event {
                case .performed(let runID, let fence, let result):
                    running -= 1
                    round.remove(runID)
                    if let result {
                        pending.append(result)
                    } else {
                        forget([(runID, fence)])
                    }
                    if !flushArmed, !committing, !pending.isEmpty {
                        flushArmed = true
                        group.addTask { try? await Task.sleep(for: Self.commitDelay); return .flush }
                    }
                case .flush:
                    flushArmed = false
                    commitPending()
                case .committed(let wroteTimer):
                    committing = false
                    // What was just committed may be due again at once (a run handed back after
                    // its step budget, a retry with no wait). An idle wait begun before this
                    // commit made a run due soon waits for the store's next due time as it was
                    // then (a claim's lease, or the idle interval: 30 s on SQLite); rung, it
                    // ends, and the next one reads it again.
                    claimAgain(staleIdleWait: wroteTimer)
                    if intakeBusy, !claiming {
                        // A rest in proportion to the round (from its claim), up to ``longestRest``;
                        // with a claim in flight (a slow step's commit), the next round's commit sets it.
                        resumeAt = ContinuousClock.now + min((ContinuousClock.now - claimedAt) * yieldFactor, longestRest)
                    }
                    // What was performed during the commit goes next, at once (it already waited).
                    if !pending.isEmpty { commitPending() }
                case .claimed(let tasks, let limit):
                    claimed(tasks, limit: limit)
                case .claimFailed(let error):
                    claimFailed(error)
                case .woken:
                    waiting = false
                    claimDue = true
                case .retry:
                    retrying = false
                    // An idle wait that began while the store failed waits the idle interval.
                    claimAgain(staleIdleWait: true)
                case .rested(let until):
                    if let timer = restTimer, timer == until || ContinuousClock.now >= timer { restTimer = nil }
                }
            }
            group.cancelAll()
        }
    }

    /// How long a claimed run may wait for a slot before its claim is checked in the
    /// store before it is performed.
    public static let defaultQueueRecheck = Duration.seconds(1)
    /// ``defaultQueueRecheck`` unless a test chose another.
    let queueRecheck: Duration

    /// Forgets claims this instance no longer holds, each only if it is still the claim
    /// at that fence (the run may have been claimed again since, by this instance).
    /// - Returns: how many were still held (not committed or handed back meanwhile).
    @discardableResult
    private func forget(_ claims: [(runID: String, fence: Int64)]) -> Int {
        inFlight.withLock { inFlight in
            var forgotten = 0
            for (runID, fence) in claims where inFlight[runID] == fence {
                inFlight[runID] = nil
                forgotten += 1
            }
            return forgotten
        }
    }

    /// Hands claims back: their leases end now (where this instance still holds them).
    private func release(_ tasks: [EngineTask], why: String = "at shutdown") async {
        guard !tasks.isEmpty else { return }
        forget(tasks.map { ($0.runID, $0.fence) })
        do {
            _ = try await store.renewLeases(owner: owner, tasks: Dictionary(tasks.map { ($0.runID, $0.fence) }, uniquingKeysWith: max), until: EngineTask.handedBack)
            logger.info("Handed back runs claimed and not started, \(why)", metadata: [LogKey.count: "\(tasks.count)"])
        } catch {
            logger.warning("Runs claimed and not started could not be handed back; they are taken over after STEP_LEASE", metadata: [LogKey.count: "\(tasks.count)", LogKey.error: "\(error)"])
        }
    }

    /// Performs a claim unless it was lost: its lease not renewed (another instance has
    /// the run), or, when `verify`, the store no longer holds it under this claim (the
    /// run was cancelled, or its lease ran out while it waited for a slot).
    private func performIfHeld(_ task: EngineTask, verify: Bool) async -> Performed? {
        guard inFlight.withLock({ $0[task.runID] == task.fence }) else { return nil }
        if verify {
            let current: EngineTask?
            do {
                current = try await store.task(runID: task.runID)
            } catch {
                // Not known to be lost: handed back for a next claim, not left to its lease.
                logger.warning("A claimed run could not be checked before it was performed; handed back", metadata: [LogKey.runID: "\(task.runID)", LogKey.error: "\(error)"])
                await release([task], why: "unchecked")
                doorbell.ring()
                return nil
            }
            guard let current, current.fence == task.fence, current.leaseOwner == owner else {
                logger.debug("A claimed run changed while it waited for a slot; not performed", metadata: [LogKey.runID: "\(task.runID)"])
                return nil
            }
        }
        return await perform(task, now: clock.now())
    }

    /// When a run whose state cannot be read is looked at again (milliseconds).
    static let unreadableRetry: Int64 = 3_600_000

    /// How long finished claims wait for others to commit with them.
    static let commitDelay = Duration.milliseconds(20)

    /// Claims up to `limit` due runs under this instance's lease.
    private func claim(limit: Int) async throws -> [EngineTask] {
        let now = clock.now()
        let tasks = try await store.claimTasks(owner: owner, now: now, leaseUntil: now + lease.wholeMilliseconds, limit: limit)
        let expired = tasks.filter(\.tookOverExpiredLease)
        if !expired.isEmpty {
            leaseExpiries.increment(by: Int64(expired.count))
            logger.warning("Took over runs whose lease ran out (their instance stopped or stalled)", metadata: [LogKey.count: "\(expired.count)", "runs": "\(expired.prefix(5).map(\.runID).joined(separator: ","))"])
        }
        inFlight.withLock { inFlight in for task in tasks { inFlight[task.runID] = task.fence } }
        return tasks
    }

    /// Claims what is due, performs it all and commits it: one round (tests drive the
    /// engine with it, moving their clock between rounds).
    /// - Returns: how many runs were claimed.
    @discardableResult
    public func round() async throws -> Int {
        let tasks = try await claim(limit: concurrency)
        guard !tasks.isEmpty else { return 0 }
        let now = clock.now()
        let outcomes = await withTaskGroup(of: Performed?.self) { group in
            for task in tasks { group.addTask { await self.perform(task, now: now) } }
            var outcomes: [Performed] = []
            for await outcome in group { if let outcome { outcomes.append(outcome) } }
            return outcomes
        }
        try await commit(outcomes, attempts: 1)
        return tasks.count
    }

    /// Commits performed claims in one transaction, retrying a store that does not
    /// answer while their leases last; records what was written.
    private func commit(_ outcomes: [Performed]) async {
        guard !outcomes.isEmpty else { return }
        do {
            try await commit(outcomes, attempts: 4)
        } catch {
            // Not written: the leases run out and the runs are performed again (effects
            // outside the store carry their delivery id; those inside were not applied).
            logger.error("The engine could not commit what it performed; those runs are performed again after STEP_LEASE", metadata: [LogKey.count: "\(outcomes.count)", LogKey.error: "\(error)"])
            forget(outcomes.map { ($0.outcome.runID, $0.outcome.fence) })
        }
    }

    private func commit(_ outcomes: [Performed], attempts: Int) async throws {
        defer { forget(outcomes.map { ($0.outcome.runID, $0.outcome.fence) }) }
        for chunk in Self.chunks(outcomes) {
            do {
                try await commitChunk(chunk, attempts: attempts)
            } catch where chunk.count > 1 {
                // One run's outcome must not sink the others': each on its own.
                for single in chunk { try? await commitChunk([single], attempts: 1) }
            }
        }
    }

    /// The most runs, and about the most bytes, one engine transaction writes.
    static let maxRunsPerCommit = 256
    static let maxBytesPerCommit = 64 << 20

    static func chunks(_ outcomes: [Performed]) -> [ArraySlice<Performed>] {
        var chunks: [ArraySlice<Performed>] = []
        var start = outcomes.startIndex, bytes = 0
        for index in outcomes.indices {
            let size = outcomes[index].bytes
            if index > start, index - start == maxRunsPerCommit || bytes + size > maxBytesPerCommit {
                chunks.append(outcomes[start..<index])
                start = index
                bytes = 0
            }
            bytes += size
        }
        if start < outcomes.endIndex { chunks.append(outcomes[start...]) }
        return chunks
    }

    private func commitChunk(_ outcomes: ArraySlice<Performed>, attempts: Int) async throws {
        var attempt = 1
        var written: Set<String>
        while true {
            do {
                let started = ContinuousClock.now
                written = try await store.commitTasks(outcomes.map(\.outcome), now: clock.now())
                engineTransactions.record(ContinuousClock.now - started)
                break
            } catch let error as StoreError where error.code == .unavailable && attempt < attempts {
                try await Task.sleep(for: .milliseconds(250 << attempt))
                attempt += 1
            }
        }
        transactions.increment()
        if outcomes.contains(where: { written.contains($0.outcome.runID) && !$0.outcome.outbox.isEmpty }) { outboxReady() }
        let steps = outcomes.reduce(0) { $0 + $1.timings.count }
        stepsPerTransaction.record(steps)
        statistics.withLock { statistics in
            statistics.transactions += 1
            statistics.outcomes += written.count
            statistics.steps += steps
        }
        let lost = outcomes.count - written.count
        if lost > 0 {
            lostClaims.increment(by: Int64(lost))
            logger.warning("Outcomes not written: their lease ran out and another instance claimed the runs", metadata: [LogKey.count: "\(lost)"])
        }
        var ended = 0, retried = 0, finished = 0
        var finishedBy: [RunStatus: Int] = [:]
        for performed in outcomes where written.contains(performed.outcome.runID) && (performed.outcome.document != nil || performed.outcome.parentID != nil) {
            ended += performed.stepsEnded
            retried += performed.retries
            for (action, milliseconds) in performed.timings {
                stepTimers[action]?.recordMilliseconds(milliseconds)
            }
            if let status = performed.runFinished {
                finished += 1
                finishedBy[status, default: 0] += 1
                // Per run at debug (thousands a second under load); each commit's tally below.
                logger.debug("Run finished", metadata: [LogKey.runID: "\(performed.outcome.runID)", "status": "\(status.rawValue)"])
            }
        }
        stepsEnded.increment(by: Int64(ended))
        retries.increment(by: Int64(retried))
        for (status, count) in finishedBy { runsFinished[status]?.increment(by: Int64(count)) }
        logger.debug("Engine commit", metadata: [LogKey.count: "\(written.count)", "steps_ended": "\(ended)", "runs_finished": "\(finished)", "retries": "\(retried)"])
    }

    /// One run's claim: its steps that can proceed now, as an outcome to commit.
    private func perform(_ task: EngineTask, now: Timestamp) async -> Performed? {
        let state: RunState
        do {
            state = try RunState(decoding: task.state)
        } catch {
            // Never dropped, never spun on: the run is kept as it is and looked at again in
            // an hour (by a build that can read it, say); the error says which and why.
            logger.error("A run's engine state cannot be read; it is kept and looked at again in an hour", metadata: [LogKey.runID: "\(task.runID)", LogKey.error: "\(error)"])
            return Performed(TaskOutcome(runID: task.runID, fence: task.fence, status: "", finishedAt: nil, document: nil, next: (task.state, now + Self.unreadableRetry), assessments: [], outbox: []))
        }
        let advance = await engine.advance(state, now: now)
        let outbox = outputs.runEvents(advance.events, orgID: state.orgID, runID: state.runID, headers: state.headers, source: task.source, now: now)
        let assessments = advance.assessments.map { assessment in
            AssessmentRecord(id: assessment.id, orgID: state.orgID, vendorID: assessment.vendorID, createdAt: now / 1000, document: assessment.document.canonicalBytes)
        }
        var outcome = TaskOutcome(
            runID: task.runID, fence: task.fence, status: advance.state.status.rawValue, finishedAt: advance.state.completedAt,
            document: state.item == nil ? advance.document : nil, next: advance.dueAt.map { (advance.state.encoded, $0) }, assessments: assessments, outbox: outbox,
            subscription: advance.subscription.map {
                EventSubscription(orgID: state.orgID, eventType: $0.eventType, vendorID: $0.vendorID, seenSequence: $0.seenSequence)
            }
        )
        // A for_each's new items: tasks of this run, held back until its concurrency lets them start.
        let slots = advance.state.steps.indices.contains(advance.state.cursor)
            ? Int(advance.state.steps[advance.state.cursor].progress?["concurrency"]?.intValue ?? 10) : 10
        outcome.spawn = advance.spawned.compactMap { item in
            guard let info = item.item else { return nil }
            return EngineTask(
                runID: info.taskID(runID: state.runID), orgID: state.orgID, dueAt: EngineTask.dormant, state: item.encoded,
                source: task.source, parentID: task.runID, slots: slots
            )
        }
        // Child runs: their records and tasks (due now), and their Started after this run's events.
        for child in advance.children {
            let childState = child.state
            outcome.children.append((
                RunRecord(id: childState.runID, orgID: childState.orgID, workflowName: childState.workflowName, status: RunStatus.started.rawValue, startedAt: childState.startedAt, document: child.document),
                EngineTask(runID: childState.runID, orgID: childState.orgID, dueAt: now, state: childState.encoded, source: task.source, parentID: task.runID)
            ))
            outcome.outbox.append(outputs.runEvent(
                RunEvent(type: RunStatus.started.eventType, idParts: [childState.runID, RunStatus.started.eventType], data: child.document),
                orgID: childState.orgID, runID: childState.runID, headers: childState.headers, source: task.source, now: now
            ))
        }
        // A child run tells the run that started it when it ends (it wakes it).
        if state.item == nil, let parent = task.parentID, advance.finished { outcome.endedChildOf = parent }
        if let item = state.item {
            outcome.parentID = task.parentID ?? state.runID
            if let result = advance.itemResult {
                outcome.itemResult = ItemResult(
                    runID: state.runID, stepID: item.stepID, key: item.key, status: result.status,
                    response: result.response?.canonicalBytes, finishedAt: now / 1000
                )
            }
        }
        return Performed(outcome, advance)
    }

    /// Waits for intake's signal, the earliest timer, or the idle interval. Runs due now
    /// that the last claim did not get (another instance holds them, on a shared store)
    /// are looked at again after a short pause, not in a loop.
    private func idle() async {
        var wait = idleInterval
        if let due = try? await store.nextTaskDue() {
            let untilDue = Duration.milliseconds(max(0, due - clock.now()))
            wait = min(wait, max(untilDue, store.isShared ? .milliseconds(50) : .milliseconds(5)))
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
                // A lost claim is not performed if it still waits for a slot, nor renewed again.
                // Those committed or handed back since the copy of `inFlight` were not lost.
                let lost = forget(held.filter { !renewed.contains($0.key) }.map { ($0.key, $0.value) })
                if lost > 0 {
                    logger.warning("Some leases could not be renewed: another instance claimed those runs", metadata: ["count": "\(lost)"])
                }
            } catch {
                logger.warning("Leases could not be renewed", metadata: ["error": "\(error)"])
            }
        }
    }

    private func recordQueueEvery(_ interval: Duration) async {
        while !Task.isCancelled {
            try? await recordQueue()
            guard (try? await Task.sleep(for: interval)) != nil else { return }
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

/// A claim performed, to be committed: what the store writes, and what the engine counts
/// once it is written. Not the run's `RunAdvance`: kept until the commit, that held each
/// run's whole state, events and document a second time, and copied them on the way.
struct Performed: Sendable {
    let outcome: TaskOutcome
    /// About the bytes the outcome writes (documents, states, events), for sizing commits.
    let bytes: Int
    let stepsEnded: Int
    let retries: Int
    /// Per action, the steps performed and how long each took in the action (milliseconds).
    let timings: [(action: WorkflowAction, milliseconds: Int64)]
    /// How the run ended, when it (not an item of it) ended in this claim.
    let runFinished: RunStatus?

    /// A claim whose state could not be read: only its task is written (kept as it is).
    init(_ outcome: TaskOutcome) {
        self.init(outcome, stepsEnded: 0, retries: 0, timings: [], runFinished: nil)
    }

    init(_ outcome: TaskOutcome, _ advance: RunAdvance) {
        self.init(
            outcome, stepsEnded: advance.stepsEnded, retries: advance.retries, timings: advance.performed,
            runFinished: advance.finished && advance.state.item == nil ? advance.state.status : nil
        )
    }

    private init(_ outcome: TaskOutcome, stepsEnded: Int, retries: Int, timings: [(action: WorkflowAction, milliseconds: Int64)], runFinished: RunStatus?) {
        var bytes = (outcome.document?.count ?? 0) + (outcome.next?.state.count ?? 0)
        for message in outcome.outbox { bytes += message.byteCount }
        for assessment in outcome.assessments { bytes += assessment.document.count }
        for task in outcome.spawn { bytes += task.state.count }
        for child in outcome.children { bytes += child.run.document.count + child.task.state.count }
        self.outcome = outcome
        self.bytes = bytes
        self.stepsEnded = stepsEnded
        self.retries = retries
        self.timings = timings
        self.runFinished = runFinished
    }
}
