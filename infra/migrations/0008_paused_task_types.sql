-- Pausing a task type: while a row here names a (task type, tenant), no task of that
-- type and tenant is claimed; the empty tenant '' pauses the type for every tenant
-- (an operator's global pause: a real tenant name has 1 to 100 characters).
--
-- The claim statement refuses paused rows itself (queries.sql, claim), so a pause
-- is race-free across any number of drainers: a claim that began before the pause
-- committed may still start its task (it was running before the pause, in effect),
-- every later claim skips it.  The refused ids leave Redis (the drainer acks them
-- like any stale id) and the sweeper's reconcile and rebuild leave paused QUEUED rows
-- out, so a paused backlog costs nothing while it waits; resume pushes it back.
-- The table is tiny (one row per pause) and read by primary key.
CREATE TABLE paused_task_types (
    name      text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    tenant    text        NOT NULL CHECK (length(tenant) <= 100),
    paused_at timestamptz NOT NULL DEFAULT now(),
    -- "key:<api key id>" for a tenant's pause, "cli:<os user>" for the operator CLI.
    paused_by text        NOT NULL CHECK (length(paused_by) BETWEEN 1 AND 200),
    PRIMARY KEY (name, tenant)
);
