-- The task outbox: tasks that a trigger made ready (a released workflow step, a
-- batch's follow-up task) and that must reach Redis now, not at the next sweep.
--
-- A trigger that moves a task to QUEUED (or PENDING) inserts its id here in the
-- same transaction.  The drainer takes the rows right after a finish that touched
-- such a task (the finish statement returns the finished task's has_followers), the
-- API after a cancel of one, and every sweep as the safety net: DELETE ... RETURNING
-- with SKIP LOCKED, pushed to Redis before the delete commits (a failed push leaves
-- the rows for the next taker).
-- No foreign key: a row lives for milliseconds, a taker drops a row whose task is
-- gone (the join in take_outbox), and tests and tools may TRUNCATE tasks alone.
CREATE TABLE task_outbox (
    task_id    uuid        PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- True on a task whose end something else reacts to (a trigger on tasks: its
-- dependents, its batch, ...).  Plain tasks keep false, so the finish statement can
-- tell the drainer, for free, when the outbox may have work.  A constant default:
-- a catalog change, no rewrite.
ALTER TABLE tasks ADD COLUMN has_followers boolean NOT NULL DEFAULT false;

-- Rows live for milliseconds: vacuum the churn early, like tasks (0006).
ALTER TABLE task_outbox SET (
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_cost_delay = 0
);
