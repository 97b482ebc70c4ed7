import Foundation

/// The PostgreSQL schema, versioned like SQLite's: add a migration for each change,
/// never edit one. The tables are SQLite's, with PostgreSQL's types; a batch's writes
/// go through one function, `tw_apply_batch`, so that a batch costs one round trip.
enum PostgresSchema {
    /// A migration: its version, a name, and its statements (run in order, in the
    /// transaction that applies every pending migration).
    struct Migration: Sendable {
        var version: Int
        var name: String
        var statements: [String]
    }

    /// The key of the advisory lock that serialises migrations between instances
    /// starting at once (an arbitrary constant: "tw-migr" in ASCII).
    static let migrationLock: Int64 = 0x74_77_2D_6D_69_67_72

    /// The SQLSTATE `tw_apply_batch` raises when what a batch read changed meanwhile.
    static let conflictState = "TW001"

    static let migrations: [Migration] = [
        Migration(version: 1, name: "tables", statements: [
            """
            CREATE TABLE partition_progress (
                topic text NOT NULL,
                partition integer NOT NULL,
                next_offset bigint NOT NULL,
                epoch bigint NOT NULL DEFAULT 0,
                last_digest bytea,
                PRIMARY KEY (topic, partition)
            )
            """,
            // The scope hash is the key: 16 random bytes, looked up with = ANY.
            """
            CREATE TABLE idempotency (
                scope bytea PRIMARY KEY,
                org_id text NOT NULL,
                endpoint text NOT NULL,
                key text NOT NULL,
                fingerprint bytea NOT NULL,
                status integer NOT NULL,
                body bytea NOT NULL,
                created_at bigint NOT NULL,
                expires_at bigint NOT NULL
            )
            """,
            "CREATE INDEX idempotency_expiry ON idempotency (expires_at)",
            """
            CREATE TABLE vendors (
                org_id text NOT NULL,
                id text NOT NULL,
                document bytea NOT NULL,
                occurred_at bigint NOT NULL,
                PRIMARY KEY (org_id, id)
            )
            """,
            """
            CREATE TABLE runs (
                id text PRIMARY KEY,
                org_id text NOT NULL,
                workflow_name text NOT NULL,
                status text NOT NULL,
                started_at bigint NOT NULL,
                finished_at bigint,
                document bytea NOT NULL
            )
            """,
            "CREATE INDEX runs_by_start ON runs (started_at)",
            "CREATE INDEX runs_by_finish ON runs (finished_at) WHERE finished_at IS NOT NULL",
            """
            CREATE TABLE assessments (
                id text PRIMARY KEY,
                org_id text NOT NULL,
                vendor_id text NOT NULL,
                created_at bigint NOT NULL,
                document bytea NOT NULL
            )
            """,
            "CREATE INDEX assessments_by_creation ON assessments (created_at)",
            // An entry belongs to the partition whose inputs it answers: the instance
            // that owns the partition publishes it, oldest first.
            """
            CREATE TABLE outbox (
                id bigserial PRIMARY KEY,
                source_topic text,
                source_partition integer,
                messages bytea NOT NULL
            )
            """,
            "CREATE INDEX outbox_by_source ON outbox (source_topic, source_partition, id)",
            """
            CREATE TABLE parked_outputs (
                id bigserial PRIMARY KEY,
                parked_at bigint NOT NULL,
                error_code text NOT NULL,
                error text NOT NULL,
                message bytea NOT NULL
            )
            """,
        ]),
        Migration(version: 2, name: "apply-batch-function", statements: [applyBatchFunctionV2]),
        // The entries of no partition (outputs put back by an operator) are read oldest
        // first by every instance: without this index, that read scanned the outbox.
        // The marks' compare-and-set checks the log's epoch too.
        // A parked output keeps its source partition, and goes back to it when retried.
        Migration(version: 3, name: "unowned-outbox-index-epoch-fence-parked-sources", statements: [
            "CREATE INDEX outbox_unowned ON outbox (id) WHERE source_topic IS NULL",
            "ALTER TABLE parked_outputs ADD COLUMN source_topic text, ADD COLUMN source_partition integer",
            "DROP FUNCTION tw_apply_batch(text[], integer[], bigint[], bigint[], bytea[], bytea[], text[], text[], text[], bytea[], integer[], bytea[], bigint[], bigint[], text[], text[], bytea[], bigint[], text[], text[], text[], text[], bigint[], bigint[], bytea[], text[], text[], text[], bigint[], bytea[], text[], integer[], bytea[], bigint)",
            applyBatchFunction,
        ]),
        // The durable engine: a run's steps execute after intake, claimed with leases.
        Migration(version: 4, name: "engine-tasks", statements: [
            """
            CREATE TABLE run_tasks (
                run_id text PRIMARY KEY,
                org_id text NOT NULL,
                due_at bigint NOT NULL,
                lease_owner text,
                lease_until bigint NOT NULL DEFAULT 0,
                fence bigint NOT NULL DEFAULT 0,
                state bytea NOT NULL,
                source_topic text,
                source_partition integer
            )
            """,
            "CREATE INDEX run_tasks_by_due ON run_tasks (due_at)",
            // Version 3's function stays (an overload with fewer arguments): instances of the
            // previous release keep taking batches during a rolling upgrade.
            applyBatchFunctionV4,
            commitTasksFunction,
        ]),
        // Cancelling a run: its task goes (if unchanged since read), its record says so.
        Migration(version: 5, name: "cancel-runs", statements: [cancelRunsFunction]),
        // Steps that wait for events: the events kept, what each waiting run waits for,
        // and a run woken while it was being performed (its commit keeps it due).
        Migration(version: 6, name: "engine-events", statements: [
            """
            CREATE TABLE engine_events (
                sequence bigserial PRIMARY KEY,
                org_id text NOT NULL,
                event_id text NOT NULL,
                event_type text NOT NULL,
                vendor_id text,
                run_id text,
                data bytea NOT NULL,
                received_at bigint NOT NULL,
                UNIQUE (org_id, event_id)
            )
            """,
            "CREATE INDEX engine_events_by_type ON engine_events (org_id, event_type, sequence)",
            "CREATE INDEX engine_events_by_vendor ON engine_events (org_id, event_type, vendor_id, sequence)",
            """
            CREATE TABLE run_waits (
                run_id text PRIMARY KEY,
                org_id text NOT NULL,
                event_type text NOT NULL,
                vendor_id text
            )
            """,
            "CREATE INDEX run_waits_by_event ON run_waits (org_id, event_type, vendor_id)",
            "ALTER TABLE run_tasks ADD COLUMN woken boolean NOT NULL DEFAULT false",
            recordEventsFunction,
            "DROP FUNCTION tw_commit_tasks",
            commitTasksFunctionV6,
            cancelRunsFunctionV6,
        ]),
        // for_each: items are tasks of their run, held back by its concurrency, and their
        // results are kept for the for_each and aggregate steps.
        Migration(version: 7, name: "for-each-items", statements: [
            "ALTER TABLE run_tasks ADD COLUMN parent_id text, ADD COLUMN slots integer NOT NULL DEFAULT 0",
            "CREATE INDEX run_tasks_by_parent ON run_tasks (parent_id, due_at) WHERE parent_id IS NOT NULL",
            """
            CREATE TABLE run_items (
                run_id text NOT NULL,
                step_id text NOT NULL,
                item_key text NOT NULL,
                status text NOT NULL,
                response bytea,
                finished_at bigint NOT NULL,
                PRIMARY KEY (run_id, step_id, item_key)
            )
            """,
            startItemsFunction,
            cancelRunsFunctionV7,
        ]),
        // Events of one org and type are kept, and checked against the waits, in one
        // order (an advisory lock per org and type); a claim starts unwoken; a for_each's
        // last items cannot both miss waking their run; a canceled child wakes its parent.
        Migration(version: 8, name: "event-order-and-wakes", statements: [
            recordEventsFunctionV8,
            commitTasksFunctionV8,
            startItemsFunctionV8,
            cancelRunsFunctionV8,
        ]),
        // When the next task can be claimed (due, its lease run out), read from an index:
        // idle instances asked it by a scan of every task.
        Migration(version: 9, name: "next-claimable-index", statements: [
            "CREATE INDEX run_tasks_by_claimable ON run_tasks ((greatest(due_at, lease_until)))",
        ]),
        // The HTTP API lists an org's runs newest first.
        Migration(version: 10, name: "runs-by-org", statements: [
            "CREATE INDEX runs_by_org_start ON runs (org_id, started_at)",
        ]),
    ]

    /// The columns whose values may pass PostgreSQL's TOAST threshold (about 2 KiB): a
    /// run's task state (its definition, input and steps), outbox entries (hundreds of
    /// messages each), documents, kept events and responses. Compressed with lz4 where the
    /// server has it (``PostgresStore/compressLargeValuesWithLZ4()``).
    static let largeValueColumns: [(table: String, column: String)] = [
        ("outbox", "messages"), ("parked_outputs", "message"), ("run_tasks", "state"), ("runs", "document"),
        ("idempotency", "body"), ("assessments", "document"), ("vendors", "document"), ("engine_events", "data"),
        ("run_items", "response"),
    ]

    /// The newest version this build knows: a store migrated further belongs to a newer build.
    static var latestVersion: Int { migrations.map(\.version).max() ?? 0 }

    /// The function as version 2 created it (kept as it was: migrations are never edited).
    static let applyBatchFunctionV2 = """
        CREATE FUNCTION tw_apply_batch(
            wm_topics text[], wm_partitions integer[], wm_expected bigint[], wm_next bigint[], wm_digests bytea[],
            rec_scopes bytea[], rec_orgs text[], rec_endpoints text[], rec_keys text[], rec_fingerprints bytea[],
            rec_statuses integer[], rec_bodies bytea[], rec_created bigint[], rec_expires bigint[],
            ven_orgs text[], ven_ids text[], ven_documents bytea[], ven_occurred bigint[],
            run_ids text[], run_orgs text[], run_names text[], run_statuses text[], run_started bigint[], run_finished bigint[], run_documents bytea[],
            as_ids text[], as_orgs text[], as_vendors text[], as_created bigint[], as_documents bytea[],
            ob_topics text[], ob_partitions integer[], ob_messages bytea[],
            now_ms bigint
        ) RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            changed bigint;
            wanted bigint;
        BEGIN
            UPDATE partition_progress p
               SET next_offset = w.next, last_digest = nullif(w.digest, ''::bytea)
              FROM unnest(wm_topics, wm_partitions, wm_expected, wm_next, wm_digests) AS w(topic, part, expected, next, digest)
             WHERE w.expected >= 0 AND p.topic = w.topic AND p.partition = w.part AND p.next_offset = w.expected;
            GET DIAGNOSTICS changed = ROW_COUNT;
            SELECT count(*) INTO wanted FROM unnest(wm_expected) AS e WHERE e >= 0;
            IF changed <> wanted THEN
                RAISE EXCEPTION 'a partition watermark moved since it was read' USING ERRCODE = 'TW001';
            END IF;
            INSERT INTO partition_progress (topic, partition, next_offset, last_digest)
            SELECT w.topic, w.part, w.next, nullif(w.digest, ''::bytea)
              FROM unnest(wm_topics, wm_partitions, wm_expected, wm_next, wm_digests) AS w(topic, part, expected, next, digest)
             WHERE w.expected < 0
            ON CONFLICT DO NOTHING;
            GET DIAGNOSTICS changed = ROW_COUNT;
            SELECT count(*) INTO wanted FROM unnest(wm_expected) AS e WHERE e < 0;
            IF changed <> wanted THEN
                RAISE EXCEPTION 'a partition was handled elsewhere since it was read' USING ERRCODE = 'TW001';
            END IF;

            INSERT INTO idempotency AS i (scope, org_id, endpoint, key, fingerprint, status, body, created_at, expires_at)
            SELECT * FROM unnest(rec_scopes, rec_orgs, rec_endpoints, rec_keys, rec_fingerprints, rec_statuses, rec_bodies, rec_created, rec_expires)
            ON CONFLICT (scope) DO UPDATE SET
                org_id = excluded.org_id, endpoint = excluded.endpoint, key = excluded.key,
                fingerprint = excluded.fingerprint, status = excluded.status, body = excluded.body,
                created_at = excluded.created_at, expires_at = excluded.expires_at
            WHERE i.expires_at <= now_ms;
            GET DIAGNOSTICS changed = ROW_COUNT;
            IF changed <> coalesce(cardinality(rec_scopes), 0) THEN
                RAISE EXCEPTION 'an idempotency scope was claimed since it was read' USING ERRCODE = 'TW001';
            END IF;

            INSERT INTO vendors AS v (org_id, id, document, occurred_at)
            SELECT * FROM unnest(ven_orgs, ven_ids, ven_documents, ven_occurred)
            ON CONFLICT (org_id, id) DO UPDATE SET document = excluded.document, occurred_at = excluded.occurred_at
            WHERE excluded.occurred_at >= v.occurred_at;

            INSERT INTO runs (id, org_id, workflow_name, status, started_at, finished_at, document)
            SELECT r.id, r.org, r.name, r.status, r.started, nullif(r.finished, -1), r.document
              FROM unnest(run_ids, run_orgs, run_names, run_statuses, run_started, run_finished, run_documents)
                   AS r(id, org, name, status, started, finished, document);

            INSERT INTO assessments (id, org_id, vendor_id, created_at, document)
            SELECT * FROM unnest(as_ids, as_orgs, as_vendors, as_created, as_documents);

            INSERT INTO outbox (source_topic, source_partition, messages)
            SELECT nullif(o.topic, ''), nullif(o.part, -1), o.messages
              FROM unnest(ob_topics, ob_partitions, ob_messages) WITH ORDINALITY AS o(topic, part, messages, position)
             ORDER BY o.position;
        END
        $$
        """

    /// Everything a batch changes, in one statement (so one round trip, and one
    /// transaction): the watermark moves are compare-and-set (a fence against a
    /// batch of a partition that has moved to another instance meanwhile), a live
    /// idempotency record with the same scope is a conflict, and either raises
    /// ``conflictState``; an existing run or assessment id raises `unique_violation`.
    /// The compare-and-set of a mark checks its epoch too. A batch too large for one
    /// statement is written by several calls in one transaction (see `ApplyBatch.parts`).
    /// Arrays are of equal length per group; -1 stands for "none" in `wm_expected`,
    /// `run_finished` and `ob_partitions` (offsets and times are never negative), and
    /// the empty string in `ob_topics`.
    static let applyBatchFunction = """
        CREATE FUNCTION tw_apply_batch(
            wm_topics text[], wm_partitions integer[], wm_expected bigint[], wm_next bigint[], wm_digests bytea[], wm_epochs bigint[],
            rec_scopes bytea[], rec_orgs text[], rec_endpoints text[], rec_keys text[], rec_fingerprints bytea[],
            rec_statuses integer[], rec_bodies bytea[], rec_created bigint[], rec_expires bigint[],
            ven_orgs text[], ven_ids text[], ven_documents bytea[], ven_occurred bigint[],
            run_ids text[], run_orgs text[], run_names text[], run_statuses text[], run_started bigint[], run_finished bigint[], run_documents bytea[],
            as_ids text[], as_orgs text[], as_vendors text[], as_created bigint[], as_documents bytea[],
            ob_topics text[], ob_partitions integer[], ob_messages bytea[],
            now_ms bigint
        ) RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            changed bigint;
            wanted bigint;
        BEGIN
            UPDATE partition_progress p
               SET next_offset = w.next, last_digest = nullif(w.digest, ''::bytea)
              FROM unnest(wm_topics, wm_partitions, wm_expected, wm_next, wm_digests, wm_epochs) AS w(topic, part, expected, next, digest, epoch)
             WHERE w.expected >= 0 AND p.topic = w.topic AND p.partition = w.part AND p.next_offset = w.expected AND p.epoch = w.epoch;
            GET DIAGNOSTICS changed = ROW_COUNT;
            SELECT count(*) INTO wanted FROM unnest(wm_expected) AS e WHERE e >= 0;
            IF changed <> wanted THEN
                RAISE EXCEPTION 'a partition watermark moved since it was read' USING ERRCODE = 'TW001';
            END IF;
            INSERT INTO partition_progress (topic, partition, next_offset, last_digest)
            SELECT w.topic, w.part, w.next, nullif(w.digest, ''::bytea)
              FROM unnest(wm_topics, wm_partitions, wm_expected, wm_next, wm_digests) AS w(topic, part, expected, next, digest)
             WHERE w.expected < 0
            ON CONFLICT DO NOTHING;
            GET DIAGNOSTICS changed = ROW_COUNT;
            SELECT count(*) INTO wanted FROM unnest(wm_expected) AS e WHERE e < 0;
            IF changed <> wanted THEN
                RAISE EXCEPTION 'a partition was handled elsewhere since it was read' USING ERRCODE = 'TW001';
            END IF;

            INSERT INTO idempotency AS i (scope, org_id, endpoint, key, fingerprint, status, body, created_at, expires_at)
            SELECT * FROM unnest(rec_scopes, rec_orgs, rec_endpoints, rec_keys, rec_fingerprints, rec_statuses, rec_bodies, rec_created, rec_expires)
            ON CONFLICT (scope) DO UPDATE SET
                org_id = excluded.org_id, endpoint = excluded.endpoint, key = excluded.key,
                fingerprint = excluded.fingerprint, status = excluded.status, body = excluded.body,
                created_at = excluded.created_at, expires_at = excluded.expires_at
            WHERE i.expires_at <= now_ms;
            GET DIAGNOSTICS changed = ROW_COUNT;
            IF changed <> coalesce(cardinality(rec_scopes), 0) THEN
                RAISE EXCEPTION 'an idempotency scope was claimed since it was read' USING ERRCODE = 'TW001';
            END IF;

            INSERT INTO vendors AS v (org_id, id, document, occurred_at)
            SELECT * FROM unnest(ven_orgs, ven_ids, ven_documents, ven_occurred)
            ON CONFLICT (org_id, id) DO UPDATE SET document = excluded.document, occurred_at = excluded.occurred_at
            WHERE excluded.occurred_at >= v.occurred_at;

            INSERT INTO runs (id, org_id, workflow_name, status, started_at, finished_at, document)
            SELECT r.id, r.org, r.name, r.status, r.started, nullif(r.finished, -1), r.document
              FROM unnest(run_ids, run_orgs, run_names, run_statuses, run_started, run_finished, run_documents)
                   AS r(id, org, name, status, started, finished, document);

            INSERT INTO assessments (id, org_id, vendor_id, created_at, document)
            SELECT * FROM unnest(as_ids, as_orgs, as_vendors, as_created, as_documents);

            INSERT INTO outbox (source_topic, source_partition, messages)
            SELECT nullif(o.topic, ''), nullif(o.part, -1), o.messages
              FROM unnest(ob_topics, ob_partitions, ob_messages) WITH ORDINALITY AS o(topic, part, messages, position)
             ORDER BY o.position;
        END
        $$
        """

    /// Version 3's function with the engine's tasks of the runs a batch starts (same
    /// checks, one more insert). Derived from version 3's text, which stays as it was.
    static let applyBatchFunctionV4 = applyBatchFunction
        .replacingOccurrences(
            of: "ob_topics text[], ob_partitions integer[], ob_messages bytea[],\n",
            with: "ob_topics text[], ob_partitions integer[], ob_messages bytea[],\n    tk_runs text[], tk_orgs text[], tk_due bigint[], tk_states bytea[], tk_topics text[], tk_partitions integer[],\n"
        )
        .replacingOccurrences(
            of: "     ORDER BY o.position;\nEND",
            with: """
                     ORDER BY o.position;

                    INSERT INTO run_tasks (run_id, org_id, due_at, state, source_topic, source_partition)
                    SELECT t.run, t.org, t.due, t.state, nullif(t.topic, ''), nullif(t.part, -1)
                      FROM unnest(tk_runs, tk_orgs, tk_due, tk_states, tk_topics, tk_partitions) AS t(run, org, due, state, topic, part);
                END
                """
        )

    /// What the engine's claims did, in one statement: raises ``conflictState`` when any
    /// claim's fence moved (its lease ran out and another instance claimed the run);
    /// the caller then keeps only the claims that still hold and calls again. Tasks
    /// with `t_due` -1 ended and are deleted; an empty document leaves its run as it is;
    /// assessments already there are kept.
    static let commitTasksFunction = """
        CREATE FUNCTION tw_commit_tasks(
            t_runs text[], t_fences bigint[], t_due bigint[], t_states bytea[],
            r_statuses text[], r_finished bigint[], r_documents bytea[],
            as_ids text[], as_orgs text[], as_vendors text[], as_created bigint[], as_documents bytea[],
            ob_topics text[], ob_partitions integer[], ob_messages bytea[]
        ) RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            held bigint;
        BEGIN
            SELECT count(*) INTO held FROM (
                SELECT 1 FROM run_tasks t JOIN unnest(t_runs, t_fences) AS c(run, fence) ON t.run_id = c.run AND t.fence = c.fence
                 ORDER BY t.run_id FOR UPDATE OF t
            ) AS locked;
            IF held <> coalesce(cardinality(t_runs), 0) THEN
                RAISE EXCEPTION 'a claim of the engine was lost (its lease ran out)' USING ERRCODE = 'TW001';
            END IF;
            UPDATE run_tasks t SET state = c.state, due_at = c.due, lease_owner = NULL, lease_until = 0, fence = t.fence + 1
              FROM unnest(t_runs, t_due, t_states) AS c(run, due, state)
             WHERE t.run_id = c.run AND c.due >= 0;
            DELETE FROM run_tasks t USING unnest(t_runs, t_due) AS c(run, due) WHERE t.run_id = c.run AND c.due < 0;
            UPDATE runs r SET status = c.status, finished_at = nullif(c.finished, -1), document = c.document
              FROM unnest(t_runs, r_statuses, r_finished, r_documents) AS c(run, status, finished, document)
             WHERE r.id = c.run AND length(c.document) > 0;
            INSERT INTO assessments (id, org_id, vendor_id, created_at, document)
            SELECT * FROM unnest(as_ids, as_orgs, as_vendors, as_created, as_documents)
            ON CONFLICT DO NOTHING;
            INSERT INTO outbox (source_topic, source_partition, messages)
            SELECT nullif(o.topic, ''), nullif(o.part, -1), o.messages
              FROM unnest(ob_topics, ob_partitions, ob_messages) WITH ORDINALITY AS o(topic, part, messages, position)
             ORDER BY o.position;
        END
        $$
        """

    /// The runs a batch cancels, in its transaction (after `tw_apply_batch`): each
    /// task is deleted only at the fence the batch read, else ``conflictState``.
    static let cancelRunsFunction = """
        CREATE FUNCTION tw_cancel_runs(c_runs text[], c_fences bigint[], c_finished bigint[], c_documents bytea[])
        RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            changed bigint;
        BEGIN
            DELETE FROM run_tasks t USING unnest(c_runs, c_fences) AS c(run, fence) WHERE t.run_id = c.run AND t.fence = c.fence;
            GET DIAGNOSTICS changed = ROW_COUNT;
            IF changed <> coalesce(cardinality(c_runs), 0) THEN
                RAISE EXCEPTION 'a run moved on since it was read' USING ERRCODE = 'TW001';
            END IF;
            UPDATE runs r SET status = 'canceled', finished_at = c.finished, document = c.document
              FROM unnest(c_runs, c_finished, c_documents) AS c(run, finished, document)
             WHERE r.id = c.run;
        END
        $$
        """

    /// Keeps a batch's events (once per org and event id) and wakes the runs waiting
    /// for them: due now, and marked woken so that a commit of a claim in progress
    /// does not push them back to their deadline.
    static let recordEventsFunction = """
        CREATE FUNCTION tw_record_events(
            e_orgs text[], e_ids text[], e_types text[], e_vendors text[], e_runs text[], e_data bytea[], e_received bigint[], now_ms bigint
        ) RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            WITH added AS (
                INSERT INTO engine_events (org_id, event_id, event_type, vendor_id, run_id, data, received_at)
                SELECT e.org, e.id, e.type, nullif(e.vendor, ''), nullif(e.run, ''), e.data, e.received
                  FROM unnest(e_orgs, e_ids, e_types, e_vendors, e_runs, e_data, e_received) WITH ORDINALITY AS e(org, id, type, vendor, run, data, received, position)
                 ORDER BY e.position
                ON CONFLICT (org_id, event_id) DO NOTHING
                RETURNING org_id, event_type, vendor_id, run_id
            )
            UPDATE run_tasks t SET due_at = least(t.due_at, now_ms), woken = true
              FROM run_waits w JOIN added a ON w.org_id = a.org_id AND w.event_type = a.event_type
                   AND (w.vendor_id IS NULL OR w.vendor_id = a.vendor_id)
             WHERE t.run_id = w.run_id AND (a.run_id IS NULL OR a.run_id = w.run_id OR w.run_id LIKE a.run_id || '/%');
        END
        $$
        """

    /// Version 4's `tw_commit_tasks`, and what each run now waits for (`w_types` empty:
    /// nothing); a run woken while it was performed stays due, and so does one for which
    /// such an event came since `w_since` (before its subscription could be woken).
    static let commitTasksFunctionV6 = commitTasksFunction
        .replacingOccurrences(
            of: "ob_topics text[], ob_partitions integer[], ob_messages bytea[]\n",
            with: "ob_topics text[], ob_partitions integer[], ob_messages bytea[],\n    w_types text[], w_vendors text[], w_since bigint[], now_ms bigint\n"
        )
        .replacingOccurrences(
            of: "UPDATE run_tasks t SET state = c.state, due_at = c.due, lease_owner = NULL, lease_until = 0, fence = t.fence + 1\n",
            with: "UPDATE run_tasks t SET state = c.state, due_at = CASE WHEN t.woken THEN least(c.due, now_ms) ELSE c.due END, woken = false,\n       lease_owner = NULL, lease_until = 0, fence = t.fence + 1\n"
        )
        .replacingOccurrences(
            of: "     ORDER BY o.position;\nEND",
            with: """
                     ORDER BY o.position;
                    DELETE FROM run_waits w USING unnest(t_runs) AS c(run) WHERE w.run_id = c.run;
                    INSERT INTO run_waits (run_id, org_id, event_type, vendor_id)
                    SELECT c.run, t.org_id, c.type, nullif(c.vendor, '')
                      FROM unnest(t_runs, t_due, w_types, w_vendors) AS c(run, due, type, vendor) JOIN run_tasks t ON t.run_id = c.run
                     WHERE c.type <> '' AND c.due >= 0;
                    UPDATE run_tasks t SET due_at = least(t.due_at, now_ms)
                      FROM unnest(t_runs, t_due, w_types, w_vendors, w_since) AS c(run, due, type, vendor, since)
                     WHERE t.run_id = c.run AND c.type <> '' AND c.due >= 0 AND EXISTS (
                        SELECT 1 FROM engine_events e WHERE e.org_id = t.org_id AND e.event_type = c.type
                           AND (c.vendor = '' OR e.vendor_id = c.vendor) AND (e.run_id IS NULL OR e.run_id = c.run OR c.run LIKE e.run_id || '/%')
                           AND e.received_at >= c.since);
                END
                """
        )

    /// Version 5's `tw_cancel_runs`, which also forgets what the runs waited for.
    static let cancelRunsFunctionV6 = cancelRunsFunction
        .replacingOccurrences(of: "CREATE FUNCTION", with: "CREATE OR REPLACE FUNCTION")
        .replacingOccurrences(
            of: "     WHERE r.id = c.run;\nEND",
            with: "     WHERE r.id = c.run;\n    DELETE FROM run_waits w USING unnest(c_runs) AS c(run) WHERE w.run_id = c.run;\nEND"
        )

    /// For each run in `parents`: starts its held-back items while fewer than its
    /// concurrency are executing (due or claimed; a waiting item holds no slot), and wakes
    /// it when it has no items left. Called in the transaction of an engine commit.
    static let startItemsFunction = """
        CREATE FUNCTION tw_start_items(parents text[], now_ms bigint, dormant bigint) RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            parent text;
        BEGIN
            FOREACH parent IN ARRAY parents LOOP
                UPDATE run_tasks SET due_at = now_ms
                 WHERE run_id IN (
                    SELECT run_id FROM run_tasks WHERE parent_id = parent AND due_at = dormant ORDER BY run_id
                     LIMIT greatest(0, coalesce((SELECT max(slots) FROM run_tasks WHERE parent_id = parent), 0)
                       - (SELECT count(*) FROM run_tasks WHERE parent_id = parent AND slots > 0 AND due_at < dormant AND (due_at <= now_ms OR lease_until > now_ms)))
                     FOR UPDATE SKIP LOCKED);
                UPDATE run_tasks SET due_at = least(due_at, now_ms), woken = true
                 WHERE run_id = parent AND NOT EXISTS (SELECT 1 FROM run_tasks WHERE parent_id = parent AND slots > 0);
            END LOOP;
        END
        $$
        """

    /// Version 6's `tw_cancel_runs`, which also deletes the runs' for_each items (not
    /// their child runs: runs of their own, which go on).
    static let cancelRunsFunctionV7 = cancelRunsFunctionV6
        .replacingOccurrences(
            of: "    DELETE FROM run_waits w USING unnest(c_runs) AS c(run) WHERE w.run_id = c.run;\nEND",
            with: """
                    DELETE FROM run_waits w USING unnest(c_runs) AS c(run) WHERE w.run_id = c.run;
                    DELETE FROM run_waits w USING run_tasks t, unnest(c_runs) AS c(run) WHERE t.parent_id = c.run AND t.slots > 0 AND w.run_id = t.run_id;
                    DELETE FROM run_tasks t USING unnest(c_runs) AS c(run) WHERE t.parent_id = c.run AND t.slots > 0;
                END
                """
        )

    /// Version 6's `tw_record_events`, first taking the lock of each org and event type
    /// (in one order): a commit subscribing a run to them waits for it, then sees the events.
    static let recordEventsFunctionV8 = recordEventsFunction
        .replacingOccurrences(of: "CREATE FUNCTION", with: "CREATE OR REPLACE FUNCTION")
        .replacingOccurrences(
            of: "BEGIN\n    WITH added AS (",
            with: """
                BEGIN
                    PERFORM pg_advisory_xact_lock(k)
                       FROM (SELECT DISTINCT hashtext(e.org || '/' || e.type) AS k FROM unnest(e_orgs, e_types) AS e(org, type) ORDER BY 1) AS keys;
                    WITH added AS (
                """
        )

    /// Version 6's `tw_commit_tasks`, first sharing the lock of each org and event type its
    /// runs subscribe to (so an event is either seen by the check below or wakes the
    /// run), and checking for events after the last one the step looked at.
    static let commitTasksFunctionV8 = commitTasksFunctionV6
        .replacingOccurrences(of: "CREATE FUNCTION", with: "CREATE OR REPLACE FUNCTION")
        .replacingOccurrences(
            of: "BEGIN\n    SELECT count(*) INTO held FROM (",
            with: """
                BEGIN
                    PERFORM pg_advisory_xact_lock_shared(k)
                       FROM (SELECT DISTINCT hashtext(t.org_id || '/' || c.type) AS k
                               FROM unnest(t_runs, w_types) AS c(run, type) JOIN run_tasks t ON t.run_id = c.run
                              WHERE c.type <> '' ORDER BY 1) AS keys;
                    SELECT count(*) INTO held FROM (
                """
        )
        .replacingOccurrences(of: "AND e.received_at >= c.since);", with: "AND e.sequence > c.since);")

    /// Version 7's `tw_start_items`, locking each run first (two commits ending its last
    /// items at once then see each other's deletes: one wakes it), with cheaper counts
    /// (a claimed item is due: its `due_at` is in the index's range).
    static let startItemsFunctionV8 = """
        CREATE OR REPLACE FUNCTION tw_start_items(parents text[], now_ms bigint, dormant bigint) RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            parent text;
        BEGIN
            FOREACH parent IN ARRAY parents LOOP
                PERFORM 1 FROM run_tasks WHERE run_id = parent FOR UPDATE;
                UPDATE run_tasks SET due_at = now_ms
                 WHERE run_id IN (
                    SELECT run_id FROM run_tasks WHERE parent_id = parent AND due_at = dormant ORDER BY run_id
                     LIMIT greatest(0, coalesce((SELECT slots FROM run_tasks WHERE parent_id = parent AND slots > 0 LIMIT 1), 0)
                       - (SELECT count(*) FROM run_tasks WHERE parent_id = parent AND slots > 0 AND due_at <= now_ms))
                     FOR UPDATE SKIP LOCKED);
                UPDATE run_tasks SET due_at = least(due_at, now_ms), woken = true
                 WHERE run_id = parent AND NOT EXISTS (SELECT 1 FROM run_tasks WHERE parent_id = parent AND slots > 0);
            END LOOP;
        END
        $$
        """

    /// Version 7's `tw_cancel_runs`, which also wakes the run (or item) waiting for a
    /// canceled child run.
    static let cancelRunsFunctionV8 = """
        CREATE OR REPLACE FUNCTION tw_cancel_runs(c_runs text[], c_fences bigint[], c_finished bigint[], c_documents bytea[])
        RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            changed bigint;
        BEGIN
            UPDATE run_tasks p SET due_at = least(p.due_at, (extract(epoch FROM clock_timestamp()) * 1000)::bigint), woken = true
              FROM run_tasks t JOIN unnest(c_runs) AS c(run) ON t.run_id = c.run
             WHERE t.slots = 0 AND p.run_id = t.parent_id;
            DELETE FROM run_tasks t USING unnest(c_runs, c_fences) AS c(run, fence) WHERE t.run_id = c.run AND t.fence = c.fence;
            GET DIAGNOSTICS changed = ROW_COUNT;
            IF changed <> coalesce(cardinality(c_runs), 0) THEN
                RAISE EXCEPTION 'a run moved on since it was read' USING ERRCODE = 'TW001';
            END IF;
            UPDATE runs r SET status = 'canceled', finished_at = c.finished, document = c.document
              FROM unnest(c_runs, c_finished, c_documents) AS c(run, finished, document)
             WHERE r.id = c.run;
            DELETE FROM run_waits w USING unnest(c_runs) AS c(run) WHERE w.run_id = c.run;
            DELETE FROM run_waits w USING run_tasks t, unnest(c_runs) AS c(run) WHERE t.parent_id = c.run AND t.slots > 0 AND w.run_id = t.run_id;
            DELETE FROM run_tasks t USING unnest(c_runs) AS c(run) WHERE t.parent_id = c.run AND t.slots > 0;
        END
        $$
        """
}
