-- tasks_unique_key_follow (0010) fires only for UPDATEs that set finished_at (issue 14).
--
-- Its WHEN clause asks whether finished_at went from NULL to a time or back, which only
-- an UPDATE whose SET list names finished_at can do (tasks has no BEFORE trigger that
-- could change it otherwise).  Without a column list PostgreSQL read back and compiled
-- that WHEN clause for every UPDATE of tasks, a claim's, a heartbeat's, a progress
-- report's: ~33k PostgreSQL instructions of a one-task claim's ~0.85M (bench/dbpathcg.py,
-- bench/RESULTS.md round 9).  With UPDATE OF finished_at the trigger is skipped before
-- its WHEN clause is looked at, as tasks_settle_dependents (0016) already is.
-- A row trigger without transition tables may have a column list (the statement trigger
-- tasks_batch_counts may not: PostgreSQL forbids it with transition tables).
DROP TRIGGER tasks_unique_key_follow ON tasks;
CREATE TRIGGER tasks_unique_key_follow
    AFTER UPDATE OF finished_at ON tasks
    FOR EACH ROW
    WHEN (NEW.unique_key IS NOT NULL AND NEW.unique_until IS NULL
          AND (OLD.finished_at IS NULL) <> (NEW.finished_at IS NULL))
    EXECUTE FUNCTION tasklane_unique_key_follow();
