-- Unique tasks, deadlines and snoozes (issue 15, items 4, 6 and 8).
--
-- New task columns are nullable (or carry a constant default): catalog changes, no
-- rewrite of a populated table.
--   unique_key / unique_until: the key the task was submitted with and the end of its
--     window (NULL: held while the task is not final).
--   expires_at: no attempt starts after it; the sweeper (or a drainer whose claim
--     refused the task) finalises it as CANCELLED with error_type 'Expired'.
--   snoozes: how often an executor snoozed the task (a snooze gives its attempt back).
ALTER TABLE tasks
    ADD COLUMN unique_key text CONSTRAINT tasks_unique_key_length CHECK (length(unique_key) BETWEEN 1 AND 200),
    ADD COLUMN unique_until timestamptz,
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN snoozes integer NOT NULL DEFAULT 0 CONSTRAINT tasks_snoozes_nonnegative CHECK (snoozes >= 0);

-- Who holds a unique key.  The primary key is what makes one task win however many
-- submits race: the submit statement inserts here first (ON CONFLICT: a row whose
-- window has passed is taken over in the same statement) and inserts the task only
-- for the keys it got.  held_until NULL means "while the task is active": the
-- trigger below deletes the row when the task becomes final.
CREATE TABLE task_unique_keys (
    tenant     text        NOT NULL,
    unique_key text        NOT NULL,
    task_id    uuid        NOT NULL,
    held_until timestamptz,
    PRIMARY KEY (tenant, unique_key)
);
-- The sweeper prunes rows whose window passed (correctness never waits for it).
CREATE INDEX task_unique_keys_held_until ON task_unique_keys (held_until) WHERE held_until IS NOT NULL;

-- "While active" keys follow their task: released when it becomes final (every path:
-- finish, cancel, the sweeper's rescue and expiry), taken again by a redrive when
-- nobody else took the key meanwhile.  The WHEN clause makes ordinary tasks (no key)
-- pay one comparison.  The DELETE waits for a submit that is taking over the same row
-- and vice versa (row locks), so a release and a take never both miss each other.
CREATE FUNCTION tasklane_unique_key_follow() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.finished_at IS NOT NULL THEN
        DELETE FROM task_unique_keys
        WHERE tenant = NEW.tenant AND unique_key = NEW.unique_key AND task_id = NEW.id AND held_until IS NULL;
    ELSE
        INSERT INTO task_unique_keys (tenant, unique_key, task_id, held_until)
        VALUES (NEW.tenant, NEW.unique_key, NEW.id, NULL)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_unique_key_follow
    AFTER UPDATE ON tasks
    FOR EACH ROW
    WHEN (NEW.unique_key IS NOT NULL AND NEW.unique_until IS NULL
          AND (OLD.finished_at IS NULL) <> (NEW.finished_at IS NULL))
    EXECUTE FUNCTION tasklane_unique_key_follow();

-- The sweeper finds waiting tasks past their deadline through this (ordinary tasks
-- have no expires_at and never enter it).
CREATE INDEX tasks_waiting_expires_at ON tasks (expires_at)
    WHERE expires_at IS NOT NULL AND status IN ('PENDING', 'QUEUED');

-- The metrics trigger learns two counters: 'snoozed' (a snooze is PROCESSING ->
-- PENDING like a retry, but no failure: error_type 'Snoozed', left out of failed and
-- retried) and 'expired' (CANCELLED with error_type 'Expired'; still a cancellation).
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
            (CASE WHEN ev.from_status = 'PROCESSING' AND ev.to_status IN ('PENDING', 'FAILED')
                       AND ev.error_type IS DISTINCT FROM 'Snoozed' THEN 'failed' END),
            (CASE WHEN ev.from_status = 'PROCESSING' AND ev.to_status = 'PENDING'
                       AND ev.error_type IS DISTINCT FROM 'Snoozed' THEN 'retried' END),
            (CASE WHEN ev.from_status = 'PROCESSING' AND ev.to_status = 'PENDING'
                       AND ev.error_type = 'Snoozed' THEN 'snoozed' END),
            (CASE WHEN ev.to_status = 'FAILED' THEN 'dead_lettered' END),
            (CASE WHEN ev.to_status = 'CANCELLED' THEN 'cancelled' END),
            (CASE WHEN ev.to_status = 'CANCELLED' AND ev.error_type = 'Expired' THEN 'expired' END),
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
