-- One place that creates completion webhooks.  Every final transition (finish, a single
-- cancel, a bulk cancel, an expiry) used to repeat the same INSERT of the webhook task
-- and its QUEUED event; now each passes its final rows here.
--
-- finals: the rows that just reached a final state, as a JSON array of task rows
-- (to_jsonb of each; extra keys are ignored).  A row gets a webhook when it has a
-- callback_url and is final (finish also passes retries, which are not).  A completion
-- webhook is a task of its own, born with the final transition, in the same statement;
-- it carries on the parent's trace (its delivery is part of the task's life).
-- Returns each webhook task's id, its parent's id and its enqueue time (epoch ms) for
-- the caller's Redis push.
--
-- The caller hands over values, not ids: this runs inside the caller's statement, whose
-- own changes to those rows it could not see.  It does all its work on its first call,
-- so the caller only needs to read its result (it joins it to the final rows).
CREATE FUNCTION tasklane_completion_webhooks(
    finals jsonb, webhook_max_retries integer, webhook_timeout integer, actor text
) RETURNS TABLE (id uuid, parent uuid, enqueued_ms float8) LANGUAGE sql VOLATILE AS $$
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
