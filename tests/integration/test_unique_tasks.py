"""Unique tasks (migration 0010): one task per unique key, decided by PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from chalicelib.container import Container
from chalicelib.core.errors import ConflictError
from chalicelib.core.model import Status
from chalicelib.services import lifecycle
from chalicelib.services.submit import Submitted, submit, submit_many
from tests.helpers import drain_once, metric_count, query, request, status_counts, wait_for

TENANT = "acme"


def test_twenty_concurrent_submits_of_one_unique_key_create_one_task(make_rt: Any, database_url: str) -> None:
    # Four runtimes (four pools of four connections): the submits really race in PostgreSQL.
    runtimes = [make_rt() for _ in range(4)]
    before = metric_count(database_url, "deduplicated")
    barrier = threading.Barrier(20)
    results: list[Submitted] = []

    def go(i: int) -> None:
        barrier.wait()
        results.append(submit(runtimes[i % 4], TENANT, request(payload={"i": i}, unique_key="report-42")))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20 and len({r.task.id for r in results}) == 1
    assert sum(1 for r in results if r.created) == 1
    assert all(r.duplicate for r in results if not r.created)
    assert status_counts(database_url) == {"QUEUED": 1}
    assert metric_count(database_url, "deduplicated") - before == 19
    assert query(database_url, "SELECT count(*) FROM task_unique_keys")[0][0] == 1


def test_while_active_key_is_released_when_the_task_is_final(rt: Container, database_url: str) -> None:
    first = submit(rt, TENANT, request(unique_key="k"))
    again = submit(rt, TENANT, request(payload={"other": 1}, unique_key="k"))
    assert again.duplicate and again.task.id == first.task.id and not again.created
    assert submit(rt, "other-tenant", request(unique_key="k")).created  # keys are per tenant
    drain_once(rt)
    assert rt.store.get_task(TENANT, first.task.id).status is Status.COMPLETED  # type: ignore[union-attr]
    after = submit(rt, TENANT, request(unique_key="k"))
    assert after.created and after.task.id != first.task.id
    # Cancelling (another final path) releases it too.
    lifecycle.cancel(rt, TENANT, after.task.id)
    assert submit(rt, TENANT, request(unique_key="k")).created


def test_window_holds_past_the_end_of_the_task_and_lapses_without_a_sweep(rt: Container) -> None:
    first = submit(rt, TENANT, request(unique_key="w", unique_for_seconds=0.6))
    drain_once(rt)
    dup = submit(rt, TENANT, request(unique_key="w", unique_for_seconds=0.6))
    assert dup.duplicate and dup.task.id == first.task.id and dup.task.status is Status.COMPLETED
    assert dup.task.unique_until is not None
    # No sweep runs: the next submit after the window takes the key over by itself.
    fresh = wait_for(
        lambda: (s := submit(rt, TENANT, request(unique_key="w", unique_for_seconds=0.6))).created and s,
        timeout=5,
        message="the window to pass",
    )
    assert fresh.task.id != first.task.id
    assert rt.store.prune_unique_keys() == 0  # the row was taken over, not left behind


def test_batch_items_sharing_a_unique_key_make_one_task(rt: Container, database_url: str) -> None:
    out = submit_many(
        rt, TENANT, [request(unique_key="a"), request(unique_key="a"), request(unique_key="b"), request()]
    )
    assert all(isinstance(r, Submitted) for r in out)
    subs = [r for r in out if isinstance(r, Submitted)]
    assert [r.created for r in subs] == [True, False, True, True]
    assert subs[1].duplicate and subs[1].task.id == subs[0].task.id
    assert status_counts(database_url) == {"QUEUED": 3}


def test_idempotency_key_is_looked_at_before_the_unique_key(rt: Container) -> None:
    first = submit(rt, TENANT, request(idempotency_key="i1", unique_key="u"))
    lifecycle.cancel(rt, TENANT, first.task.id)  # releases "u"
    replay = submit(rt, TENANT, request(idempotency_key="i1", unique_key="u"))
    assert replay.replayed and not replay.duplicate and replay.task.id == first.task.id
    # The replay took no key: "u" is free for a new request.
    assert submit(rt, TENANT, request(idempotency_key="i2", unique_key="u")).created
    # A different body under a known idempotency key is still a conflict, whatever the unique key.
    try:
        submit(rt, TENANT, request(payload={"x": 1}, idempotency_key="i1", unique_key="u"))
    except ConflictError:
        pass
    else:
        raise AssertionError("expected a conflict")


def test_a_key_whose_task_is_gone_is_taken_over(rt: Container, database_url: str) -> None:
    # A leftover row (its task deleted, or never inserted): the submit cleans it up and wins.
    query(
        database_url,
        "INSERT INTO task_unique_keys (tenant, unique_key, task_id) VALUES (%s, 'ghost', %s) RETURNING 1",
        TENANT,
        str(uuid.uuid4()),
    )
    got = submit(rt, TENANT, request(unique_key="ghost"))
    assert got.created
    assert query(database_url, "SELECT task_id::text FROM task_unique_keys WHERE unique_key = 'ghost'") == [
        (got.task.id,)
    ]


def test_redrive_takes_the_key_again_when_it_is_free(rt: Container) -> None:
    dead = submit(rt, TENANT, request("fail", {"permanent": True}, unique_key="r"))
    drain_once(rt)
    assert rt.store.get_task(TENANT, dead.task.id).status is Status.FAILED  # type: ignore[union-attr]
    lifecycle.redrive_one(rt, TENANT, dead.task.id)
    dup = submit(rt, TENANT, request(unique_key="r"))
    assert dup.duplicate and dup.task.id == dead.task.id


def test_repeats_of_a_unique_key_in_one_request_are_counted_as_deduplicated(rt: Container, database_url: str) -> None:
    """The first of them creates the task and the others are answered with it; only
    the holders found in the table were counted (three of u2 counted 0, not 2)."""
    before = metric_count(database_url, "deduplicated")
    first = submit_many(rt, TENANT, [request(unique_key="u2"), request(unique_key="u2"), request(unique_key="u2")])
    assert [(r.created, r.duplicate) for r in first if isinstance(r, Submitted)] == [
        (True, False),
        (False, True),
        (False, True),
    ]
    assert metric_count(database_url, "deduplicated") - before == 2
    again = submit_many(rt, TENANT, [request(unique_key="u2"), request(unique_key="u3"), request(unique_key="u3")])
    assert [isinstance(r, Submitted) and r.duplicate for r in again] == [True, False, True]
    assert metric_count(database_url, "deduplicated") - before == 4
