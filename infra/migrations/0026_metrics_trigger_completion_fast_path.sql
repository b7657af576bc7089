-- The metrics trigger's claim fast path (0025) counts completions too.
--
-- A finish whose outcomes all completed writes events PROCESSING -> COMPLETED with no
-- error, carrying the task's name and start (0006).  For those the general query moves
-- exactly the 'completed' counter and one 'run' observation (now() - started) per task;
-- for a claim's events, 'started' and one 'queue_wait' observation (0025).  One INSERT
-- now writes those rows for a statement of claims, of completions, or of both; the
-- general query was ~8 % of a one-task finish's PostgreSQL CPU (issue 14, round 6 in
-- bench/RESULTS.md).  Submits keep their fast path first (0023); failures, retries,
-- snoozes, cancels, rescues, redrives and any mix with them take the general query
-- unchanged.

CREATE OR REPLACE FUNCTION tasklane_count_task_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Submits only (every statement that creates tasks, one or 500): each event is a
    -- first one (no from_status) into a waiting state, so the one counter it moves is
    -- 'submitted' by task name, as the general rules below would count it, with one
    -- statement instead of the whole query.  Anything else, or a mix, goes on below.
    INSERT INTO task_metric_deltas (name, metric, n)
    SELECT e.task_name, 'submitted', count(*) FROM new_events e
    WHERE NOT EXISTS (SELECT 1 FROM new_events x
                      WHERE x.from_status IS NOT NULL OR x.task_name IS NULL
                         OR x.to_status NOT IN ('QUEUED', 'PENDING', 'WAITING'))
    GROUP BY e.task_name;
    IF FOUND THEN
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
