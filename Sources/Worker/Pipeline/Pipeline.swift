import Kafka
import Logging
import Metrics
import Store
import Synchronization
import Workflows

/// Handles consumed batches: decode, decide, and write everything a batch
/// changes in one store transaction. When the transaction commits, the batch is
/// done and its offsets may be committed to Kafka.
///
/// A batch is handled in two steps (see ``BatchHandler``), so that the next batch
/// is decoded and decided while this one's transaction is being written. The
/// next batch is decided on the store's state plus the writes of the batch in
/// flight; it is written only once those writes committed exactly as decided,
/// and decided again when they did not.
public final class Pipeline: BatchHandler {
    private let decoder: InputDecoder
    private let decider: BatchDecider
    private let store: any Store
    private let clock: any WallClock
    private let logger: Logger
    private let outboxReady: @Sendable () -> Void
    /// Called after each committed batch that started runs: the engine has work.
    private let batchWritten: @Sendable (_ messages: Int, _ startedRuns: Bool) -> Void

    /// How often a batch is decided again after a conflict before the error is raised,
    /// beyond once per key it claims: each key can conflict once (a concurrent writer,
    /// an HTTP request among them, claimed it first; decided again it is a replay), so
    /// a client racing its own keys over HTTP cannot stop the consumer.
    static let maxAttempts = 10

    /// `trigger_worker_messages_total{topic, outcome}`, made once per pair.
    private let processed = Mutex<[BatchDecider.MessageOutcome: Counter]>([:])
    private let runsStarted = Counter(label: "trigger_worker_runs_started_total")
    private let runsCanceled = Counter(label: "trigger_worker_runs_canceled_total")
    private let replays = Counter(label: "trigger_worker_idempotent_replays_total")
    private let mismatches = Counter(label: "trigger_worker_fingerprint_mismatches_total")
    private let deadLetters = Counter(label: "trigger_worker_dead_letters_total")
    private let ignoredEvents = Counter(label: "trigger_worker_events_ignored_total")
    private let conflicts = Counter(label: "trigger_worker_store_conflicts_total")
    private let resets = Counter(label: "trigger_worker_partition_resets_total")
    private let gaps = Counter(label: "trigger_worker_messages_lost_to_retention_total")
    /// Messages per consumed batch (a histogram).
    private let batchSizes = Recorder(label: "trigger_worker_batch_messages")
    /// The store transaction of a batch, and of an HTTP write (histograms).
    private let batchTransactions = Timer(label: "trigger_worker_store_transaction_seconds", dimensions: [("kind", "batch")])
    private let httpTransactions = Timer(label: "trigger_worker_store_transaction_seconds", dimensions: [("kind", "http")])

    /// A decoded and decided batch, ready to be written.
    public struct Prepared: Sendable {
        var items: [(Source, Input)]
        var query: BatchQuery
        /// Per partition, the digest of the batch's last record (kept with the watermark).
        var digests: [PartitionID: [UInt8]]
        var decision: BatchDecider.Decision
        /// How many messages the batch has.
        public var count: Int { items.count }
        /// How many messages the batch publishes (responses, events, dead letters), as prepared.
        public var outputCount: Int { decision.writes.outbox.count }
    }

    /// - Parameters:
    ///   - batchWritten: called after each committed batch, with its number of messages
    ///     and whether it started runs (the engine's signal, and its measure of intake's backlog).
    ///   - outboxReady: called after each committed batch that wrote outbox rows.
    public init(
        configuration: WorkerConfiguration, orgs: OrgDirectory, catalog: WorkflowCatalog, store: any Store,
        clock: any WallClock = SystemWallClock(), batchWritten: @escaping @Sendable (_ messages: Int, _ startedRuns: Bool) -> Void = { _, _ in },
        logger: Logger, outboxReady: @escaping @Sendable () -> Void
    ) {
        decoder = InputDecoder(configuration: configuration, orgs: orgs)
        decider = BatchDecider(
            catalog: catalog, engine: RunEngine(maxEffectBytes: configuration.maxMessageBytes),
            outputs: Outputs(configuration: configuration),
            idempotencyTTL: configuration.idempotencyTTL, mismatchPolicy: configuration.idempotencyMismatch, logger: logger
        )
        self.store = store
        self.clock = clock
        self.logger = logger
        self.outboxReady = outboxReady
        self.batchWritten = batchWritten
    }

    /// Returns once the store can be used.
    public func ready() async throws {
        try await store.waitUntilReady()
    }

    /// Decodes `batch` and decides it on the store's state, seen as if `pending`
    /// (the batch whose write may still be in flight) were already written.
    public func prepare(_ batch: [KafkaMessage], after pending: Prepared?) async throws -> Prepared {
        // One time for the checks of both steps: an event decoded as not too old is
        // decided at that same time.
        let now = clock.now()
        let items = decoder.decode(batch, now: now)
        let query = decider.query(for: items)
        var last: [PartitionID: KafkaMessage] = [:]
        for message in batch { last[PartitionID(topic: message.topic, partition: message.partition)] = message }
        let digests = last.mapValues { RecordDigest.of(key: $0.key, value: $0.value) }
        do {
            let decision = try await decide(items, query, digests, at: now, after: pending?.decision.writes)
            return Prepared(items: items, query: query, digests: digests, decision: decision)
        } catch {
            InputSpans.end(items, error: error)
            throw error
        }
    }

    /// Writes a prepared batch in one transaction. After a conflict (another writer
    /// got there first: a concurrent claim of a key, or a partition handled
    /// elsewhere after a rebalance) the batch is decided again on fresh state.
    /// - Returns: whether the batch was written as prepared (when not, a batch
    ///   prepared after it must be prepared again), and the partitions it found
    ///   handled past its end by another instance: their offsets are not to be
    ///   committed (the new owner's are further on).
    public func write(_ prepared: Prepared) async throws -> BatchWriteResult {
        var failure: (any Error)?
        defer { InputSpans.end(prepared.items, error: failure) { $0["trigger_worker.batch.size"] = prepared.items.count } }
        do {
            return try await writeUntilDone(prepared)
        } catch {
            failure = error
            throw error
        }
    }

    /// A prepared batch that will not be written: decided again after the batch before
    /// it was (the new preparation has spans of its own).
    public func discard(_ prepared: Prepared) {
        InputSpans.end(prepared.items) { $0["trigger_worker.decided_again"] = true }
    }

    private func writeUntilDone(_ prepared: Prepared) async throws -> BatchWriteResult {
        var decision = prepared.decision
        var attempt = 1
        // Whether the store failed to answer an attempt: its reply may have been lost
        // after it committed (the marks then say so, and the batch is decided again).
        var retried = false
        while true {
            do {
                try await retryingStore("taking a batch", retried: &retried) {
                    let started = ContinuousClock.now
                    try await self.store.apply(decision.writes)
                    self.batchTransactions.record(ContinuousClock.now - started)
                }
                batchSizes.record(prepared.items.count)
                record(decision, count: prepared.items.count)
                if !decision.writes.outbox.isEmpty { outboxReady() }
                batchWritten(prepared.items.count, !decision.writes.tasks.isEmpty)
                // A partition whose mark this batch did not move was handled past the batch
                // already (by another instance after a rebalance, or, after an outage, by an
                // attempt of this one whose reply was lost): marks are compare-and-set, a fence.
                let superseded = Set(prepared.digests.keys).subtracting(decision.writes.watermarks.keys)
                if !superseded.isEmpty {
                    let by = retried ? "by an earlier attempt whose reply was lost, or by another instance" : "by another instance meanwhile, its partitions having moved"
                    logger.warning("A batch was already handled past its end (\(by)); nothing of it was written twice, and its offsets are left to later commits", metadata: [
                        LogKey.partitions: "\(superseded.sorted().map { "\($0.topic)[\($0.partition)]" }.joined(separator: ","))",
                    ])
                }
                return BatchWriteResult(asPrepared: attempt == 1, superseded: superseded)
            } catch let error as StoreError where error.code == .conflict && attempt < Self.maxAttempts + prepared.query.scopes.count {
                conflicts.increment()
                logger.info("Store conflict; deciding the batch again", metadata: [LogKey.error: "\(error)", "attempt": "\(attempt)"])
                attempt += 1
            }
            decision = try await decide(prepared.items, prepared.query, prepared.digests, at: clock.now(), after: nil)
        }
    }

    /// How long the store may fail to answer (a restart, a fail-over) before a batch's
    /// failure stops the worker (its supervisor restarts it; nothing committed is lost).
    /// An outage longer than the consumer's `max.poll.interval.ms` also costs this
    /// instance its place in the group (a rebalance), and a restart if the store is
    /// still away when partitions are assigned again. Not retried while shutting down.
    static let storeOutageTolerance: Duration = .seconds(60)

    /// `body`, retried with backoff while the store is unavailable, for at most ``storeOutageTolerance``.
    /// A write retried so is safe: had an attempt committed, the marks' compare-and-set
    /// makes the next one a conflict, and the batch is decided again.
    /// - Parameter retried: set when `body` had to be retried.
    private func retryingStore<T>(_ what: String, retried: inout Bool, _ body: () async throws -> T) async throws -> T {
        var backoff = Duration.milliseconds(250)
        let started = ContinuousClock.now
        var failed = false
        while true {
            do {
                let result = try await body()
                if failed { logger.info("The store answers again") }
                return result
            } catch let error as StoreError where error.code == .unavailable && !Task.isShuttingDownGracefully
                && started.duration(to: .now) < Self.storeOutageTolerance {
                failed = true
                retried = true
                logger.warning("The store did not answer \(what); retrying", metadata: [LogKey.error: "\(error)", "retry_in": "\(backoff)"])
                try await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
    }

    /// Where each assigned partition is to be read from, and whether its log was
    /// reset (§3): all partitions at once.
    ///
    /// A partition the store has handled before is read from the store's mark, not
    /// from the group's committed offset: the store is what decides, and its mark is
    /// never behind. A log that does not hold, at the mark, the record last handled
    /// was reset (a topic created again, a new broker with an old store): its mark
    /// moves to the log's start in a new epoch (keyed requests and events are still
    /// deduplicated by their records), and it is read from there.
    public func partitionsAssigned(_ partitions: [KafkaTopicPartition], consumer: KafkaConsumer) async throws -> [KafkaTopicPartition: Int64] {
        let ids = partitions.map { PartitionID(topic: $0.topic, partition: $0.partition) }
        let marks = try await store.partitionMarks(ids)
        return try await withThrowingTaskGroup(of: (KafkaTopicPartition, Int64).self) { checks in
            for (partition, id) in zip(partitions, ids) {
                guard let mark = marks[id] else { continue }
                checks.addTask { (partition, try await self.start(of: partition, id, mark, consumer: consumer)) }
            }
            var starts: [KafkaTopicPartition: Int64] = [:]
            for try await (partition, start) in checks { starts[partition] = start }
            return starts
        }
    }

    /// Where to read `partition` from: its mark, or, when its log was reset, the log's
    /// start (the store's mark is moved there first). Only a store failure is thrown:
    /// a log that cannot be looked at is read on from the mark, with an error logged.
    private func start(of partition: KafkaTopicPartition, _ id: PartitionID, _ mark: PartitionMark, consumer: KafkaConsumer) async throws -> Int64 {
        var metadata: Logger.Metadata = [LogKey.topic: "\(partition.topic)", LogKey.partition: "\(partition.partition)", "store_next_offset": "\(mark.next)"]
        let reset: Int64?
        do {
            reset = try await resetStart(partition, mark, consumer: consumer, metadata: &metadata)
        } catch {
            logger.error("Cannot look at the partition's log; reading on from the store's mark (a reset log would go unseen)", metadata: metadata.merging([LogKey.error: "\(error)"]) { $1 })
            return mark.next
        }
        guard let reset else { return mark.next }
        logger.error("The partition's log was reset (it does not hold the record last handled): reading it again from its start", metadata: metadata.merging(["epoch": "\(mark.epoch + 1)"]) { $1 })
        resets.increment()
        try await store.resetPartition(id, from: mark, next: reset)
        return reset
    }

    /// The log's start when the log was reset, `nil` when it goes on.
    private func resetStart(_ partition: KafkaTopicPartition, _ mark: PartitionMark, consumer: KafkaConsumer, metadata: inout Logger.Metadata) async throws -> Int64? {
        let log = try await consumer.watermarks(of: partition, timeout: .seconds(5))
        metadata["log_start_offset"] = "\(log.low)"
        metadata["log_end_offset"] = "\(log.high)"
        if case .gap(let count) = PartitionLog.classify(next: mark.next, low: log.low, high: log.high) {
            logger.error("Messages left the partition's log before they were handled (retention)", metadata: metadata.merging([LogKey.count: "\(count)"]) { $1 })
            gaps.increment(by: count)
            return nil
        }
        // Nothing handled yet, or the record before the mark gone by retention: nothing to compare.
        guard mark.next > 0, mark.next - 1 >= log.low else { return nil }
        guard log.high > log.low else {
            metadata["record_at_mark"] = "absent (empty log)"
            return log.low
        }
        // The record at the mark's place. A fetch may skip the record batch the offset
        // lies in (Tansu returns only batches that begin at or after the fetch offset, and
        // reports the log's end as the last batch's start + 1): reading from the last start
        // it reports, then from ever earlier offsets, finds it.
        let target = mark.next - 1
        var tried: Set<Int64> = []
        for start in [min(target, log.high - 1), target - 1024, target - 65_536, log.low].map({ max(log.low, $0) }) where tried.insert(start).inserted {
            switch try await KafkaRecordReader.lookup(at: target, of: partition, startingAt: start, configuration: consumer.configuration.common, logger: logger) {
            case .found(let record):
                // A mark written before digests were kept is taken as matching any record there.
                if mark.lastDigest == nil || mark.lastDigest == RecordDigest.of(key: record.key, value: record.value) { return nil }
                metadata["record_at_mark"] = "different"
                return log.low
            case .endsBefore:
                metadata["record_at_mark"] = "absent (the log ends before it)"
                return log.low
            case .passed:
                continue
            }
        }
        logger.warning("The record at the partition's mark cannot be read (compacted?); taking the log for the same one", metadata: metadata)
        return nil
    }

    /// An HTTP request, decided and written as a batch of its own through the same
    /// decider and store transaction as Kafka's (one decision path, §8): it shares the
    /// idempotency records, so the same `(org, endpoint, key)` over HTTP and over Kafka
    /// answers one body and starts one run. After a conflict (a concurrent batch claimed
    /// the key first) it is decided again, and then answered as a replay.
    /// - Parameters:
    ///   - endpoint: method and path, `POST /v1/…` (the run's `trigger.source`).
    ///   - value: the equivalent trigger request (§4's shape, with `request_type`).
    ///   - headers: the HTTP request's `Authorization`, `Idempotency-Key`, `Request-Id` and `traceparent`.
    public func handleHTTP(endpoint: String, value: [UInt8], headers: [KafkaHeader]) async throws -> HTTPAnswer {
        let now = clock.now()
        let id = Identifier.hex((0..<16).map { _ in UInt8.random(in: 0...255) })
        var source = Source(httpEndpoint: endpoint, id: id, headers: headers)
        decoder.spans.startHTTP(&source, endpoint: endpoint)
        let items = [(source, decoder.decodeHTTP(value, source: source))]
        var failure: (any Error)?
        defer { InputSpans.end(items, error: failure) }
        do {
            return try await decideHTTP(items, id: id, query: decider.query(for: items), now: now)
        } catch {
            failure = error
            throw error
        }
    }

    /// Decides and writes an HTTP request (``handleHTTP(endpoint:value:headers:)``) until it is written.
    private func decideHTTP(_ items: [(Source, Input)], id: String, query: BatchQuery, now: Timestamp) async throws -> HTTPAnswer {
        var attempt = 1
        while true {
            let decision = try await decide(items, query, [:], at: now, after: nil)
            var retried = false
            do {
                try await retryingStore("writing an HTTP request", retried: &retried) {
                    let started = ContinuousClock.now
                    try await self.store.apply(decision.writes)
                    self.httpTransactions.record(ContinuousClock.now - started)
                }
            } catch let error as StoreError where error.code == .conflict {
                // An attempt whose reply was lost may have committed (there is no mark to
                // fence an HTTP request): then this decision is the one written, and its
                // answer is the request's, not a replay of itself or a 409.
                let written = retried ? try await landed(decision) : false
                if !written {
                    guard attempt < Self.maxAttempts else { throw error }
                    conflicts.increment()
                    attempt += 1
                    continue
                }
            }
            record(decision, count: 1)
            if !decision.writes.outbox.isEmpty { outboxReady() }
            batchWritten(1, !decision.writes.tasks.isEmpty)
            guard let answer = decision.httpAnswers[id] else {
                throw StoreError(code: .unavailable, message: "the HTTP request was decided without an answer")
            }
            return answer
        }
    }

    /// Whether what `decision` writes is in the store: its run, assessment or cancel,
    /// each with an id only this decision mints (an HTTP request's ids derive from its own).
    private func landed(_ decision: BatchDecider.Decision) async throws -> Bool {
        if let run = decision.writes.runs.first { return try await store.run(id: run.id) != nil }
        if let assessment = decision.writes.assessments.first { return try await store.assessment(id: assessment.id) != nil }
        if let cancel = decision.writes.cancels.first {
            return try await store.run(id: cancel.runID).map { $0.status == RunStatus.canceled.rawValue && $0.document == cancel.document } ?? false
        }
        return false
    }

    private func decide(
        _ items: [(Source, Input)], _ query: BatchQuery, _ digests: [PartitionID: [UInt8]], at now: Timestamp, after pending: BatchWrites?
    ) async throws -> BatchDecider.Decision {
        var retried = false
        var snapshot = try await retryingStore("reading the state a batch depends on", retried: &retried) { try await self.store.load(query, now: now) }
        if let pending { snapshot.overlay(pending, now: now) }
        var decision = decider.decide(items, snapshot: snapshot, now: now)
        // Messages below a watermark are a prefix of each partition's part of the batch:
        // where the watermark moves, it moves to just past the batch's last record.
        decision.writes.lastDigests = digests.filter { decision.writes.watermarks[$0.key] != nil }
        for partition in decision.writes.watermarks.keys { decision.writes.epochs[partition] = snapshot.epochs[partition] ?? 0 }
        return decision
    }

    private func record(_ decision: BatchDecider.Decision, count: Int) {
        let tally = decision.tally
        for (key, count) in tally.outcomes {
            let counter = processed.withLock { counters in
                if let counter = counters[key] { return counter }
                let counter = Counter(label: "trigger_worker_messages_total", dimensions: [("topic", key.topic), ("outcome", key.outcome)])
                counters[key] = counter
                return counter
            }
            counter.increment(by: Int64(count))
        }
        runsStarted.increment(by: Int64(tally.runsStarted))
        runsCanceled.increment(by: Int64(tally.runsCanceled))
        replays.increment(by: Int64(tally.replays))
        mismatches.increment(by: Int64(tally.mismatches))
        deadLetters.increment(by: Int64(tally.deadLetters))
        ignoredEvents.increment(by: Int64(tally.ignored))
        logger.debug("Batch committed", metadata: [
            LogKey.count: "\(count)", "runs_started": "\(tally.runsStarted)", "responses": "\(tally.responses)",
            "replays": "\(tally.replays)", "dead_letters": "\(tally.deadLetters)", "already_done": "\(tally.alreadyDone)",
        ])
    }
}

extension BatchSnapshot {
    /// The state once `writes` are committed, as far as a batch decided now can see it:
    /// their watermarks, their vendors where newer, and their records still live at `now`.
    mutating func overlay(_ writes: BatchWrites, now: Timestamp) {
        for (partition, watermark) in writes.watermarks {
            watermarks[partition] = Swift.max(watermarks[partition] ?? watermark.next, watermark.next)
        }
        // Epochs change only when partitions are assigned, never by a batch: the snapshot's stand.
        for record in writes.records where record.expiresAt > now {
            records[record.scope] = record
        }
        for vendor in writes.vendors {
            let key = VendorKey(orgID: vendor.orgID, vendorID: vendor.id)
            if (vendors[key]?.occurredAt ?? .min) <= vendor.occurredAt { vendors[key] = vendor }
        }
        let tasks = Dictionary(writes.tasks.map { ($0.runID, $0) }) { $1 }
        for run in writes.runs { runs[run.id] = RunSnapshot(record: run, task: tasks[run.id]) }
        for cancel in writes.cancels {
            guard var run = runs[cancel.runID] else { continue }
            run.record.status = "canceled"
            run.record.finishedAt = cancel.finishedAt
            run.record.document = cancel.document
            run.task = nil
            runs[cancel.runID] = run
        }
    }
}
