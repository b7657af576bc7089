-- Shared metric counters, kept by PostgreSQL itself.
--
-- Every transition already writes a task_events row in the same statement as the
-- transition.  A statement-level trigger on task_events turns each statement's new
-- events into counter and histogram deltas, so a counter commits together with the
-- transition it counts: /metrics matches the tasks table exactly, whichever API,
-- drain or sweep process made the change, and no process keeps counts in memory.
--
-- Concurrency: the trigger only ever INSERTs into task_metric_deltas (no index, no
-- unique key, no UPDATE), so concurrent transitions never wait on a hot counter row
-- and cannot deadlock on one.  The sweeper folds deltas into task_metric_totals
-- (one compactor at a time, under an advisory lock); readers sum both tables in one
-- statement, so a fold in progress is never counted twice or missed.
-- Counters are never decremented: pruning old tasks (DELETE cascades to
-- task_events) does not fire the trigger.

CREATE TABLE task_metric_deltas (
    name   text             NOT NULL,           -- task name
    metric text             NOT NULL,           -- submitted, started, completed, ... or queue_wait, run
    le     double precision NOT NULL DEFAULT 'Infinity',  -- histogram bucket bound; +Inf for counters
    n      bigint           NOT NULL,
    total  double precision NOT NULL DEFAULT 0  -- histograms: sum of the observed seconds
);

CREATE TABLE task_metric_totals (
    name   text             NOT NULL,
    metric text             NOT NULL,
    le     double precision NOT NULL,
    n      bigint           NOT NULL,
    total  double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (name, metric, le)
);

CREATE FUNCTION tasklane_count_task_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The bucket bounds must equal chalicelib.observability.metrics.BUCKETS (a unit test checks).
    WITH ev AS (
        SELECT t.name, e.from_status, e.to_status, e.error_type, t.started_at, t.enqueued_at
        FROM new_events e JOIN tasks t ON t.id = e.task_id
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

CREATE TRIGGER task_events_metrics
    AFTER INSERT ON task_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION tasklane_count_task_events();
