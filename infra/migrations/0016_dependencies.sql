-- Dependencies and workflows: a task may wait for other tasks (its parents) of its
-- tenant; it becomes ready when all of them COMPLETED, and is CANCELLED when one ends
-- FAILED or CANCELLED (unless it asked to run anyway).
--
-- 1. WAITING: a task with unfinished parents.  Nothing hands it out: the claim
--    accepts only QUEUED (and due PENDING) rows, the sweeper promotes only PENDING
--    ones, and the Redis rebuild and reconciliation read only QUEUED, PENDING and
--    PROCESSING rows, so a WAITING task never reaches Redis until it is released.
--    The new constraints only widen the old ones (every existing row satisfies
--    them): NOT VALID skips a full scan of tasks and task_events under an exclusive
--    lock; new rows are checked all the same.
ALTER TABLE tasks
    DROP CONSTRAINT tasks_status_check,
    ADD CONSTRAINT tasks_status_check CHECK (status IN
        ('WAITING', 'PENDING', 'QUEUED', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED')) NOT VALID;
ALTER TABLE task_events
    DROP CONSTRAINT task_events_from_status_check,
    ADD CONSTRAINT task_events_from_status_check CHECK (from_status IN
        ('WAITING', 'PENDING', 'QUEUED', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED')) NOT VALID,
    DROP CONSTRAINT task_events_to_status_check,
    ADD CONSTRAINT task_events_to_status_check CHECK (to_status IN
        ('WAITING', 'PENDING', 'QUEUED', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED')) NOT VALID;

-- waiting_on: parents not finished yet (NULL for a task without parents, so the claim
-- loads parents' results only for tasks that have some).  run_anyway: the task runs
-- when a parent ends FAILED or CANCELLED instead of being cancelled.  Nullable, no
-- default: catalog changes, no rewrite.
ALTER TABLE tasks
    ADD COLUMN waiting_on integer CHECK (waiting_on >= 0),
    ADD COLUMN run_anyway boolean,
    ADD CONSTRAINT tasks_waiting_has_parents CHECK (status <> 'WAITING' OR waiting_on > 0) NOT VALID;

-- One row per (parent, child).  parent_key names the parent in the child's
-- parent_results: its step name in a workflow, else its id.  resolved: the parent's
-- end has been counted (once: a redriven parent that ends again counts nothing).
CREATE TABLE task_deps (
    parent_id  uuid    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    child_id   uuid    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    parent_key text    NOT NULL,
    resolved   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX task_deps_child ON task_deps (child_id);
-- The WAITING gauges count through this (tasks has no index on WAITING, and building
-- one would scan the whole table under a write lock).
CREATE INDEX task_deps_open ON task_deps (child_id) WHERE NOT resolved;

-- A workflow: steps (local name -> task id) submitted together.  No foreign key to
-- tasks: a step pruned after retention reads as gone, not as an error.
CREATE TABLE workflows (
    id         uuid        PRIMARY KEY,
    tenant     text        NOT NULL,
    steps      jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- 2. Settling dependents when a parent ends.  Fires only for tasks that have followers
--    (has_followers, set on a parent when a dependent is submitted), so plain tasks
--    pay one boolean test.  Every path that finalizes a task goes through an UPDATE
--    of tasks (the drainer's finish, the sweeper's rescue, cancel), so all of them
--    settle dependents.
--
--    Exactly once: the parent's edges are marked resolved under the parent's row lock,
--    and each child's counter is decremented by a guarded UPDATE under the child's row
--    lock (taken in id order).  Two parents finishing at the same instant in two
--    transactions serialise on the child's row; READ COMMITTED re-reads it after the
--    wait, so exactly one of them sees waiting_on go from 1 to 0 and releases it.
--
--    A cancelled dependent is itself a parent that ended: the cascade runs here, level
--    by level, in a loop rather than by recursion (a long chain of dependents would
--    otherwise nest one trigger call per level and exhaust the stack).  The setting
--    tasklane.settling keeps this trigger from firing for the rows the loop updates.
CREATE FUNCTION tasklane_settle_dependents() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    parents uuid[] := ARRAY[NEW.id];
    ok boolean := NEW.status = 'COMPLETED';
    reason text := format('a dependency did not complete: task %s ended %s', NEW.id, NEW.status);
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
            RETURNING t.id, t.name, t.status, t.has_followers, t.enqueued_at, t.last_error, t.last_error_type
        ), ev AS (
            INSERT INTO task_events (task_id, from_status, to_status, attempt, actor, error, error_type,
                                     task_name, task_enqueued_at)
            SELECT id, 'WAITING', status, 0, 'dependencies',
                   CASE WHEN status = 'CANCELLED' THEN last_error END,
                   CASE WHEN status = 'CANCELLED' THEN last_error_type END,
                   name, enqueued_at
            FROM u WHERE status <> 'WAITING'
        ), ob AS (
            INSERT INTO task_outbox (task_id)
            SELECT id FROM u WHERE status IN ('QUEUED', 'PENDING')
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

CREATE TRIGGER tasks_settle_dependents
AFTER UPDATE OF finished_at ON tasks
FOR EACH ROW
WHEN (OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL AND NEW.has_followers
      AND current_setting('tasklane.settling', true) IS DISTINCT FROM 'on')
EXECUTE FUNCTION tasklane_settle_dependents();
