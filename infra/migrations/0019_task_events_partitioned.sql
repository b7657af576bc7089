-- task_events becomes a table partitioned by day (RANGE on "at", UTC days), so that
-- retention drops a whole partition instead of deleting rows one by one (a DELETE
-- leaves dead tuples, index bloat and vacuum work proportional to what it removes;
-- DROP TABLE is a catalog change and an unlink).
--
-- - Partitions are named task_events_YYYYMMDD and cover one UTC day.  The sweeper
--   creates them a few days ahead (tasklane_ensure_event_partitions) and drops those
--   past retention (tasklane_drop_event_partition, one per call and transaction).
-- - task_events_default (the DEFAULT partition) takes any row no day partition
--   covers, so an insert never fails when the sweeper has not run; the next
--   tasklane_ensure_event_partitions moves such rows into the day's partition.  It
--   also keeps the history of tasks still in `tasks` when their day is dropped
--   (dead letters, tasks scheduled weeks ahead): events leave with their partition
--   only once their task is gone.
-- - The existing table is not rewritten: when it holds rows it is attached as the
--   partition task_events_legacy covering everything up to the end of today (UTC),
--   and retention drops it like any other; when it is empty it is dropped.
-- - No primary key: nothing references an event by id, the ids still come from one
--   sequence, and a partitioned table's key would have to include "at".  The one
--   index the queries use, (task_id, id), is on every partition.  One index fewer
--   per event on the hot path.
-- - The metrics trigger is a statement-level AFTER INSERT trigger on the parent: it
--   sees every routed row through its transition table.  Rows moved between
--   partitions by the functions below are written to the partitions directly, which
--   does not fire it, so nothing is counted twice.

ALTER TABLE task_events RENAME TO task_events_legacy;
ALTER INDEX task_events_task RENAME TO task_events_legacy_task;
ALTER TABLE task_events_legacy DROP CONSTRAINT task_events_pkey;
DROP TRIGGER task_events_metrics ON task_events_legacy;

CREATE TABLE task_events (
    id               bigint      NOT NULL DEFAULT nextval('task_events_id_seq'),
    task_id          uuid        NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    from_status      text        CONSTRAINT task_events_from_status_check CHECK (from_status IN
                         ('WAITING', 'PENDING', 'QUEUED', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    to_status        text        NOT NULL CONSTRAINT task_events_to_status_check CHECK (to_status IN
                         ('WAITING', 'PENDING', 'QUEUED', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    attempt          integer     NOT NULL,
    actor            text        NOT NULL,
    error            text,
    error_type       text,
    task_name        text,
    task_enqueued_at timestamptz,
    task_started_at  timestamptz
) PARTITION BY RANGE (at);
ALTER SEQUENCE task_events_id_seq OWNED BY task_events.id;
CREATE INDEX task_events_task ON task_events (task_id, id);
CREATE TABLE task_events_default PARTITION OF task_events DEFAULT;

CREATE TRIGGER task_events_metrics
    AFTER INSERT ON task_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION tasklane_count_task_events();

-- The day partitions (DEFAULT left out) and their bounds; NULL for MINVALUE.  The
-- bounds are read back from the catalog's text form in the same session, so the
-- round trip through text is exact.
CREATE FUNCTION tasklane_event_partitions()
RETURNS TABLE (name text, lower_bound timestamptz, upper_bound timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT c.relname::text,
           CASE WHEN b[1] = 'MINVALUE' THEN NULL ELSE btrim(b[1], '''')::timestamptz END,
           btrim(b[2], '''')::timestamptz
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                    '^FOR VALUES FROM \((.+)\) TO \((.+)\)$') AS b
    WHERE i.inhparent = 'task_events'::regclass AND b IS NOT NULL
$$;

-- One partition per UTC day from first_day to last_day, skipping days an existing
-- partition already overlaps; returns how many it created.  The table is made on its
-- own and then attached: ATTACH takes only SHARE UPDATE EXCLUSIVE on task_events, so
-- the inserts of submit, claim and finish go on meanwhile (CREATE TABLE ... PARTITION
-- OF would take ACCESS EXCLUSIVE).  Rows the DEFAULT partition took for that day are
-- moved in first, or the ATTACH would refuse.  Two sweepers at once: the second one
-- finds the transaction-scoped advisory lock taken and leaves it to the first.
CREATE FUNCTION tasklane_ensure_event_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date := first_day;
    lo timestamptz;
    hi timestamptz;
    part text;
    created integer := 0;
BEGIN
    IF NOT pg_try_advisory_xact_lock(7301955002) THEN
        RETURN 0;
    END IF;
    WHILE d <= last_day LOOP
        lo := d::timestamp AT TIME ZONE 'UTC';
        hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
        IF NOT EXISTS (SELECT 1 FROM tasklane_event_partitions() p
                       WHERE p.upper_bound > lo AND (p.lower_bound IS NULL OR p.lower_bound < hi)) THEN
            part := 'task_events_' || to_char(d, 'YYYYMMDD');
            EXECUTE format('CREATE TABLE %I (LIKE task_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
            EXECUTE format(
                'WITH moved AS (DELETE FROM task_events_default WHERE at >= $1 AND at < $2 RETURNING *)'
                ' INSERT INTO %I (id, task_id, at, from_status, to_status, attempt, actor, error, error_type,'
                '                 task_name, task_enqueued_at, task_started_at)'
                ' SELECT id, task_id, at, from_status, to_status, attempt, actor, error, error_type,'
                '        task_name, task_enqueued_at, task_started_at FROM moved', part) USING lo, hi;
            EXECUTE format('ALTER TABLE task_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
            created := created + 1;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END;
$$;

-- Retention: drops the oldest partition whose every row is older than
-- retention_seconds, and returns its name (NULL when there is none, or when another
-- sweeper holds the lock).  One partition a call, so that each drop is its own short
-- transaction.  The history of tasks still in `tasks` (dead letters, tasks that
-- waited longer than the retention) moves to the DEFAULT partition first; it is read
-- before the DETACH, which takes ACCESS EXCLUSIVE on task_events: from there on only
-- the kept rows are copied (by task id, through the partition's index) and the table
-- is dropped.  Rows in DEFAULT older than retention whose task is gone (a pruned task
-- whose history had been kept) are deleted here too.  lock_timeout: a DETACH queued
-- behind a long reader would stall every insert queued behind it; better to give up
-- and let the next sweep try again.
CREATE FUNCTION tasklane_drop_event_partition(retention_seconds double precision) RETURNS text
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
    PERFORM set_config('lock_timeout', '5s', true);
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

-- The old rows: attached as they are (one scan to check the bound, no rewrite), or
-- the empty table dropped.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM task_events_legacy) THEN
        ALTER TABLE task_events_legacy VALIDATE CONSTRAINT task_events_from_status_check;
        ALTER TABLE task_events_legacy VALIDATE CONSTRAINT task_events_to_status_check;
        EXECUTE format('ALTER TABLE task_events ATTACH PARTITION task_events_legacy FOR VALUES FROM (MINVALUE) TO (%L)',
                       greatest(date_trunc('day', now(), 'UTC'),
                                date_trunc('day', (SELECT max(at) FROM task_events_legacy), 'UTC'))
                       + interval '24 hours');
    ELSE
        DROP TABLE task_events_legacy;
    END IF;
END;
$$;

SELECT tasklane_ensure_event_partitions((now() AT TIME ZONE 'UTC')::date, (now() AT TIME ZONE 'UTC')::date + 3);
