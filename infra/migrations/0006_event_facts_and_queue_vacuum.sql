-- The hot path's share of PostgreSQL: the metrics trigger without its join, and a
-- queue table that autovacuum keeps up with.
--
-- 1. Each task_events row may carry what the metrics trigger (0003) needs from the
--    task: its name and, for the claim and the outcome, when it was enqueued and
--    started.  The submit, claim and finish statements fill them from the rows they
--    already hold (RETURNING), so the trigger no longer joins every new event back
--    to tasks (~40 us of PostgreSQL per task by the round-1 profile).  Statements
--    that leave them NULL (redrive, cancel, promote, the sweeper, ...) are counted
--    through the join as before.  Nullable columns with no default: a catalog change,
--    no rewrite.
ALTER TABLE task_events
    ADD COLUMN task_name text,
    ADD COLUMN task_enqueued_at timestamptz,
    ADD COLUMN task_started_at timestamptz;

CREATE OR REPLACE FUNCTION tasklane_count_task_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The bucket bounds must equal chalicelib.observability.metrics.BUCKETS (a unit test checks).
    WITH ev AS (
        SELECT e.task_name AS name, e.from_status, e.to_status, e.error_type,
               e.task_started_at AS started_at, e.task_enqueued_at AS enqueued_at
        FROM new_events e WHERE e.task_name IS NOT NULL
        UNION ALL
        SELECT t.name, e.from_status, e.to_status, e.error_type, t.started_at, t.enqueued_at
        FROM new_events e JOIN tasks t ON t.id = e.task_id
        WHERE e.task_name IS NULL
    ), counted AS (
        SELECT ev.name, c.metric, 'Infinity'::float8 AS le, 0::float8 AS seconds
        FROM ev CROSS JOIN LATERAL (VALUES
            (CASE WHEN ev.from_status IS NULL THEN 'submitted' END),
            (CASE WHEN ev.to_status = 'PROCESSING' THEN 'started' END),
            (CASE WHEN ev.to_status = 'COMPLETED' THEN 'completed' END),
            (CASE WHEN ev.from_status = 'PROCESSING' AND ev.to_status IN ('PENDING', 'FAILED') THEN 'failed' END),
            (CASE WHEN ev.from_status = 'PROCESSING' AND ev.to_status = 'PENDING' THEN 'retried' END),
            (CASE WHEN ev.to_status = 'FAILED' THEN 'dead_lettered' END),
            (CASE WHEN ev.to_status = 'CANCELLED' THEN 'cancelled' END),
            (CASE WHEN ev.from_status = 'FAILED' AND ev.to_status = 'QUEUED' THEN 'redriven' END),
            (CASE WHEN ev.from_status = 'PROCESSING' AND ev.error_type = 'LeaseLostError' THEN 'rescued' END)
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
    ), bucketed AS (
        SELECT o.name, o.metric,
               (SELECT min(b)
                FROM unnest('{0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,300,900,3600,Infinity}'::float8[]) AS b
                WHERE b >= o.seconds) AS le,
               o.seconds
        FROM observed o
    )
    INSERT INTO task_metric_deltas (name, metric, le, n, total)
    SELECT name, metric, le, count(*), sum(seconds)
    FROM (SELECT * FROM counted UNION ALL SELECT * FROM bucketed) AS x
    GROUP BY name, metric, le;
    RETURN NULL;
END;
$$;

-- 2. A queue table churns: every task is inserted and updated twice within
--    milliseconds, and none of those updates can be HOT (each changes status, which
--    the partial indexes depend on).  With the defaults autovacuum waits for 20 % of
--    the table to be dead and then vacuums at a throttled pace, so after a burst the
--    hot path walks tens of thousands of dead versions in the partial indexes for a
--    minute or more.  Vacuum it after ~1,000 + 2 % dead rows, unthrottled.
ALTER TABLE tasks SET (
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
-- The trigger appends deltas that the sweeper folds and deletes: the same churn.
ALTER TABLE task_metric_deltas SET (
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_cost_delay = 0
);
