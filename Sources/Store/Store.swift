import Crypto

/// The worker's durable state: idempotency records, processed-offset watermarks,
/// the vendor directory, runs, assessments and the outbox.
///
/// The pipeline works in two calls per batch, so that one protocol fits an
/// embedded (SQLite) and a shared (PostgreSQL) database alike:
///
/// 1. ``load(_:now:)`` reads what the batch's decisions depend on;
/// 2. ``apply(_:)`` writes everything the batch changes in **one transaction**,
///    checking that nothing it read has changed meanwhile (another instance
///    handling the same partition, or claiming the same idempotency scope). If
///    something has, nothing is written and ``StoreError/conflict`` is thrown: the
///    caller loads again and decides again.
public protocol Store: Sendable {
    /// Reads the state a batch's decisions depend on. Idempotency records that
    /// expired at `now` are treated as absent.
    func load(_ query: BatchQuery, now: Timestamp) async throws -> BatchSnapshot

    /// Writes a batch's changes in one transaction.
    /// - Throws: ``StoreError`` with code ``StoreError/Code/conflict`` when a
    ///   watermark moved or an idempotency scope was claimed since ``load(_:now:)``.
    func apply(_ writes: BatchWrites) async throws

    /// Up to `limit` outbox entries of `selection`, oldest first. An entry holds the
    /// messages of (part of) one batch from one source partition, in the order they
    /// were written.
    func pendingOutbox(limit: Int, selection: OutboxSelection) async throws -> [OutboxEntry]

    /// Returns once the store can be used: before it, a call waits.
    /// - Throws: why the store cannot be used (its migrations failed).
    func waitUntilReady() async throws

    /// Whether other worker instances may share this store. The outbox of a shared
    /// store is published per source partition, by the instance that owns it. It also
    /// tells the engine whether intake and it share a server too (its idle interval, its
    /// rest between rounds and how it claims are tuned by it).
    var isShared: Bool { get }

    /// Ends a publishing round in one transaction: deletes the entries `done` (each
    /// message delivered or refused for good) and keeps the refused ones in `park`.
    func finishOutbox(done: [Int64], park: [ParkedOutput]) async throws

    /// Parked outputs, oldest first.
    func parkedOutputs(limit: Int) async throws -> [ParkedOutput]

    /// Moves a parked output back to the end of the outbox, to be published again.
    /// - Returns: false when there is no parked output `id`.
    func retryParked(id: Int64) async throws -> Bool

    /// Deletes a parked output for good. - Returns: false when there is none with `id`.
    func dropParked(id: Int64) async throws -> Bool

    /// The "done up to" marks of `partitions` (absent where the store has seen nothing).
    func partitionMarks(_ partitions: [PartitionID]) async throws -> [PartitionID: PartitionMark]

    /// Starts a new epoch of `partition`'s log at `next`, when its mark is still
    /// `mark`: the log was reset (deleted and created again, a new broker), and its
    /// offsets are to be handled again, minting new ids.
    /// - Throws: ``StoreError/conflict`` when the mark moved meanwhile.
    func resetPartition(_ partition: PartitionID, from mark: PartitionMark, next: Int64) async throws

    /// Deletes up to `limit` runs that finished before `before` (epoch seconds); returns how many.
    func pruneRuns(finishedBefore before: Int64, limit: Int) async throws -> Int

    /// Deletes up to `limit` assessments created before `before` (epoch seconds); returns how many.
    func pruneAssessments(createdBefore before: Int64, limit: Int) async throws -> Int

    /// Deletes up to `limit` kept events received before `before` and results of
    /// for_each items that ended before it (both epoch seconds); returns how many.
    func pruneEngineHistory(before: Int64, limit: Int) async throws -> Int

    /// Deletes up to `limit` idempotency records that expired at `now`; returns how many.
    func deleteExpiredIdempotencyRecords(now: Timestamp, limit: Int) async throws -> Int

    /// The run with id `id`.
    func run(id: String) async throws -> RunRecord?

    /// Runs, newest first, optionally only those with one of `statuses`.
    func runs(statuses: [String], limit: Int, offset: Int) async throws -> [RunRecord]

    /// The assessment with id `id`.
    func assessment(id: String) async throws -> AssessmentRecord?

    // MARK: The engine's work

    /// Claims up to `limit` runs whose work is due at `now` and whose lease (if any)
    /// ran out, for `owner` until `leaseUntil`: each claim increments the task's fence,
    /// so the writes of an earlier claim can no longer apply. Oldest due first.
    func claimTasks(owner: String, now: Timestamp, leaseUntil: Timestamp, limit: Int) async throws -> [EngineTask]

    /// Extends the leases `owner` still holds among `tasks` (run id and fence) to `until`;
    /// ``EngineTask/handedBack`` hands them back instead (claimable at once, and a claim
    /// after it takes over nothing). A lease handed back is not extended again.
    /// - Returns: the run ids whose lease was extended (the others were lost).
    func renewLeases(owner: String, tasks: [String: Int64], until: Timestamp) async throws -> Set<String>

    /// Writes what claims did, in one transaction: for each outcome whose claim still
    /// holds (its fence unchanged), the run's new document, its task's next state (or
    /// its end), its assessments (created once: an existing id is kept) and its events.
    /// Outcomes of lost claims write nothing.
    /// - Returns: the run ids whose outcome was written.
    func commitTasks(_ outcomes: [TaskOutcome], now: Timestamp) async throws -> Set<String>

    /// Voids every lease (a store of one instance, at start: what an earlier process
    /// held is free at once). - Returns: how many leases were held.
    func releaseLeases() async throws -> Int

    /// When the earliest task can be claimed (due, and its lease run out), or `nil` when there is none.
    func nextTaskDue() async throws -> Timestamp?

    /// The engine's queue at `now`, for metrics and `runs`.
    func engineQueue(now: Timestamp) async throws -> EngineQueueStats

    /// One org's runs matching `query`, newest first (`started_at`, then id), and how
    /// many match in all (the HTTP API's list).
    func runs(matching query: RunQuery) async throws -> (runs: [RunRecord], total: Int)

    /// Outbox entries waiting to be published (each holds one batch's outputs of one
    /// partition; parked outputs are not counted), for metrics.
    func outboxDepth() async throws -> Int

    /// The stored engine state of run `id` (absent once the run ended).
    func task(runID: String) async throws -> EngineTask?

    /// The org's vendor directory in id order, after `afterID`: what a `for_each` goes through.
    func vendors(orgID: String, afterID: String, limit: Int) async throws -> [VendorRecord]

    /// Items of run `runID` still to end (any `for_each` step; not its child runs).
    func pendingItems(runID: String) async throws -> Int

    /// The results of the items of `stepID` of run `runID`, counted.
    func itemCounts(runID: String, stepID: String) async throws -> ItemCounts

    /// The results of the items of `stepID` of run `runID`, in vendor id order, after `afterKey`.
    func itemResults(runID: String, stepID: String, afterKey: String, limit: Int) async throws -> [ItemResult]

    /// Events of `type` for `orgID` (about `vendorID`, when given) received at or after
    /// `since` (milliseconds), in the order received, after `afterSequence`: what a
    /// waiting step looks through.
    func events(orgID: String, type: String, vendorID: String?, since: Timestamp, afterSequence: Int64, limit: Int) async throws -> [StoredEvent]
}

/// An event steps can wait for (`QuestionnaireResponse.Submitted`, `Vendor.Updated` …),
/// kept when intake takes it: a wait that begins later still finds it.
public struct EngineEvent: Sendable, Hashable {
    public var orgID: String
    public var eventID: String
    public var type: String
    /// The vendor it is about, when it names one: only the waits of that vendor (or of
    /// none) are woken by it.
    public var vendorID: String?
    /// `data.workflow_run_id`, when set: it matches only that run's waits.
    public var runID: String?
    /// `data`, in canonical JSON.
    public var data: [UInt8]
    /// Milliseconds since the epoch.
    public var receivedAt: Timestamp

    public init(orgID: String, eventID: String, type: String, vendorID: String?, runID: String?, data: [UInt8], receivedAt: Timestamp) {
        self.orgID = orgID
        self.eventID = eventID
        self.type = type
        self.vendorID = vendorID
        self.runID = runID
        self.data = data
        self.receivedAt = receivedAt
    }
}

/// An event as stored, with its place in the order of receipt.
public struct StoredEvent: Sendable, Hashable {
    public var sequence: Int64
    public var event: EngineEvent

    public init(sequence: Int64, event: EngineEvent) {
        self.sequence = sequence
        self.event = event
    }
}

/// What a waiting run waits for: the events that wake it (the step then checks its
/// `match` itself).
public struct EventSubscription: Sendable, Hashable {
    public var orgID: String
    public var eventType: String
    /// Only events about this vendor wake it (`nil`: any).
    public var vendorID: String?
    /// The last event of this kind the step looked at (its sequence): one kept after it
    /// keeps the run due at its commit, since it came after the step looked and perhaps
    /// before the subscription was there to be woken. (Events of one org and type are
    /// kept in sequence order: on PostgreSQL intake and commit take a lock for them.)
    public var seenSequence: Int64

    public init(orgID: String, eventType: String, vendorID: String?, seenSequence: Int64) {
        self.orgID = orgID
        self.eventType = eventType
        self.vendorID = vendorID
        self.seenSequence = seenSequence
    }
}

/// A run's pending engine work: one row per unfinished run, claimed by one instance
/// at a time with a lease.
public struct EngineTask: Sendable, Hashable {
    public var runID: String
    public var orgID: String
    /// When it is to be claimed (milliseconds since the epoch).
    public var dueAt: Timestamp
    /// The engine's state of the run (opaque to the store).
    public var state: [UInt8]
    /// The partition whose input started the run: its events are published by the
    /// instance that owns it, after the run's `Started`.
    public var source: PartitionID?
    /// Incremented by each claim and each commit: a version of the task, so that a
    /// claim, or a decision made on what was read, cannot apply over a later change.
    public var fence: Int64
    /// Who holds it and until when (milliseconds), while it is claimed.
    public var leaseOwner: String?
    public var leaseUntil: Timestamp
    /// Whether this claim took it over from a holder whose lease ran out.
    public var tookOverExpiredLease: Bool
    /// For an item of a `for_each`: the run it belongs to (whose task it wakes when it
    /// is the last to end), and how many of that run's items may execute at once.
    public var parentID: String?
    public var slots: Int = 0

    /// The lease end of a claim handed back by its holder (it stopped, or could not check
    /// the run before performing it): not a lease that ran out.
    public static let handedBack: Timestamp = 0

    /// The due time of an item not yet started (its run's `concurrency` holds it back).
    public static let dormant: Timestamp = 9_000_000_000_000_000_000

    public init(
        runID: String, orgID: String, dueAt: Timestamp, state: [UInt8], source: PartitionID?, fence: Int64 = 0, leaseOwner: String? = nil,
        leaseUntil: Timestamp = 0, tookOverExpiredLease: Bool = false, parentID: String? = nil, slots: Int = 0
    ) {
        self.parentID = parentID
        self.slots = slots
        self.runID = runID
        self.orgID = orgID
        self.dueAt = dueAt
        self.state = state
        self.source = source
        self.fence = fence
        self.leaseOwner = leaseOwner
        self.leaseUntil = leaseUntil
        self.tookOverExpiredLease = tookOverExpiredLease
    }
}

/// What one claim of a run did, written by ``Store/commitTasks(_:now:)``.
public struct TaskOutcome: Sendable {
    public var runID: String
    /// The fence of the claim: nothing is written when the task's fence moved on.
    public var fence: Int64
    public var status: String
    public var finishedAt: Int64?
    /// The run's new document; `nil` leaves the run as it is (only the task changes).
    public var document: [UInt8]?
    /// The state to go on from and when, or `nil` once the run ended (the task is deleted).
    public var next: (state: [UInt8], dueAt: Timestamp)?
    public var assessments: [AssessmentRecord]
    public var outbox: [OutboxMessage]
    /// What the run now waits for (replacing what it waited for before); `nil`: no event.
    public var subscription: EventSubscription?
    /// Items a `for_each` creates (created once: an existing id is kept); they start as
    /// their run's concurrency allows.
    public var spawn: [EngineTask] = []
    /// For an item that ended: its result, kept for its run's `for_each` and `aggregate`.
    public var itemResult: ItemResult?
    /// For an item: its run (told when its last item ends; its next items started).
    public var parentID: String?
    /// For a child run (`run_workflow`) that ended: the task that started it, woken.
    public var endedChildOf: String?
    /// Runs this one starts (`run_workflow`), with their tasks, due at once.
    public var children: [(run: RunRecord, task: EngineTask)] = []

    public init(runID: String, fence: Int64, status: String, finishedAt: Int64?, document: [UInt8]?, next: (state: [UInt8], dueAt: Timestamp)?, assessments: [AssessmentRecord], outbox: [OutboxMessage], subscription: EventSubscription? = nil) {
        self.runID = runID
        self.fence = fence
        self.status = status
        self.finishedAt = finishedAt
        self.document = document
        self.next = next
        self.assessments = assessments
        self.outbox = outbox
        self.subscription = subscription
    }
}

/// How one item of a `for_each` ended.
public struct ItemResult: Sendable, Hashable {
    public var runID: String
    public var stepID: String
    /// The vendor id.
    public var key: String
    /// `success`, `failed` or `skipped`.
    public var status: String
    /// The event that resumed the item's wait (canonical JSON), if one did.
    public var response: [UInt8]?
    /// Seconds since the epoch.
    public var finishedAt: Int64

    public init(runID: String, stepID: String, key: String, status: String, response: [UInt8]?, finishedAt: Int64) {
        self.runID = runID
        self.stepID = stepID
        self.key = key
        self.status = status
        self.response = response
        self.finishedAt = finishedAt
    }
}

/// The items of one `for_each`, counted.
public struct ItemCounts: Sendable, Hashable {
    public var total = 0
    public var succeeded = 0
    public var failed = 0
    public var skipped = 0
    /// Items whose wait was resumed by an event.
    public var responses = 0

    public init(total: Int = 0, succeeded: Int = 0, failed: Int = 0, skipped: Int = 0, responses: Int = 0) {
        self.total = total
        self.succeeded = succeeded
        self.failed = failed
        self.skipped = skipped
        self.responses = responses
    }
}

/// The engine's queue at one moment.
public struct EngineQueueStats: Sendable, Hashable {
    /// Due and not claimed.
    public var runnable = 0
    /// Claimed under a live lease.
    public var running = 0
    /// Not due yet (timers, waits, retries in backoff).
    public var waiting = 0
    /// How long the oldest runnable task has been due (milliseconds; 0 when none).
    public var oldestRunnableAge: Int64 = 0

    public init(runnable: Int = 0, running: Int = 0, waiting: Int = 0, oldestRunnableAge: Int64 = 0) {
        self.runnable = runnable
        self.running = running
        self.waiting = waiting
        self.oldestRunnableAge = oldestRunnableAge
    }
}

extension Store {
    /// Returns once the store can be used (a PostgreSQL store: its migrations are done).
    public func waitUntilReady() async throws {}

    /// Up to `limit` outbox entries, oldest first, whatever their source.
    public func pendingOutbox(limit: Int) async throws -> [OutboxEntry] {
        try await pendingOutbox(limit: limit, selection: .all)
    }
}

/// Which outbox entries an instance reads to publish.
public enum OutboxSelection: Sendable, Hashable {
    /// Every entry (a store of one instance).
    case all
    /// The entries of these source partitions (those the instance owns), and those of
    /// none (outputs put back by an operator before sources were kept).
    case owned(Set<PartitionID>)
    /// The entries of source topics other than these (the input topics): left by an
    /// earlier configuration, their partitions are owned by no instance any more.
    case orphaned(inputTopics: Set<String>)
}

/// Milliseconds since the Unix epoch. (Events carry seconds; the store keeps
/// milliseconds so that short TTLs such as `500ms` work.)
public typealias Timestamp = Int64

/// A source partition, without depending on the Kafka module.
public struct PartitionID: Sendable, Hashable, Comparable {
    public var topic: String
    public var partition: Int32

    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { (lhs.topic, lhs.partition) < (rhs.topic, rhs.partition) }
}

/// Where the store is in one partition's log: the next offset to handle, and the
/// epoch of the log (it grows each time the log is found reset).
public struct PartitionMark: Sendable, Hashable {
    public var next: Int64
    public var epoch: Int64
    /// A digest of the record at `next - 1`, the last one handled: whether the log
    /// still holds that record tells a reset log from a broker's stale end offset.
    public var lastDigest: [UInt8]?

    public init(next: Int64, epoch: Int64, lastDigest: [UInt8]? = nil) {
        self.next = next
        self.epoch = epoch
        self.lastDigest = lastDigest
    }
}

/// The 16-byte hash of an idempotency scope `(org, endpoint, key)`.
public struct ScopeHash: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 16, "a scope hash has 16 bytes")
        self.bytes = bytes
    }

    public var description: String { bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined() }

    /// The scope `(org, endpoint, key)`: the first 16 bytes of SHA-256 over the three,
    /// each prefixed with its UTF-8 length (8 bytes, big-endian), as ids are derived.
    /// Defined here so that the store's migrations compute it exactly as the worker does.
    public init(orgID: String, endpoint: String, key: String) {
        var hasher = SHA256()
        for part in [orgID, endpoint, key] {
            let bytes = Array(part.utf8)
            withUnsafeBytes(of: UInt64(bytes.count).bigEndian) { hasher.update(bufferPointer: $0) }
            hasher.update(data: bytes)
        }
        self.init(bytes: Array(hasher.finalize().prefix(16)))
    }
}

extension String {
    func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}

// MARK: - Records

/// What a key's first successful request answered; replays answer the same.
public struct IdempotencyRecord: Sendable, Hashable {
    public var scope: ScopeHash
    public var orgID: String
    /// `event` for vendor events; otherwise method and concrete path (`POST /v1/assessments`).
    public var endpoint: String
    public var key: String
    /// SHA-256 of the request body's canonical JSON.
    public var fingerprint: [UInt8]
    public var responseStatus: Int
    /// The response body, as published.
    public var responseBody: [UInt8]
    public var createdAt: Timestamp
    public var expiresAt: Timestamp

    public init(scope: ScopeHash, orgID: String, endpoint: String, key: String, fingerprint: [UInt8], responseStatus: Int, responseBody: [UInt8], createdAt: Timestamp, expiresAt: Timestamp) {
        self.scope = scope
        self.orgID = orgID
        self.endpoint = endpoint
        self.key = key
        self.fingerprint = fingerprint
        self.responseStatus = responseStatus
        self.responseBody = responseBody
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }
}

/// A vendor of the directory fed by vendor events.
public struct VendorRecord: Sendable, Hashable {
    public var id: String
    public var orgID: String
    /// The vendor object of the latest event, as JSON.
    public var document: [UInt8]
    /// `occurred_at` of that event (seconds): older events do not overwrite newer ones.
    public var occurredAt: Int64

    public init(id: String, orgID: String, document: [UInt8], occurredAt: Int64) {
        self.id = id
        self.orgID = orgID
        self.document = document
        self.occurredAt = occurredAt
    }
}

/// A workflow run; its document is the run object as `GET /v1/workflows/runs/{id}` returns it.
/// Which of an org's runs to list (`GET /v1/workflows/runs`).
public struct RunQuery: Sendable, Hashable {
    public var orgID: String
    public var workflowName: String?
    /// Any of these statuses; empty for all.
    public var statuses: [String]
    /// Inclusive bounds on `started_at` (seconds since the epoch).
    public var startedFrom: Int64?
    public var startedUntil: Int64?
    public var limit: Int
    public var offset: Int

    public init(orgID: String, workflowName: String? = nil, statuses: [String] = [], startedFrom: Int64? = nil, startedUntil: Int64? = nil, limit: Int = 100, offset: Int = 0) {
        self.orgID = orgID
        self.workflowName = workflowName
        self.statuses = statuses
        self.startedFrom = startedFrom
        self.startedUntil = startedUntil
        self.limit = limit
        self.offset = offset
    }
}

public struct RunRecord: Sendable, Hashable {
    public var id: String
    public var orgID: String
    public var workflowName: String
    public var status: String
    /// Seconds since the epoch.
    public var startedAt: Int64
    /// When the run ended (seconds), `nil` while it is still running: retention counts from here.
    public var finishedAt: Int64?
    public var document: [UInt8]

    public init(id: String, orgID: String, workflowName: String, status: String, startedAt: Int64, finishedAt: Int64? = nil, document: [UInt8]) {
        self.id = id
        self.orgID = orgID
        self.workflowName = workflowName
        self.status = status
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.document = document
    }
}

/// An assessment; its document is the assessment object of the API.
public struct AssessmentRecord: Sendable, Hashable {
    public var id: String
    public var orgID: String
    public var vendorID: String
    /// Seconds since the epoch: retention counts from here.
    public var createdAt: Int64
    public var document: [UInt8]

    public init(id: String, orgID: String, vendorID: String, createdAt: Int64 = 0, document: [UInt8]) {
        self.id = id
        self.orgID = orgID
        self.vendorID = vendorID
        self.createdAt = createdAt
        self.document = document
    }
}

/// Messages written together, published together and deleted together once all
/// were delivered: one row for many messages keeps the outbox's cost per request low.
public struct OutboxEntry: Sendable, Hashable {
    /// Increasing in insertion order.
    public var id: Int64
    /// The partition whose inputs the messages answer (`nil` for outputs put back by an operator).
    public var source: PartitionID?
    public var messages: [OutboxMessage]

    public init(id: Int64, source: PartitionID? = nil, messages: [OutboxMessage]) {
        self.id = id
        self.source = source
        self.messages = messages
    }
}

/// A message to publish: a status event, a response or a dead letter.
public struct OutboxMessage: Sendable, Hashable {
    public var topic: String
    public var key: [UInt8]?
    public var value: [UInt8]
    public var headers: [OutboxHeader]
    /// The partition whose input the message answers: the instance that owns it
    /// publishes it. Not published, and not kept in the entry's blob (the entry has it).
    public var source: PartitionID?

    public init(topic: String, key: [UInt8]?, value: [UInt8], headers: [OutboxHeader], source: PartitionID? = nil) {
        self.topic = topic
        self.key = key
        self.value = value
        self.headers = headers
        self.source = source
    }
}

extension Sequence<OutboxMessage> {
    /// The messages in entries of at most `maxMessages` messages and about `maxBytes`
    /// bytes, one source partition per entry, each source's messages in their order.
    public func outboxEntries(maxMessages: Int, maxBytes: Int) -> [(source: PartitionID?, messages: ArraySlice<OutboxMessage>)] {
        var groups: [PartitionID?: [OutboxMessage]] = [:]
        var order: [PartitionID?] = []
        for message in self {
            if groups[message.source] == nil { order.append(message.source) }
            groups[message.source, default: []].append(message)
        }
        var entries: [(source: PartitionID?, messages: ArraySlice<OutboxMessage>)] = []
        for source in order {
            let messages = groups[source]![...]
            var start = messages.startIndex
            while start < messages.endIndex {
                var end = start
                var bytes = 0
                while end < messages.endIndex, end - start < maxMessages, end == start || bytes < maxBytes {
                    bytes += messages[end].byteCount
                    end += 1
                }
                entries.append((source, messages[start..<end]))
                start = end
            }
        }
        return entries
    }
}

extension OutboxMessage {
    /// What librdkafka counts against `message.max.bytes`, near enough: key, value,
    /// and each header's name and value with room for their length fields.
    public var byteCount: Int {
        (key?.count ?? 0) + value.count + headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.count + 10 }
    }
}

/// An output the broker refused for good (too large, invalid topic, not
/// authorized): kept aside with the error so it holds back nothing, until an
/// operator retries or drops it (`trigger-worker outbox`).
public struct ParkedOutput: Sendable, Hashable {
    /// Increasing in parking order (0 before it is stored).
    public var id: Int64
    public var message: OutboxMessage
    /// librdkafka's name of the error, such as `MSG_SIZE_TOO_LARGE`.
    public var errorCode: String
    /// What the error said.
    public var error: String
    /// Milliseconds since the epoch.
    public var parkedAt: Timestamp

    public init(id: Int64 = 0, message: OutboxMessage, errorCode: String, error: String, parkedAt: Timestamp) {
        self.id = id
        self.message = message
        self.errorCode = errorCode
        self.error = error
        self.parkedAt = parkedAt
    }
}

/// One header of an outbox message.
public struct OutboxHeader: Sendable, Hashable {
    public var name: String
    public var value: [UInt8]

    public init(name: String, value: [UInt8]) {
        self.name = name
        self.value = value
    }
}

// MARK: - Batches

/// What a batch's decisions depend on.
public struct BatchQuery: Sendable {
    public var partitions: Set<PartitionID> = []
    public var scopes: Set<ScopeHash> = []
    /// Vendor ids per org.
    public var vendors: Set<VendorKey> = []
    /// Runs a batch acts on (a cancel request names one).
    public var runs: Set<String> = []

    public init() {}
}

/// A run as a batch reads it: its record, and its engine task while it has one.
public struct RunSnapshot: Sendable {
    public var record: RunRecord
    public var task: EngineTask?

    public init(record: RunRecord, task: EngineTask?) {
        self.record = record
        self.task = task
    }
}

/// A run a batch cancels: its task is deleted only if its fence is still the one read
/// (else the batch meets a conflict and is decided again), and its record becomes this.
public struct RunCancel: Sendable {
    public var runID: String
    public var fence: Int64
    public var finishedAt: Int64
    /// The run object, status `canceled`.
    public var document: [UInt8]

    public init(runID: String, fence: Int64, finishedAt: Int64, document: [UInt8]) {
        self.runID = runID
        self.fence = fence
        self.finishedAt = finishedAt
        self.document = document
    }
}

/// A vendor of an org.
public struct VendorKey: Sendable, Hashable {
    public var orgID: String
    public var vendorID: String

    public init(orgID: String, vendorID: String) {
        self.orgID = orgID
        self.vendorID = vendorID
    }
}

/// The state a batch's decisions were made on.
public struct BatchSnapshot: Sendable {
    /// The next offset to handle, per partition; absent when the store has seen nothing of it.
    public var watermarks: [PartitionID: Int64] = [:]
    /// The epoch of each partition's log, where it is not 0 (ids derive from it).
    public var epochs: [PartitionID: Int64] = [:]
    /// Live (unexpired) idempotency records.
    public var records: [ScopeHash: IdempotencyRecord] = [:]
    public var vendors: [VendorKey: VendorRecord] = [:]
    /// The runs asked for that exist.
    public var runs: [String: RunSnapshot] = [:]

    public init() {}
}

/// Everything a batch changes, written in one transaction.
public struct BatchWrites: Sendable {
    /// Per partition: the watermark read (`nil` for none) and the new one.
    public var watermarks: [PartitionID: (expected: Int64?, next: Int64)] = [:]
    /// Per partition whose watermark moves: the digest of the record at its new `next - 1`.
    public var lastDigests: [PartitionID: [UInt8]] = [:]
    /// Per partition whose watermark moves: the epoch of the log it was read in (a mark
    /// moves only within its epoch, so a batch of a log reset meanwhile cannot apply).
    public var epochs: [PartitionID: Int64] = [:]
    /// New idempotency records. A live record with the same scope is a conflict;
    /// an expired one is replaced.
    public var records: [IdempotencyRecord] = []
    public var vendors: [VendorRecord] = []
    public var runs: [RunRecord] = []
    public var assessments: [AssessmentRecord] = []
    public var outbox: [OutboxMessage] = []
    /// The engine work of the runs the batch starts (their steps run after the commit).
    public var tasks: [EngineTask] = []
    /// Runs the batch cancels.
    public var cancels: [RunCancel] = []
    /// Events steps may wait for: kept, and the runs waiting for them woken (made due
    /// now; a run being performed meanwhile is claimed again after its commit).
    public var events: [EngineEvent] = []
    /// When the batch was decided; records expired at this time may be replaced.
    public var now: Timestamp = 0

    public init() {}

    public var isEmpty: Bool {
        watermarks.isEmpty && records.isEmpty && vendors.isEmpty && runs.isEmpty && assessments.isEmpty && outbox.isEmpty && tasks.isEmpty && cancels.isEmpty && events.isEmpty
    }
}

/// A store failure.
public struct StoreError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        fileprivate enum Base: String, Sendable, Hashable {
            case conflict
            case unavailable
            case invalidURL
        }

        fileprivate let base: Base
        /// What a batch read changed before it was written; load and decide again.
        public static let conflict = Code(base: .conflict)
        /// The database cannot be opened or used.
        public static let unavailable = Code(base: .unavailable)
        /// `STORE_URL` is not a supported URL.
        public static let invalidURL = Code(base: .invalidURL)
        public var description: String { base.rawValue }
    }

    public var code: Code
    public var message: String
    /// Whether the call passed its deadline (``Deadline``) rather than failed at the server.
    public var timedOut = false

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "StoreError(\(code)): \(message)" }
}
