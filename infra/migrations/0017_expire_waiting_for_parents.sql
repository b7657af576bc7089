-- Deadlines also hold for a task waiting for its parents (WAITING, migration 0016): the
-- sweeper finalises it at its expires_at like a PENDING or QUEUED one (its dependents
-- then settle as for any cancelled parent), instead of only when its parents release
-- it.  The index of 0010 gets WAITING into its predicate; ordinary tasks (no
-- expires_at) still never enter it, and it is small, so rebuilding it is brief.
DROP INDEX tasks_waiting_expires_at;
CREATE INDEX tasks_waiting_expires_at ON tasks (expires_at)
    WHERE expires_at IS NOT NULL AND status IN ('WAITING', 'PENDING', 'QUEUED');
