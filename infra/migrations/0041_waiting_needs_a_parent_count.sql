-- tasks_waiting_has_parents refuses a WAITING task whose waiting_on is NULL (0036 let it pass).
--
-- The condition came from the table CHECK of 0016, where a NULL result passes, and 0036
-- kept that rule when it moved the five CHECKs into tasklane_task_invariants.  But a
-- WAITING task is released only by tasklane_settle_dependents counting waiting_on down to
-- zero (0016, 0020): with NULL there is nothing to count down, so the task would wait for
-- ever and no sweep would finalise it but its expires_at.  Every writer sets waiting_on
-- with WAITING (services/dependencies.py: the number of open parents), so no row written
-- through Tasklane is refused; the check now says so for any other writer too.
-- Rows already in the table are not re-checked (the constraint stays NOT VALID, 0036).
-- The function is replaced in place: the CHECK that calls it is unchanged, and each
-- connection compiles the new body at its next call.

CREATE OR REPLACE FUNCTION tasklane_task_invariants(status tasklane_status, finished_at timestamptz, lease_token uuid,
                                         lease_expires_at timestamptz, enqueued_at timestamptz,
                                         waiting_on tasklane_count, unique_key text)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE
AS $$
BEGIN
    -- Every invariant at once: one expression to evaluate per row when the row keeps them
    -- (a multi-row INSERT or COPY calls the function per row: 1,400 instructions a row
    -- fewer than the IFs below one by one).  status is NOT NULL; unique_key's NULL makes
    -- it NULL, and the IFs below let that NULL pass (a task without a key).  waiting_on's
    -- NULL does not: a WAITING task without a count of open parents is never released.
    IF (status = ANY ('{COMPLETED,FAILED,CANCELLED}'::text[])) = (finished_at IS NOT NULL)
       AND (status = 'PROCESSING') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)
       AND (status <> 'QUEUED' OR enqueued_at IS NOT NULL)
       AND (unique_key IS NULL OR length(unique_key) BETWEEN 1 AND 200)
       AND (status <> 'WAITING' OR coalesce(waiting_on, 0) > 0) THEN
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
    IF NOT (status <> 'WAITING' OR coalesce(waiting_on, 0) > 0) THEN
        RAISE EXCEPTION 'new row for relation "tasks" violates check constraint "tasks_waiting_has_parents"'
            USING DETAIL = 'a WAITING task waits on at least one parent (waiting_on > 0)',
                  ERRCODE = 'check_violation', CONSTRAINT = 'tasks_waiting_has_parents', TABLE = 'tasks';
    END IF;
    RETURN true;
END;
$$;
