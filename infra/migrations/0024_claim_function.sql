-- The claim as a function whose one plan is made once per session and can only probe
-- the primary key (issue 14, round 6 in bench/RESULTS.md).
--
-- The claim statement was planned on every call: psycopg prepares it, but PostgreSQL
-- judged a custom plan for the ids at hand cheaper than the generic one and planned
-- again each time, ~0.6 ms of the backend's CPU in a one-task claim of ~1.3 ms on a
-- table with statistics.  A generic plan (round 5, reverted) was no better a bet: made
-- while the table was empty (the bench truncates; so does a new deployment), it was a
-- sequential scan of tasks, kept as the table grew until an ANALYZE invalidated it.
--
-- PL/pgSQL keeps the plan of each statement for the session.  The function's own
-- settings make that plan generic (no re-planning per call) and make it out of index
-- probes whatever the table's size or statistics: with enable_seqscan off the planner
-- takes a sequential scan only where no index can serve, and the claim's lookups by
-- id (tasks), by (name, tenant) (paused_task_types) and the join back to tasks are all
-- primary-key probes.  The settings hold only while the function runs (they are its
-- SET clauses: no session-level SET for a connection pooler to pin on); the triggers
-- its writes fire are planned under them too, the first time, which only favours
-- their index scans over sequential ones.
--
-- The claimable test stays a CASE on purpose: no partial index can match it, so even
-- a planner free to use them could not pick the partial QUEUED index and read every
-- queued task for each claim (O(backlog) per batch).
--
-- What the claim does is unchanged (queries.sql, "claim", says why each part is
-- there): the claimable rows of the ids, locked in id order, made PROCESSING under
-- the token with their attempt counted, each with its event; rows in no particular
-- order (the caller orders them), ids as text.  A function that only replaces another
-- body: no lock on tasks, nothing to rewrite.
CREATE OR REPLACE FUNCTION tasklane_claim(claim_ids uuid[], claim_token uuid, lease_seconds float8,
                                          claim_actor text)
RETURNS TABLE (id text, tenant text, name text, priority text, payload jsonb, attempts integer,
               max_retries integer, timeout_seconds integer, enqueued_at timestamptz,
               started_at timestamptz, trace_context text, snoozes integer, has_parents boolean)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
#variable_conflict use_column
BEGIN
    -- Not durable on purpose (queries.sql says why): local to the transaction, which is
    -- not one of the function's SET clauses, so it outlives the call until the commit.
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH l AS (
        SELECT t.id, t.status FROM tasks t
        WHERE t.id = ANY(claim_ids)
          AND CASE t.status WHEN 'QUEUED' THEN true WHEN 'PENDING' THEN t.run_at <= now() ELSE false END
          AND NOT EXISTS (SELECT 1 FROM paused_task_types p
                          WHERE p.name = t.name AND p.tenant IN (t.tenant, ''))
          AND (t.expires_at IS NULL OR t.expires_at > now())
        ORDER BY t.id
        FOR UPDATE
    ), c AS (
        UPDATE tasks t
        SET status = 'PROCESSING', attempts = t.attempts + 1, lease_token = claim_token,
            lease_expires_at = now() + make_interval(secs => lease_seconds),
            started_at = now(), updated_at = now(),
            enqueued_at = coalesce(CASE WHEN l.status = 'QUEUED' THEN t.enqueued_at END, t.run_at)
        FROM l
        WHERE t.id = l.id
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
