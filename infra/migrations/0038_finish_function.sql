-- The finish (queries.sql `finish`) as a function whose plans are made once per session.
--
-- As one statement with the ids as an array the planner sees, the finish was planned
-- on every call: psycopg prepares it, but on an analysed tasks table PostgreSQL's plan
-- cache found each custom plan cheaper than the generic one and never switched (0
-- generic / 20 custom).  Planning its CTEs was ~44 % of a one-task finish's PostgreSQL
-- instructions (bench/dbpathcg.py, bench/RESULTS.md round 8).
--
-- Here it runs with the claim's settings (0028): generic plans, made at the first call
-- in a session and kept, with sequential scans, bitmap scans and sorts off.  The
-- statement as it was could not simply move in: its generic plan, made on a table
-- analysed with three rows, read the ids through a whole-index scan of
-- tasks_tenant_created (id is its trailing column), O(table) for as long as the
-- session keeps the plan.  So, as the claim does, two steps that leave the planner one
-- path each (0028 says why):
-- 1. The lock: the rows of the ids still PROCESSING under one of the presented tokens,
--    in id order, FOR UPDATE: with sorting off only tasks_pkey can serve, one probe per
--    id.  The PROCESSING test stays a CASE no partial index matches, so
--    tasks_processing_lease and a burst's dead entries in it are never read (round 6),
--    and bitmap scans, which never mark dead entries, are off.
-- 2. The statement as before, its UPDATE finding each locked row by the ctid the lock
--    returned (a TID probe; the outcomes are matched to the locked ids before, so the
--    planner has no id of tasks to join on).  The fence is tested again there, per
--    outcome: only the row under the outcome's own token changes.
-- What the finish does and returns is unchanged: one event per transition, the
-- completion-webhook function called only when a row needs it, the triggers (batch
-- counts, dependents) as before; a finish that matches nothing (a stale worker's) now
-- ends after the lock.  Planner settings are the function's own SET clauses and end
-- with the call.
CREATE OR REPLACE FUNCTION tasklane_finish(finish_outcomes jsonb, finish_ids uuid[], finish_actor text,
                                           hook_max_retries integer, hook_timeout integer)
RETURNS TABLE (id text, tenant text, name text, status text, priority text, attempts integer,
               run_at_ms float8, hook_id text, hook_enqueued_ms float8, has_followers boolean,
               redrives integer)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
#variable_conflict use_column
DECLARE
    locked tid[];
    locked_ids uuid[];
BEGIN
    SELECT array_agg(l.ctid), array_agg(l.id) INTO locked, locked_ids
    FROM (
        SELECT t.ctid, t.id FROM tasks t
        WHERE t.id = ANY(finish_ids)
          -- The outcomes' tokens: one array, computed once (an InitPlan), no join.
          AND CASE t.status WHEN 'PROCESSING'
                   THEN t.lease_token = ANY(ARRAY(SELECT (e ->> 'token')::uuid
                                                  FROM jsonb_array_elements(finish_outcomes) AS e))
                   ELSE false END
        ORDER BY t.id
        FOR UPDATE
    ) AS l;
    IF locked IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH o AS (
        SELECT * FROM jsonb_to_recordset(finish_outcomes) AS o(
            id uuid, token uuid, status text, result text, error text, error_type text, delay float8,
            snooze boolean)
    ), u AS (
        UPDATE tasks t
        SET status = CASE WHEN o.status = 'PENDING' AND t.cancel_requested
                          THEN 'CANCELLED' ELSE o.status END,
            result = CASE WHEN o.status = 'COMPLETED' THEN o.result::jsonb ELSE t.result END,
            attempts = CASE WHEN o.snooze THEN t.attempts - 1 ELSE t.attempts END,
            snoozes = CASE WHEN o.snooze THEN t.snoozes + 1 ELSE t.snoozes END,
            last_error = CASE WHEN o.snooze THEN t.last_error ELSE coalesce(o.error, t.last_error) END,
            last_error_type = CASE WHEN o.error IS NULL OR o.snooze THEN t.last_error_type ELSE o.error_type END,
            run_at = CASE WHEN o.status = 'PENDING' AND NOT t.cancel_requested
                          THEN now() + make_interval(secs => o.delay) ELSE t.run_at END,
            finished_at = CASE WHEN o.status = 'PENDING' AND NOT t.cancel_requested
                               THEN NULL ELSE now() END,
            lease_token = NULL, lease_expires_at = NULL, updated_at = now()
        FROM unnest(locked, locked_ids) AS l(tid, id) JOIN o ON o.id = l.id
        WHERE t.ctid = l.tid
          AND CASE t.status WHEN 'PROCESSING' THEN t.lease_token = o.token ELSE false END
        RETURNING t.id, t.tenant, t.name, t.status, t.priority, t.attempts, t.run_at, t.result,
                  t.last_error, t.last_error_type, t.finished_at, t.callback_url, t.trace_context,
                  t.started_at, t.has_followers, t.redrives,
                  o.error, o.error_type, o.snooze
    ), ev AS (
        -- The task's name and start ride along for the metrics trigger (migration 0006).
        -- A snooze's event names the attempt that ran (the task's count went back by one).
        INSERT INTO task_events (task_id, from_status, to_status, attempt, actor, error, error_type,
                                 task_name, task_started_at)
        SELECT id, 'PROCESSING', status, CASE WHEN snooze THEN attempts + 1 ELSE attempts END,
               finish_actor, error, error_type, name, started_at
        FROM u
    ), hooks AS (
        -- Its completion webhooks (migration 0018).
        SELECT * FROM tasklane_completion_webhooks(
            (SELECT jsonb_agg(to_jsonb(f)) FROM u f WHERE f.callback_url IS NOT NULL),
            hook_max_retries, hook_timeout, finish_actor)
        -- Called only when needed (its body is planned per call); followers need the
        -- webhook limits it sets for the dependents trigger (0020).
        WHERE EXISTS (SELECT 1 FROM u WHERE u.callback_url IS NOT NULL OR u.has_followers)
    )
    SELECT u.id::text AS id, u.tenant, u.name::text, u.status::text, u.priority::text, u.attempts::integer,
           (extract(epoch FROM u.run_at) * 1000)::float8 AS run_at_ms,
           h.id::text AS hook_id, h.enqueued_ms AS hook_enqueued_ms, u.has_followers, u.redrives
    FROM u LEFT JOIN hooks h ON h.parent = u.id;
END;
$$;
