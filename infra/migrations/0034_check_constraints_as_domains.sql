-- The single-column CHECK constraints of tasks and task_events as domains.
--
-- PostgreSQL keeps no compiled table CHECK between statements: for every INSERT or
-- UPDATE it reads each constraint of the table back from its stored text, simplifies and
-- compiles it (0033), and an UPDATE checks every one of them, whatever columns it sets.
-- A domain's constraints are read and planned once per connection (the type cache) and
-- checked only where a value is assigned to a column of the domain.  Measured in
-- instructions (callgrind of PostgreSQL, bench/dbpathcg.py, 3 rounds, bench/RESULTS.md
-- round 7, "domains"): a single submit 962k -> 738k, a one-task claim 1,450k -> 1,209k.
-- The checks that read two columns or more (a lease exactly while PROCESSING, finished_at
-- exactly for final states, ...) stay table CHECKs; so does unique_key's length (a
-- trigger's column list names unique_key, and a column a trigger names keeps its type).
-- The domains check what the constraints did: a NULL passes (an event's first
-- from_status, a task without parents' waiting_on), NOT NULL stays on the columns.
--
-- On a populated table:
-- - The domains are made without constraints, so that changing a column to one is a
--   catalog change: no rewrite of tasks, of task_events' or of tasks_archive's
--   partitions (their relfilenodes stay; 400,000 rows in each, checked).  What it costs
--   on tasks, under the ACCESS EXCLUSIVE lock the ALTER takes: the six partial indexes
--   whose predicate reads status are built again (PostgreSQL reuses an index only when
--   it has no predicate), and the validated table CHECKs that read a changed column are
--   checked again, one scan; tasks holds live rows and about a day of finished ones
--   (0027).  400,000 rows: 0.4 s.  The indexes of task_events and tasks_archive read
--   none of the columns: nothing is built there.
-- - ALTER DOMAIN ... ADD CONSTRAINT then checks every existing row of every column of
--   the domain, the event and archive partitions included: the rows are validated, not
--   assumed (all seven, 400,000 rows in each table: 0.74 s; one scan per domain and
--   table, so about 0.9 s per million rows of tasks or of the archive).
-- - The replaced table CHECKs are dropped first, so the ALTERs do not re-check them.
--
-- tasks_archive keeps the column types of tasks in their order (the move copies whole
-- rows, a restore reads jsonb_populate_record(NULL::tasks)).  A partition made later
-- (LIKE the parent) copies the domains, so it still attaches.  A value outside a domain
-- is still a check_violation (23514), which the store maps as before; the error names
-- the domain's constraint (tasklane_status_check, ...) instead of the table's.
-- PL/pgSQL's RETURN QUERY wants its declared column types exactly, so the claim
-- function (0028, otherwise unchanged) returns the domain columns cast to their types.
-- For new SQL: an untyped (string) parameter both assigned to one of these columns and
-- compared with text in the same statement is refused ("inconsistent types deduced");
-- cast it to text where it is assigned.

CREATE DOMAIN tasklane_status AS text;
CREATE DOMAIN tasklane_priority AS text;
CREATE DOMAIN tasklane_count AS integer;
CREATE DOMAIN tasklane_positive AS integer;
CREATE DOMAIN tasklane_percent AS smallint;
CREATE DOMAIN tasklane_task_name AS text;
CREATE DOMAIN tasklane_trace_context AS text;

ALTER TABLE tasks
    DROP CONSTRAINT tasks_status_check,
    DROP CONSTRAINT tasks_priority_check,
    DROP CONSTRAINT tasks_attempts_check,
    DROP CONSTRAINT tasks_max_retries_check,
    DROP CONSTRAINT tasks_snoozes_nonnegative,
    DROP CONSTRAINT tasks_waiting_on_check,
    DROP CONSTRAINT tasks_timeout_seconds_check,
    DROP CONSTRAINT tasks_progress_check,
    DROP CONSTRAINT tasks_name_check,
    DROP CONSTRAINT tasks_trace_context_length,
    ALTER COLUMN status TYPE tasklane_status,
    ALTER COLUMN priority TYPE tasklane_priority,
    ALTER COLUMN attempts TYPE tasklane_count,
    ALTER COLUMN max_retries TYPE tasklane_count,
    ALTER COLUMN snoozes TYPE tasklane_count,
    ALTER COLUMN waiting_on TYPE tasklane_count,
    ALTER COLUMN timeout_seconds TYPE tasklane_positive,
    ALTER COLUMN progress TYPE tasklane_percent,
    ALTER COLUMN name TYPE tasklane_task_name,
    ALTER COLUMN trace_context TYPE tasklane_trace_context;

ALTER TABLE tasks_archive
    ALTER COLUMN status TYPE tasklane_status,
    ALTER COLUMN priority TYPE tasklane_priority,
    ALTER COLUMN attempts TYPE tasklane_count,
    ALTER COLUMN max_retries TYPE tasklane_count,
    ALTER COLUMN snoozes TYPE tasklane_count,
    ALTER COLUMN waiting_on TYPE tasklane_count,
    ALTER COLUMN timeout_seconds TYPE tasklane_positive,
    ALTER COLUMN progress TYPE tasklane_percent,
    ALTER COLUMN name TYPE tasklane_task_name,
    ALTER COLUMN trace_context TYPE tasklane_trace_context;

ALTER TABLE task_events
    DROP CONSTRAINT task_events_from_status_check,
    DROP CONSTRAINT task_events_to_status_check,
    ALTER COLUMN from_status TYPE tasklane_status,
    ALTER COLUMN to_status TYPE tasklane_status;

ALTER DOMAIN tasklane_status ADD CONSTRAINT tasklane_status_check
    CHECK (VALUE = ANY ('{WAITING,PENDING,QUEUED,PROCESSING,COMPLETED,FAILED,CANCELLED}'::text[]));
ALTER DOMAIN tasklane_priority ADD CONSTRAINT tasklane_priority_check
    CHECK (VALUE = ANY ('{critical,high,normal,low}'::text[]));
ALTER DOMAIN tasklane_count ADD CONSTRAINT tasklane_count_check CHECK (VALUE >= 0);
ALTER DOMAIN tasklane_positive ADD CONSTRAINT tasklane_positive_check CHECK (VALUE > 0);
ALTER DOMAIN tasklane_percent ADD CONSTRAINT tasklane_percent_check CHECK (VALUE BETWEEN 0 AND 100);
ALTER DOMAIN tasklane_task_name ADD CONSTRAINT tasklane_task_name_check CHECK (length(VALUE) BETWEEN 1 AND 200);
ALTER DOMAIN tasklane_trace_context ADD CONSTRAINT tasklane_trace_context_check CHECK (length(VALUE) <= 256);

CREATE OR REPLACE FUNCTION tasklane_claim(claim_ids uuid[], claim_token uuid, lease_seconds float8,
                                          claim_actor text)
RETURNS TABLE (id text, tenant text, name text, priority text, payload jsonb, attempts integer,
               max_retries integer, timeout_seconds integer, enqueued_at timestamptz,
               started_at timestamptz, trace_context text, snoozes integer, has_parents boolean)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
#variable_conflict use_column
DECLARE
    locked tid[];
    was text[];
BEGIN
    SELECT array_agg(l.ctid), array_agg(l.status) INTO locked, was
    FROM (
        SELECT t.ctid, t.status FROM tasks t
        WHERE t.id = ANY(claim_ids)
          AND CASE t.status WHEN 'QUEUED' THEN true WHEN 'PENDING' THEN t.run_at <= now() ELSE false END
          AND NOT EXISTS (SELECT 1 FROM paused_task_types p
                          WHERE p.name = t.name AND p.tenant IN (t.tenant, ''))
          AND (t.expires_at IS NULL OR t.expires_at > now())
        ORDER BY t.id
        FOR UPDATE
    ) AS l;
    IF locked IS NULL THEN
        RETURN;
    END IF;
    -- Not durable on purpose (queries.sql says why): local to the transaction, which is
    -- not one of the function's SET clauses, so it outlives the call until the commit.
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH c AS (
        UPDATE tasks t
        SET status = 'PROCESSING', attempts = t.attempts + 1, lease_token = claim_token,
            lease_expires_at = now() + make_interval(secs => lease_seconds),
            started_at = now(), updated_at = now(),
            enqueued_at = coalesce(CASE WHEN l.status = 'QUEUED' THEN t.enqueued_at END, t.run_at)
        FROM unnest(locked, was) AS l(tid, status)
        WHERE t.ctid = l.tid
        RETURNING t.id, t.tenant, t.name, t.priority, t.payload, t.attempts, t.max_retries,
                  t.timeout_seconds, t.enqueued_at, t.started_at, t.trace_context, t.snoozes,
                  l.status AS from_status, t.waiting_on IS NOT NULL AS has_parents
    ), ev AS (
        INSERT INTO task_events (task_id, from_status, to_status, attempt, actor,
                                 task_name, task_enqueued_at, task_started_at)
        SELECT c.id, c.from_status, 'PROCESSING', c.attempts, claim_actor, c.name, c.enqueued_at, c.started_at
        FROM c
    )
    SELECT c.id::text, c.tenant, c.name::text, c.priority::text, c.payload, c.attempts::integer,
           c.max_retries::integer, c.timeout_seconds::integer, c.enqueued_at, c.started_at,
           c.trace_context::text, c.snoozes::integer, c.has_parents
    FROM c;
END;
$$;
