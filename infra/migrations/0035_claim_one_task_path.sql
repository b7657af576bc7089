-- The claim function (0028, as 0034 left it) with a path of its own for one locked row,
-- the claim a drainer makes at low load (bench/RESULTS.md, round 8).
--
-- Measured in PostgreSQL instructions (bench/dbpathcg.py), a one-task claim was ~1.21M,
-- and what this saves is executor set-up, not work on the row:
-- 1. synchronous_commit is set by the lock statement instead of a PERFORM of its own:
--    one SPI statement less for every claim.  It is now set whether or not a row was
--    locked; a transaction that changed nothing writes no commit record, so nothing
--    else notices.
-- 2. When the lock took exactly one row, the change is an UPDATE of that one ctid (a
--    TID probe, as 0028's UPDATE is per row) with its RETURNING read INTO the output
--    columns, the event a plain INSERT ... VALUES and the row handed back by RETURN
--    NEXT: no unnest() of the arrays, no join, no CTEs and no outer scan of them.
-- The lock, the claimable test and every condition stay one statement for any number
-- of ids, so both paths claim exactly the same rows; what they write (the task's
-- columns, the event with its name and times for the metrics trigger's fast path) and
-- return is the same, column for column (tests/integration/test_claim_statement.py).
-- The UPDATE cannot miss the row (this transaction holds its lock since the first
-- statement, 0028 says why its ctid is the newest); should it, the claim returns
-- nothing rather than an event for no task.
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
BEGIN
    -- Not durable on purpose (queries.sql says why): set_config(..., true) is local to
    -- the transaction, which is not one of the function's SET clauses, so it outlives
    -- the call until the commit.
    SELECT array_agg(l.ctid), array_agg(l.status), set_config('synchronous_commit', 'off', true)
    INTO locked, was, sync
    FROM (
        SELECT t.ctid, t.status FROM tasks t
        WHERE t.id = ANY(claim_ids)
          AND CASE t.status WHEN 'QUEUED' THEN true WHEN 'PENDING' THEN t.run_at <= now() ELSE false END
          AND NOT EXISTS (SELECT 1 FROM paused_task_types p
                          WHERE p.name = t.name AND p.tenant IN (t.tenant, ''))
          AND (t.expires_at IS NULL OR t.expires_at > now())
        ORDER BY t.id
        FOR UPDATE
    ) AS l;
    IF locked IS NULL THEN
        RETURN;
    END IF;
    IF cardinality(locked) = 1 THEN
        UPDATE tasks t
        SET status = 'PROCESSING', attempts = t.attempts + 1, lease_token = claim_token,
            lease_expires_at = now() + make_interval(secs => lease_seconds),
            started_at = now(), updated_at = now(),
            enqueued_at = coalesce(CASE WHEN was[1] = 'QUEUED' THEN t.enqueued_at END, t.run_at)
        WHERE t.ctid = locked[1]
        RETURNING t.id::text, t.tenant, t.name::text, t.priority::text, t.payload, t.attempts::integer,
                  t.max_retries::integer, t.timeout_seconds::integer, t.enqueued_at, t.started_at,
                  t.trace_context::text, t.snoozes::integer, t.waiting_on IS NOT NULL
        INTO id, tenant, name, priority, payload, attempts, max_retries, timeout_seconds, enqueued_at,
             started_at, trace_context, snoozes, has_parents;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        INSERT INTO task_events (task_id, from_status, to_status, attempt, actor,
                                 task_name, task_enqueued_at, task_started_at)
        VALUES (id::uuid, was[1], 'PROCESSING', attempts, claim_actor, name, enqueued_at, started_at);
        RETURN NEXT;
        RETURN;
    END IF;
    RETURN QUERY
    WITH c AS (
        UPDATE tasks t
        SET status = 'PROCESSING', attempts = t.attempts + 1, lease_token = claim_token,
            lease_expires_at = now() + make_interval(secs => lease_seconds),
            started_at = now(), updated_at = now(),
            enqueued_at = coalesce(CASE WHEN l.status = 'QUEUED' THEN t.enqueued_at END, t.run_at)
        FROM unnest(locked, was) AS l(tid, status)
        WHERE t.ctid = l.tid
        RETURNING t.id, t.tenant, t.name, t.priority, t.payload, t.attempts, t.max_retries,
                  t.timeout_seconds, t.enqueued_at, t.started_at, t.trace_context, t.snoozes,
                  l.status AS from_status, t.waiting_on IS NOT NULL AS has_parents
    ), ev AS (
        INSERT INTO task_events (task_id, from_status, to_status, attempt, actor,
                                 task_name, task_enqueued_at, task_started_at)
        SELECT c.id, c.from_status, 'PROCESSING', c.attempts, claim_actor, c.name, c.enqueued_at, c.started_at
        FROM c
    )
    SELECT c.id::text, c.tenant, c.name::text, c.priority::text, c.payload, c.attempts::integer,
           c.max_retries::integer, c.timeout_seconds::integer, c.enqueued_at, c.started_at,
           c.trace_context::text, c.snoozes::integer, c.has_parents
    FROM c;
END;
$$;
