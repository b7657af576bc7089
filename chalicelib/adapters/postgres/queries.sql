-- Tasklane's named queries, loaded by chalicelib/adapters/postgres/sqlfile.py.
-- "-- Rows: X" under a name says which record the store builds from each row
-- (X.from_row reads the column names below, so an alias is part of that contract;
-- tests/unit/test_store_records.py holds every row-returning query to naming one).
-- Every state change is a guarded UPDATE on the source state, and every one
-- writes its task_events rows in the same statement (a data-modifying CTE), so
-- a transition and its audit row commit together or not at all.  A task's creation
-- is its row: created_by and created_status (migration 0037) are its first event.  Changes that
-- are not transitions (API keys, schedules, the webhook secret, purges, bulk
-- redrives) write their audit_log row the same way (migration 0004): selected
-- from the change's RETURNING, so a change that did not happen records nothing.

-- name: insert_tasks
-- Rows: Accepted (core/model.py).
-- Multi-row submit: one statement for N tasks.  A task
-- whose (tenant, idempotency_key) already exists is skipped (DO NOTHING) and
-- the caller looks the original up.
-- The tasks arrive as one JSON array of objects (one parameter, built by
-- Store.insert_tasks): far cheaper to send than a dozen arrays.
-- Unique keys (migration 0010) are taken first, in the same statement: a task is
-- inserted only when its key was free, its window had passed (taken over here), or
-- it has none.  The primary key of task_unique_keys decides a race; the loser's task
-- is not inserted and the caller answers with the holder (unique_key_holders).  A
-- request whose idempotency key exists already is left to the idempotency path
-- (precedence) and takes no key.  Without unique keys the CTE inserts nothing.
WITH n AS (
    SELECT * FROM jsonb_to_recordset(%(tasks)s::jsonb) AS n(
        id uuid, tenant text, name text, priority text, payload text, max_retries int,
        timeout_seconds int, run_at timestamptz, delay float8, idempotency_key text,
        request_hash text, callback_url text, trace_context text, batch_id uuid, unique_key text,
        unique_for float8, expires_at timestamptz)
), r AS (
    SELECT n.*, coalesce(n.run_at, now() + make_interval(secs => coalesce(n.delay, 0))) AS due,
           now() + make_interval(secs => n.unique_for) AS unique_until
    FROM n
), k AS (
    INSERT INTO task_unique_keys AS k (tenant, unique_key, task_id, held_until)
    SELECT r.tenant, r.unique_key, r.id, r.unique_until FROM r
    WHERE r.unique_key IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.tenant = r.tenant AND t.idempotency_key = r.idempotency_key)
    ON CONFLICT (tenant, unique_key) DO UPDATE
    SET task_id = excluded.task_id, held_until = excluded.held_until
    WHERE k.held_until <= now()
    RETURNING k.task_id
), ins AS (
    INSERT INTO tasks (id, tenant, name, status, priority, payload, max_retries,
                       timeout_seconds, run_at, enqueued_at, idempotency_key, request_hash,
                       callback_url, trace_context, batch_id, has_followers, unique_key, unique_until,
                       expires_at, created_by, created_status)
    SELECT id, tenant, name, status,
           priority, payload::jsonb, max_retries, timeout_seconds, due,
           CASE WHEN status = 'QUEUED' THEN now() END,
           idempotency_key, request_hash, callback_url, trace_context, batch_id,
           -- A batch's task may be its last: whoever finishes it releases the outbox.
           batch_id IS NOT NULL,
           unique_key, unique_until, expires_at, %(actor)s, status
    FROM (SELECT r.*, CASE WHEN r.due <= now() THEN 'QUEUED' ELSE 'PENDING' END AS status FROM r) AS r
    WHERE r.unique_key IS NULL OR r.id IN (SELECT task_id FROM k)
    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, name, status, run_at, enqueued_at, created_at, unique_until
), counted AS (
    -- The creation event is the row's (created_by, created_status: migration 0037), so
    -- the statement counts its submits itself.
    INSERT INTO task_metric_deltas (name, metric, n)
    SELECT name, 'submitted', count(*) FROM ins GROUP BY name
)
-- Only what the statement decided: the caller has the rest (Accepted.task), and
-- reading and converting all 36 columns cost more client CPU than building the task.
SELECT id::text AS id, status, run_at, enqueued_at, created_at, unique_until FROM ins;

-- name: insert_task
-- Rows: Accepted (core/model.py).
-- One task without a unique key or batch (a single submit): insert_tasks for one row, with
-- plain bound parameters instead of a JSON recordset.  The server's CPU for the
-- statement fell by about 0.16 ms of 0.75 (the recordset's parse and the CTE chain:
-- issue 14 round 5, bench/RESULTS.md); the tasks it inserts and answers are the same.
WITH ins AS (
    INSERT INTO tasks (id, tenant, name, status, priority, payload, max_retries, timeout_seconds, run_at,
                       enqueued_at, idempotency_key, request_hash, callback_url, trace_context, expires_at,
                       created_by, created_status)
    SELECT %(id)s::uuid, %(tenant)s, %(name)s, d.status,
           %(priority)s, %(payload)s::jsonb, %(max_retries)s, %(timeout_seconds)s, d.due,
           CASE WHEN d.status = 'QUEUED' THEN now() END, %(idempotency_key)s, %(request_hash)s, %(callback_url)s,
           %(trace_context)s, %(expires_at)s::timestamptz, %(actor)s::text, d.status
    FROM (SELECT due, CASE WHEN due <= now() THEN 'QUEUED' ELSE 'PENDING' END AS status
          FROM (SELECT coalesce(%(run_at)s::timestamptz,
                                now() + make_interval(secs => coalesce(%(delay)s::float8, 0))) AS due) AS r) AS d
    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, name, status, run_at, enqueued_at, created_at, unique_until
), counted AS (
    -- The creation event is the row's (migration 0037); the submit is counted here.
    INSERT INTO task_metric_deltas (name, metric, n) SELECT name, 'submitted', 1 FROM ins
)
SELECT id::text AS id, status, run_at, enqueued_at, created_at, unique_until FROM ins;

-- name: insert_task_now
-- One column, created_at: Store.insert_tasks builds the task from it (Accepted.queued_now).
-- insert_task for the commonest single submit: no idempotency key, no run_at or delay
-- (due now, so QUEUED, and run_at = enqueued_at = created_at = now()).  Without a key
-- the row cannot meet tasks_idempotency, so no ON CONFLICT (a speculative insertion:
-- an extra index probe and WAL record), and nothing to decide, so no CASE and one
-- column back: 532k -> 428k PostgreSQL instructions a submit (issue 14 round 9,
-- bench/RESULTS.md).  The task, its trail and its count are those insert_task makes.
-- Its commit in flight, it follows submit_lock in the same transaction
-- (adapters/postgres/early_row.py); sent alone, the caller pushes after its commit.
WITH ins AS (
    INSERT INTO tasks (id, tenant, name, status, priority, payload, max_retries, timeout_seconds, run_at,
                       enqueued_at, callback_url, trace_context, expires_at, created_by, created_status)
    VALUES (%(id)s::uuid, %(tenant)s, %(name)s, 'QUEUED', %(priority)s, %(payload)s::jsonb, %(max_retries)s,
            %(timeout_seconds)s, now(), now(), %(callback_url)s, %(trace_context)s, %(expires_at)s::timestamptz,
            %(actor)s::text, 'QUEUED')
    RETURNING name, created_at
), counted AS (
    INSERT INTO task_metric_deltas (name, metric, n) SELECT name, 'submitted', 1 FROM ins
)
SELECT created_at FROM ins;

-- name: submit_lock
-- The first statement of a single submit whose id is pushed before its commit
-- (adapters/postgres/early_row.py): the id's advisory key (class 7301955,
-- early_row.SUBMIT_LOCK_CLASS), held until the transaction ends, which a claim that finds
-- no row for the id waits on (migration 0042); and now(), the transaction's start, which
-- is the created_at (and run_at, enqueued_at) insert_task_now gives the row next.  Its
-- answer comes back before the INSERT runs, so the push overlaps the INSERT and its commit.
-- shares advisory lock 7301955, * with migration 0042
WITH held AS (
    SELECT pg_advisory_xact_lock(7301955, uuid_hash(%(id)s::uuid))
)
SELECT now() AS created_at FROM held;

-- name: count_deduplicated
-- Submits answered with a task the same request created for their unique key (its
-- first one with the key): the 'deduplicated' counter unique_key_holders writes for a
-- holder it finds, by task name.
INSERT INTO task_metric_deltas (name, metric, n)
SELECT name, 'deduplicated', n FROM unnest(%(names)s::text[], %(counts)s::bigint[]) AS c(name, n);

-- name: insert_batch
-- Rows: BatchRecord (core/batches.py).
-- The batch of the tasks insert_tasks has just created in this transaction (their
-- number is its total), with its "batches_opened" counter.  Before the commit no
-- drainer can see those tasks, so none can finish before its batch exists.
WITH b AS (
    INSERT INTO batches (id, tenant, total, remaining, callback_url, on_complete, callback_max_retries,
                         callback_timeout_seconds, trace_context)
    VALUES (%(id)s, %(tenant)s, %(total)s, %(total)s, %(callback_url)s, %(on_complete)s::jsonb,
            %(callback_max_retries)s, %(callback_timeout_seconds)s, %(trace_context)s)
    RETURNING *
), counted AS (
    INSERT INTO task_metric_deltas (name, metric, n) SELECT 'tasklane.batch', 'batches_opened', 1 FROM b
)
SELECT b.*, %(pending)s::int AS pending, %(total)s - %(pending)s::int AS queued, 0 AS processing FROM b;

-- name: get_batch
-- Rows: BatchRecord (core/batches.py).
-- The final counts from the batch row, the live ones from its tasks (tasks_batch),
-- in one snapshot.
SELECT b.*,
       count(*) FILTER (WHERE t.status = 'PENDING') AS pending,
       count(*) FILTER (WHERE t.status = 'QUEUED') AS queued,
       count(*) FILTER (WHERE t.status = 'PROCESSING') AS processing
FROM batches b
LEFT JOIN tasks t ON t.batch_id = b.id AND t.status IN ('PENDING', 'QUEUED', 'PROCESSING')
WHERE b.id = %(id)s AND b.tenant = %(tenant)s
GROUP BY b.id;

-- name: unique_key_holders
-- Rows: UniqueHolder (core/records.py).
-- The tasks holding the tenant's ``keys`` (a submit lost them to these), and the
-- 'deduplicated' counter for the submits answered with them (``keys`` repeats a key
-- once per such submit).  A key row whose task is gone (deleted after its window
-- began, or a row whose task insert lost an idempotency race in the same statement)
-- is deleted here: a row and its task commit together, so a committed row without a
-- task can only be such a leftover.  The delete matches the task id seen, so a row
-- another submit took over meanwhile (a new task id) is left alone.  The caller
-- retries the keys not found.
WITH orphans AS (
    SELECT k.unique_key, k.task_id FROM task_unique_keys k
    WHERE k.tenant = %(tenant)s AND k.unique_key = ANY(%(keys)s::text[])
      AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = k.task_id)
), gone AS (
    DELETE FROM task_unique_keys k USING orphans o
    WHERE k.tenant = %(tenant)s AND k.unique_key = o.unique_key AND k.task_id = o.task_id
), found AS (
    SELECT k.unique_key AS held_key, t.*
    FROM task_unique_keys k JOIN tasks t ON t.id = k.task_id
    WHERE k.tenant = %(tenant)s AND k.unique_key = ANY(%(keys)s::text[])
      AND (k.held_until IS NULL OR k.held_until > now())
), counted AS (
    INSERT INTO task_metric_deltas (name, metric, n)
    SELECT f.name, 'deduplicated', count(*)
    FROM unnest(%(keys)s::text[]) AS q(key) JOIN found f ON f.held_key = q.key
    GROUP BY f.name
)
SELECT * FROM found;

-- name: list_batches
-- Rows: BatchRecord (core/batches.py).
-- A tenant's batches, newest first, OPEN (completed_at null) or COMPLETED ones when
-- asked; keyset pagination on (created_at, id) like list_tasks (batches_tenant_created).
-- The live counts are one probe of tasks_batch per batch of the page.
SELECT b.*, c.pending, c.queued, c.processing
FROM batches b
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE t.status = 'PENDING') AS pending,
           count(*) FILTER (WHERE t.status = 'QUEUED') AS queued,
           count(*) FILTER (WHERE t.status = 'PROCESSING') AS processing
    FROM tasks t WHERE t.batch_id = b.id AND t.status IN ('PENDING', 'QUEUED', 'PROCESSING')
) c
WHERE b.tenant = %(tenant)s
  AND (%(completed)s::boolean IS NULL OR (b.completed_at IS NOT NULL) = %(completed)s)
  AND (%(after_created)s::timestamptz IS NULL
       OR (b.created_at, b.id) < (%(after_created)s::timestamptz, %(after_id)s::uuid))
ORDER BY b.created_at DESC, b.id DESC
LIMIT %(limit)s;

-- name: tasks_by_idempotency_keys
-- Rows: IdempotentTask (core/records.py).
SELECT * FROM tasks WHERE tenant = %(tenant)s AND idempotency_key = ANY(%(keys)s::text[]);

-- name: get_task
-- Rows: Task (core/model.py).
-- `tasks` only: a live task (what clients poll) costs one primary-key probe.  When it
-- misses, the store asks get_task_anywhere (migration 0027).
SELECT * FROM tasks WHERE id = %(id)s AND tenant = %(tenant)s;

-- name: get_task_anywhere
-- Rows: Task (core/model.py).
-- A finished task may have moved to tasks_archive (migration 0027).  One statement, so
-- one snapshot: a task moving either way meanwhile (archived, or restored for a new
-- dependent) is found in exactly one of the two.  The archive's branch prunes to the
-- id's day partition (at executor start with a generic plan); reading it for every
-- lookup cost a live task's lookup 65 -> 85 us of backend CPU (9 partitions), hence
-- get_task first.
(SELECT * FROM tasks WHERE id = %(id)s AND tenant = %(tenant)s)
UNION ALL
(SELECT * FROM tasks_archive WHERE id = %(id)s AND tenant = %(tenant)s)
LIMIT 1;

-- name: task_events
-- Rows: TaskEvent (core/records.py).
-- The view task_trail (migration 0037): the creation event from the task's row, in
-- `tasks` or the archive (NULL -> created_status at created_at, attempt 0, by
-- created_by), then the stored events.  task_events is partitioned by day (migration
-- 0019): "since" (the task's created_at, before any of its events) leaves out the
-- partitions of older days, so a task's trail is one index probe in each partition
-- from its first day on (and DEFAULT).
SELECT at, from_status, to_status, attempt, actor, error, error_type
FROM task_trail WHERE task_id = %(id)s AND at >= %(since)s ORDER BY id;

-- name: claim
-- Rows: Claimed (core/model.py); ids as text, the form every caller wants.
-- The statement is the function tasklane_claim (migrations 0024, 0028, 0035, 0039, 0042): PL/pgSQL keeps
-- its plans for the session, made generic by the function's own settings, so a claim
-- is no longer planned on every call (~0.6 ms of a one-task claim's ~1.3 ms of
-- PostgreSQL CPU on a table with statistics); its two steps are written so that those
-- settings leave the planner one path each (the lock: a primary-key probe per id; the
-- UPDATE: a TID probe per locked row), so a plan made while the table was empty or tiny
-- cannot be the sequential or whole-index scan it would then keep as the table grows
-- (bench/RESULTS.md, rounds 5 and 6).  One locked row, a drainer's claim at low load,
-- takes a shorter path for the same change (0035: fewer statements to set up).  What it does:
-- Claims only rows still QUEUED (or PENDING and due: a retry or scheduled
-- task the drainer found due in Redis before the sweeper promoted it).  Rows
-- are locked in id order so concurrent claimers cannot deadlock; a duplicate
-- id, a cancelled task or a task another drainer holds is simply not returned.
-- An id with no row at all may be a submit still committing (0042): a single submit
-- pushes its id to Redis while its commit is flushed, holding the advisory key
-- (7301955, uuid_hash(id)) until it ends, so the claim waits for that key (shared, at
-- most 2 s for all such ids) and claims the row the commit made visible in the same
-- call, instead of the drainer dropping the id as stale and the task waiting for the
-- sweeper's re-push.  A row that exists but is not claimable is never waited for; the
-- path where every id was locked pays one comparison for this.
-- A paused (type, tenant) or type is refused in the claim itself, so no drainer can
-- start one after the pause committed; the drainer drops the refused ids from Redis
-- like any stale id, and resume pushes them back (migration 0008).  Past its deadline
-- a task never starts (expire_waiting finalises it).  Each claimed task gets its
-- event, with its name and times for the metrics trigger (migration 0006); the
-- one-row path counts its own event and the statement triggers on tasks and
-- task_events return at once for its statements (0039: the trigger's statement was
-- a fifth of a one-task claim's PostgreSQL work).
-- Not durable on purpose: the claim commits without waiting for its
-- WAL flush, so the executor starts one fsync sooner.  A claim lost in a PostgreSQL
-- crash leaves the task QUEUED and its id leased in Redis: the sweeper hands it out
-- again and the attempt runs again, which fencing and at-least-once delivery already
-- allow (its outcome, recorded under the lost token, is turned away).  A later
-- durable commit (finish, submit) flushes the WAL up to itself, so a recorded
-- outcome never outlives the claim it follows.
-- In no particular order (UPDATE ... RETURNING promises none): Store.claim puts the
-- rows in the order of the ids given.  Sorting there costs less than the join, sort
-- and aggregate it took here, whose set-up PostgreSQL pays on every claim.
SELECT * FROM tasklane_claim(%(ids)s::uuid[], %(token)s::uuid, %(lease_seconds)s::float8, %(actor)s::text);

-- name: finish
-- Rows: Recorded (core/records.py); ids as text.
-- Records a batch of outcomes.  Fencing: only a row still PROCESSING under the
-- presenting token changes; a stale worker's outcome matches nothing and the
-- caller learns its lease was lost.  A retry of a task whose cancellation was
-- requested becomes CANCELLED instead.
-- The outcomes arrive as one JSON array of objects (built by Store._finish); a
-- result is the JSON text of the executor's return value.
-- A snooze (migration 0010) is a PENDING outcome that gives its attempt back and is no
-- failure: attempts goes down by one, snoozes up, last_error stays; its event carries
-- error_type 'Snoozed' (counted as 'snoozed', not as failed or retried).
-- The rows returned are exactly the transitions this statement made (the callers log
-- and count dead letters from them, never from the outcomes they presented); redrives
-- (migration 0031) tells a redriven task's new dead letter from a repeated one.
-- The statement is tasklane_finish (migrations 0038, 0045): a function, so that its plans are
-- made once per session instead of on every call (bench/RESULTS.md round 8).
-- When a task here has followers, the function locks the WAITING tasks it may settle
-- in id order before any is settled (0045: the children, and below a task ending
-- FAILED or CANCELLED its whole WAITING subtree): its tasks, then those, as lock_parents
-- orders a depends_on submit's parents and a cancel its cascade.  What PostgreSQL
-- still rolls back to end a deadlock (a row whose status changed between two
-- statements' snapshots sorts differently in each) is run again (retry_conflicts).
SELECT * FROM tasklane_finish(%(outcomes)s::jsonb, %(ids)s::uuid[], %(actor)s::text,
                              %(webhook_max_retries)s::integer, %(webhook_timeout)s::integer);

-- name: extend_leases
-- Rows: HeldLease (core/records.py).
-- A heartbeat commits without waiting for its WAL flush, like the claim: one lost
-- in a crash only lets the lease expire sooner, and an expired lease means the
-- attempt runs again (at-least-once).
WITH nosync AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
)
UPDATE tasks
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
FROM nosync
WHERE id = ANY(%(ids)s::uuid[]) AND status = 'PROCESSING' AND lease_token = %(token)s
RETURNING id, cancel_requested;

-- name: lock_expired_leases
-- Rows: ExpiredLease (core/records.py).
SELECT id, lease_token, attempts, max_retries, cancel_requested
FROM tasks
WHERE status = 'PROCESSING' AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: lock_task
-- Rows: Task (core/model.py).
SELECT * FROM tasks WHERE id = %(id)s AND tenant = %(tenant)s FOR UPDATE;

-- name: lock_cancel_cascade
-- Rows: none read (the locks are what it is for).
-- Before a cancel: the task and the WAITING tasks its cancellation may cascade to (its
-- subtree through unresolved edges: tasklane_settle_dependents cancels them level by
-- level), locked in the order lock_parents and tasklane_finish use (not WAITING first,
-- then WAITING, each by id; migration 0045).  Locked parent first and child
-- after, a child with the lower id deadlocked with a finish locking both.
-- Planned as primary-key probes (checked with EXPLAIN, custom and generic): the edges
-- through task_deps' key, the CASE keeping them off task_deps_open (a scan of every
-- open edge), the tasks by id = ANY, not by an OR that made it a sequential scan.
WITH RECURSIVE below(id) AS (
    SELECT d.child_id FROM task_deps d
    WHERE d.parent_id = %(id)s AND CASE WHEN d.resolved THEN false ELSE true END
    UNION
    SELECT d.child_id FROM below JOIN task_deps d ON d.parent_id = below.id
    WHERE CASE WHEN d.resolved THEN false ELSE true END
)
SELECT t.id FROM tasks t
WHERE t.id = ANY(ARRAY(SELECT %(id)s::uuid UNION ALL SELECT id FROM below))
  AND t.tenant = %(tenant)s AND (t.id = %(id)s OR t.status = 'WAITING')
ORDER BY t.status = 'WAITING', t.id
FOR UPDATE OF t;

-- name: cancel_waiting
-- Rows: Task (core/model.py), plus the completion webhook it created (hook_id,
-- hook_enqueued_ms: a WebhookHook, core/records.py).
WITH c AS (
    UPDATE tasks
    SET status = 'CANCELLED', finished_at = now(), updated_at = now()
    WHERE id = %(id)s AND status IN ('WAITING', 'PENDING', 'QUEUED')
    RETURNING *, %(from_status)s::text AS from_status
), ev AS (
    INSERT INTO task_events (task_id, from_status, to_status, attempt, actor)
    SELECT id, from_status, 'CANCELLED', attempts, %(actor)s FROM c
), hooks AS (
    -- Its completion webhooks (migration 0018).
    SELECT * FROM tasklane_completion_webhooks(
        (SELECT jsonb_agg(to_jsonb(f)) FROM c f WHERE f.callback_url IS NOT NULL),
        %(webhook_max_retries)s::integer, %(webhook_timeout)s::integer, %(actor)s::text)
)
SELECT c.*, h.id AS hook_id, h.enqueued_ms AS hook_enqueued_ms FROM c LEFT JOIN hooks h ON h.parent = c.id;

-- name: expire_waiting
-- Rows: ExpiredTask (core/records.py).
-- Waiting tasks (WAITING for parents, PENDING or QUEUED) past their expires_at become CANCELLED with
-- error_type 'Expired' (the metrics trigger counts 'expired' and 'cancelled'): the
-- given ids (a drainer whose claim refused them) or any (ids NULL: the sweeper,
-- through tasks_waiting_expires_at).  SKIP LOCKED: a task a claim holds is the
-- claim's; the claim itself never takes an expired task (query claim), so either
-- the task started before its deadline or it never starts.  With a completion
-- webhook, like any final transition.
WITH d AS (
    SELECT id, status FROM tasks
    WHERE expires_at IS NOT NULL AND expires_at <= now() AND status IN ('WAITING', 'PENDING', 'QUEUED')
      AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
    ORDER BY expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), c AS (
    UPDATE tasks t
    SET status = 'CANCELLED', finished_at = now(), updated_at = now(), last_error_type = 'Expired',
        last_error = 'expired: not started by its deadline, expires_at '
                     || to_char(t.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    FROM d WHERE t.id = d.id
    RETURNING t.*, d.status AS from_status
), ev AS (
    INSERT INTO task_events (task_id, from_status, to_status, attempt, actor, error, error_type)
    SELECT id, from_status, 'CANCELLED', attempts, %(actor)s, last_error, last_error_type FROM c
), hooks AS (
    -- Its completion webhooks (migration 0018).
    SELECT * FROM tasklane_completion_webhooks(
        (SELECT jsonb_agg(to_jsonb(f)) FROM c f WHERE f.callback_url IS NOT NULL),
        %(webhook_max_retries)s::integer, %(webhook_timeout)s::integer, %(actor)s::text)
)
SELECT c.id, c.tenant, c.name, c.priority, c.from_status, c.has_followers, h.id AS hook_id,
       h.enqueued_ms AS hook_enqueued_ms
FROM c LEFT JOIN hooks h ON h.parent = c.id;

-- name: prune_unique_keys
-- Unique keys whose window has passed (a submit takes such a row over by itself; this
-- only keeps the table small).  The re-check on the locked row keeps a row another
-- submit took over meanwhile.
DELETE FROM task_unique_keys k
WHERE (k.tenant, k.unique_key) IN (
    SELECT tenant, unique_key FROM task_unique_keys
    WHERE held_until <= now()
    LIMIT %(limit)s
)
AND k.held_until <= now();

-- name: request_cancel
-- Rows: Task (core/model.py).
UPDATE tasks SET cancel_requested = true, updated_at = now()
WHERE id = %(id)s AND status = 'PROCESSING'
RETURNING *;

-- name: promote_due
-- Rows: ReadyTask (core/records.py).
-- Due PENDING tasks (scheduled or waiting for a retry) become QUEUED.
WITH d AS (
    SELECT id FROM tasks
    WHERE status = 'PENDING' AND run_at <= now()
    ORDER BY run_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), p AS (
    UPDATE tasks t SET status = 'QUEUED', enqueued_at = t.run_at, updated_at = now()
    FROM d WHERE t.id = d.id
    RETURNING t.id, t.tenant, t.name, t.priority, t.attempts,
              (extract(epoch FROM t.enqueued_at) * 1000)::float8 AS enqueued_ms,
              -- A paused one is QUEUED all the same, but not pushed (resume does that).
              EXISTS (SELECT 1 FROM paused_task_types pt
                      WHERE pt.name = t.name AND pt.tenant IN (t.tenant, '')) AS paused
), ev AS (
    INSERT INTO task_events (task_id, from_status, to_status, attempt, actor)
    SELECT id, 'PENDING', 'QUEUED', attempts, %(actor)s FROM p
)
SELECT id, tenant, name, priority, enqueued_ms, paused FROM p;

-- name: take_outbox
-- Rows: LiveTask (core/records.py).
-- Takes tasks that a trigger made ready (migration 0007): concurrent takers skip each
-- other's rows.  The caller pushes them to Redis before it commits the delete, so a
-- failed push leaves them for the next taker (and the sweeper).
WITH taken AS (
    DELETE FROM task_outbox o
    WHERE o.task_id = ANY(ARRAY(
        SELECT task_id FROM task_outbox ORDER BY created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED))
    RETURNING o.task_id
)
SELECT t.id, t.tenant, t.name, t.status, t.priority,
       (extract(epoch FROM coalesce(t.enqueued_at, t.run_at)) * 1000)::float8 AS enqueued_ms,
       (extract(epoch FROM t.run_at) * 1000)::float8 AS run_at_ms,
       NULL::float8 AS lease_ms
FROM taken JOIN tasks t ON t.id = taken.task_id;

-- name: queued_older_than
-- Rows: ReadyTask (core/records.py).
SELECT id, tenant, name, priority, (extract(epoch FROM enqueued_at) * 1000)::float8 AS enqueued_ms
FROM tasks t
WHERE status = 'QUEUED' AND enqueued_at < now() - make_interval(secs => %(seconds)s)
  -- Paused ones are meant to be out of Redis: pushing them would only have every
  -- sweep feed the drainers ids the claim refuses.
  AND NOT EXISTS (SELECT 1 FROM paused_task_types p WHERE p.name = t.name AND p.tenant IN (t.tenant, ''))
ORDER BY enqueued_at
LIMIT %(limit)s;

-- name: live_tasks_page
-- Rows: LiveTask (core/records.py).
-- Keyset pages over the live states, for rebuilding Redis after it lost data.
SELECT id, tenant, name, status, priority,
       (extract(epoch FROM coalesce(enqueued_at, run_at)) * 1000)::float8 AS enqueued_ms,
       (extract(epoch FROM run_at) * 1000)::float8 AS run_at_ms,
       (extract(epoch FROM lease_expires_at) * 1000)::float8 AS lease_ms
FROM tasks t
WHERE status = %(status)s AND id > %(after)s
  -- Paused QUEUED tasks stay out of the rebuilt ready sets (resume pushes them).
  AND (status <> 'QUEUED'
       OR NOT EXISTS (SELECT 1 FROM paused_task_types p WHERE p.name = t.name AND p.tenant IN (t.tenant, '')))
ORDER BY id
LIMIT %(limit)s;

-- name: statuses_of
-- Rows: TaskState (core/records.py).
SELECT id, tenant, name, status, priority, (extract(epoch FROM enqueued_at) * 1000)::float8 AS enqueued_ms,
       EXISTS (SELECT 1 FROM paused_task_types p WHERE p.name = t.name AND p.tenant IN (t.tenant, '')) AS paused
FROM tasks t WHERE id = ANY(%(ids)s::uuid[]);

-- name: prune_finished
-- COMPLETED and CANCELLED tasks (delivered webhooks among them) past retention that
-- are still in `tasks`: most leave earlier for tasks_archive and go with its day
-- partitions (archive_finished, drop_archive_partition); these are the ones that may
-- not move (migration 0027).  Their
-- events are not deleted here: they leave with their day's partition of task_events
-- (drop_event_partition), at most a day later.  FAILED tasks are the dead-letter
-- queue: they stay until redriven or purged (purge_dead_letters).  The "pruned"
-- counter (by task name) is written by the same statement, like the trigger's
-- counters.  A parent stays while a task that depends on it may still run (any child
-- not COMPLETED or CANCELLED: waiting, due later, or a dead letter that can be
-- redriven): the child's parent_results are read from its parents' rows, and deleting
-- one deletes its edge too, so the child would run without that parent's result.
WITH doomed AS (
    SELECT id FROM tasks
    WHERE status IN ('COMPLETED', 'CANCELLED')
      AND finished_at < now() - make_interval(secs => %(retention_seconds)s)
      AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks c ON c.id = d.child_id
                      WHERE d.parent_id = tasks.id AND c.status NOT IN ('COMPLETED', 'CANCELLED'))
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    -- An array of ids, not a join: the planner hashes a join and reads the whole
    -- table to probe it; ANY(ARRAY(...)) is one primary-key probe per id.
    DELETE FROM tasks t WHERE t.id = ANY(ARRAY(SELECT id FROM doomed)) RETURNING t.name
), counted AS (
    INSERT INTO task_metric_deltas (name, metric, n)
    SELECT name, 'pruned', count(*) FROM gone GROUP BY name
)
SELECT count(*) AS pruned FROM gone;

-- name: archive_finished
-- The next page of finished tasks past the archive delay, those that may leave moved
-- to tasks_archive in one statement; moved is NULL when another sweeper holds the
-- lock (migration 0027).
SELECT moved, full_page FROM tasklane_archive_finished(%(after_seconds)s::float8, %(page_size)s::integer);

-- name: ensure_archive_partitions
-- The day partitions of tasks_archive from the day retention reaches back to, to
-- %(days_ahead)s days ahead (UTC), those missing created (migration 0027).
SELECT tasklane_ensure_archive_partitions(
    ((now() - make_interval(secs => %(retention_seconds)s)) AT TIME ZONE 'UTC')::date,
    (now() AT TIME ZONE 'UTC')::date + %(days_ahead)s::integer) AS created;

-- name: count_archive_partition
-- The tasks of the partition drop_archive_partition is about to drop, counted by name
-- as "pruned" (migration 0029); NULL when none is due or another sweeper is at it, so
-- the sweeper locks the archive only when a partition is due.
SELECT tasklane_count_archive_partition(%(retention_seconds)s::float8) AS counted;

-- name: archive_drop_lock_wait
-- How long the sweeper waits for the archive before a drop (this transaction only).
-- DROP TABLE of a partition locks tasks_archive ACCESS EXCLUSIVE, and every read that
-- may meet a finished task (get_task, list_tasks) reads it: queued behind a long reader
-- (a report, pg_dump), the drop would stall them all for its wait.  So the lock is taken
-- first with a short wait, and a busy archive leaves the drop to a later sweep.
SELECT set_config('lock_timeout', '200ms', true);

-- name: lock_archive
LOCK TABLE tasks_archive IN ACCESS EXCLUSIVE MODE;

-- name: drop_archive_partition
-- The oldest partition of tasks_archive whose day ended before retention, dropped;
-- NULL when none is (migration 0027).  Run under lock_archive, so it does not wait.
SELECT tasklane_drop_archive_partition(%(retention_seconds)s::float8) AS dropped;

-- name: archived_task
-- Rows: Task (core/model.py).
-- A task of the tenant in tasks_archive (it is final there): a cancel of it is a 409,
-- like that of any final task, not a 404.
SELECT * FROM tasks_archive WHERE id = %(id)s AND tenant = %(tenant)s;

-- name: restore_archived
-- Brings the tenant's archived tasks among %(ids)s back into `tasks`, for a new task
-- that depends on them: its edges in task_deps reference `tasks`.  One statement: a
-- concurrent restore of the same id finds it gone and inserts nothing.  Restored tasks
-- are behind the move's cursor and have edges: they never move again, and are pruned
-- row by row after retention.
WITH back AS (
    DELETE FROM tasks_archive a WHERE a.tenant = %(tenant)s AND a.id = ANY(%(ids)s::uuid[]) RETURNING a
)
INSERT INTO tasks SELECT r.* FROM back b, LATERAL jsonb_populate_record(NULL::tasks, to_jsonb(b.a)) r
RETURNING id::text AS id;

-- name: ensure_event_partitions
-- The day partitions of task_events from today to %(days_ahead)s days ahead (UTC),
-- those missing created (migration 0019).
SELECT tasklane_ensure_event_partitions(
    (now() AT TIME ZONE 'UTC')::date, (now() AT TIME ZONE 'UTC')::date + %(days_ahead)s::integer) AS created;

-- name: drop_event_partition
-- The oldest partition of task_events past retention, dropped (its tasks still in
-- `tasks` keep their events); NULL when none is (migration 0019).
SELECT tasklane_drop_event_partition(%(retention_seconds)s::float8) AS dropped;

-- name: prune_batches
-- Batches completed before the retention period none of whose tasks is left (pruned
-- with their tasks; dead letters keep theirs until purged).  One page of %(limit)s
-- a sweep, in (completed_at, id) order after where the last sweep stopped
-- (retention_cursors, migration 0022): batches a dead letter keeps are read once a
-- round, not on every sweep.  A full page moves the cursor to its last row; a short
-- one reached the newest, and the next sweep starts again from the oldest.  The NOT
-- EXISTS is one probe of tasks_batch per batch read.  No task ever joins a batch
-- after it was opened, so none can appear in a batch being deleted.
WITH page AS (
    -- The cursor as two scalar subqueries (run once): the index scan then starts at it
    -- and stops after the page.
    SELECT b.id, b.completed_at AS at FROM batches b
    WHERE b.completed_at < now() - make_interval(secs => %(retention_seconds)s)
      AND (b.completed_at, b.id) > (
          coalesce((SELECT after_at FROM retention_cursors WHERE name = 'batches'), '-infinity'),
          coalesce((SELECT after_id FROM retention_cursors WHERE name = 'batches'), '00000000-0000-0000-0000-000000000000'))
    ORDER BY b.completed_at, b.id
    LIMIT %(limit)s
), doomed AS (
    SELECT b.id FROM batches b
    WHERE b.id = ANY(ARRAY(SELECT id FROM page))
      AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.batch_id = b.id)
      AND NOT EXISTS (SELECT 1 FROM tasks_archive a WHERE a.batch_id = b.id)
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM batches WHERE id = ANY(ARRAY(SELECT id FROM doomed)) RETURNING 1
), moved AS (
    INSERT INTO retention_cursors (name, after_at, after_id)
    SELECT 'batches', at, id FROM page
    WHERE (SELECT count(*) FROM page) = %(limit)s
    ORDER BY at DESC, id DESC LIMIT 1
    ON CONFLICT (name) DO UPDATE SET after_at = excluded.after_at, after_id = excluded.after_id
), restarted AS (
    DELETE FROM retention_cursors WHERE name = 'batches' AND (SELECT count(*) FROM page) < %(limit)s
)
SELECT count(*) AS pruned FROM gone;

-- name: prune_workflows
-- Workflows created before the retention period none of whose steps' tasks is left
-- (pruned after retention; a dead-letter step keeps its workflow until it is purged).
-- Paged like prune_batches, in (created_at, id) order (workflows_created_at,
-- migration 0021; the cursor: migration 0022); the NOT EXISTS is one primary-key
-- probe of tasks per step of each workflow read.  A workflow's steps are fixed when
-- it is inserted, with their tasks, in one transaction: none can appear in one being
-- deleted.
WITH page AS (
    -- The cursor as two scalar subqueries (run once): the index scan then starts at it
    -- and stops after the page.
    SELECT w.id, w.created_at AS at FROM workflows w
    WHERE w.created_at < now() - make_interval(secs => %(retention_seconds)s)
      AND (w.created_at, w.id) > (
          coalesce((SELECT after_at FROM retention_cursors WHERE name = 'workflows'), '-infinity'),
          coalesce((SELECT after_id FROM retention_cursors WHERE name = 'workflows'), '00000000-0000-0000-0000-000000000000'))
    ORDER BY w.created_at, w.id
    LIMIT %(limit)s
), doomed AS (
    SELECT w.id FROM workflows w
    WHERE w.id = ANY(ARRAY(SELECT id FROM page))
      AND NOT EXISTS (SELECT 1 FROM jsonb_each_text(w.steps) s JOIN tasks t ON t.id = s.value::uuid)
      AND NOT EXISTS (SELECT 1 FROM jsonb_each_text(w.steps) s JOIN tasks_archive a ON a.id = s.value::uuid)
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM workflows WHERE id = ANY(ARRAY(SELECT id FROM doomed)) RETURNING 1
), moved AS (
    INSERT INTO retention_cursors (name, after_at, after_id)
    SELECT 'workflows', at, id FROM page
    WHERE (SELECT count(*) FROM page) = %(limit)s
    ORDER BY at DESC, id DESC LIMIT 1
    ON CONFLICT (name) DO UPDATE SET after_at = excluded.after_at, after_id = excluded.after_id
), restarted AS (
    DELETE FROM retention_cursors WHERE name = 'workflows' AND (SELECT count(*) FROM page) < %(limit)s
)
SELECT count(*) AS pruned FROM gone;

-- name: forget_idempotency_keys
WITH old AS (
    SELECT id FROM tasks
    WHERE idempotency_key IS NOT NULL
      AND created_at < now() - make_interval(secs => %(window_seconds)s)
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks t SET idempotency_key = NULL, request_hash = NULL FROM old WHERE t.id = old.id;

-- name: list_dead_letters
-- Rows: Task (core/model.py).
SELECT * FROM tasks
WHERE tenant = %(tenant)s AND status = 'FAILED'
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(after_finished)s::timestamptz IS NULL
       OR (finished_at, id) < (%(after_finished)s::timestamptz, %(after_id)s::uuid))
ORDER BY finished_at DESC, id DESC
LIMIT %(limit)s;

-- name: redrive
-- Rows: Task (core/model.py).
-- A dead-lettered task goes back to QUEUED with a fresh attempt budget, its redrives
-- counted (migration 0031: its next dead letter names the run it ends).  A bulk
-- redrive (audit_actor set) also writes one dead_letters.redriven audit row.
WITH f AS (
    SELECT id, attempts FROM tasks
    WHERE tenant = %(tenant)s AND status = 'FAILED'
      AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
      AND (%(name)s::text IS NULL OR name = %(name)s)
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE
), r AS (
    UPDATE tasks t
    SET status = 'QUEUED', attempts = 0, redrives = t.redrives + 1, run_at = now(), enqueued_at = now(),
        finished_at = NULL, cancel_requested = false, updated_at = now()
    FROM f WHERE t.id = f.id
    RETURNING t.*, f.attempts AS previous_attempts
), ev AS (
    INSERT INTO task_events (task_id, from_status, to_status, attempt, actor)
    SELECT id, 'FAILED', 'QUEUED', previous_attempts, %(actor)s FROM r
), audit AS (
    INSERT INTO audit_log (tenant, actor, action, subject_type, subject_id, details)
    SELECT %(tenant)s, %(audit_actor)s::text, 'dead_letters.redriven', 'dead_letters', NULL,
           jsonb_build_object('count', count(*), 'ids', jsonb_agg(id::text ORDER BY id), 'name', %(name)s::text)
    FROM r
    HAVING count(*) > 0 AND %(audit_actor)s::text IS NOT NULL
)
SELECT * FROM r;

-- name: purge_dead_letters
-- Rows: Purged (core/audit.py).
-- Deletes (with their events: no foreign key cascades them, migration 0011) at most
-- %(limit)s of a tenant's FAILED tasks matching
-- every filter given, oldest first; says whether more match.  The candidates come
-- from the dead-letter index (tasks_failed_by_tenant), then are locked in id order,
-- as redrive locks, so a concurrent redrive and purge cannot deadlock; the lock
-- re-checks FAILED, so a task redriven in between is left alone.  The "purged"
-- counter and the dead_letters.purged audit row are written by the same statement.
WITH c AS (
    SELECT id FROM tasks
    WHERE tenant = %(tenant)s AND status = 'FAILED'
      AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
      AND (%(name)s::text IS NULL OR name = %(name)s)
      AND (%(failed_before)s::timestamptz IS NULL OR finished_at < %(failed_before)s)
      AND (%(error_type)s::text IS NULL OR last_error_type = %(error_type)s)
    ORDER BY finished_at, id
    LIMIT %(limit)s + 1
), m AS (
    SELECT id FROM tasks
    WHERE id = ANY(ARRAY(SELECT id FROM c)) AND status = 'FAILED'
    ORDER BY id
    FOR UPDATE
), d AS (
    DELETE FROM tasks t
    WHERE t.id = ANY(ARRAY(SELECT id FROM m ORDER BY id LIMIT %(limit)s))
    RETURNING t.id, t.name
), events_gone AS (
    DELETE FROM task_events e WHERE e.task_id = ANY(ARRAY(SELECT id FROM d))
), counted AS (
    INSERT INTO task_metric_deltas (name, metric, n)
    SELECT name, 'purged', count(*) FROM d GROUP BY name
), audit AS (
    INSERT INTO audit_log (tenant, actor, action, subject_type, subject_id, details)
    SELECT %(tenant)s, %(actor)s, 'dead_letters.purged', 'dead_letters', NULL,
           jsonb_build_object('count', count(*), 'ids', jsonb_agg(id::text ORDER BY id),
                              'filter', %(filter)s::jsonb)
    FROM d
    HAVING count(*) > 0
)
SELECT coalesce((SELECT array_agg(id::text ORDER BY id) FROM d), ARRAY[]::text[]) AS ids,
       (SELECT count(*) FROM m) > %(limit)s AS more;

-- name: insert_api_key
-- Rows: ApiKeyRecord (core/records.py).
-- With its api_key.created audit row (the display prefix, never the key or its hash).
WITH k AS (
    INSERT INTO api_keys (id, tenant, name, key_prefix, key_hash, rate_limit_per_minute, expires_at)
    VALUES (%(id)s, %(tenant)s, %(name)s, %(key_prefix)s, %(key_hash)s, %(rate_limit)s, %(expires_at)s)
    ON CONFLICT (key_hash) DO NOTHING
    RETURNING id, tenant, name, key_prefix, rate_limit_per_minute, created_at, expires_at, disabled_at
), audit AS (
    INSERT INTO audit_log (tenant, actor, action, subject_type, subject_id, details)
    SELECT tenant, %(actor)s, 'api_key.created', 'api_key', id::text,
           jsonb_build_object('name', name, 'key_prefix', key_prefix,
                              'rate_limit_per_minute', rate_limit_per_minute, 'expires_at', expires_at)
    FROM k
)
SELECT * FROM k;

-- name: api_key_by_hash
-- Rows: StoredKey (core/records.py).
SELECT id, tenant, name, key_prefix, key_hash, rate_limit_per_minute, created_at, expires_at,
       disabled_at, (disabled_at IS NULL AND (expires_at IS NULL OR expires_at > now())) AS active
FROM api_keys WHERE key_hash = %(key_hash)s;

-- name: list_api_keys
-- Rows: ApiKeyRecord (core/records.py).
SELECT id, tenant, name, key_prefix, rate_limit_per_minute, created_at, expires_at, disabled_at
FROM api_keys
WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
ORDER BY created_at, id;

-- name: revoke_api_key
-- Rows: ApiKeyRecord (core/records.py).
-- Revoking a revoked key changes nothing and records nothing: the second arm reads
-- the statement's snapshot, so it returns such a key, never the one just revoked.
WITH r AS (
    UPDATE api_keys SET disabled_at = now()
    WHERE (id::text = %(ref)s OR key_prefix = %(ref)s) AND disabled_at IS NULL
    RETURNING id, tenant, name, key_prefix, rate_limit_per_minute, created_at, expires_at, disabled_at
), audit AS (
    INSERT INTO audit_log (tenant, actor, action, subject_type, subject_id, details)
    SELECT tenant, %(actor)s, 'api_key.revoked', 'api_key', id::text,
           jsonb_build_object('name', name, 'key_prefix', key_prefix)
    FROM r
)
SELECT * FROM r
UNION ALL
SELECT id, tenant, name, key_prefix, rate_limit_per_minute, created_at, expires_at, disabled_at
FROM api_keys
WHERE (id::text = %(ref)s OR key_prefix = %(ref)s) AND disabled_at IS NOT NULL;

-- name: list_tasks
-- Rows: Task (core/model.py).
-- Keyset pagination on (created_at, id) descending: stable under inserts (new rows
-- sort before the cursor) and served by tasks_tenant_created however deep the page.
-- `tasks` only; when archived tasks may belong in the page, the store runs this text
-- over both tables (archive.read_both, migration 0027).
SELECT * FROM tasks
WHERE tenant = %(tenant)s
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(priority)s::text IS NULL OR priority = %(priority)s)
  AND (%(created_after)s::timestamptz IS NULL OR created_at > %(created_after)s)
  AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s)
  AND (%(after_created)s::timestamptz IS NULL
       OR (created_at, id) < (%(after_created)s::timestamptz, %(after_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: insert_schedule
-- Rows: Schedule (core/records.py).
-- With its schedule.created audit row; a name taken already inserts neither.
WITH s AS (
    INSERT INTO schedules (id, tenant, name, cron, timezone, task_name, payload, priority, max_retries,
                           timeout_seconds, enabled, catch_up, next_fire_at)
    VALUES (%(id)s, %(tenant)s, %(name)s, %(cron)s, %(timezone)s, %(task_name)s, %(payload)s::jsonb,
            %(priority)s, %(max_retries)s, %(timeout_seconds)s, %(enabled)s, %(catch_up)s, %(next_fire_at)s)
    ON CONFLICT (tenant, name) DO NOTHING
    RETURNING *
), audit AS (
    INSERT INTO audit_log (tenant, actor, action, subject_type, subject_id, details)
    SELECT tenant, %(actor)s, 'schedule.created', 'schedule', id::text,
           jsonb_build_object('name', name, 'cron', cron, 'timezone', timezone, 'task_name', task_name,
                              'enabled', enabled)
    FROM s
)
SELECT * FROM s;

-- name: get_schedule
-- Rows: Schedule (core/records.py).
SELECT * FROM schedules WHERE id = %(id)s AND tenant = %(tenant)s;

-- name: list_schedules
-- Rows: Schedule (core/records.py).
SELECT * FROM schedules WHERE tenant = %(tenant)s ORDER BY name LIMIT %(limit)s;

-- name: update_schedule
-- Rows: Schedule (core/records.py).
-- With its audit row: the action (updated, enabled, disabled) and the changed fields
-- come from the use case, which compared the specs.
WITH s AS (
    UPDATE schedules
    SET name = %(name)s, cron = %(cron)s, timezone = %(timezone)s, task_name = %(task_name)s,
        payload = %(payload)s::jsonb, priority = %(priority)s, max_retries = %(max_retries)s,
        timeout_seconds = %(timeout_seconds)s, enabled = %(enabled)s, catch_up = %(catch_up)s,
        next_fire_at = %(next_fire_at)s, updated_at = now()
    WHERE id = %(id)s AND tenant = %(tenant)s
    RETURNING *
), audit AS (
    INSERT INTO audit_log (tenant, actor, action, subject_type, subject_id, details)
    SELECT tenant, %(actor)s, %(action)s, 'schedule', id::text,
           jsonb_build_object('name', name, 'changed', %(changed)s::jsonb)
    FROM s
)
SELECT * FROM s;

-- name: delete_schedule
-- With its schedule.deleted audit row.
WITH d AS (
    DELETE FROM schedules WHERE id = %(id)s AND tenant = %(tenant)s RETURNING id, tenant, name
), audit AS (
    INSERT INTO audit_log (tenant, actor, action, subject_type, subject_id, details)
    SELECT tenant, %(actor)s, 'schedule.deleted', 'schedule', id::text, jsonb_build_object('name', name)
    FROM d
)
SELECT id FROM d;

-- name: schedule_runs
-- Rows: ScheduleRun (core/records.py).
SELECT r.fire_at, r.task_id, coalesce(t.status, a.status) AS status
FROM schedule_runs r
LEFT JOIN tasks t ON t.id = r.task_id
LEFT JOIN tasks_archive a ON a.id = r.task_id  -- moved when finished (migration 0027)
WHERE r.schedule_id = %(id)s
ORDER BY r.fire_at DESC
LIMIT %(limit)s;

-- name: lock_due_schedules
-- Rows: Schedule (core/records.py) plus db_now, the clock plan() decides by.
-- Concurrent sweepers split the due schedules between them (SKIP LOCKED); the
-- primary key of schedule_runs makes each tick fire once even if they did not.
SELECT *, now() AS db_now FROM schedules
WHERE enabled AND next_fire_at <= now()
ORDER BY next_fire_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: fire_schedule
-- Rows: Task (core/model.py).
-- One tick: the run row and its task (its creation event is the row's: migration 0037),
-- in one statement.  A tick that already fired inserts nothing.
WITH run AS (
    INSERT INTO schedule_runs (schedule_id, fire_at, task_id)
    VALUES (%(schedule_id)s, %(fire_at)s, %(task_id)s)
    ON CONFLICT DO NOTHING
    RETURNING task_id
), ins AS (
    INSERT INTO tasks (id, tenant, name, status, priority, payload, max_retries, timeout_seconds,
                       run_at, enqueued_at, schedule_id, trace_context, created_by, created_status)
    SELECT run.task_id, s.tenant, s.task_name, 'QUEUED', s.priority, s.payload, s.max_retries,
           s.timeout_seconds, now(), now(), s.id, %(trace_context)s, %(actor)s, 'QUEUED'
    FROM run JOIN schedules s ON s.id = %(schedule_id)s
    RETURNING *
), counted AS (
    INSERT INTO task_metric_deltas (name, metric, n) SELECT name, 'submitted', 1 FROM ins
)
SELECT * FROM ins;

-- name: advance_schedule
UPDATE schedules
SET next_fire_at = %(next_fire_at)s,
    last_fired_at = coalesce(%(fired_at)s, last_fired_at),
    updated_at = now()
WHERE id = %(id)s;

-- name: webhook_secret
-- The tenant's signing secret, created on first use (the candidate is kept only if
-- no secret exists yet, so concurrent first uses agree).
WITH ins AS (
    INSERT INTO tenant_settings (tenant, webhook_secret) VALUES (%(tenant)s, %(candidate)s)
    ON CONFLICT (tenant) DO NOTHING
    RETURNING webhook_secret
)
SELECT webhook_secret FROM ins
UNION ALL
SELECT webhook_secret FROM tenant_settings WHERE tenant = %(tenant)s
LIMIT 1;

-- name: rotate_webhook_secret
-- With its webhook_secret.rotated audit row, which never holds the secret.
WITH s AS (
    INSERT INTO tenant_settings (tenant, webhook_secret) VALUES (%(tenant)s, %(candidate)s)
    ON CONFLICT (tenant) DO UPDATE SET webhook_secret = excluded.webhook_secret
    RETURNING tenant, webhook_secret
), audit AS (
    INSERT INTO audit_log (tenant, actor, action, subject_type, subject_id)
    SELECT tenant, %(actor)s, 'webhook_secret.rotated', 'webhook_secret', NULL FROM s
)
SELECT webhook_secret FROM s;

-- name: audit_entries
-- Rows: AuditEntry (core/audit.py).
-- Keyset pagination on (at, id) descending, like list_tasks; served by audit_log_tenant
-- (or audit_log_tenant_action with an action).
SELECT id, at, tenant, actor, action, subject_type, subject_id, details
FROM audit_log
WHERE tenant = %(tenant)s
  AND (%(action)s::text IS NULL OR action = %(action)s)
  AND (%(after_at)s::timestamptz IS NULL OR (at, id) < (%(after_at)s::timestamptz, %(after_id)s::bigint))
ORDER BY at DESC, id DESC
LIMIT %(limit)s;

-- name: set_progress
UPDATE tasks SET progress = %(progress)s, progress_message = %(message)s, updated_at = now()
WHERE id = %(id)s AND status = 'PROCESSING' AND lease_token = %(token)s
RETURNING id;

-- ---------------------------------------------------------------------------------
-- Observability (chalicelib/metrics.py, stats.py, health): read-only, except the
-- fold of metric deltas.  The counters themselves are written by the trigger of
-- migration 0003 in the same statement as each transition.

-- name: metric_totals
-- Rows: MetricTotal (core/stats.py).
-- Counters and histogram buckets by task name: folded totals plus the deltas not
-- folded yet, read in one statement so a concurrent fold is counted exactly once.
SELECT name, metric, le, sum(n)::bigint AS n, sum(total)::float8 AS total
FROM (
    SELECT name, metric, le, n, total FROM task_metric_totals
    UNION ALL
    SELECT name, metric, le, n, total FROM task_metric_deltas
) AS m
GROUP BY name, metric, le
ORDER BY name, metric, le;

-- name: fold_metric_deltas
-- Moves the trigger's deltas into the totals.  Run under an advisory lock (one
-- folder at a time); the ORDER BY keeps row locks in one order.
WITH moved AS (
    DELETE FROM task_metric_deltas RETURNING name, metric, le, n, total
), summed AS (
    SELECT name, metric, le, sum(n)::bigint AS n, sum(total)::float8 AS total
    FROM moved GROUP BY name, metric, le
)
INSERT INTO task_metric_totals AS t (name, metric, le, n, total)
SELECT name, metric, le, n, total FROM summed ORDER BY name, metric, le
ON CONFLICT (name, metric, le) DO UPDATE SET n = t.n + excluded.n, total = t.total + excluded.total;

-- name: queue_gauges
-- Rows: QueueGauge (core/stats.py).
-- Live tasks by status and priority, each arm served by its partial index, the
-- age of the oldest ready task per priority, the dead-letter count and the open
-- batches (batches_open).
SELECT 'QUEUED' AS status, priority, count(*) AS n,
       extract(epoch FROM now() - min(enqueued_at))::float8 AS oldest_age_seconds
FROM tasks WHERE status = 'QUEUED' GROUP BY priority
UNION ALL
SELECT 'PENDING', priority, count(*), NULL FROM tasks WHERE status = 'PENDING' GROUP BY priority
UNION ALL
SELECT 'PROCESSING', priority, count(*), NULL FROM tasks WHERE status = 'PROCESSING' GROUP BY priority
UNION ALL
-- WAITING through the open edges (task_deps_open): tasks has no index on WAITING.
SELECT 'WAITING', priority, count(*), NULL FROM tasks
WHERE id IN (SELECT child_id FROM task_deps WHERE NOT resolved) AND status = 'WAITING' GROUP BY priority
UNION ALL
SELECT 'FAILED', NULL, count(*), NULL FROM tasks WHERE status = 'FAILED'
UNION ALL
SELECT 'BATCHES_OPEN', NULL, count(*), NULL FROM batches WHERE completed_at IS NULL;

-- name: schema_version
SELECT coalesce(max(version), 0) AS version FROM schema_migrations;

-- name: stats_clock
-- Rows: StatsClock (core/stats.py).
-- The database's clock and the windows the stats cover: today (UTC) and the last hour.
SELECT now() AS now,
       date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS today,
       date_trunc('minute', now()) - interval '59 minutes' AS hour_start;

-- name: stats_live
-- Rows: LiveCount (core/stats.py).
-- A tenant's waiting (for a time or for parents), running and dead-lettered tasks by
-- name and priority.
SELECT name, priority, 'QUEUED' AS status, count(*) AS n, min(enqueued_at) AS oldest_enqueued_at
FROM tasks WHERE status = 'QUEUED' AND tenant = %(tenant)s GROUP BY name, priority
UNION ALL
SELECT name, priority, 'PENDING', count(*), NULL
FROM tasks WHERE status = 'PENDING' AND tenant = %(tenant)s GROUP BY name, priority
UNION ALL
SELECT name, priority, 'PROCESSING', count(*), NULL
FROM tasks WHERE status = 'PROCESSING' AND tenant = %(tenant)s GROUP BY name, priority
UNION ALL
SELECT name, priority, 'WAITING', count(*), NULL
FROM tasks
WHERE id IN (SELECT child_id FROM task_deps WHERE NOT resolved) AND status = 'WAITING' AND tenant = %(tenant)s
GROUP BY name, priority
UNION ALL
SELECT name, priority, 'FAILED', count(*), NULL
FROM tasks WHERE status = 'FAILED' AND tenant = %(tenant)s GROUP BY name, priority;

-- name: stats_submitted_since
-- Rows: SubmittedCount (core/stats.py).
SELECT name, priority, count(*) AS n
FROM tasks WHERE tenant = %(tenant)s AND created_at >= %(since)s
GROUP BY name, priority;

-- name: stats_finished_since
-- Rows: FinishedCount (core/stats.py).
-- Final tasks by outcome; sums (not averages) so callers can roll them up.  Tasks that
-- expired (CANCELLED at their expires_at) come as status EXPIRED.
SELECT name, priority,
       CASE WHEN status = 'CANCELLED' AND last_error_type = 'Expired' THEN 'EXPIRED' ELSE status END AS status,
       count(*) AS n,
       count(started_at) AS timed,
       coalesce(sum(extract(epoch FROM finished_at - started_at)), 0)::float8 AS run_seconds,
       coalesce(sum(extract(epoch FROM started_at - enqueued_at)), 0)::float8 AS wait_seconds
FROM tasks WHERE tenant = %(tenant)s AND finished_at >= %(since)s
GROUP BY 1, 2, 3;

-- name: stats_per_minute
-- Rows: MinuteCount (core/stats.py).
-- Submitted and finished tasks per minute since %(since)s.
SELECT date_trunc('minute', finished_at) AS minute, status AS kind, count(*) AS n
FROM tasks WHERE tenant = %(tenant)s AND finished_at >= %(since)s
GROUP BY 1, 2
UNION ALL
SELECT date_trunc('minute', created_at), 'SUBMITTED', count(*)
FROM tasks WHERE tenant = %(tenant)s AND created_at >= %(since)s
GROUP BY 1;

-- name: try_fold_lock
-- One metrics fold at a time (any constant works; the same in every process, and no
-- other lock's: the archive's functions, migration 0027, hold 7301955003;
-- tests/unit/test_advisory_locks.py keeps each constant to one purpose).
SELECT pg_try_advisory_xact_lock(7301955004) AS locked;

-- ---------------------------------------------------------------------------------
-- Control: pausing task types and cancelling by filter (services/control.py).

-- name: pause_task_type
-- Rows: Pause (core/control.py).
-- With its task_type.paused audit row.  Pausing a paused type changes nothing and
-- records nothing: the second arm reads the statement's snapshot, so it returns the
-- pause already in force, never the one just inserted.
WITH p AS (
    INSERT INTO paused_task_types (name, tenant, paused_by)
    VALUES (%(name)s, %(tenant)s, %(actor)s)
    ON CONFLICT (name, tenant) DO NOTHING
    RETURNING name, tenant, paused_at, paused_by, true AS changed
), audit AS (
    INSERT INTO audit_log (tenant, actor, action, subject_type, subject_id, details)
    SELECT tenant, %(actor)s, 'task_type.paused', 'task_type', name,
           jsonb_build_object('scope', CASE WHEN tenant = '' THEN 'global' ELSE 'tenant' END)
    FROM p
)
SELECT * FROM p
UNION ALL
SELECT name, tenant, paused_at, paused_by, false FROM paused_task_types
WHERE name = %(name)s AND tenant = %(tenant)s;

-- name: resume_task_type
-- Rows: Pause (core/control.py).
-- With its task_type.resumed audit row; resuming a type that is not paused returns
-- nothing and records nothing.
WITH r AS (
    DELETE FROM paused_task_types WHERE name = %(name)s AND tenant = %(tenant)s
    RETURNING name, tenant, paused_at, paused_by, true AS changed
), audit AS (
    INSERT INTO audit_log (tenant, actor, action, subject_type, subject_id, details)
    SELECT tenant, %(actor)s, 'task_type.resumed', 'task_type', name,
           jsonb_build_object('scope', CASE WHEN tenant = '' THEN 'global' ELSE 'tenant' END,
                              'paused_at', paused_at, 'paused_by', paused_by)
    FROM r
)
SELECT * FROM r;

-- name: paused_task_types
-- Rows: Pause (core/control.py).
-- The pauses a tenant is under (its own and the global ones), or every pause.
SELECT name, tenant, paused_at, paused_by, false AS changed FROM paused_task_types
WHERE %(tenant)s::text IS NULL OR tenant IN (%(tenant)s, '')
ORDER BY name, tenant;

-- name: queued_of_type
-- Rows: Task (core/model.py).
-- A keyset page of one task type's QUEUED tasks (of one tenant, or of all), oldest
-- first through the partial QUEUED index: what a pause takes out of Redis and a
-- resume puts back.  unpaused_only leaves out those another pause still holds.
SELECT * FROM tasks t
WHERE t.status = 'QUEUED' AND t.name = %(name)s
  AND (%(tenant)s::text IS NULL OR t.tenant = %(tenant)s)
  AND (%(after_at)s::timestamptz IS NULL
       OR (t.enqueued_at, t.id) > (%(after_at)s::timestamptz, %(after_id)s::uuid))
  AND NOT (%(unpaused_only)s
           AND EXISTS (SELECT 1 FROM paused_task_types p WHERE p.name = t.name AND p.tenant IN (t.tenant, '')))
ORDER BY t.enqueued_at, t.id
LIMIT %(limit)s;

-- name: cancel_tasks
-- Rows: BulkCancelled (core/control.py): each task as it is now, its status before,
-- the completion webhook its cancellation created, and whether more match.
-- Cancels at most %(limit)s of a tenant's live tasks matching every filter given,
-- oldest first: PENDING and QUEUED ones become CANCELLED (with their event and
-- webhook, as a single cancel), PROCESSING ones get cancel_requested (honoured at
-- their next checkpoint; one already requested does not match, so repeated calls
-- finish).  Candidates are locked in id order, as claim and redrive lock, and the
-- lock re-checks the status, so a task claimed, finished or cancelled in between is
-- handled by its new state or left alone.  One tasks.cancelled audit row.
WITH c AS (
    SELECT id FROM tasks
    WHERE tenant = %(tenant)s
      AND (status IN ('WAITING', 'PENDING', 'QUEUED') OR (status = 'PROCESSING' AND NOT cancel_requested))
      AND (%(status)s::text IS NULL OR status = %(status)s)
      AND (%(name)s::text IS NULL OR name = %(name)s)
      AND (%(priority)s::text IS NULL OR priority = %(priority)s)
      AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s)
    ORDER BY created_at, id
    LIMIT %(limit)s + 1
), m AS (
    SELECT id, status FROM tasks
    WHERE id = ANY(ARRAY(SELECT id FROM c))
      AND (status IN ('WAITING', 'PENDING', 'QUEUED') OR (status = 'PROCESSING' AND NOT cancel_requested))
      AND (%(status)s::text IS NULL OR status = %(status)s)
    ORDER BY id
    FOR UPDATE
), chosen AS (
    SELECT id, status FROM m ORDER BY id LIMIT %(limit)s
), w AS (
    UPDATE tasks t
    SET status = 'CANCELLED', finished_at = now(), updated_at = now()
    FROM chosen
    WHERE t.id = chosen.id AND chosen.status IN ('WAITING', 'PENDING', 'QUEUED')
    RETURNING t.*, chosen.status AS from_status
), r AS (
    UPDATE tasks t
    SET cancel_requested = true, updated_at = now()
    FROM chosen
    WHERE t.id = chosen.id AND chosen.status = 'PROCESSING'
    RETURNING t.*, chosen.status AS from_status
), ev AS (
    INSERT INTO task_events (task_id, from_status, to_status, attempt, actor, task_name)
    SELECT id, from_status, 'CANCELLED', attempts, %(actor)s, name FROM w
), hooks AS (
    -- Its completion webhooks (migration 0018).
    SELECT * FROM tasklane_completion_webhooks(
        (SELECT jsonb_agg(to_jsonb(f)) FROM w f WHERE f.callback_url IS NOT NULL),
        %(webhook_max_retries)s::integer, %(webhook_timeout)s::integer, %(actor)s::text)
), audit AS (
    INSERT INTO audit_log (tenant, actor, action, subject_type, subject_id, details)
    SELECT %(tenant)s, %(actor)s, 'tasks.cancelled', 'tasks', NULL,
           jsonb_build_object(
               'cancelled', (SELECT count(*) FROM w),
               'cancel_requested', (SELECT count(*) FROM r),
               'ids', (SELECT coalesce(jsonb_agg(id::text ORDER BY id), '[]'::jsonb) FROM w),
               'requested_ids', (SELECT coalesce(jsonb_agg(id::text ORDER BY id), '[]'::jsonb) FROM r),
               'filter', %(filter)s::jsonb)
    WHERE EXISTS (SELECT 1 FROM chosen)
), more AS (
    SELECT (SELECT count(*) FROM m) > %(limit)s AS more
)
SELECT w.*, h.id AS hook_id, h.enqueued_ms AS hook_enqueued_ms, more.more
FROM w LEFT JOIN hooks h ON h.parent = w.id CROSS JOIN more
UNION ALL
SELECT r.*, NULL::uuid, NULL::float8, more.more FROM r CROSS JOIN more;

-- name: paused_gauges
-- Rows: PausedGauge (core/control.py).
-- Per paused task type: the pauses in force (global, and how many tenants) and the
-- QUEUED tasks they hold back.  The count is a subquery per paused type, so with no
-- pause in force nothing but this tiny table is read.
SELECT g.name, g.global_pauses, g.tenant_pauses,
       (SELECT count(*) FROM tasks t
        WHERE t.status = 'QUEUED' AND t.name = g.name
          AND EXISTS (SELECT 1 FROM paused_task_types q WHERE q.name = t.name AND q.tenant IN (t.tenant, '')))
       AS held
FROM (
    SELECT name, count(*) FILTER (WHERE tenant = '') AS global_pauses,
           count(*) FILTER (WHERE tenant <> '') AS tenant_pauses
    FROM paused_task_types GROUP BY name
) g
ORDER BY g.name;

-- name: set_tenant_limits
-- Rows: TenantLimits (core/tenants.py).
-- Upsert with its tenant_limits.updated audit row; a NULL argument keeps the current
-- value (a new row gets the default), so `--weight 2` alone leaves the quotas alone.
-- clear_max_* drops a quota.
WITH l AS (
    INSERT INTO tenant_limits AS t (tenant, weight, max_queued, max_running)
    VALUES (%(tenant)s, coalesce(%(weight)s, 1), %(max_queued)s, %(max_running)s)
    ON CONFLICT (tenant) DO UPDATE SET
        weight = coalesce(%(weight)s, t.weight),
        max_queued = CASE WHEN %(clear_max_queued)s THEN NULL ELSE coalesce(%(max_queued)s, t.max_queued) END,
        max_running = CASE WHEN %(clear_max_running)s THEN NULL
                           ELSE coalesce(%(max_running)s, t.max_running) END,
        updated_at = now()
    RETURNING tenant, weight, max_queued, max_running, updated_at
), audit AS (
    INSERT INTO audit_log (tenant, actor, action, subject_type, subject_id, details)
    SELECT tenant, %(actor)s, 'tenant_limits.updated', 'tenant', tenant,
           jsonb_build_object('weight', weight, 'max_queued', max_queued, 'max_running', max_running)
    FROM l
)
SELECT * FROM l;

-- name: list_tenant_limits
-- Rows: TenantLimits (core/tenants.py).
SELECT tenant, weight, max_queued, max_running, updated_at
FROM tenant_limits
WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
ORDER BY tenant;

-- ---------------------------------------------------------------------------------
-- Dependencies and workflows (migration 0016; adapters/postgres/followers.py).

-- name: lock_parents
-- Rows: ParentState (core/dependencies.py).
-- The would-be parents of a new task, locked until the task and its edges commit: a
-- parent cannot end unseen in between, since its finish waits for the lock and then
-- settles the new edge.  Marks them has_followers, so their end goes through the
-- settling trigger.  Locked in the order a finish takes its rows (tasklane_finish,
-- migration 0045): the tasks that are not WAITING (those a finish may be
-- ending) in id order, then the WAITING ones (those it settles) in id order, so a
-- submit naming both a finishing task and a waiting child of another one does not
-- deadlock with that finish.  The order is each statement's snapshot's: a parent whose
-- status changes between two submits' snapshots can still make them deadlock (rare;
-- run again, retry_conflicts).
WITH l AS (
    SELECT id, status, has_followers FROM tasks
    WHERE tenant = %(tenant)s AND id = ANY(%(ids)s::uuid[])
    ORDER BY status = 'WAITING', id
    FOR UPDATE
), f AS (
    UPDATE tasks t SET has_followers = true FROM l WHERE t.id = l.id AND NOT l.has_followers
)
SELECT id::text AS id, status FROM l;

-- name: insert_linked_tasks
-- Rows: Task (core/model.py).
-- Tasks with parents (and workflow steps) with their edges, in one statement (their
-- creation events are their rows': migration 0037).  The caller has decided each task's state at submit: waiting_on open
-- parents (WAITING), or cancelled_by a parent that already failed (CANCELLED at
-- once), or ready (QUEUED, PENDING when run_at is ahead).
WITH n AS (
    SELECT * FROM jsonb_to_recordset(%(tasks)s::jsonb) AS n(
        id uuid, tenant text, name text, priority text, payload text, max_retries int,
        timeout_seconds int, run_at timestamptz, delay float8, idempotency_key text,
        request_hash text, callback_url text, trace_context text, expires_at timestamptz,
        waiting_on int, run_anyway boolean, has_followers boolean, cancelled_by text)
), r AS (
    SELECT n.*, coalesce(n.run_at, now() + make_interval(secs => coalesce(n.delay, 0))) AS due,
           CASE WHEN n.cancelled_by IS NOT NULL THEN 'CANCELLED'
                WHEN n.waiting_on > 0 THEN 'WAITING'
                WHEN coalesce(n.run_at, now() + make_interval(secs => coalesce(n.delay, 0))) <= now()
                THEN 'QUEUED' ELSE 'PENDING' END AS status
    FROM n
), ins AS (
    INSERT INTO tasks (id, tenant, name, status, priority, payload, max_retries, timeout_seconds,
                       run_at, enqueued_at, idempotency_key, request_hash, callback_url, trace_context,
                       expires_at, waiting_on, run_anyway, has_followers, finished_at, last_error,
                       last_error_type, created_by, created_status)
    SELECT id, tenant, name, status, priority, payload::jsonb, max_retries, timeout_seconds, due,
           CASE WHEN status = 'QUEUED' THEN now() END,
           idempotency_key, request_hash, callback_url, trace_context, expires_at,
           waiting_on, run_anyway, coalesce(has_followers, false),
           CASE WHEN status = 'CANCELLED' THEN now() END,
           CASE WHEN status = 'CANCELLED'
                THEN 'a dependency did not complete: task ' || cancelled_by END,
           CASE WHEN status = 'CANCELLED' THEN 'DependencyFailed' END,
           %(actor)s, status
    FROM r
    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING *
), edges AS (
    INSERT INTO task_deps (parent_id, child_id, parent_key, resolved)
    SELECT e.parent, e.child, e.key, e.resolved
    FROM jsonb_to_recordset(%(edges)s::jsonb) AS e(parent uuid, child uuid, key text, resolved boolean)
    WHERE e.child IN (SELECT id FROM ins)
), counted AS (
    -- What the creation event counted: a submit, and a cancel for a task created CANCELLED.
    INSERT INTO task_metric_deltas (name, metric, n)
    SELECT name, m.metric, count(*) FROM ins
    CROSS JOIN LATERAL (VALUES ('submitted'), (CASE WHEN status = 'CANCELLED' THEN 'cancelled' END)) AS m(metric)
    WHERE m.metric IS NOT NULL
    GROUP BY name, m.metric
), hooks AS (
    -- A task created CANCELLED (a parent had already failed) with a callback_url gets its
    -- completion webhook, as one its parent's failure cancels later does (migration
    -- 0020), through the outbox, which the caller releases.
    SELECT * FROM tasklane_completion_webhooks(
        (SELECT jsonb_agg(to_jsonb(i)) FROM ins i WHERE i.status = 'CANCELLED' AND i.callback_url IS NOT NULL),
        %(webhook_max_retries)s::integer, %(webhook_timeout)s::integer, %(actor)s::text)
    WHERE EXISTS (SELECT 1 FROM ins WHERE ins.status = 'CANCELLED' AND ins.callback_url IS NOT NULL)
), ob AS (
    INSERT INTO task_outbox (task_id) SELECT id FROM hooks ON CONFLICT DO NOTHING
)
SELECT * FROM ins;

-- name: insert_workflow
INSERT INTO workflows (id, tenant, steps) VALUES (%(id)s, %(tenant)s, %(steps)s::jsonb);

-- name: get_workflow
-- Rows: Workflow (core/dependencies.py) (its steps' tasks come from tasks_by_ids).
SELECT id::text AS id, tenant, steps, created_at FROM workflows WHERE id = %(id)s AND tenant = %(tenant)s;

-- name: tasks_by_ids
-- Rows: Task (core/model.py).
-- Archived ones included (migration 0027); an array does not prune the archive's
-- partitions with a generic plan: one primary-key probe per partition per id.
SELECT * FROM tasks WHERE tenant = %(tenant)s AND id = ANY(%(ids)s::uuid[])
UNION ALL
SELECT * FROM tasks_archive WHERE tenant = %(tenant)s AND id = ANY(%(ids)s::uuid[]);

-- name: parent_results
-- Rows: ParentResult (core/dependencies.py).
-- What a claimed task with parents is handed: each parent's result by its key.
SELECT d.child_id::text AS child_id, d.parent_key, p.status, p.result
FROM task_deps d JOIN tasks p ON p.id = d.parent_id
WHERE d.child_id = ANY(%(ids)s::uuid[]);

-- name: task_links
-- Rows: TaskLink (core/dependencies.py).
-- A task's parents and children (the API shows both).
SELECT 'parent' AS role, d.parent_id::text AS id, d.parent_key AS key, d.resolved
FROM task_deps d WHERE d.child_id = %(id)s
UNION ALL
SELECT 'child', d.child_id::text, d.parent_key, d.resolved
FROM task_deps d WHERE d.parent_id = %(id)s
ORDER BY 1, 2
LIMIT 1000;

-- name: edges_of
-- Rows: Edge (core/dependencies.py).
SELECT parent_id::text AS parent, child_id::text AS child, parent_key AS key, resolved
FROM task_deps WHERE child_id = ANY(%(ids)s::uuid[]);

-- name: existing_ids
SELECT id::text AS id FROM tasks WHERE tenant = %(tenant)s AND id = ANY(%(ids)s::uuid[]);
