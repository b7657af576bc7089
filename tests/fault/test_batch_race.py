"""A batch's completion fires exactly once while drainers and sweepers race to
finish its last tasks.

Every batch holds tasks the drainers run (``sleep``, finishing at random moments) and
tasks a "dead drainer" claimed and abandoned: their leases expire at random moments
in the same window, and the sweepers' lease rescue dead-letters them.  So the last
task of each batch is finished by a drainer's finish statement or a sweeper's rescue,
often at the same moment, and often several batches' tasks in one statement.  Each
batch must end with its counts right, one webhook task, one follow-up task and one
delivery.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator

import pytest

from chalicelib.container import Container
from chalicelib.core.batches import BatchSpec
from chalicelib.core.model import WEBHOOK_TASK
from chalicelib.services.submit import submit_batch
from tests.fault.conftest import TENANT
from tests.fault.workers import Workers
from tests.helpers import Receiver, query, receiving, request

BATCHES, RUN, ABANDONED = 40, 2, 2
WINDOW = 0.8  # seconds: when the run tasks end and the abandoned leases expire


@pytest.fixture
def deliveries() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


def _by_batch(receiver: Receiver) -> Counter[str]:
    return Counter(json.loads(c["body"])["batch"]["id"] for c in list(receiver.calls))


# A drainer that claimed the task and died: PROCESSING under a lease nobody renews.
_ABANDON = """
WITH c AS (
    UPDATE tasks SET status = 'PROCESSING', attempts = attempts + 1, lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => %s), started_at = now(), run_at = now(),
        updated_at = now()
    WHERE id = %s AND status = 'PENDING'
    RETURNING id, attempts
)
INSERT INTO task_events (task_id, from_status, to_status, attempt, actor)
SELECT id, 'PENDING', 'PROCESSING', attempts, 'dead-drainer' FROM c
RETURNING task_id
"""


def _warm_up(runtime: Container, workers: Workers, fault_db: str) -> None:
    """Wait until a drainer has run a task and a sweeper has rescued an expired lease.

    The race is timed from each batch's submit: a worker still importing when the
    batches go in (seconds, on a loaded machine) would finish every batch's last
    task on one side and the test would not race at all."""
    ran = submit_batch(runtime, TENANT, [request("noop"), request(delay_seconds=3600, max_retries=0)])
    run_id, abandoned_id = (item.submitted.task.id for item in ran.items if item.submitted is not None)
    query(fault_db, _ABANDON, 0.01, abandoned_id)

    def final(task_id: str) -> bool:
        rows = query(fault_db, "SELECT status FROM tasks WHERE id = %s", task_id)
        return rows[0][0] in ("COMPLETED", "FAILED")

    workers.wait_for(lambda: final(run_id) and final(abandoned_id), timeout=60, message="the workers to warm up")


def test_each_batch_completes_once_under_racing_drainers_and_sweepers(
    runtime: Container, workers: Workers, fault_db: str, deliveries: Receiver
) -> None:
    for _ in range(3):
        workers.drain(TASKLANE_DRAIN_BATCH_SIZE="8")
    for _ in range(2):
        workers.sweep(TASKLANE_SWEEP_INTERVAL_SECONDS="0.05")
    _warm_up(runtime, workers, fault_db)
    rng = random.Random(7)
    spec = BatchSpec(callback_url=deliveries.url, on_complete=request("noop", {"report": True}))
    batch_ids = []
    for _ in range(BATCHES):
        items = [request("sleep", {"seconds": rng.uniform(0, WINDOW)}, max_retries=0) for _ in range(RUN)]
        items += [request(delay_seconds=3600, max_retries=0) for _ in range(ABANDONED)]
        result = submit_batch(runtime, TENANT, items, spec=spec)
        assert result.batch is not None
        batch_ids.append(result.batch.id)
        for item in result.items[RUN:]:
            assert item.submitted is not None
            query(fault_db, _ABANDON, rng.uniform(0.1, WINDOW), item.submitted.task.id)

    def completed() -> int:
        return int(query(fault_db, "SELECT count(*) FROM batches WHERE completed_at IS NOT NULL")[0][0])

    workers.wait_for(lambda: completed() == BATCHES, timeout=60, message="every batch to complete")
    workers.wait_for(lambda: len(deliveries.calls) >= BATCHES, timeout=60, message="every batch webhook delivered")
    rows = query(fault_db, "SELECT id::text, remaining, completed, failed, cancelled FROM batches ORDER BY id")
    assert sorted(r[0] for r in rows) == sorted(batch_ids)
    assert all(r[1:] == (0, RUN, ABANDONED, 0) for r in rows), rows
    made = query(
        fault_db,
        "SELECT payload->'batch'->>'id', name, count(*) FROM tasks WHERE payload ? 'batch' GROUP BY 1, 2",
    )
    assert sorted(made) == sorted([(b, n, 1) for b in batch_ids for n in (WEBHOOK_TASK, "noop")])
    assert _by_batch(deliveries) == Counter(dict.fromkeys(batch_ids, 1))
    # Both paths finished last tasks: the race was run, not only one side of it.
    last = query(
        fault_db,
        """SELECT DISTINCT ON (t.batch_id) split_part(e.actor, ':', 1)
           FROM task_events e JOIN tasks t ON t.id = e.task_id
           WHERE t.batch_id IS NOT NULL AND e.to_status IN ('COMPLETED', 'FAILED')
           ORDER BY t.batch_id, e.id DESC""",
    )
    assert {a for (a,) in last} == {"drain", "sweep"}, Counter(a for (a,) in last)
