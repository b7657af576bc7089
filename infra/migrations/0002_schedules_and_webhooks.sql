-- Cron schedules, their runs, completion webhooks and per-tenant settings.

CREATE TABLE schedules (
    id              uuid        PRIMARY KEY,
    tenant          text        NOT NULL,
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    cron            text        NOT NULL,
    timezone        text        NOT NULL DEFAULT 'UTC',
    task_name       text        NOT NULL,
    payload         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    priority        text        NOT NULL DEFAULT 'normal'
                        CHECK (priority IN ('critical', 'high', 'normal', 'low')),
    max_retries     integer     NOT NULL DEFAULT 3 CHECK (max_retries >= 0),
    timeout_seconds integer     NOT NULL DEFAULT 300 CHECK (timeout_seconds > 0),
    enabled         boolean     NOT NULL DEFAULT true,
    catch_up        text        NOT NULL DEFAULT 'once' CHECK (catch_up IN ('once', 'skip')),
    next_fire_at    timestamptz NOT NULL,
    last_fired_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, name)
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE enabled;

-- One row per tick that fired: the primary key is what makes a tick fire exactly
-- once however many sweepers race for it.
CREATE TABLE schedule_runs (
    schedule_id uuid        NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    fire_at     timestamptz NOT NULL,
    task_id     uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, fire_at)
);

ALTER TABLE tasks ADD COLUMN callback_url text;
ALTER TABLE tasks ADD COLUMN schedule_id uuid;
ALTER TABLE tasks ADD COLUMN progress smallint CHECK (progress BETWEEN 0 AND 100);
ALTER TABLE tasks ADD COLUMN progress_message text;

CREATE TABLE tenant_settings (
    tenant         text        PRIMARY KEY,
    webhook_secret text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- The body of a completion webhook, built where the final transition happens.
CREATE FUNCTION tasklane_webhook_payload(
    url text, task_id uuid, task_name text, status text, attempts integer, result jsonb,
    last_error text, last_error_type text, finished_at timestamptz
) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'url', url,
        'event', 'task.' || lower(status),
        'task', jsonb_build_object(
            'id', task_id, 'name', task_name, 'status', status, 'attempts', attempts,
            'result', result, 'last_error', last_error, 'last_error_type', last_error_type,
            'finished_at', finished_at))
$$;
