"""Submit use case: persist tasks first, then tell Redis.

A task is accepted only after its row is committed.  The push to Redis may fail
(Redis down, a timeout): the row is QUEUED all the same and the sweeper's
reconciliation pushes it later, so an accepted task is never lost; it may only
start later than usual.  A lone task due now is pushed while its commit is on its
way (``Store.insert_tasks``' ``inserted``; ``adapters/postgres/early_row.py``): a
drainer that gets it first waits in its claim for that commit, and drops the id if
the commit failed, as the submit then answers an error.  Every other push follows
the commit.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from chalicelib.adapters.postgres.jsontext import dumps
from chalicelib.container import Container
from chalicelib.core.batches import BatchRecord, BatchSpec, NewBatch
from chalicelib.core.errors import ConflictError, PartialPushError, QueueError, ValidationError
from chalicelib.core.ids import new_ids
from chalicelib.core.model import NewTask, QueueEntry, Status, Task
from chalicelib.core.requests import TaskRequest, WorkflowRequest
from chalicelib.core.tracecontext import TraceContext, new_root, new_root_headers
from chalicelib.observability import metrics
from chalicelib.observability.log import logger
from chalicelib.services import dependencies, outbox, tenants


@dataclass(frozen=True)
class Submitted:
    """One submission's outcome: the task, and whether an earlier one was replayed
    (its idempotency key) or holds the request's unique key (``duplicate``)."""

    task: Task
    replayed: bool = False
    duplicate: bool = False

    @property
    def created(self) -> bool:
        return not (self.replayed or self.duplicate)


@dataclass(frozen=True)
class BatchItem:
    """One slot of a batch, in request order: accepted (``submitted``) or refused
    (``error``: the item's ``ValidationError``, or a ``ConflictError`` when its
    idempotency key was used for a different request)."""

    index: int
    submitted: Submitted | None = None
    error: ValidationError | ConflictError | None = None


@dataclass(frozen=True)
class BatchResult:
    items: list[BatchItem]
    batch: BatchRecord | None = None  # the batch opened, when one was asked for and a task created

    @property
    def created(self) -> int:
        """New tasks (replays and duplicates of an earlier submission are not counted)."""
        return sum(1 for i in self.items if i.submitted is not None and i.submitted.created)

    @property
    def failed(self) -> int:
        return sum(1 for i in self.items if i.error is not None)

    @property
    def all_created(self) -> bool:
        """Every item became a new task: nothing refused, replayed or deduplicated."""
        return self.failed == 0 and self.created == len(self.items)


def submit(
    rt: Container, tenant: str, request: TaskRequest, *, actor: str = "api", trace: TraceContext | None = None
) -> Submitted:
    """Persist and enqueue one task (see ``submit_many``) under ``trace`` (the request's
    trace context; None: a fresh root)."""
    traces = None if trace is None else [trace]
    if request.unique_key is None and not request.depends_on:
        result = _submit_plain(rt, tenant, request, actor, traces)
    else:
        result = submit_many(rt, tenant, [request], actor=actor, traces=traces)[0]
    if isinstance(result, ConflictError):
        raise result
    return result


def _submit_plain(
    rt: Container, tenant: str, request: TaskRequest, actor: str, traces: Sequence[TraceContext] | None
) -> Result:
    """``submit_many`` for one task without a unique key or parents (most single submits):
    one INSERT, the push, and for an idempotency key seen before the original or a
    conflict.  Such a task needs no second round, so none of ``_Rounds``' bookkeeping:
    about a third of the Python this module ran per submit (issue 14 round 6)."""
    tenants.check_queue_quota(rt, tenant, 1)
    new = _new_tasks(tenant, [request], traces, None)
    # The push goes while the INSERT's commit is on its way (Store.insert_tasks).
    inserted = rt.store.insert_tasks(new, actor=actor, inserted=lambda tasks: _enqueue(rt, tasks))
    # The push's reply is not read here but before the process's next push, while that
    # submit's commit is on its way (unawaited.py): 7 % more single submits a second.
    metrics.log_submitted(tenant, inserted, actor=actor, duplicates=1 - len(inserted))
    if inserted:
        return Submitted(inserted[0])
    return _replays(rt, tenant, new, [0]).get(0) or _unanswered(new[0])


# How often a submit whose unique key was released between its INSERT and the look-up
# of the holder tries again before answering 409 (each round is one statement).
UNIQUE_ROUNDS = 3

Result = Submitted | ConflictError


def submit_many(
    rt: Container,
    tenant: str,
    requests: Sequence[TaskRequest],
    *,
    actor: str = "api",
    traces: Sequence[TraceContext] | None = None,
) -> list[Submitted | ConflictError]:
    """Persist N tasks with one INSERT and enqueue them with one Redis round trip.

    Results are in request order.  An idempotency key seen before yields the
    original task (``replayed``) when the request is the same, else a
    ``ConflictError`` in that slot.  A unique key held by another task yields that
    task (``duplicate``); the idempotency key is looked at first.  ``traces`` gives
    each task its trace context; without it each task starts a trace of its own.

    A tenant with a max_queued quota that these tasks would exceed gets
    ``QuotaExceededError`` (429) and nothing is written: the whole request, single or
    batch, is refused, so a client never has to sort out which items went in.
    """
    return _submit(rt, tenant, requests, actor=actor, traces=traces)[0]


def _submit(
    rt: Container,
    tenant: str,
    requests: Sequence[TaskRequest],
    *,
    actor: str,
    traces: Sequence[TraceContext] | None = None,
    batch: NewBatch | None = None,
    places: Sequence[int] | None = None,
) -> tuple[list[Submitted | ConflictError], BatchRecord | None]:
    """``submit_many``, opening ``batch`` with the tasks it creates when given.
    ``places``: each request's index in the client's list, for the errors that name one
    (default: its index here)."""
    tenants.check_queue_quota(rt, tenant, len(requests))
    new = _new_tasks(tenant, requests, traces, batch.id if batch else None)
    deps = {n.id: r for n, r in zip(new, requests, strict=True) if r.depends_on}
    if deps:
        # Before anything is written: a batch is refused whole (400) rather than half stored.
        where = places or range(len(requests))
        dependent = {i: r for i, r in zip(where, requests, strict=True) if r.depends_on}
        many = places is not None or len(requests) > 1
        dependencies.check_dependent(rt, tenant, dependent, in_batch=batch is not None, many=many)
    rounds = _Rounds(rt, tenant, new, actor, deps)
    # A batch opens once, with the tasks of its one INSERT: no second round.
    rounds.run(batch, UNIQUE_ROUNDS if batch is None else 1)
    return rounds.answers(), rounds.opened


class _Rounds:
    """One submit call: INSERT, then answer the tasks not inserted (idempotency replays
    and conflicts, unique-key duplicates), and INSERT again those whose unique key was
    released before its holder could be looked up."""

    def __init__(
        self, rt: Container, tenant: str, new: list[NewTask], actor: str, deps: dict[str, TaskRequest]
    ) -> None:
        self.rt, self.tenant, self.new, self.actor = rt, tenant, new, actor
        self.deps = deps  # task id -> its request, for the tasks with depends_on
        # A unique key repeated within the request: its first task stands for the others.
        first: dict[str, int] = {}
        self.follows = {i: first.setdefault(n.unique_key, i) for i, n in enumerate(new) if n.unique_key}
        self.results: dict[int, Result] = {}
        self.created: list[Task] = []
        self.opened: BatchRecord | None = None

    def run(self, batch: NewBatch | None, max_rounds: int) -> None:
        new = self.new
        todo = [i for i in range(len(new)) if self.follows.get(i, i) == i]
        for round_no in range(1, max_rounds + 1):
            rows = [new[i] for i in todo]
            if batch is None:
                plain = [n for n in rows if n.id not in self.deps]
                inserted = {t.id: t for t in self.rt.store.insert_tasks(plain, actor=self.actor)}
                inserted.update(self._insert_dependent([n for n in rows if n.id in self.deps]))
            else:
                got, self.opened = self.rt.store.insert_batch_tasks(rows, batch, actor=self.actor)
                inserted = {t.id: t for t in got}
            _enqueue(self.rt, list(inserted.values()))
            self.created += inserted.values()
            self.results.update({i: Submitted(inserted[new[i].id]) for i in todo if new[i].id in inserted})
            lost = [i for i in todo if new[i].id not in inserted]
            self.results.update(_replays(self.rt, self.tenant, [new[i] for i in lost], lost))
            self.results.update(self._duplicates([i for i in lost if i not in self.results]))
            # Left: a unique key taken and released again by concurrent requests between
            # the INSERT and the look-up: tried again.
            todo = [i for i in lost if i not in self.results and new[i].unique_key]
            if not todo or round_no == max_rounds:
                break
        self._count_followers()
        metrics.log_submitted(self.tenant, self.created, actor=self.actor, duplicates=len(new) - len(self.created))

    def _count_followers(self) -> None:
        """The 'deduplicated' counter for the submits whose key's first one in this request
        created the task they are answered with (``unique_key_holders`` counts the ones
        answered with a holder it found)."""
        created = {t.id for t in self.created}
        per_name: Counter[str] = Counter()
        for i, j in self.follows.items():
            got = self.results.get(j)
            if i != j and isinstance(got, Submitted) and got.task.id in created:
                per_name[self.new[i].name] += 1
        self.rt.store.count_deduplicated(per_name)

    def _insert_dependent(self, rows: Sequence[NewTask]) -> dict[str, Task]:
        """Tasks with depends_on: one transaction each, their parents locked until it is in
        (rare, not the hot path).  One whose idempotency key exists is left out."""
        out = {}
        for n in rows:
            task = dependencies.insert_dependent(self.rt, self.tenant, self.deps[n.id], n, actor=self.actor)
            if task is not None:
                out[task.id] = task
        if any(t.status is Status.CANCELLED and t.callback_url for t in out.values()):
            outbox.release_quietly(self.rt)  # its completion webhook, created with it
        return out

    def _duplicates(self, keyed: Sequence[int]) -> dict[int, Result]:
        """Answers for tasks not inserted because another task holds their unique key; a
        key found free again is left out."""
        keyed = [i for i in keyed if self.new[i].unique_key]
        if not keyed:
            return {}
        # Once per request answered with the holder (the 'deduplicated' counter).
        asked = Counter(self.follows.values())
        keys = [self.new[i].unique_key or "" for i in keyed for _ in range(asked[i])]
        holders = self.rt.store.unique_key_holders(self.tenant, keys)
        found = {i: holders.get(self.new[i].unique_key or "") for i in keyed}
        return {i: Submitted(h.task, duplicate=True) for i, h in found.items() if h is not None}

    def answers(self) -> list[Result]:
        """In request order; a slot still unanswered is a conflict (a key reused
        concurrently, or forgotten: rare, but the client must not believe the task was
        accepted)."""
        out: list[Result] = []
        for i, n in enumerate(self.new):
            j = self.follows.get(i, i)
            got = self.results.get(j)
            if got is None:
                got = _unanswered(n)
            elif j != i and isinstance(got, Submitted):
                got = Submitted(got.task, duplicate=True)
            out.append(got)
        return out


def _unanswered(n: NewTask) -> ConflictError:
    """The answer for a task neither inserted nor found under its key: the key was taken
    and released again by concurrent requests (rare; the client must retry)."""
    key = f"unique key {n.unique_key!r}" if n.unique_key else f"idempotency key {n.idempotency_key!r}"
    return ConflictError(f"{key} is being reused concurrently; retry")


def _replays(rt: Container, tenant: str, lost: Sequence[NewTask], where: Sequence[int]) -> dict[int, Result]:
    """Answers for tasks not inserted because their idempotency key exists: the original
    (same request) or a conflict.  Slots whose key is not found are left out."""
    keys = [n.idempotency_key for n in lost if n.idempotency_key]
    existing = rt.store.tasks_by_idempotency_keys(tenant, keys) if keys else {}
    out: dict[int, Result] = {}
    for i, n in zip(where, lost, strict=True):
        found = existing.get(n.idempotency_key or "")
        if found is None:
            continue
        if found.request_hash != n.request_hash:
            out[i] = ConflictError(
                f"idempotency key {n.idempotency_key!r} was already used with a different request",
                details={"task_id": found.task.id},
            )
        else:
            out[i] = Submitted(found.task, replayed=True)
    return out


def submit_workflow(
    rt: Container, tenant: str, workflow: WorkflowRequest, *, actor: str = "api", trace: TraceContext | None = None
) -> SubmittedWorkflow:
    """Insert every step (those without parents ready, the others WAITING) with its
    edges in one transaction, then push the ready ones.  The steps share one trace."""
    for name, request in workflow.steps.items():
        if request.idempotency_key is not None:
            raise ValidationError(f"steps.{name}: a workflow step takes no idempotency_key")
    trace = trace or new_root()
    rows = _new_tasks(tenant, list(workflow.steps.values()), [trace] * len(workflow.steps), None)
    tasks, edges = dependencies.workflow_rows(workflow, rows)
    workflow_id = str(uuid.uuid4())
    ids = {name: row.id for name, row in zip(workflow.steps, rows, strict=True)}
    inserted = {t.id: t for t in rt.store.insert_workflow(tenant, workflow_id, tasks, edges, ids, actor=actor)}
    _enqueue(rt, list(inserted.values()))
    metrics.log_submitted(tenant, list(inserted.values()), actor=actor, duplicates=0)
    return SubmittedWorkflow(workflow_id, {name: inserted[tid] for name, tid in ids.items()})


@dataclass(frozen=True)
class SubmittedWorkflow:
    id: str
    steps: dict[str, Task]  # by step name


def _new_tasks(
    tenant: str, requests: Sequence[TaskRequest], traces: Sequence[TraceContext] | None, batch_id: str | None
) -> list[NewTask]:
    """The rows to insert; without ``traces`` each task starts a trace of its own."""
    headers = new_root_headers(len(requests)) if traces is None else [t.header() for t in traces]
    return [
        NewTask(
            id=task_id,
            tenant=tenant,
            name=r.name,
            priority=r.priority.value,
            payload_json=dumps(r.payload),
            payload=r.payload,
            max_retries=r.max_retries,
            timeout_seconds=r.timeout_seconds,
            run_at=r.run_at,
            delay_seconds=r.delay_seconds,
            idempotency_key=r.idempotency_key,
            request_hash=r.fingerprint() if r.idempotency_key else None,
            callback_url=r.callback_url,
            trace_context=header,
            batch_id=batch_id,
            unique_key=r.unique_key,
            unique_for_seconds=r.unique_for_seconds,
            expires_at=r.expires_at,
        )
        for r, task_id, header in zip(requests, new_ids(len(requests)), headers, strict=True)
    ]


def _enqueue(rt: Container, tasks: Sequence[Task]) -> None:
    """Tell Redis about ``tasks`` (committed, or with their commit on its way): now
    (``submit_push=inline``), or on the process's pusher thread (``background``)."""
    if rt.settings.submit_push == "background":
        # A lone task from a thread submitting alone is written now and its reply read
        # later (unawaited.py); the rest goes to the pusher thread, which coalesces.
        if tasks and not (len(tasks) == 1 and rt.unawaited_push(_push_failed).try_push(tasks)):
            rt.pusher(_push_failed).push(tasks)  # their entries are made on its thread
        return
    entries = QueueEntry.of_submitted(tasks)
    if not entries:
        return
    try:
        rt.held_push().push(entries)
    except QueueError as exc:
        _push_failed(len(entries), exc)


def _push_failed(count: int, exc: QueueError) -> None:
    if isinstance(exc, PartialPushError):
        count = exc.unpushed  # the partitions on the live masters got theirs
    logger.warning(
        "tasks persisted but not pushed to Redis; the sweeper will enqueue them",
        extra={"count": count, "error": str(exc)},
    )


def submit_batch(
    rt: Container,
    tenant: str,
    items: Sequence[TaskRequest | ValidationError],
    *,
    actor: str = "api",
    spec: BatchSpec | None = None,
) -> BatchResult:
    """Submit the valid items of a batch together (``submit_many``); the invalid ones
    (already refused by validation) keep their error in their slot.  With ``spec``
    the tasks created open a batch (none when no task was created)."""
    valid = [(i, item) for i, item in enumerate(items) if isinstance(item, TaskRequest)]
    outcomes: list[Submitted | ConflictError] = []
    opened = None
    if valid:
        batch = _new_batch(rt, tenant, spec) if spec is not None else None
        places = [i for i, _ in valid]
        outcomes, opened = _submit(rt, tenant, [r for _, r in valid], actor=actor, batch=batch, places=places)
    slots = [BatchItem(i, error=item) for i, item in enumerate(items) if isinstance(item, ValidationError)]
    for (i, _), out in zip(valid, outcomes, strict=True):
        slots.append(BatchItem(i, error=out) if isinstance(out, ConflictError) else BatchItem(i, submitted=out))
    return BatchResult(sorted(slots, key=lambda s: s.index), opened)


def _new_batch(rt: Container, tenant: str, spec: BatchSpec) -> NewBatch:
    return NewBatch(
        id=str(uuid.uuid4()),
        tenant=tenant,
        callback_url=spec.callback_url,
        on_complete_json=spec.on_complete_json(),
        callback_max_retries=rt.settings.webhook_max_retries,
        callback_timeout_seconds=rt.settings.webhook_timeout_seconds,
        # The completion (webhook, follow-up) is a trace of its own.
        trace_context=new_root().header(),
    )
