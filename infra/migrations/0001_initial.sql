-- Tasklane initial schema: tasks, their audit trail, and hashed API keys.

CREATE TABLE tasks (
    id               uuid        PRIMARY KEY,
    tenant           text        NOT NULL,
    name             text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status           text        NOT NULL CHECK (status IN
                         ('PENDING', 'QUEUED', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    priority         text        NOT NULL DEFAULT 'normal'
                         CHECK (priority IN ('critical', 'high', 'normal', 'low')),
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    result           jsonb,
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_retries      integer     NOT NULL DEFAULT 3 CHECK (max_retries >= 0),
    timeout_seconds  integer     NOT NULL DEFAULT 300 CHECK (timeout_seconds > 0),
    run_at           timestamptz NOT NULL DEFAULT now(),
    enqueued_at      timestamptz,
    lease_token      uuid,
    lease_expires_at timestamptz,
    cancel_requested boolean     NOT NULL DEFAULT false,
    last_error       text,
    last_error_type  text,
    idempotency_key  text,
    request_hash     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    -- A lease exists exactly while a worker holds the task.
    CONSTRAINT tasks_lease_iff_processing CHECK (
        (status = 'PROCESSING') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)),
    -- finished_at is set exactly for final states.
    CONSTRAINT tasks_finished_iff_final CHECK (
        (status IN ('COMPLETED', 'FAILED', 'CANCELLED')) = (finished_at IS NOT NULL)),
    CONSTRAINT tasks_queued_has_enqueued_at CHECK (status <> 'QUEUED' OR enqueued_at IS NOT NULL)
);

-- Live-state partial indexes stay small however many finished rows the table holds.
CREATE INDEX tasks_pending_run_at ON tasks (run_at) WHERE status = 'PENDING';
CREATE INDEX tasks_queued_enqueued_at ON tasks (enqueued_at) WHERE status = 'QUEUED';
CREATE INDEX tasks_processing_lease ON tasks (lease_expires_at) WHERE status = 'PROCESSING';
CREATE INDEX tasks_failed_by_tenant ON tasks (tenant, finished_at DESC, id DESC) WHERE status = 'FAILED';
CREATE INDEX tasks_tenant_created ON tasks (tenant, created_at DESC, id DESC);
CREATE INDEX tasks_finished_at ON tasks (finished_at) WHERE finished_at IS NOT NULL;
-- Concurrent submissions with one idempotency key: the index lets exactly one win.
CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The sweeper forgets idempotency keys older than the window through this index.
CREATE INDEX tasks_idempotency_created ON tasks (created_at) WHERE idempotency_key IS NOT NULL;

CREATE TABLE task_events (
    id          bigserial   PRIMARY KEY,
    task_id     uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    from_status text        CHECK (from_status IN
                    ('PENDING', 'QUEUED', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    to_status   text        NOT NULL CHECK (to_status IN
                    ('PENDING', 'QUEUED', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    attempt     integer     NOT NULL,
    actor       text        NOT NULL,
    error       text,
    error_type  text
);
CREATE INDEX task_events_task ON task_events (task_id, id);

CREATE TABLE api_keys (
    id                    uuid        PRIMARY KEY,
    tenant                text        NOT NULL CHECK (length(tenant) BETWEEN 1 AND 100),
    name                  text        NOT NULL DEFAULT '',
    key_prefix            text        NOT NULL,
    key_hash              text        NOT NULL UNIQUE,
    rate_limit_per_minute integer     CHECK (rate_limit_per_minute > 0),
    created_at            timestamptz NOT NULL DEFAULT now(),
    expires_at            timestamptz,
    disabled_at           timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);
