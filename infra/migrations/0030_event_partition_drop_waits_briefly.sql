-- A task_events partition's drop waits at most 200 ms for its lock (0019 waited 5 s).
--
-- DETACH PARTITION locks task_events ACCESS EXCLUSIVE (CONCURRENTLY cannot be used:
-- the table has a DEFAULT partition), and every transition inserts its event row into
-- task_events.  A DETACH queued behind a long reader (a report, pg_dump) therefore held
-- every submit, claim and finish queued behind it for up to the whole wait: with 5 s,
-- once a day, a 5-second stall of the whole queue.  200 ms is the archive's drop wait
-- (0027); the event rows' own writers hold the table for milliseconds, so only a long
-- reader makes the drop give up, and the next sweep tries again.  The rest of the
-- function is 0019's, unchanged.
-- shares advisory lock 7301955002 with migration 0019
CREATE OR REPLACE FUNCTION tasklane_drop_event_partition(retention_seconds double precision) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := now() - make_interval(secs => retention_seconds);
    victim text;
    kept uuid[];
BEGIN
    IF NOT pg_try_advisory_xact_lock(7301955002) THEN
        RETURN NULL;
    END IF;
    SELECT p.name INTO victim FROM tasklane_event_partitions() p
    WHERE p.upper_bound <= cutoff ORDER BY p.upper_bound LIMIT 1;
    IF victim IS NULL THEN
        RETURN NULL;
    END IF;
    DELETE FROM task_events_default e
    WHERE e.at < cutoff AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = e.task_id);
    EXECUTE format('SELECT coalesce(array_agg(DISTINCT e.task_id), ''{}'') FROM %I e'
                   ' WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.id = e.task_id)', victim) INTO kept;
    PERFORM set_config('lock_timeout', '200ms', true);
    EXECUTE format('ALTER TABLE task_events DETACH PARTITION %I', victim);
    EXECUTE format(
        'INSERT INTO task_events_default (id, task_id, at, from_status, to_status, attempt, actor, error,'
        '                                 error_type, task_name, task_enqueued_at, task_started_at)'
        ' SELECT e.id, e.task_id, e.at, e.from_status, e.to_status, e.attempt, e.actor, e.error,'
        '        e.error_type, e.task_name, e.task_enqueued_at, e.task_started_at FROM %I e'
        ' WHERE e.task_id = ANY($1) AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = e.task_id)', victim) USING kept;
    EXECUTE format('DROP TABLE %I', victim);
    RETURN victim;
END;
$$;
