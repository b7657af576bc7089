-- A task cancelled because a parent failed or was cancelled (depends_on with
-- on_dependency_failure "cancel", a workflow step) gets its completion webhook, like
-- any other cancellation: until now tasklane_settle_dependents (migration 0016)
-- cancelled it without one.
--
-- The trigger cannot know the deployment's webhook limits (TASKLANE_WEBHOOK_MAX_RETRIES,
-- TASKLANE_WEBHOOK_TIMEOUT_SECONDS); the statement that ended the parent can, and every
-- such statement (finish, rescue, cancel, cancel by filter, expiry) passes them to
-- tasklane_completion_webhooks (0018), which now also leaves them in two
-- transaction-local settings for the trigger to read.  A parent ended some other way
-- (an operator's UPDATE) falls back to the settings' defaults, 5 and 10.
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
        SELECT gen_random_uuid(), f.tenant, 'tasklane.webhook', 'QUEUED', 'high',
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

CREATE OR REPLACE FUNCTION tasklane_settle_dependents() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    parents uuid[] := ARRAY[NEW.id];
    ok boolean := NEW.status = 'COMPLETED';
    reason text := format('a dependency did not complete: task %s ended %s', NEW.id, NEW.status);
    -- The limits the statement that ended the parent gave its own webhooks (set by
    -- tasklane_completion_webhooks), else the settings' defaults.
    hook_retries integer := coalesce(nullif(current_setting('tasklane.webhook_max_retries', true), '')::integer, 5);
    hook_timeout integer := coalesce(nullif(current_setting('tasklane.webhook_timeout', true), '')::integer, 10);
BEGIN
    PERFORM set_config('tasklane.settling', 'on', true);
    WHILE cardinality(parents) > 0 LOOP
        WITH e AS (
            UPDATE task_deps SET resolved = true
            WHERE parent_id = ANY(parents) AND NOT resolved
            RETURNING child_id
        ), n AS (
            SELECT child_id, count(*)::int AS n FROM e GROUP BY child_id
        ), lk AS (
            SELECT t.id FROM tasks t
            WHERE t.id IN (SELECT child_id FROM n) AND t.status = 'WAITING'
            ORDER BY t.id
            FOR UPDATE
        ), u AS (
            UPDATE tasks t
            SET waiting_on = CASE WHEN ok OR t.run_anyway THEN t.waiting_on - n.n ELSE t.waiting_on END,
                status = CASE
                    WHEN NOT (ok OR coalesce(t.run_anyway, false)) THEN 'CANCELLED'
                    WHEN t.waiting_on - n.n > 0 THEN 'WAITING'
                    WHEN t.run_at > now() THEN 'PENDING'
                    ELSE 'QUEUED' END,
                enqueued_at = CASE
                    WHEN (ok OR t.run_anyway) AND t.waiting_on - n.n <= 0 AND t.run_at <= now() THEN now()
                    ELSE t.enqueued_at END,
                finished_at = CASE WHEN NOT (ok OR coalesce(t.run_anyway, false)) THEN now() END,
                last_error = CASE WHEN NOT (ok OR coalesce(t.run_anyway, false)) THEN reason ELSE t.last_error END,
                last_error_type = CASE WHEN NOT (ok OR coalesce(t.run_anyway, false))
                                       THEN 'DependencyFailed' ELSE t.last_error_type END,
                updated_at = now()
            FROM n JOIN lk ON lk.id = n.child_id
            WHERE t.id = n.child_id AND t.status = 'WAITING'
            RETURNING t.id, t.tenant, t.name, t.status, t.has_followers, t.enqueued_at, t.last_error,
                      t.last_error_type, t.attempts, t.result, t.finished_at, t.callback_url, t.trace_context
        ), ev AS (
            INSERT INTO task_events (task_id, from_status, to_status, attempt, actor, error, error_type,
                                     task_name, task_enqueued_at)
            SELECT id, 'WAITING', status, 0, 'dependencies',
                   CASE WHEN status = 'CANCELLED' THEN last_error END,
                   CASE WHEN status = 'CANCELLED' THEN last_error_type END,
                   name, enqueued_at
            FROM u WHERE status <> 'WAITING'
        ), hooks AS (
            -- A cancelled dependent with a callback_url gets its completion webhook like
            -- any other cancellation, in the same transaction.
            SELECT * FROM tasklane_completion_webhooks(
                (SELECT jsonb_agg(to_jsonb(f)) FROM u f WHERE f.status = 'CANCELLED' AND f.callback_url IS NOT NULL),
                hook_retries, hook_timeout, 'dependencies')
        ), ob AS (
            -- Released dependents and the new webhooks reach Redis through the outbox: a
            -- trigger cannot push.  (Reading hooks here also makes sure it runs.)
            INSERT INTO task_outbox (task_id)
            SELECT id FROM u WHERE status IN ('QUEUED', 'PENDING')
            UNION ALL
            SELECT id FROM hooks
            ON CONFLICT DO NOTHING
        )
        SELECT coalesce(array_agg(id) FILTER (WHERE status = 'CANCELLED' AND has_followers), '{}')
        INTO parents FROM u;
        ok := false;
    END LOOP;
    PERFORM set_config('tasklane.settling', '', true);
    RETURN NULL;
END;
$$;
