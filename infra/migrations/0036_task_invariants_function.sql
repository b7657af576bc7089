-- The five table CHECKs of tasks that read two columns or more (and unique_key's length)
-- as one CHECK calling one PL/pgSQL function.
--
-- PostgreSQL keeps no compiled table CHECK between statements: for every INSERT or
-- UPDATE of tasks it reads each constraint back from its stored node text, simplifies
-- and compiles it (0033, 0034), whatever columns the statement sets.  The cost goes with
-- the length of that text, and the five left after 0034 were 4,893 characters of it
-- (every Var, constant and ::text cast of a domain column is a node).  The one CHECK
-- left is a call with seven column references (1,032 characters).  PL/pgSQL compiles the
-- function once per connection and plans its expressions once; per transaction it only
-- builds their executor state again.  Measured in instructions (callgrind of PostgreSQL,
-- bench/dbpathcg.py, 3 rounds, bench/RESULTS.md round 8, "table CHECKs"): a single
-- submit 738k -> 629k, a one-task claim 1,176k -> 1,069k (with no check at all: 568k
-- and 1,006k).  The price is per row: the function is called for every row, where a
-- compiled CHECK was cheap per row, so each row of a multi-row INSERT or COPY costs
-- 2-3k more (a 500-row COPY of tasks +4.3 % a row, insert_tasks with 99 tasks +1.0 %):
-- the break-even is around 40-60 rows a statement.  Not a SQL function: it would be
-- inlined into the CHECK and its body re-read and planned per statement as before.  No
-- SET clause on the function: a SET makes every call save and restore the setting.
--
-- The function checks what the constraints did, in the order PostgreSQL checked them
-- (by name), with the same NULL rule: a condition that is NULL passes (IF NOT NULL does
-- not raise).  A broken invariant raises check_violation (23514) naming the constraint
-- the row broke (tasks_finished_iff_final, ...), as the CHECK did: Store.connection maps
-- it (an IntegrityError) to a ValidationError (400), and psycopg's diag.constraint_name
-- names the same constraint as before.  The parameters are the columns' domains, so
-- the stored call needs no casts.
--
-- On a populated table: the new CHECK is added NOT VALID.  Validating it would call the
-- function for every row of tasks under the ACCESS EXCLUSIVE lock the ALTER takes (the
-- migration is one transaction, so a VALIDATE here would still hold it), and it would
-- prove nothing new: every row was written under the five identical conditions (three
-- validated, tasks_finished_iff_final and tasks_waiting_has_parents NOT VALID since 0033
-- and 0016: the same guarantee as before).  New and updated rows are checked exactly as
-- before.  `ALTER TABLE tasks VALIDATE CONSTRAINT tasks_invariants` can be run later by
-- hand (SHARE UPDATE EXCLUSIVE: reads and writes go on).  Dropping the five and adding
-- the one are catalog changes (no rewrite, no scan): 400,000 tasks, 0.14 s, the same
-- relfilenode (a VALIDATE of them: 0.30 s).
--
-- A new invariant of tasks that reads two columns or more belongs in this function (a
-- CREATE OR REPLACE in a new migration), not in a new table CHECK: a test keeps the
-- table CHECKs' stored text short.

CREATE FUNCTION tasklane_task_invariants(status tasklane_status, finished_at timestamptz, lease_token uuid,
                                         lease_expires_at timestamptz, enqueued_at timestamptz,
                                         waiting_on tasklane_count, unique_key text)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE
AS $$
BEGIN
    -- Every invariant at once: one expression to evaluate per row when the row keeps them
    -- (a multi-row INSERT or COPY calls the function per row: 1,400 instructions a row
    -- fewer than the IFs below one by one).  status is NOT NULL; unique_key's NULL and
    -- a WAITING row's NULL waiting_on make it NULL, and the IFs below let NULL pass.
    IF (status = ANY ('{COMPLETED,FAILED,CANCELLED}'::text[])) = (finished_at IS NOT NULL)
       AND (status = 'PROCESSING') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)
       AND (status <> 'QUEUED' OR enqueued_at IS NOT NULL)
       AND (unique_key IS NULL OR length(unique_key) BETWEEN 1 AND 200)
       AND (status <> 'WAITING' OR waiting_on > 0) THEN
        RETURN true;
    END IF;
    -- Which one is broken, in the order PostgreSQL checked the five CHECKs (by name).
    IF NOT ((status = ANY ('{COMPLETED,FAILED,CANCELLED}'::text[])) = (finished_at IS NOT NULL)) THEN
        RAISE EXCEPTION 'new row for relation "tasks" violates check constraint "tasks_finished_iff_final"'
            USING DETAIL = format('finished_at is set exactly when the status is final; status %s, finished_at %s',
                                  status, coalesce(finished_at::text, 'NULL')),
                  ERRCODE = 'check_violation', CONSTRAINT = 'tasks_finished_iff_final', TABLE = 'tasks';
    END IF;
    IF NOT ((status = 'PROCESSING') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)) THEN
        RAISE EXCEPTION 'new row for relation "tasks" violates check constraint "tasks_lease_iff_processing"'
            USING DETAIL = format('a task holds a lease (token and expiry) exactly while PROCESSING; status %s', status),
                  ERRCODE = 'check_violation', CONSTRAINT = 'tasks_lease_iff_processing', TABLE = 'tasks';
    END IF;
    IF NOT (status <> 'QUEUED' OR enqueued_at IS NOT NULL) THEN
        RAISE EXCEPTION 'new row for relation "tasks" violates check constraint "tasks_queued_has_enqueued_at"'
            USING DETAIL = 'a QUEUED task has enqueued_at',
                  ERRCODE = 'check_violation', CONSTRAINT = 'tasks_queued_has_enqueued_at', TABLE = 'tasks';
    END IF;
    IF NOT (length(unique_key) BETWEEN 1 AND 200) THEN
        RAISE EXCEPTION 'new row for relation "tasks" violates check constraint "tasks_unique_key_length"'
            USING DETAIL = format('unique_key is 1 to 200 characters, not %s', length(unique_key)),
                  ERRCODE = 'check_violation', CONSTRAINT = 'tasks_unique_key_length', TABLE = 'tasks';
    END IF;
    IF NOT (status <> 'WAITING' OR waiting_on > 0) THEN
        RAISE EXCEPTION 'new row for relation "tasks" violates check constraint "tasks_waiting_has_parents"'
            USING DETAIL = 'a WAITING task waits on at least one parent (waiting_on > 0)',
                  ERRCODE = 'check_violation', CONSTRAINT = 'tasks_waiting_has_parents', TABLE = 'tasks';
    END IF;
    RETURN true;
END;
$$;

ALTER TABLE tasks
    DROP CONSTRAINT tasks_finished_iff_final,
    DROP CONSTRAINT tasks_lease_iff_processing,
    DROP CONSTRAINT tasks_queued_has_enqueued_at,
    DROP CONSTRAINT tasks_unique_key_length,
    DROP CONSTRAINT tasks_waiting_has_parents,
    ADD CONSTRAINT tasks_invariants
        CHECK (tasklane_task_invariants(status, finished_at, lease_token, lease_expires_at, enqueued_at, waiting_on,
                                        unique_key)) NOT VALID;
