-- A claim's second look claims at its own time, and not past a deadline (issue 14).
--
-- The claim's first statement locks the claimable rows of its ids in the snapshot of
-- the transaction's start.  When it locked fewer rows than ids, a second look, in a new
-- snapshot, locks the rows that became claimable meanwhile (migration 0042): after a
-- wait for a submit in flight, and also without one, when a row of its ids is QUEUED or
-- PENDING but was not locked.  0043 stamped the rows with clock_timestamp() only after
-- a wait; a second look without one kept now(), the transaction's start.  But the first
-- statement may itself wait, for another transaction's row lock, and a retry among the
-- ids that falls due meanwhile and is promoted by the sweeper is locked by the second
-- look: its start, its lease and its event were stamped before its run_at
-- (tests/fault/test_load_mix.py saw 10.5 ms; test_claim_waits_for_submit reproduces it
-- by holding a row lock for 0.3 s).
--
-- So claim_time becomes clock_timestamp() when the second look starts, whether or not a
-- wait came first.  The rows the first statement locked were checked against the
-- transaction's start, though: one whose expires_at fell between the two would be
-- claimed, and started, past its deadline (tests/integration/test_deadlines.py saw it;
-- 0043 could do the same after a wait).  The second look keeps of those rows only the
-- ones still before their deadline at its time; the others stay QUEUED, and the
-- drainer, which finds them unclaimed, expires them (deadlines.expire_refused).
--
-- The function is 0043's with those two changes; a claim that locks all its ids in its
-- first statement (nearly all) does what it did.
-- shares advisory lock 7301955, * with migration 0042

CREATE OR REPLACE FUNCTION tasklane_claim(claim_ids uuid[], claim_token uuid, lease_seconds float8,
                                          claim_actor text)
RETURNS TABLE (id text, tenant text, name text, priority text, payload jsonb, attempts integer,
               max_retries integer, timeout_seconds integer, enqueued_at timestamptz,
               started_at timestamptz, trace_context text, snoozes integer, has_parents boolean)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
#variable_conflict use_column
DECLARE
    locked tid[];
    was text[];
    sync text;
    -- The bounds of the metrics trigger's histograms (chalicelib.observability.metrics.BUCKETS).
    bounds float8[] := '{0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,300,900,3600,Infinity}'::float8[];
    waited float8;
    bucket integer;
    -- Only for ids the lock found no claimable row for:
    unseen uuid[];
    appeared boolean;
    caller_lock_timeout text;
    wait_until timestamptz;
    unseen_id uuid;
    more_locked tid[];
    more_was text[];
    -- The time the rows are claimed at: the transaction's start, or the second look's.
    claim_time timestamptz := now();
BEGIN
    -- Not durable on purpose (queries.sql says why): set_config(..., true) is local to
    -- the transaction, which is not one of the function's SET clauses, so it outlives
    -- the call until the commit.
    SELECT array_agg(l.ctid), array_agg(l.status), set_config('synchronous_commit', 'off', true)
    INTO locked, was, sync
    FROM (
        SELECT t.ctid, t.status FROM tasks t
        WHERE t.id = ANY(claim_ids)
          AND CASE t.status WHEN 'QUEUED' THEN true WHEN 'PENDING' THEN t.run_at <= claim_time ELSE false END
          AND NOT EXISTS (SELECT 1 FROM paused_task_types p
                          WHERE p.name = t.name AND p.tenant IN (t.tenant, ''))
          AND (t.expires_at IS NULL OR t.expires_at > claim_time)
        ORDER BY t.id
        FOR UPDATE
    ) AS l;
    IF locked IS NULL OR cardinality(locked) < cardinality(claim_ids) THEN
        -- Some id was not locked (a duplicate id counts here too).  Which ids have no row
        -- at all, in a new snapshot; and whether a row that was not locked may be
        -- claimable now: a submit that committed between the lock's snapshot and this one.
        -- The rows are found as the lock finds them (id = ANY in id order: with sorts
        -- off, only the primary key gives that order, so a probe per id); a join, a
        -- subquery per id or no order, planned on a tiny table, may scan all of another
        -- index instead, and the plan is kept for the session.
        SELECT (SELECT array_agg(DISTINCT u.id ORDER BY u.id) FROM unnest(claim_ids) AS u(id)
                WHERE u.id <> ALL(coalesce(f.ids, '{}'))),
               f.fresh
        INTO unseen, appeared
        FROM (
            SELECT array_agg(t.id) AS ids,
                   coalesce(bool_or(t.status IN ('QUEUED', 'PENDING') AND t.ctid <> ALL(coalesce(locked, '{}'))),
                            false) AS fresh
            FROM (SELECT t.id, t.status, t.ctid FROM tasks t WHERE t.id = ANY(claim_ids) ORDER BY t.id) AS t
        ) AS f;
        IF unseen IS NOT NULL AND current_setting('transaction_isolation') = 'read committed' THEN
            -- A submit in flight holds its id's key until its commit or rollback.  Taking
            -- the shared form waits for that end; a key nobody holds is granted at once.
            -- lock_timeout is transaction-local here (set_config(..., true)): it is put
            -- back after the block, and a timeout's rollback of the block puts it back too.
            caller_lock_timeout := current_setting('lock_timeout');
            wait_until := clock_timestamp() + interval '2 seconds';
            BEGIN
                FOREACH unseen_id IN ARRAY unseen LOOP
                    sync := set_config('lock_timeout',
                        greatest(1, ceil(extract(epoch FROM wait_until - clock_timestamp()) * 1000))::integer || 'ms',
                        true);
                    PERFORM pg_advisory_xact_lock_shared(7301955, uuid_hash(unseen_id));
                END LOOP;
            EXCEPTION WHEN lock_not_available THEN
                -- Still in flight after 2 s: its row, if it commits later, is the
                -- sweeper's to re-push.  The ids whose submit ended are locked below.
                NULL;
            END;
            sync := set_config('lock_timeout', caller_lock_timeout, true);
            appeared := true;
        END IF;
        IF appeared THEN
            -- now() is the transaction's start, before any wait and before the first
            -- statement's own waits for row locks: what is claimed from here (the rows
            -- locked before too) is claimed now.
            claim_time := clock_timestamp();
            -- The rows locked before were claimable at the transaction's start; those whose
            -- deadline has passed since are not claimed now (they stay as they are, locked
            -- until the commit, and the drainer expires them: deadlines.expire_refused).
            IF locked IS NOT NULL THEN
                SELECT array_agg(l.tid ORDER BY l.n), array_agg(l.status ORDER BY l.n)
                INTO locked, was
                FROM unnest(locked, was) WITH ORDINALITY AS l(tid, status, n)
                JOIN tasks t ON t.ctid = l.tid
                WHERE t.expires_at IS NULL OR t.expires_at > claim_time;
            END IF;
            -- A new statement, so a new snapshot: the rows committed meanwhile, with the
            -- lock's conditions.  SKIP LOCKED: these rows are locked after others this
            -- call holds, out of id order, so waiting here could deadlock with a claimer
            -- that locked in order; a row someone holds right after its commit is a
            -- concurrent claim's (a duplicate id) or a cancel's, not this call's.
            SELECT array_agg(l.ctid), array_agg(l.status)
            INTO more_locked, more_was
            FROM (
                SELECT t.ctid, t.status FROM tasks t
                WHERE t.id = ANY(claim_ids)
                  AND t.ctid <> ALL(coalesce(locked, '{}'))
                  AND CASE t.status WHEN 'QUEUED' THEN true WHEN 'PENDING' THEN t.run_at <= claim_time ELSE false END
                  AND NOT EXISTS (SELECT 1 FROM paused_task_types p
                                  WHERE p.name = t.name AND p.tenant IN (t.tenant, ''))
                  AND (t.expires_at IS NULL OR t.expires_at > claim_time)
                ORDER BY t.id
                FOR UPDATE SKIP LOCKED
            ) AS l;
            locked := locked || more_locked;
            was := was || more_was;
        END IF;
        IF locked IS NULL THEN
            RETURN;
        END IF;
    END IF;
    IF cardinality(locked) = 1 THEN
        -- Until the event is written, the triggers on tasks and task_events return at
        -- once: this UPDATE finishes no task, and the event is counted here.
        sync := set_config('tasklane.one_row_claim', 'on', true);
        UPDATE tasks t
        SET status = 'PROCESSING', attempts = t.attempts + 1, lease_token = claim_token,
            lease_expires_at = claim_time + make_interval(secs => lease_seconds),
            started_at = claim_time, updated_at = claim_time,
            enqueued_at = coalesce(CASE WHEN was[1] = 'QUEUED' THEN t.enqueued_at END, t.run_at)
        WHERE t.ctid = locked[1]
        RETURNING t.id::text, t.tenant, t.name::text, t.priority::text, t.payload, t.attempts::integer,
                  t.max_retries::integer, t.timeout_seconds::integer, t.enqueued_at, t.started_at,
                  t.trace_context::text, t.snoozes::integer, t.waiting_on IS NOT NULL
        INTO id, tenant, name, priority, payload, attempts, max_retries, timeout_seconds, enqueued_at,
             started_at, trace_context, snoozes, has_parents;
        IF NOT FOUND THEN
            sync := set_config('tasklane.one_row_claim', '', true);
            RETURN;
        END IF;
        -- What the metrics trigger's claim rule counts for this event: 'started', and
        -- queue_wait (started - enqueued, at least 0) in the bucket of the first bound
        -- >= it (width_bucket counts the bounds <= it).
        waited := greatest(extract(epoch FROM started_at - enqueued_at)::float8, 0);
        bucket := width_bucket(waited, bounds);
        WITH counted AS (
            INSERT INTO task_metric_deltas (name, metric, le, n, total)
            VALUES (name, 'started', 'Infinity', 1, 0),
                   (name, 'queue_wait',
                    CASE WHEN bucket > 0 AND bounds[bucket] = waited THEN bounds[bucket] ELSE bounds[bucket + 1] END,
                    1, waited)
        )
        INSERT INTO task_events (task_id, from_status, to_status, attempt, actor,
                                 task_name, task_enqueued_at, task_started_at, at)
        VALUES (id::uuid, was[1], 'PROCESSING', attempts, claim_actor, name, enqueued_at, started_at, claim_time);
        sync := set_config('tasklane.one_row_claim', '', true);
        RETURN NEXT;
        RETURN;
    END IF;
    RETURN QUERY
    WITH c AS (
        UPDATE tasks t
        SET status = 'PROCESSING', attempts = t.attempts + 1, lease_token = claim_token,
            lease_expires_at = claim_time + make_interval(secs => lease_seconds),
            started_at = claim_time, updated_at = claim_time,
            enqueued_at = coalesce(CASE WHEN l.status = 'QUEUED' THEN t.enqueued_at END, t.run_at)
        FROM unnest(locked, was) AS l(tid, status)
        WHERE t.ctid = l.tid
        RETURNING t.id, t.tenant, t.name, t.priority, t.payload, t.attempts, t.max_retries,
                  t.timeout_seconds, t.enqueued_at, t.started_at, t.trace_context, t.snoozes,
                  l.status AS from_status, t.waiting_on IS NOT NULL AS has_parents
    ), ev AS (
        INSERT INTO task_events (task_id, from_status, to_status, attempt, actor,
                                 task_name, task_enqueued_at, task_started_at, at)
        SELECT c.id, c.from_status, 'PROCESSING', c.attempts, claim_actor, c.name, c.enqueued_at, c.started_at,
               claim_time
        FROM c
    )
    SELECT c.id::text, c.tenant, c.name::text, c.priority::text, c.payload, c.attempts::integer,
           c.max_retries::integer, c.timeout_seconds::integer, c.enqueued_at, c.started_at,
           c.trace_context::text, c.snoozes::integer, c.has_parents
    FROM c;
END;
$$;
