-- Finished tasks leave `tasks` for tasks_archive, a table range-partitioned on the
-- task id by UTC day (UUIDv7 ids carry their creation time in their first 48 bits:
-- chalicelib/core/ids.py), so that retention drops a whole day instead of deleting
-- rows one by one (dead tuples, index bloat, vacuum work in proportion to what
-- leaves).  `tasks` keeps its live rows and about a day of finished ones, so its
-- hot-path statements (submit, claim, finish) are not touched at all.
--
-- - A COMPLETED or CANCELLED task moves (tasklane_archive_finished, one bounded batch
--   a call, DELETE ... RETURNING into INSERT in one statement) once it finished and was
--   created more than the idempotency window ago (at least 24 hours: today's stats
--   read `tasks` only) and when its day's partition exists and it finished within that
--   UTC day.  What stays in `tasks` and is pruned row by row after retention as before
--   (prune_finished): dead letters (never pruned), tasks with dependency edges (their
--   rows in task_deps reference `tasks`), tasks still holding a unique key or listed
--   in the outbox, ids that are not version 7 (rows from before ids.py, and the
--   webhook and batch follow-up tasks SQL makes with gen_random_uuid()), and tasks
--   that finished after their creation day ended (scheduled far ahead, long retries).
-- - Partitions are named tasks_archive_YYYYMMDD and bounded by the smallest v7 id of
--   their day and of the next.  There is no DEFAULT partition: an id no partition
--   covers is never moved, so making a partition never scans anything.
-- - Retention drops the partition of day D once D ended more than retention ago:
--   every row in it finished within D, so all are past retention.  Their events go
--   with task_events' partition of the same day (migration 0019), dropped on the same
--   rule right after in the same sweep.
-- - tasks_archive has the columns of `tasks`, in the same order: the move and the
--   restore copy rows whole.  A migration adding a column to `tasks` adds it here
--   too (tests/integration/test_tasks_archive.py checks they match).
-- - One transaction-scoped advisory lock serialises the move, the making and the
--   dropping of partitions, so two sweepers never race over the cursor or over a
--   partition being dropped under a move: the second one does nothing that time.

CREATE TABLE tasks_archive (LIKE tasks INCLUDING DEFAULTS) PARTITION BY RANGE (id);
ALTER TABLE tasks_archive ADD CONSTRAINT tasks_archive_pkey PRIMARY KEY (id);
-- list_tasks pages the archive in the same (created_at, id) order as `tasks`.
CREATE INDEX tasks_archive_tenant_created ON tasks_archive (tenant, created_at DESC, id DESC);
-- prune_batches keeps a batch while any of its tasks is left, archived ones included.
CREATE INDEX tasks_archive_batch ON tasks_archive (batch_id) WHERE batch_id IS NOT NULL;

-- Where the move left off: a page of finished tasks is read after this position and
-- moved on, so the tasks that stay (above) are read once, not by every sweep.
ALTER TABLE retention_cursors DROP CONSTRAINT retention_cursors_name_check;
ALTER TABLE retention_cursors ADD CONSTRAINT retention_cursors_name_check
    CHECK (name IN ('batches', 'workflows', 'archive'));

-- The smallest version-7 id of a UTC day: its millisecond in the first 48 bits.
CREATE FUNCTION tasklane_day_first_id(day date) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
    SELECT (lpad(to_hex((extract(epoch FROM day::timestamp) * 1000)::bigint), 12, '0')
            || '00000000000000000000')::uuid
$$;

-- The range partitions of a table and their bounds as text (MINVALUE as it is,
-- literals unquoted), read from the catalog; the DEFAULT partition left out.  The
-- partitions of task_events (0019) and of tasks_archive are read through it.
CREATE FUNCTION tasklane_range_partitions(parent regclass)
RETURNS TABLE (name text, lower_text text, upper_text text)
LANGUAGE sql STABLE AS $$
    SELECT c.relname::text, btrim(b[1], ''''), btrim(b[2], '''')
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                    '^FOR VALUES FROM \((.+)\) TO \((.+)\)$') AS b
    WHERE i.inhparent = parent AND b IS NOT NULL
$$;

CREATE OR REPLACE FUNCTION tasklane_event_partitions()
RETURNS TABLE (name text, lower_bound timestamptz, upper_bound timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT p.name, CASE WHEN p.lower_text = 'MINVALUE' THEN NULL ELSE p.lower_text::timestamptz END,
           p.upper_text::timestamptz
    FROM tasklane_range_partitions('task_events') p
$$;

-- The archive's partitions, their id bounds and the end of their day (the upper
-- bound's first 48 bits, in milliseconds).
CREATE FUNCTION tasklane_archive_partitions()
RETURNS TABLE (name text, lower_id uuid, upper_id uuid, day_end timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT p.name, p.lower_text::uuid, p.upper_text::uuid,
           to_timestamp(('x' || substr(replace(p.upper_text, '-', ''), 1, 12))::bit(48)::bigint / 1000.0)
    FROM tasklane_range_partitions('tasks_archive') p
$$;

-- One partition per UTC day from first_day to last_day, those missing; returns how
-- many it made.  Made on its own and then attached: ATTACH takes SHARE UPDATE
-- EXCLUSIVE on tasks_archive (reads of archived tasks go on) and has an empty table
-- to check.
CREATE FUNCTION tasklane_ensure_archive_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    part text;
    created integer := 0;
BEGIN
    IF pg_try_advisory_xact_lock(7301955003) THEN
        FOR d IN SELECT g::date FROM generate_series(first_day, last_day, interval '1 day') g LOOP
            CONTINUE WHEN EXISTS (
                SELECT 1 FROM tasklane_archive_partitions() p
                WHERE p.upper_id > tasklane_day_first_id(d) AND p.lower_id < tasklane_day_first_id(d + 1));
            part := 'tasks_archive_' || to_char(d, 'YYYYMMDD');
            EXECUTE format('CREATE TABLE %I (LIKE tasks_archive INCLUDING DEFAULTS)', part);
            EXECUTE format('ALTER TABLE tasks_archive ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           part, tasklane_day_first_id(d), tasklane_day_first_id(d + 1));
            created := created + 1;
        END LOOP;
    END IF;
    RETURN created;
END;
$$;

-- Retention: drops the oldest partition whose day ended more than retention_seconds
-- ago and returns its name (NULL when there is none, or another sweeper holds the
-- lock): one a call, each its own short transaction.  DROP takes ACCESS EXCLUSIVE on
-- tasks_archive, which only the reads of archived tasks use; lock_timeout: behind a
-- long reader, better to give up and let the next sweep try than to queue every
-- reader behind the drop.
CREATE FUNCTION tasklane_drop_archive_partition(retention_seconds double precision) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    victim text;
BEGIN
    IF pg_try_advisory_xact_lock(7301955003) THEN
        SELECT p.name INTO victim FROM tasklane_archive_partitions() p
        WHERE p.day_end <= now() - make_interval(secs => retention_seconds)
        ORDER BY p.day_end LIMIT 1;
        IF victim IS NOT NULL THEN
            PERFORM set_config('lock_timeout', '5s', true);
            EXECUTE format('DROP TABLE %I', victim);
        END IF;
    END IF;
    RETURN victim;
END;
$$;

-- The move: the next page of up to page_size COMPLETED and CANCELLED tasks that
-- finished before now() - after_seconds, in (finished_at, id) order from the cursor;
-- those of them that may leave `tasks` (the list at the top) are moved in this one
-- statement, so an interrupted move leaves every task in exactly one of the two
-- tables.  Rows another transaction holds locked (a child's submit locking its
-- parent) are skipped: the cursor passes them and they are pruned row by row later.
-- The idempotency key is dropped on the way: it is past its window, and nothing
-- looks keys up in the archive.  Returns how many moved, or NULL when another
-- sweeper holds the lock, and whether the page was full (the caller goes on then).
CREATE FUNCTION tasklane_archive_finished(after_seconds double precision, page_size integer)
RETURNS TABLE (moved integer, full_page boolean)
LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := now() - make_interval(secs => after_seconds);
BEGIN
    IF NOT pg_try_advisory_xact_lock(7301955003) THEN
        RETURN QUERY SELECT NULL::integer, false;
        RETURN;
    END IF;
    RETURN QUERY
    WITH page AS (
        -- The cursor as two scalar subqueries (run once): the scan of
        -- tasks_prunable_finished_at starts at it and stops after the page.
        SELECT t.id, t.finished_at FROM tasks t
        WHERE t.status IN ('COMPLETED', 'CANCELLED')
          AND t.finished_at < cutoff
          AND (t.finished_at, t.id) > (
              coalesce((SELECT after_at FROM retention_cursors WHERE name = 'archive'), '-infinity'),
              coalesce((SELECT after_id FROM retention_cursors WHERE name = 'archive'),
                       '00000000-0000-0000-0000-000000000000'))
        ORDER BY t.finished_at, t.id
        LIMIT page_size
    ), parts AS MATERIALIZED (
        SELECT p.lower_id, p.upper_id, p.day_end FROM tasklane_archive_partitions() p
    ), doomed AS (
        SELECT t.id FROM tasks t
        WHERE t.id = ANY(ARRAY(SELECT id FROM page))
          AND t.status IN ('COMPLETED', 'CANCELLED')
          AND t.created_at < cutoff
          AND (get_byte(uuid_send(t.id), 6) >> 4) = 7
          AND EXISTS (SELECT 1 FROM parts p
                      WHERE t.id >= p.lower_id AND t.id < p.upper_id AND t.finished_at < p.day_end)
          AND NOT EXISTS (SELECT 1 FROM task_deps d WHERE d.parent_id = t.id)
          AND NOT EXISTS (SELECT 1 FROM task_deps d WHERE d.child_id = t.id)
          AND NOT EXISTS (SELECT 1 FROM task_outbox o WHERE o.task_id = t.id)
          AND (t.unique_key IS NULL OR NOT EXISTS (
              SELECT 1 FROM task_unique_keys k
              WHERE k.tenant = t.tenant AND k.unique_key = t.unique_key AND k.task_id = t.id))
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM tasks t WHERE t.id = ANY(ARRAY(SELECT id FROM doomed)) RETURNING t
    ), kept AS (
        -- Whole rows; LATERAL so that the function runs once a row, not once a column.
        INSERT INTO tasks_archive
        SELECT r.* FROM gone g,
             LATERAL jsonb_populate_record(g.t, '{"idempotency_key": null, "request_hash": null}') r
        RETURNING 1
    ), advanced AS (
        INSERT INTO retention_cursors (name, after_at, after_id)
        SELECT 'archive', p.finished_at, p.id FROM page p ORDER BY p.finished_at DESC, p.id DESC LIMIT 1
        ON CONFLICT (name) DO UPDATE SET after_at = excluded.after_at, after_id = excluded.after_id
    )
    SELECT (SELECT count(*) FROM kept)::integer, (SELECT count(*) FROM page) = page_size;
END;
$$;

SELECT tasklane_ensure_archive_partitions(((now() - interval '7 days') AT TIME ZONE 'UTC')::date,
                                          (now() AT TIME ZONE 'UTC')::date + 1);
