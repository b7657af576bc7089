-- Who did what: an append-only audit log of the changes that are not task
-- transitions (task_events keeps those), and dead letters that are never pruned.
--
-- Every audit row is written by the same statement as the change it records (a
-- data-modifying CTE in queries.sql), so a change and its audit row commit
-- together or not at all, and a change that did not happen leaves no row.

CREATE TABLE audit_log (
    id           bigserial   PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    tenant       text        NOT NULL,
    -- "key:<api key id>" for the API, "cli:<os user>" for the operator CLI.
    actor        text        NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    -- "<subject>.<verb>", e.g. schedule.created; chalicelib.core.audit.AuditAction lists them.
    action       text        NOT NULL CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    subject_type text        NOT NULL,
    subject_id   text,
    -- What changed; never a secret (a webhook secret or an API key).
    details      jsonb       NOT NULL DEFAULT '{}'::jsonb
);
-- GET /api/v1/audit: a tenant's entries newest first, optionally of one action.
CREATE INDEX audit_log_tenant ON audit_log (tenant, at DESC, id DESC);
CREATE INDEX audit_log_tenant_action ON audit_log (tenant, action, at DESC, id DESC);

-- Append-only: rows are never changed or deleted by the application.  (TRUNCATE
-- is left to a DBA who archives the log on purpose.)
CREATE FUNCTION tasklane_audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION tasklane_audit_log_append_only();

-- The sweeper prunes only COMPLETED and CANCELLED tasks past retention; FAILED
-- tasks (the dead-letter queue) stay until redriven or purged.  Without this index
-- the prune would walk every old dead letter (tasks_finished_at covers them too)
-- before reaching a prunable row, on every sweep.
CREATE INDEX tasks_prunable_finished_at ON tasks (finished_at)
    WHERE status IN ('COMPLETED', 'CANCELLED');
