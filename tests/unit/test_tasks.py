from datetime import UTC, datetime, timedelta

from chalicelib.core.model import (
    WEBHOOK_TASK,
    Priority,
    QueueEntry,
    Status,
    Task,
    ready_score,
)


def test_strict_priority_order_within_the_aging_bound() -> None:
    aging = 300
    t0 = 1_000_000.0
    # A low task enqueued first still comes after a critical one enqueued later.
    scores = {
        "low": ready_score(t0, Priority.LOW, aging),
        "normal": ready_score(t0 + 10, Priority.NORMAL, aging),
        "high": ready_score(t0 + 20, Priority.HIGH, aging),
        "critical": ready_score(t0 + 30, Priority.CRITICAL, aging),
    }
    assert sorted(scores, key=scores.__getitem__) == ["critical", "high", "normal", "low"]


def test_fifo_within_one_priority() -> None:
    assert ready_score(1.0, Priority.NORMAL, 300) < ready_score(2.0, Priority.NORMAL, 300)


def test_low_task_older_than_bound_overtakes_new_normal_work() -> None:
    aging = 60
    old_low = ready_score(0.0, Priority.LOW, aging)
    new_normal = ready_score(61_000.0, Priority.NORMAL, aging)
    assert old_low < new_normal


def _task(status: Status, *, enqueued: bool = True) -> Task:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return Task(
        id="00000000-0000-0000-0000-000000000001",
        tenant="acme",
        name="send-email",
        status=status,
        priority=Priority.LOW,
        payload={},
        result=None,
        attempts=0,
        max_retries=3,
        timeout_seconds=30,
        run_at=t0 + timedelta(seconds=60),
        last_error=None,
        last_error_type=None,
        cancel_requested=False,
        idempotency_key=None,
        created_at=t0,
        updated_at=t0,
        enqueued_at=t0 + timedelta(seconds=5) if enqueued else None,
        started_at=None,
        finished_at=None,
    )


def test_queue_entry_of_a_queued_task_is_ready_since_its_enqueue_time() -> None:
    task = _task(Status.QUEUED)
    assert task.enqueued_at is not None
    entry = QueueEntry.of(task)
    assert entry == QueueEntry(task.id, task.tenant, Priority.LOW, task.enqueued_at.timestamp() * 1000, "send-email")
    assert not entry.delayed


def test_queue_entry_of_a_pending_task_is_delayed_until_run_at() -> None:
    task = _task(Status.PENDING, enqueued=False)
    entry = QueueEntry.of(task)
    assert entry.delayed and entry.at_ms == task.run_at.timestamp() * 1000


def test_webhook_entry_is_a_high_priority_delivery_task() -> None:
    entry = QueueEntry.webhook("hook-1", "acme", 42.0)
    assert (entry.priority, entry.name, entry.at_ms, entry.delayed) == (Priority.HIGH, WEBHOOK_TASK, 42.0, False)


def test_record_constructors_say_ready_or_delayed() -> None:
    assert not QueueEntry.ready("a", "acme", Priority.CRITICAL, 1.0, None).delayed
    assert QueueEntry.due_at("a", "acme", Priority.LOW, 1.0, "x").delayed
