-- Batches: a batch submit may open a batch, counted as its tasks become final, and
-- name what happens once when every one of them is: a signed webhook and/or a
-- follow-up task that receives the counts.
--
-- The counts live on the batch row and are kept by a statement-level trigger on
-- tasks: one UPDATE of each touched batch per statement, however many of its tasks
-- the statement finished (a drainer's finish records a whole claim at once).  The
-- row lock that UPDATE takes serialises racing finishers (drainers, the sweeper's
-- lease rescue, cancels): under READ COMMITTED the second waits, then re-reads the
-- committed counts, so exactly one statement sees ``remaining`` reach zero, and it
-- fires the completion in the same transaction (``tasklane_fire_batches``).

CREATE TABLE batches (
    id                uuid        PRIMARY KEY,
    tenant            text        NOT NULL,
    -- Tasks created into the batch (items refused or replayed are not in it).
    total             integer     NOT NULL CHECK (total > 0),
    -- Tasks of the batch not in a final state; a redrive of one of its dead
    -- letters counts it again.
    remaining         integer     NOT NULL CHECK (remaining BETWEEN 0 AND total),
    completed         integer     NOT NULL DEFAULT 0 CHECK (completed >= 0),
    failed            integer     NOT NULL DEFAULT 0 CHECK (failed >= 0),
    cancelled         integer     NOT NULL DEFAULT 0 CHECK (cancelled >= 0),
    callback_url      text,
    -- The follow-up task as submit resolved it: name, payload, priority,
    -- max_retries, timeout_seconds, callback_url.
    on_complete       jsonb,
    -- The webhook task's budget, from the settings at submit (a trigger has no settings).
    callback_max_retries     integer NOT NULL DEFAULT 5,
    callback_timeout_seconds integer NOT NULL DEFAULT 10,
    trace_context     text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- When remaining first reached zero: the completion fired then, once.
    completed_at      timestamptz,
    callback_task_id  uuid,
    follow_up_task_id uuid,
    CONSTRAINT batches_counts_add_up CHECK (remaining + completed + failed + cancelled = total)
);
CREATE INDEX batches_open ON batches (created_at) WHERE completed_at IS NULL;

-- Nullable, no default: a catalog change, no rewrite of tasks.
ALTER TABLE tasks ADD COLUMN batch_id uuid;
CREATE INDEX tasks_batch ON tasks (batch_id) WHERE batch_id IS NOT NULL;

-- The completion of the batches among ``ids`` whose tasks are all final and that
-- have not fired yet: marks them completed and creates their webhook and follow-up
-- tasks (QUEUED, with their first events, listed in the task outbox) in the caller's
-- transaction.  The caller
-- holds the batch rows' locks (it has just updated them).
CREATE FUNCTION tasklane_fire_batches(ids uuid[]) RETURNS void
LANGUAGE sql AS $$
    WITH f AS (
        UPDATE batches
        SET completed_at = now(),
            callback_task_id = CASE WHEN callback_url IS NOT NULL THEN gen_random_uuid() END,
            follow_up_task_id = CASE WHEN on_complete IS NOT NULL THEN gen_random_uuid() END
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
                           run_at, enqueued_at, callback_url, trace_context)
        SELECT s.callback_task_id, s.tenant, 'tasklane.webhook', 'QUEUED', 'high',
               jsonb_build_object('url', s.callback_url, 'event', 'batch.completed', 'batch', s.summary),
               s.callback_max_retries, s.callback_timeout_seconds, now(), now(), NULL, s.trace_context
        FROM s WHERE s.callback_task_id IS NOT NULL
        UNION ALL
        SELECT s.follow_up_task_id, s.tenant, s.on_complete->>'name', 'QUEUED', s.on_complete->>'priority',
               coalesce(s.on_complete->'payload', '{}'::jsonb) || jsonb_build_object('batch', s.summary),
               (s.on_complete->>'max_retries')::int, (s.on_complete->>'timeout_seconds')::int, now(), now(),
               s.on_complete->>'callback_url', s.trace_context
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
    INSERT INTO task_events (task_id, from_status, to_status, attempt, actor, task_name)
    SELECT m.id, NULL, 'QUEUED', 0, 'batch', m.name FROM made m;
$$;

-- Keeps each touched batch's counts: a task that became final counts under its
-- status and leaves ``remaining``; one that stopped being final (a redrive) goes
-- back.  A statement without batch tasks leaves after one scan of its new rows (the
-- benchmark's plain tasks pay that and the transition tables' capture, nothing else);
-- claims and heartbeats of batch tasks change no finality and leave after the join.
-- Batch rows are locked in id order, so statements touching several batches at
-- once cannot deadlock.
CREATE FUNCTION tasklane_count_batch_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    touched uuid[];
BEGIN
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

CREATE TRIGGER tasks_batch_counts
AFTER UPDATE ON tasks
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION tasklane_count_batch_tasks();
