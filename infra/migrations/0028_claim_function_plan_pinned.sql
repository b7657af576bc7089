-- The claim function (0024) in two steps whose plans cannot be anything but probes.
--
-- 0024's settings (generic plan, no sequential or bitmap scans) were not enough: on a
-- table analysed while it held a handful of rows, the planner found a whole-index scan
-- as cheap as a probe, and took one for each half of the claim (the lock through
-- tasks_tenant_created, where id is a trailing column, and a sort; the UPDATE's join
-- back as a full scan of tasks_pkey with the ids as a join filter).  A generic plan is
-- kept for the session, so those scans, O(table) each, would stay as the table grew
-- until the next ANALYZE: what round 5's reverted attempt did with a sequential scan.
--
-- Now each step leaves the planner one path:
-- 1. The lock: the claimable rows of the ids, in id order.  With sorting disabled as
--    well, only an index that returns rows in id order with the ids as its condition
--    can serve: tasks_pkey, one probe per id (a whole-index scan of another index
--    would need a sort; the whole of tasks_pkey would need no sort but cannot leave the
--    ids out of its condition).  It returns each row's ctid as locked: the newest
--    version's, when another transaction changed the row before the lock was granted.
-- 2. The change, a statement of its own, so its snapshot (READ COMMITTED: the claim
--    runs in its own transaction) sees the rows as locked: the UPDATE finds each row by
--    that ctid.  No index holds a ctid, so with sequential scans disabled a TID probe
--    per row is the only way to them; the rows are locked by this transaction until it
--    ends, so no ctid can change in between.
-- The claimable test stays a CASE (0024 says why), and what the claim does and returns
-- is unchanged.  Planner settings are the function's own SET clauses and end with the
-- call; the triggers the UPDATE and the event INSERT fire (the batch counts' first
-- look at its transition table, the metrics trigger's fast path) read their transition
-- tables only, so the plans they make here have no table to scan.
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
BEGIN
    SELECT array_agg(l.ctid), array_agg(l.status) INTO locked, was
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
    -- Not durable on purpose (queries.sql says why): local to the transaction, which is
    -- not one of the function's SET clauses, so it outlives the call until the commit.
    PERFORM set_config('synchronous_commit', 'off', true);
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
    SELECT c.id::text, c.tenant, c.name, c.priority, c.payload, c.attempts, c.max_retries, c.timeout_seconds,
           c.enqueued_at, c.started_at, c.trace_context, c.snoozes, c.has_parents
    FROM c;
END;
$$;
