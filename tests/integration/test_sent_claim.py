"""A claim statement written by the drain loop and read by the lane that runs the batch
(``adapters/postgres/sent_claim.py``, issue 14 round 20): what it claims, that a session
which lost the statement still claims, and that a lost connection raises the store's
error and leaves the held connection usable."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.adapters.postgres.held import HeldConnection
from chalicelib.adapters.postgres.store import Store
from chalicelib.container import Container
from chalicelib.core.errors import UnavailableError
from chalicelib.core.model import Status
from chalicelib.services.submit import submit
from tests.helpers import drain_once, request, terminate_backend

TENANT = "sent-claim"


@pytest.fixture
def held(make_rt: Callable[..., Container]) -> Iterator[tuple[Container, HeldConnection]]:
    """A runtime and a connection of its store's pool held as the drain loop holds one."""
    rt = make_rt()
    kept = rt.store.hold_connection()
    assert kept is not None
    try:
        yield rt, kept
    finally:
        kept.close()


def _read_elsewhere(read: Callable[[], Any]) -> Any:
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(_outcome(read)))
    reader.start()
    reader.join(10)
    value, error = got[0]
    if error is not None:
        raise error
    return value


def _outcome(read: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        return read(), None
    except BaseException as exc:  # handed to the test's thread
        return None, exc


def test_a_sent_claim_is_read_on_another_thread_and_the_held_connection_stays(
    held: tuple[Container, HeldConnection],
) -> None:
    rt, kept = held
    ids = [submit(rt, TENANT, request()).task.id for _ in range(3)]
    order = [ids[2], ids[0], str(uuid.uuid4()), ids[1]]  # one id no task has
    sent = rt.store.send_claim(order, str(uuid.uuid4()), 60, actor="t", held=kept)
    assert sent is not None
    batch = _read_elsewhere(sent.batch)
    assert [t.id for t in batch] == [ids[2], ids[0], ids[1]] and all(t.attempts == 1 for t in batch)
    for task_id in ids:
        task = rt.store.get_task(TENANT, task_id)
        assert task is not None and task.status is Status.PROCESSING
    with kept.connection() as conn:
        pid = conn.info.backend_pid
    # The same connection claims again.
    more = submit(rt, TENANT, request()).task.id
    again = rt.store.send_claim([more], str(uuid.uuid4()), 60, actor="t", held=kept)
    assert again is not None and [t.id for t in again.batch()] == [more]
    with kept.connection() as conn:
        assert conn.info.backend_pid == pid


def test_a_session_that_lost_its_prepared_claim_still_claims(held: tuple[Container, HeldConnection]) -> None:
    """The session is told it holds the statement when it does not (a DISCARD ALL behind
    our back): the read finds it refused before it ran, and claims once more."""
    rt, kept = held
    task_id = submit(rt, TENANT, request()).task.id
    with kept.connection() as conn:
        conn.execute("DEALLOCATE ALL")
        rt.store._claim._statement.held(conn)
    sent = rt.store.send_claim([task_id], str(uuid.uuid4()), 60, actor="t", held=kept)
    assert sent is not None
    assert [t.id for t in _read_elsewhere(sent.batch)] == [task_id]


def test_a_sent_claim_whose_backend_died_raises_unavailable_and_the_next_claim_works(
    held: tuple[Container, HeldConnection], database_url: str
) -> None:
    rt, kept = held
    task_id = submit(rt, TENANT, request()).task.id
    with kept.connection() as conn:
        terminate_backend(conn.info.backend_pid, database_url)
    with pytest.raises(UnavailableError):
        sent = rt.store.send_claim([task_id], str(uuid.uuid4()), 60, actor="t", held=kept)
        assert sent is not None  # the write may still have gone; the read cannot
        _read_elsewhere(sent.batch)
    task = rt.store.get_task(TENANT, task_id)
    assert task is not None and task.status is Status.QUEUED
    sent = rt.store.send_claim([task_id], str(uuid.uuid4()), 60, actor="t", held=kept)
    assert sent is not None and [t.id for t in _read_elsewhere(sent.batch)] == [task_id]


def test_the_drainer_runs_a_task_from_a_dry_claim_through_the_sent_claim(
    make_rt: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = make_rt()
    read_on: list[int] = []
    batch = Store.send_claim

    def spy(self: Store, *args: Any, **kw: Any) -> Any:
        sent = batch(self, *args, **kw)
        assert sent is not None
        read = sent.batch
        sent.batch = lambda: (read_on.append(threading.get_ident()), read())[1]  # type: ignore[method-assign]
        return sent

    monkeypatch.setattr(Store, "send_claim", spy)
    task = submit(rt, TENANT, request()).task
    stats = drain_once(rt)
    assert stats["completed"] == 1 and not stats["errors"]
    assert read_on and read_on[0] != threading.get_ident()  # a lane read it
    got = rt.store.get_task(TENANT, task.id)
    assert got is not None and got.status is Status.COMPLETED
