-- The tasks SQL makes get version-7 ids (RFC 9562), like those of chalicelib/core/ids.py,
-- so that they too can move to tasks_archive (0027), whose partitions are UTC days of
-- the id's first 48 bits.  With gen_random_uuid() (version 4) a completion webhook
-- (0018, 0020: finish, cancel, expiry, a dependent cancelled by its parent) and a
-- batch's webhook and follow-up task (0009) had no day: they stayed in `tasks` and
-- were deleted row by row at retention, in a webhook-heavy deployment a large share
-- of all tasks.  PostgreSQL 15 has no uuidv7() (18 does).
--
-- The two functions that make task ids are restated as their latest definitions
-- (0020 and 0009), the id expression alone changed.  tasklane_settle_dependents
-- makes its webhooks through tasklane_completion_webhooks.

-- A version-7 UUID: the 48-bit Unix time in milliseconds, then version 7, the RFC
-- variant (10) and 74 random bits, the layout tasklane_day_first_id (0027) bounds the
-- archive's days with.  The random bits and the variant are gen_random_uuid()'s; its
-- first 6 bytes are overwritten by the time and its version nibble 0100 becomes 0111
-- (bits 4 and 5 of byte 6 set).
--
-- The time is now(), the transaction's start, not clock_timestamp(): the task's
-- created_at, enqueued_at and first event's `at` are now() too, so the id's day is
-- the day of its creation and of its first event.  The archive moves a task only if
-- it finished before its id's day ended (its events partition, by `at`, is dropped
-- with that day), which then means "finished within its creation day", as for the
-- ids made in Python before the insert.  clock_timestamp() in a transaction begun
-- just before midnight would give a later day than created_at.  All ids of one
-- transaction share its millisecond and are ordered randomly within it, like one call
-- of ids.new_ids; 74 random bits keep them unique.
CREATE FUNCTION tasklane_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substr(int8send(floor(extract(epoch FROM now()) * 1000)::bigint), 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

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
                           run_at, enqueued_at, trace_context)
        SELECT tasklane_uuid_v7(), f.tenant, 'tasklane.webhook', 'QUEUED', 'high',
               tasklane_webhook_payload(f.callback_url, f.id, f.name, f.status, f.attempts, f.result,
                                        f.last_error, f.last_error_type, f.finished_at),
               webhook_max_retries, webhook_timeout, now(), now(), f.trace_context
        FROM f
        WHERE f.callback_url IS NOT NULL AND f.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
        RETURNING tasks.id, (payload->'task'->>'id')::uuid AS parent,
                  (extract(epoch FROM enqueued_at) * 1000)::float8 AS enqueued_ms
    ), hook_events AS (
        INSERT INTO task_events (task_id, from_status, to_status, attempt, actor)
        SELECT hooks.id, NULL, 'QUEUED', 0, actor FROM hooks
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
