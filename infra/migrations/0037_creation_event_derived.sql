-- A task's creation event is read from its row instead of stored (issue 14).
--
-- Every task creation wrote its task row and an event row NULL -> its first status,
-- attempt 0, by the submitting actor, at the same now(): the event row, its index entry
-- and the metrics trigger it fired were a fifth of a single submit's PostgreSQL
-- instructions (bench/RESULTS.md, rounds 7 and 8).  Its at is the task's created_at and its
-- error (a workflow step created CANCELLED) the task's last_error/last_error_type, which
-- a final task keeps; the row lacks only two things, stored now:
-- - created_by: the actor who created the task (an API key, 'batch', a schedule's, ...);
-- - created_status: its first status (QUEUED, PENDING, WAITING or CANCELLED): the row's
--   status moves on, and its times cannot tell a retried task from one submitted PENDING.
-- The view task_trail (below) puts the event derived from these first; the store's
-- task_events query reads it.  A task created before this migration has both NULL and
-- keeps its stored creation event: the derived one is made only where created_by is
-- set, so no task shows two.  A process of the previous version still running during a
-- deploy writes tasks that way too: their trail reads the same.
--
-- Both columns are nullable without a default: catalog changes, no rewrite.
-- tasks_archive keeps the columns of tasks in the same order (0027, 0031): the move
-- copies whole rows by position, so they go at the end of both, in the same order.
--
-- The 'submitted' counter (and 'cancelled' for a task created CANCELLED) came from the
-- creation event through the metrics trigger on task_events (0003; its submit fast path
-- 0023).  Each statement that creates tasks now writes those counters itself, from its
-- INSERT's RETURNING (the queries, the COPY path's own statement, and the two functions
-- below), as prune_finished writes 'pruned'; measured cheaper than a statement trigger
-- on tasks with a transition table (bench/RESULTS.md round 8: a single submit 738k ->
-- 637k PostgreSQL instructions, 682k with the trigger), which would also have counted a
-- restore from the archive (restore_archived) as a submit.  The trigger on task_events
-- loses its submit fast path (no statement of this version writes creation events; a
-- claim no longer runs that path's statement first) and keeps its general 'submitted'
-- rule: a process of the previous version, still submitting during a deploy, writes a
-- creation event and no counter, and that task is counted once, by the event.

ALTER TABLE tasks ADD COLUMN created_by text, ADD COLUMN created_status tasklane_status;
ALTER TABLE tasks_archive ADD COLUMN created_by text, ADD COLUMN created_status tasklane_status;

-- A task's whole audit trail, its creation event derived from its row (in `tasks` or the
-- archive) where created_by is set, then its stored events: what the store's task_events
-- query reads (for one task: each branch is one index probe, the archive's pruned to the
-- id's day partition) and what an operator or a test reading the trail in SQL should
-- read instead of task_events.  The derived event has id 0, before every stored one.
CREATE VIEW task_trail AS
SELECT 0::bigint AS id, t.id AS task_id, t.created_at AS at, NULL::text AS from_status,
       t.created_status::text AS to_status, 0 AS attempt, t.created_by AS actor,
       CASE WHEN t.created_status = 'CANCELLED' THEN t.last_error END AS error,
       CASE WHEN t.created_status = 'CANCELLED' THEN t.last_error_type END AS error_type,
       t.name::text AS task_name
FROM tasks t WHERE t.created_by IS NOT NULL
UNION ALL
SELECT 0, a.id, a.created_at, NULL, a.created_status::text, 0, a.created_by,
       CASE WHEN a.created_status = 'CANCELLED' THEN a.last_error END,
       CASE WHEN a.created_status = 'CANCELLED' THEN a.last_error_type END,
       a.name::text
FROM tasks_archive a WHERE a.created_by IS NOT NULL
UNION ALL
SELECT e.id, e.task_id, e.at, e.from_status::text, e.to_status::text, e.attempt, e.actor, e.error,
       e.error_type, e.task_name
FROM task_events e;

-- The two functions that create tasks in SQL, restated as their latest definitions
-- (0032) with the creation columns set and the counter written instead of the event.
CREATE OR REPLACE FUNCTION tasklane_completion_webhooks(
    finals jsonb, webhook_max_retries integer, webhook_timeout integer, actor text
) RETURNS TABLE (id uuid, parent uuid, enqueued_ms float8) LANGUAGE sql VOLATILE AS $$
    SELECT set_config('tasklane.webhook_max_retries', webhook_max_retries::text, true),
           set_config('tasklane.webhook_timeout', webhook_timeout::text, true);
    WITH f AS (
        SELECT * FROM jsonb_to_recordset(coalesce(finals, '[]'::jsonb)) AS f(
            id uuid, tenant text, name text, status text, attempts integer, result jsonb,
            last_error text, last_error_type text, finished_at timestamptz, callback_url text,
            trace_context text)
    ), hooks AS (
        INSERT INTO tasks (id, tenant, name, status, priority, payload, max_retries, timeout_seconds,
                           run_at, enqueued_at, trace_context, created_by, created_status)
        SELECT tasklane_uuid_v7(), f.tenant, 'tasklane.webhook', 'QUEUED', 'high',
               tasklane_webhook_payload(f.callback_url, f.id, f.name, f.status, f.attempts, f.result,
                                        f.last_error, f.last_error_type, f.finished_at),
               webhook_max_retries, webhook_timeout, now(), now(), f.trace_context, actor, 'QUEUED'
        FROM f
        WHERE f.callback_url IS NOT NULL AND f.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
        RETURNING tasks.id, (payload->'task'->>'id')::uuid AS parent,
                  (extract(epoch FROM enqueued_at) * 1000)::float8 AS enqueued_ms
    ), counted AS (
        INSERT INTO task_metric_deltas (name, metric, n)
        SELECT 'tasklane.webhook', 'submitted', count(*) FROM hooks HAVING count(*) > 0
    )
    SELECT hooks.id, hooks.parent, hooks.enqueued_ms FROM hooks
$$;

CREATE OR REPLACE FUNCTION tasklane_fire_batches(ids uuid[]) RETURNS void
LANGUAGE sql AS $$
    WITH f AS (
        UPDATE batches
        SET completed_at = now(),
            callback_task_id = CASE WHEN callback_url IS NOT NULL THEN tasklane_uuid_v7() END,
            follow_up_task_id = CASE WHEN on_complete IS NOT NULL THEN tasklane_uuid_v7() END
        WHERE id = ANY(ids) AND remaining = 0 AND completed_at IS NULL
        RETURNING *
    ), s AS (
        SELECT f.*, jsonb_build_object(
                   'id', f.id, 'total', f.total, 'completed', f.completed, 'failed', f.failed,
                   'cancelled', f.cancelled, 'created_at', f.created_at, 'completed_at', f.completed_at,
                   'follow_up_task_id', f.follow_up_task_id) AS summary
        FROM f
    ), made AS (
        INSERT INTO tasks (id, tenant, name, status, priority, payload, max_retries, timeout_seconds,
                           run_at, enqueued_at, callback_url, trace_context, created_by, created_status)
        SELECT s.callback_task_id, s.tenant, 'tasklane.webhook', 'QUEUED', 'high',
               jsonb_build_object('url', s.callback_url, 'event', 'batch.completed', 'batch', s.summary),
               s.callback_max_retries, s.callback_timeout_seconds, now(), now(), NULL, s.trace_context,
               'batch', 'QUEUED'
        FROM s WHERE s.callback_task_id IS NOT NULL
        UNION ALL
        SELECT s.follow_up_task_id, s.tenant, s.on_complete->>'name', 'QUEUED', s.on_complete->>'priority',
               coalesce(s.on_complete->'payload', '{}'::jsonb) || jsonb_build_object('batch', s.summary),
               (s.on_complete->>'max_retries')::int, (s.on_complete->>'timeout_seconds')::int, now(), now(),
               s.on_complete->>'callback_url', s.trace_context, 'batch', 'QUEUED'
        FROM s WHERE s.follow_up_task_id IS NOT NULL
        RETURNING id, name
    ), outboxed AS (
        -- To Redis at once (migration 0007): the finisher of a task with followers
        -- releases the outbox right after its commit, every sweep as the safety net.
        INSERT INTO task_outbox (task_id) SELECT id FROM made
    ), counted AS (
        INSERT INTO task_metric_deltas (name, metric, n)
        SELECT 'tasklane.batch', 'batches_completed', count(*) FROM f HAVING count(*) > 0
    )
    INSERT INTO task_metric_deltas (name, metric, n)
    SELECT m.name, 'submitted', count(*) FROM made m GROUP BY m.name;
$$;

-- The metrics trigger (0026) without its submit fast path.
CREATE OR REPLACE FUNCTION tasklane_count_task_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Claims and completions only (every claim statement, and every finish whose
    -- outcomes all completed, one task or 500, or both at once): each event is QUEUED or
    -- PENDING -> PROCESSING with the task's name and times (the claim writes them), or
    -- PROCESSING -> COMPLETED with no error, its name and its start (the finish writes
    -- them).  What such an event moves is one counter by name ('started', 'completed')
    -- and one histogram observation (queue_wait: started - enqueued; run: now() -
    -- started; at least 0, in the bucket of the first bound >= it), as the general rules
    -- below count them, with one statement instead of the whole query.
    INSERT INTO task_metric_deltas (name, metric, le, n, total)
    SELECT e.task_name, m.metric, m.le, count(*), sum(m.total)
    FROM new_events e
    CROSS JOIN LATERAL (
        SELECT e.to_status = 'PROCESSING' AS claim,
               greatest(extract(epoch FROM CASE WHEN e.to_status = 'PROCESSING'
                                                THEN e.task_started_at - e.task_enqueued_at
                                                ELSE now() - e.task_started_at END)::float8, 0) AS seconds,
               '{0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,300,900,3600,Infinity}'::float8[] AS bounds
    ) AS w
    CROSS JOIN LATERAL (SELECT width_bucket(w.seconds, w.bounds) AS i) AS b
    CROSS JOIN LATERAL (VALUES
        (CASE WHEN w.claim THEN 'started' ELSE 'completed' END, 'Infinity'::float8, 0::float8),
        (CASE WHEN w.claim THEN 'queue_wait' ELSE 'run' END,
         CASE WHEN b.i > 0 AND w.bounds[b.i] = w.seconds THEN w.bounds[b.i] ELSE w.bounds[b.i + 1] END,
         w.seconds)
    ) AS m(metric, le, total)
    WHERE NOT EXISTS (SELECT 1 FROM new_events x
                      WHERE x.from_status IS NULL OR x.task_name IS NULL OR x.task_started_at IS NULL
                         OR NOT ((x.to_status = 'PROCESSING' AND x.from_status IN ('QUEUED', 'PENDING')
                                  AND x.task_enqueued_at IS NOT NULL)
                                 OR (x.from_status = 'PROCESSING' AND x.to_status = 'COMPLETED'
                                     AND x.error_type IS NULL)))
    GROUP BY e.task_name, m.metric, m.le;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    -- The bucket bounds must equal chalicelib.observability.metrics.BUCKETS (a unit test checks).
    WITH ev AS (
        SELECT e.task_name AS name, e.from_status, e.to_status, e.error_type,
               e.task_started_at AS started_at, e.task_enqueued_at AS enqueued_at
        FROM new_events e WHERE e.task_name IS NOT NULL
        UNION ALL
        SELECT t.name, e.from_status, e.to_status, e.error_type, t.started_at, t.enqueued_at
        FROM new_events e JOIN tasks t ON t.id = e.task_id
        WHERE e.task_name IS NULL
    ), kinds AS (
        SELECT name, from_status, to_status, error_type, count(*) AS n
        FROM ev GROUP BY name, from_status, to_status, error_type
    ), counted AS (
        SELECT k.name, c.metric, 'Infinity'::float8 AS le, k.n, 0::float8 AS total
        FROM kinds k CROSS JOIN LATERAL (VALUES
            -- Creation events of a process of the previous version only (see above).
            (CASE WHEN k.from_status IS NULL THEN 'submitted' END),
            (CASE WHEN k.to_status = 'PROCESSING' THEN 'started' END),
            (CASE WHEN k.to_status = 'COMPLETED' THEN 'completed' END),
            (CASE WHEN k.from_status = 'PROCESSING' AND k.to_status IN ('PENDING', 'FAILED')
                       AND k.error_type IS DISTINCT FROM 'Snoozed' THEN 'failed' END),
            (CASE WHEN k.from_status = 'PROCESSING' AND k.to_status = 'PENDING'
                       AND k.error_type IS DISTINCT FROM 'Snoozed' THEN 'retried' END),
            (CASE WHEN k.from_status = 'PROCESSING' AND k.to_status = 'PENDING'
                       AND k.error_type = 'Snoozed' THEN 'snoozed' END),
            (CASE WHEN k.to_status = 'FAILED' THEN 'dead_lettered' END),
            (CASE WHEN k.to_status = 'CANCELLED' THEN 'cancelled' END),
            (CASE WHEN k.to_status = 'CANCELLED' AND k.error_type = 'Expired' THEN 'expired' END),
            (CASE WHEN k.from_status = 'FAILED' AND k.to_status = 'QUEUED' THEN 'redriven' END),
            (CASE WHEN k.from_status = 'PROCESSING' AND k.error_type = 'LeaseLostError' THEN 'rescued' END)
        ) AS c(metric)
        WHERE c.metric IS NOT NULL
    ), observed AS (
        -- queue_wait: enqueued (or due) -> claimed; run: claimed -> outcome recorded.
        -- A rescued attempt has no meaningful run time (its worker died), so it is left out.
        SELECT ev.name, 'queue_wait' AS metric,
               greatest(extract(epoch FROM ev.started_at - ev.enqueued_at)::float8, 0) AS seconds
        FROM ev WHERE ev.to_status = 'PROCESSING' AND ev.enqueued_at IS NOT NULL AND ev.started_at IS NOT NULL
        UNION ALL
        SELECT ev.name, 'run', greatest(extract(epoch FROM now() - ev.started_at)::float8, 0)
        FROM ev
        WHERE ev.from_status = 'PROCESSING' AND ev.started_at IS NOT NULL
          AND ev.error_type IS DISTINCT FROM 'LeaseLostError'
    ), placed AS (
        -- width_bucket: how many bounds are <= seconds; the bucket is the first bound
        -- >= seconds (the bound itself when seconds equals it).
        SELECT o.name, o.metric, o.seconds, b.bounds, width_bucket(o.seconds, b.bounds) AS i
        FROM observed o
        CROSS JOIN (SELECT '{0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,300,900,3600,Infinity}'::float8[]
                    AS bounds) AS b
    ), bucketed AS (
        SELECT p.name, p.metric,
               CASE WHEN p.i > 0 AND p.bounds[p.i] = p.seconds THEN p.bounds[p.i] ELSE p.bounds[p.i + 1] END AS le,
               1::bigint AS n, p.seconds AS total
        FROM placed p
    )
    INSERT INTO task_metric_deltas (name, metric, le, n, total)
    SELECT name, metric, le, sum(n)::bigint, sum(total)
    FROM (SELECT * FROM counted UNION ALL SELECT * FROM bucketed) AS x
    GROUP BY name, metric, le;
    RETURN NULL;
END;
$$;
