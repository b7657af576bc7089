-- The one-row claim (0035) counts its own metrics, and the statement triggers on tasks
-- and task_events return at once for its two statements (issue 14).
--
-- In PostgreSQL instructions (bench/dbpathcg.py's statements on an analysed table,
-- bench/RESULTS.md round 9) the one-task claim was ~0.99M, of which the metrics
-- trigger's claim rule, one INSERT ... SELECT over the transition table with its
-- lateral joins, NOT EXISTS and GROUP BY set up for every statement, was ~0.21M, and the
-- batch-count trigger's first scan of its transition table ~0.03M.  Firing a trigger
-- that returns at once is cheap (~4k), and so is a PL/pgSQL test of a setting; a WHEN
-- clause on the triggers is not (its node text is read back and compiled for every
-- statement that fires it: ~30k each, which every finish would pay too).
--
-- So the one-row path sets tasklane.one_row_claim to 'on' (transaction-local, like
-- synchronous_commit) for its UPDATE and its event's INSERT and back to '' right after
-- them (or when the UPDATE found no row); both trigger functions return at once while it
-- is 'on'.  What they would have done for these two statements:
-- - tasks_batch_counts: nothing.  The claimed row was QUEUED or PENDING (finished_at NULL,
--   the table's CHECK) and is PROCESSING with finished_at NULL: no finality changes.
-- - task_events_metrics: its claim rule, 'started' +1 and a queue_wait observation of
--   the event's task_started_at - task_enqueued_at.  The claim writes exactly these two
--   rows, from the values it writes into the event, in a CTE of the event's INSERT (one
--   statement).  Its enqueued_at is never NULL (coalesce(..., run_at), run_at NOT NULL).
-- The path for several rows and every other statement count through the triggers as
-- before.  An error between 'on' and '' rolls the setting back with the (sub)transaction.
-- A session that set tasklane.one_row_claim itself would go uncounted: no Tasklane
-- statement but this one sets it.

CREATE OR REPLACE FUNCTION tasklane_count_task_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The one-row claim counts its event itself (tasklane_claim, 0039).
    IF current_setting('tasklane.one_row_claim', true) = 'on' THEN
        RETURN NULL;
    END IF;
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

CREATE OR REPLACE FUNCTION tasklane_count_batch_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    touched uuid[];
BEGIN
    -- The one-row claim's UPDATE (tasklane_claim, 0039): QUEUED or PENDING to
    -- PROCESSING, finished_at NULL before and after, no batch count moves.
    IF current_setting('tasklane.one_row_claim', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM new_rows WHERE batch_id IS NOT NULL AND status <> 'PROCESSING' LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(DISTINCT n.batch_id) INTO touched
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.batch_id IS NOT NULL AND (o.finished_at IS NULL) <> (n.finished_at IS NULL);
    IF touched IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM batches WHERE id = ANY(touched) ORDER BY id FOR UPDATE;
    WITH ch AS (
        SELECT n.batch_id, n.finished_at IS NOT NULL AS final,
               CASE WHEN n.finished_at IS NOT NULL THEN n.status ELSE o.status END AS final_status
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.batch_id IS NOT NULL AND (o.finished_at IS NULL) <> (n.finished_at IS NULL)
    ), d AS (
        SELECT batch_id,
               sum(CASE WHEN final THEN -1 ELSE 1 END) AS d_remaining,
               sum(CASE WHEN final_status = 'COMPLETED' THEN CASE WHEN final THEN 1 ELSE -1 END ELSE 0 END) AS d_completed,
               sum(CASE WHEN final_status = 'FAILED' THEN CASE WHEN final THEN 1 ELSE -1 END ELSE 0 END) AS d_failed,
               sum(CASE WHEN final_status = 'CANCELLED' THEN CASE WHEN final THEN 1 ELSE -1 END ELSE 0 END) AS d_cancelled
        FROM ch GROUP BY batch_id
    )
    UPDATE batches b
    SET remaining = b.remaining + d.d_remaining, completed = b.completed + d.d_completed,
        failed = b.failed + d.d_failed, cancelled = b.cancelled + d.d_cancelled
    FROM d WHERE b.id = d.batch_id;
    PERFORM tasklane_fire_batches(touched);
    RETURN NULL;
END;
$$;

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
        -- Until the event is written, the triggers on tasks and task_events return at
        -- once: this UPDATE finishes no task, and the event is counted here.
        sync := set_config('tasklane.one_row_claim', 'on', true);
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
                                 task_name, task_enqueued_at, task_started_at)
        VALUES (id::uuid, was[1], 'PROCESSING', attempts, claim_actor, name, enqueued_at, started_at);
        sync := set_config('tasklane.one_row_claim', '', true);
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
