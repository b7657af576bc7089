-- A finish locks the WAITING tasks it may settle, in id order, before settling any.
--
-- tasklane_settle_dependents (migrations 0016, 0020, 0041), the row trigger that settles
-- a parent's children when it ends, locks each parent's WAITING children in id order,
-- but one parent at a time, and a cancellation's cascade level by level, each level
-- while the level above is held.  A submit with depends_on locks its parents
-- together (lock_parents), as does another finish's trigger for its own.  So a finish of
-- parents a1 < a2 whose children are hi (of a1) and lo (of a2) locked hi, then lo, while
-- a submit depending on lo and hi locked lo, then hi; and a failing parent's child c
-- was locked before its child g < c (workflow steps get ids in the order the client
-- lists them).  Deadlocks, which PostgreSQL ends after deadlock_timeout (1 s) by
-- rolling one back: the review of round 22 saw the submit answered 503, and a stress
-- run of 25,000 dependent tasks saw 32 deadlocks in 120 s
-- (tests/integration/test_dependency_locks.py reproduces each kind).
--
-- Now tasklane_finish, when any of its tasks has followers, first locks, in one
-- statement, in id order, after its own tasks: the WAITING children of all of them
-- and, below a task that ends FAILED or CANCELLED, its whole WAITING subtree; the
-- trigger then finds them held.  lock_parents and a cancel (queries.sql) take rows in
-- the same order: those not WAITING by id, then the WAITING ones by id.  The finish is
-- otherwise that of 0038; its first statement also collects which tasks have followers
-- and which of those have a cancellation requested (two aggregates more), and a batch
-- without followers pays only that.  What still deadlocks (a bulk cancel or an expiry
-- cascading level by level, a row whose status changes between two statements'
-- snapshots) is rolled back and run again by the store (retry_conflicts).
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
    cancelling uuid[];
    failing uuid[];
    settles uuid[];
    frontier uuid[];
BEGIN
    SELECT array_agg(l.ctid), array_agg(l.id), array_agg(l.id) FILTER (WHERE l.has_followers),
           array_agg(l.id) FILTER (WHERE l.has_followers AND l.cancel_requested)
    INTO locked, locked_ids, followed, cancelling
    FROM (
        SELECT t.ctid, t.id, t.has_followers, t.cancel_requested FROM tasks t
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
        -- The WAITING tasks this finish may settle, locked in id order before any
        -- parent's end settles them (tasklane_settle_dependents locks them parent by
        -- parent, level by level): the children of every task here with followers and,
        -- below a task that ends FAILED or CANCELLED (a retry whose cancellation was
        -- requested included), all of its WAITING descendants, whom the cancellation
        -- cascades to (a grandchild can have a lower id than its parent: workflow steps
        -- get ids in the order the client lists them).  Edges are read through
        -- task_deps' primary key; "NOT resolved" would let a generic plan made on an
        -- empty table read all of task_deps_open instead (checked with EXPLAIN), hence
        -- the CASE no partial index matches.  Below a task that has not
        -- ended every edge is unresolved and every child WAITING, so the walk needs no
        -- status test; the lock keeps only the WAITING ones.
        failing := ARRAY(
            SELECT f FROM unnest(followed) AS f
            WHERE f = ANY(cancelling)
               OR f = ANY(ARRAY(SELECT (e ->> 'id')::uuid FROM jsonb_array_elements(finish_outcomes) AS e
                                WHERE e ->> 'status' IN ('FAILED', 'CANCELLED'))));
        -- Level by level, each a primary-key probe of task_deps per parent: as one
        -- recursive query its generic plan joined every level by hash, reading all of
        -- task_deps each time (checked with EXPLAIN).
        settles := ARRAY(SELECT d.child_id FROM task_deps d
                         WHERE d.parent_id = ANY(followed) AND CASE WHEN d.resolved THEN false ELSE true END);
        frontier := ARRAY(SELECT d.child_id FROM task_deps d
                          WHERE d.parent_id = ANY(failing) AND CASE WHEN d.resolved THEN false ELSE true END);
        WHILE cardinality(frontier) > 0 LOOP
            frontier := ARRAY(SELECT DISTINCT d.child_id FROM task_deps d
                              WHERE d.parent_id = ANY(frontier) AND CASE WHEN d.resolved THEN false ELSE true END
                                AND NOT d.child_id = ANY(settles));
            settles := settles || frontier;
        END LOOP;
        PERFORM 1 FROM tasks c
        WHERE c.id = ANY(settles) AND CASE c.status WHEN 'WAITING' THEN true ELSE false END
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
