-- The "pruned" counter counts the tasks retention takes with an archive partition.
--
-- tasklane_tasks_pruned counts COMPLETED and CANCELLED tasks gone after retention, by
-- task name.  Tasks pruned row by row are counted by prune_finished's own statement;
-- since 0027 most of them leave instead with a whole day of tasks_archive, and the
-- DROP counted nothing.  This function counts a partition's tasks by name into
-- task_metric_deltas in the drop's transaction, before the drop locks the archive
-- (the Python side: Store.drop_archive_partition):
-- - Under the archive's advisory lock (the move's and the drop's, 0027), so two
--   sweepers cannot both count one partition, and the partition it picks is the one
--   tasklane_drop_archive_partition then drops: the same rule, the same now() (the
--   transaction's), and no other sweeper can drop it in between.
-- - With the partition locked SHARE: reads of archived tasks go on during the count
--   (the scan of a day's partition is the slow part), while a restore_archived that
--   would take one of its tasks back into `tasks` waits, so no task is counted here
--   and again when it is later pruned row by row.  A drop that then cannot lock the
--   archive rolls the count back with it.
-- shares advisory lock 7301955003 with migration 0027
-- Returns the partition counted, or NULL when none is due or another sweeper holds the
-- lock (the caller then drops nothing).
CREATE FUNCTION tasklane_count_archive_partition(retention_seconds double precision) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    victim text;
BEGIN
    IF NOT pg_try_advisory_xact_lock(7301955003) THEN
        RETURN NULL;
    END IF;
    SELECT p.name INTO victim FROM tasklane_archive_partitions() p
    WHERE p.day_end <= now() - make_interval(secs => retention_seconds)
    ORDER BY p.day_end LIMIT 1;
    IF victim IS NOT NULL THEN
        PERFORM set_config('lock_timeout', '5s', true);
        EXECUTE format('LOCK TABLE %I IN SHARE MODE', victim);
        EXECUTE format('INSERT INTO task_metric_deltas (name, metric, n)'
                       ' SELECT name, ''pruned'', count(*) FROM %I GROUP BY name', victim);
    END IF;
    RETURN victim;
END;
$$;
