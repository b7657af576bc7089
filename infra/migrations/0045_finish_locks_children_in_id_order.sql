-- A finish locks its tasks' WAITING children in id order before settling them.
--
-- tasklane_settle_dependents (migrations 0016, 0020, 0041), the row trigger that settles
-- a parent's children when it ends, locks each parent's WAITING children in id order,
-- but one parent at a time: a finish of parents a1 < a2 locks a1's children, then
-- a2's.  A submit with depends_on locks its parents in id order (lock_parents), and so
-- does another finish's trigger for its own parents.  When a1's child is hi and a2's
-- is lo (lo < hi), the finish locks hi, then lo, and a submit depending on lo and hi,
-- or another finish whose parents have the same children the other way round, locks
-- lo, then hi: a deadlock, which PostgreSQL ends after deadlock_timeout (1 s) by
-- rolling one back.  The review of round 22 saw the submit answered 503
-- (tests/integration/test_dependency_locks.py reproduces it).
--
-- Now tasklane_finish, when any of its tasks has followers, first locks the WAITING
-- children of all of them in id order, in one statement, after its own tasks; the
-- trigger then finds them held.  lock_parents (queries.sql) takes a submit's parents
-- in the same order: those not WAITING by id, then the WAITING ones by id.  The finish is otherwise that of 0038, unchanged; its
-- first statement also collects which tasks have followers (one aggregate more), and a
-- batch without followers pays only that.  A cancellation cascading to grandchildren
-- still locks them level by level, and any other statement that ends a parent
-- (cancel, expiry, the sweeper's dead-lettering) still settles parent by parent: a
-- deadlock there is rolled back and run again by the store (retry_conflicts).
CREATE OR REPLACE FUNCTION tasklane_finish(finish_outcomes jsonb, finish_ids uuid[], finish_actor text,
                                           hook_max_retries integer, hook_timeout integer)
RETURNS TABLE (id text, tenant text, name text, status text, priority text, attempts integer,
               run_at_ms float8, hook_id text, hook_enqueued_ms float8, has_followers boolean,
               redrives integer)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
#variable_conflict use_column
DECLARE
    locked tid[];
    locked_ids uuid[];
    followed uuid[];
BEGIN
    SELECT array_agg(l.ctid), array_agg(l.id), array_agg(l.id) FILTER (WHERE l.has_followers)
    INTO locked, locked_ids, followed
    FROM (
        SELECT t.ctid, t.id, t.has_followers FROM tasks t
        WHERE t.id = ANY(finish_ids)
          -- The outcomes' tokens: one array, computed once (an InitPlan), no join.
          AND CASE t.status WHEN 'PROCESSING'
                   THEN t.lease_token = ANY(ARRAY(SELECT (e ->> 'token')::uuid
                                                  FROM jsonb_array_elements(finish_outcomes) AS e))
                   ELSE false END
        ORDER BY t.id
        FOR UPDATE
    ) AS l;
    IF locked IS NULL THEN
        RETURN;
    END IF;
    IF followed IS NOT NULL THEN
        -- The WAITING children of every parent here, locked in id order before any
        -- parent's end settles them (tasklane_settle_dependents locks them parent by
        -- parent).  As in the lock above: the ids as an array, tasks_pkey probed once
        -- each, in index order.  The edges are read through task_deps' primary key
        -- (parent_id first); "NOT resolved" would let a generic plan made on an empty
        -- table read all of task_deps_open instead (checked with EXPLAIN), hence the
        -- CASE no partial index matches.  A parent that is only retried locks its
        -- children for nothing; they stay WAITING.
        PERFORM 1 FROM tasks c
        WHERE c.id = ANY(ARRAY(SELECT d.child_id FROM task_deps d
                               WHERE d.parent_id = ANY(followed)
                                 AND CASE WHEN d.resolved THEN false ELSE true END))
          AND CASE c.status WHEN 'WAITING' THEN true ELSE false END
        ORDER BY c.id
        FOR UPDATE;
    END IF;
    RETURN QUERY
    WITH o AS (
        SELECT * FROM jsonb_to_recordset(finish_outcomes) AS o(
            id uuid, token uuid, status text, result text, error text, error_type text, delay float8,
            snooze boolean)
    ), u AS (
        UPDATE tasks t
        SET status = CASE WHEN o.status = 'PENDING' AND t.cancel_requested
                          THEN 'CANCELLED' ELSE o.status END,
            result = CASE WHEN o.status = 'COMPLETED' THEN o.result::jsonb ELSE t.result END,
            attempts = CASE WHEN o.snooze THEN t.attempts - 1 ELSE t.attempts END,
            snoozes = CASE WHEN o.snooze THEN t.snoozes + 1 ELSE t.snoozes END,
            last_error = CASE WHEN o.snooze THEN t.last_error ELSE coalesce(o.error, t.last_error) END,
            last_error_type = CASE WHEN o.error IS NULL OR o.snooze THEN t.last_error_type ELSE o.error_type END,
            run_at = CASE WHEN o.status = 'PENDING' AND NOT t.cancel_requested
                          THEN now() + make_interval(secs => o.delay) ELSE t.run_at END,
            finished_at = CASE WHEN o.status = 'PENDING' AND NOT t.cancel_requested
                               THEN NULL ELSE now() END,
            lease_token = NULL, lease_expires_at = NULL, updated_at = now()
        FROM unnest(locked, locked_ids) AS l(tid, id) JOIN o ON o.id = l.id
        WHERE t.ctid = l.tid
          AND CASE t.status WHEN 'PROCESSING' THEN t.lease_token = o.token ELSE false END
        RETURNING t.id, t.tenant, t.name, t.status, t.priority, t.attempts, t.run_at, t.result,
                  t.last_error, t.last_error_type, t.finished_at, t.callback_url, t.trace_context,
                  t.started_at, t.has_followers, t.redrives,
                  o.error, o.error_type, o.snooze
    ), ev AS (
        -- The task's name and start ride along for the metrics trigger (migration 0006).
        -- A snooze's event names the attempt that ran (the task's count went back by one).
        INSERT INTO task_events (task_id, from_status, to_status, attempt, actor, error, error_type,
                                 task_name, task_started_at)
        SELECT id, 'PROCESSING', status, CASE WHEN snooze THEN attempts + 1 ELSE attempts END,
               finish_actor, error, error_type, name, started_at
        FROM u
    ), hooks AS (
        -- Its completion webhooks (migration 0018).
        SELECT * FROM tasklane_completion_webhooks(
            (SELECT jsonb_agg(to_jsonb(f)) FROM u f WHERE f.callback_url IS NOT NULL),
            hook_max_retries, hook_timeout, finish_actor)
        -- Called only when needed (its body is planned per call); followers need the
        -- webhook limits it sets for the dependents trigger (0020).
        WHERE EXISTS (SELECT 1 FROM u WHERE u.callback_url IS NOT NULL OR u.has_followers)
    )
    SELECT u.id::text AS id, u.tenant, u.name::text, u.status::text, u.priority::text, u.attempts::integer,
           (extract(epoch FROM u.run_at) * 1000)::float8 AS run_at_ms,
           h.id::text AS hook_id, h.enqueued_ms AS hook_enqueued_ms, u.has_followers, u.redrives
    FROM u LEFT JOIN hooks h ON h.parent = u.id;
END;
$$;
