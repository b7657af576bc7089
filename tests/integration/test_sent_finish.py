"""A batch's finish statement written by the drain loop and read by its recorder thread
(``adapters/postgres/sent_finish.py``, issue 14 round 19): what it records, and that a
failed one leaves the pool whole and the outcome recorded the ordinary way."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from chalicelib.container import Container
from chalicelib.core.model import Outcome, Status
from chalicelib.services import drain as drain_module
from chalicelib.services.drain import Drainer
from chalicelib.services.submit import submit
from tests.helpers import drain_once, request, terminate_backend

TENANT = "sent-finish"


def _claimed(rt: Container) -> tuple[str, str]:
    task = submit(rt, TENANT, request()).task
    token = uuid.uuid4().hex
    assert [c.id for c in rt.store.claim([task.id], token, 60, actor="t")] == [task.id]
    return task.id, token


def _all_back(rt: Container) -> bool:
    stats = rt.store._pool.get_stats()
    return bool(stats["pool_available"] == stats["pool_size"])


def test_a_sent_finish_records_on_another_thread_and_gives_its_connection_back(
    make_rt: Callable[..., Container],
) -> None:
    rt = make_rt()
    task_id, token = _claimed(rt)
    sent = rt.store.send_finish([Outcome(task_id, token, Status.COMPLETED, result_json='{"ok":1}')], actor="t")
    assert sent is not None
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(sent.recorded()))
    reader.start()
    reader.join(10)
    assert [r.id for r in got[0]] == [task_id] and got[0][0].status is Status.COMPLETED
    task = rt.store.get_task(TENANT, task_id)
    assert task is not None and task.status is Status.COMPLETED and task.result == {"ok": 1}
    assert _all_back(rt)
    # A stale token's outcome changes nothing, as through ``finish``.
    again = rt.store.send_finish([Outcome(task_id, token, Status.FAILED, error="late")], actor="t")
    assert again is not None and again.recorded() == []
    assert _all_back(rt)


def test_a_finish_the_server_refuses_answers_none_and_leaves_the_pool_whole(
    make_rt: Callable[..., Container],
) -> None:
    rt = make_rt()
    task_id, token = _claimed(rt)
    # Not JSON: tasklane_finish's cast of the result fails, and the statement with it.
    sent = rt.store.send_finish([Outcome(task_id, token, Status.COMPLETED, result_json="{not json")], actor="t")
    assert sent is not None and sent.recorded() is None
    assert _all_back(rt)
    task = rt.store.get_task(TENANT, task_id)
    assert task is not None and task.status is Status.PROCESSING
    # The pool's connections still work, the statement's session state included.
    for _ in range(rt.store._pool.get_stats()["pool_size"] + 1):
        task_id, token = _claimed(rt)
        ok = rt.store.send_finish([Outcome(task_id, token, Status.COMPLETED, result_json="1")], actor="t")
        assert ok is not None and [r.id for r in ok.recorded() or []] == [task_id]


class _Doomed:
    """The sender's pool, whose first check-out hands over a connection whose backend
    was terminated (and is gone) first."""

    def __init__(self, pool: Any, database_url: str) -> None:
        self._pool = pool
        self._url = database_url
        self.killed: list[int] = []

    def getconn(self, *args: Any, **kw: Any) -> Any:
        conn = self._pool.getconn(*args, **kw)
        if not self.killed:
            terminate_backend(conn.info.backend_pid, self._url)
            self.killed.append(conn.info.backend_pid)
        return conn

    def putconn(self, conn: Any) -> None:
        self._pool.putconn(conn)


def test_the_drainer_records_the_ordinary_way_when_its_sent_finish_is_lost(
    make_rt: Callable[..., Container], database_url: str
) -> None:
    """The backend the finish was written to is gone before it could run: the recorder
    finds no answer, finishes the task on another connection, and nothing is lost."""
    rt = make_rt()
    doomed = _Doomed(rt.store._pool, database_url)
    rt.store._finish_sender._pool = doomed  # type: ignore[assignment]
    task = submit(rt, TENANT, request()).task
    drainer = Drainer(rt, name="sent-lost")
    try:
        stats = drain_once(rt, drainer=drainer)
    finally:
        drainer.close()
    assert doomed.killed, "no finish went to the sender's pool"
    assert stats["completed"] == 1 and stats["lease_lost"] == 0 and not stats["errors"]
    got = rt.store.get_task(TENANT, task.id)
    assert got is not None and got.status is Status.COMPLETED
    assert _all_back(rt)


def test_a_session_that_lost_its_prepared_finish_is_prepared_again(make_rt: Callable[..., Container]) -> None:
    """Every idle connection's session is told it holds the statement when it does not
    (a DISCARD ALL behind the pool's back): each such send answers None, and its session
    prepares the statement afresh at its next use."""
    rt = make_rt()
    task_id, token = _claimed(rt)
    statement = rt.store._finish_sender._statement
    idle = list(rt.store._pool._pool)
    assert idle
    for conn in idle:
        statement.held(conn)
    outcome = Outcome(task_id, token, Status.COMPLETED, result_json="1")
    answers = []
    for _ in range(len(idle) + 1):
        sent = rt.store.send_finish([outcome], actor="t")
        assert sent is not None
        answers.append(sent.recorded())
        if answers[-1] is not None:
            break
    assert answers[0] is None and [r.id for r in answers[-1] or []] == [task_id]
    assert _all_back(rt)


def test_a_sent_finish_is_read_at_once_so_the_recorder_queue_never_waits_on_its_connection(
    make_rt: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool has one connection free.  The recorder is still on the first batch's job
    when the second batch's lane sends its finish on that connection, and that job then
    needs a connection.  Read only when the recorder reached it, the finish kept it for
    the pool's timeout (the loop waits for the first job before it hands over the
    second); the lane that sent it reads it as soon as its batch is done instead."""
    rt = make_rt(pool_max_size=3)
    rt.store._ensure_open()
    rt.store._pool.timeout = 1.0
    drainer = Drainer(rt, name="sent-read")
    sends: list[object] = []
    second_sent = threading.Event()
    real_send = rt.store.send_finish

    def counting_send(*args: Any, **kw: Any) -> Any:
        statement = real_send(*args, **kw)
        sends.append(statement)
        if len(sends) == 2:
            second_sent.set()
        return statement

    monkeypatch.setattr(rt.store, "send_finish", counting_send)
    real_log = drain_module.metrics.log_finished
    first_job = [True]

    def slow_first_job(*args: Any, **kw: Any) -> Any:
        if first_job[0]:
            first_job[0] = False
            submit(rt, TENANT, request())  # the second batch
            assert second_sent.wait(10), "the second batch's finish was never sent"
            rt.store.ping()  # a connection of the pool, as an outbox release takes one
        return real_log(*args, **kw)

    monkeypatch.setattr(drain_module.metrics, "log_finished", slow_first_job)
    outside = rt.store._pool.getconn()  # with the drainer's held one: one left
    try:
        first = submit(rt, TENANT, request()).task
        stats = drain_once(rt, drainer=drainer, seconds=5)
    finally:
        rt.store._pool.putconn(outside)
        drainer.close()
    assert all(s is not None for s in sends[:2]), "a finish did not go the sent way"
    assert stats["completed"] == 2 and stats["lease_lost"] == 0 and not stats["errors"], stats
    got = rt.store.get_task(TENANT, first.id)
    assert got is not None and got.status is Status.COMPLETED
    assert _all_back(rt)
