"""Dependencies under concurrency: a child is released exactly once even when its last
two parents finish at the same instant in two drainers, and many drainers and
sweepers running diamonds never start a step before its parents completed."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg

from chalicelib.container import Container
from chalicelib.core.model import Outcome, Status
from chalicelib.core.requests import parse_workflow
from chalicelib.services.drain import Drainer
from chalicelib.services.submit import submit_workflow
from chalicelib.services.sweep import sweep
from tests.fault.conftest import TENANT
from tests.helpers import story_problems, task_stories, wait_for

ROUNDS = 40


def _diamond(rt: Container) -> dict[str, str]:
    steps = {
        "a": {"name": "noop"},
        "b": {"name": "noop", "after": ["a"]},
        "c": {"name": "noop", "after": ["a"]},
        "d": {"name": "noop", "after": ["b", "c"]},
    }
    wf = submit_workflow(rt, TENANT, parse_workflow({"steps": steps}, rt.settings, rt.registry))
    return {name: task.id for name, task in wf.steps.items()}


def test_a_child_is_released_once_when_its_last_two_parents_finish_at_once(runtime: Container, fault_db: str) -> None:
    rt = runtime
    children = []
    for _ in range(ROUNDS):
        steps = {"b": {"name": "noop"}, "c": {"name": "noop"}, "d": {"name": "noop", "after": ["b", "c"]}}
        wf = submit_workflow(rt, TENANT, parse_workflow({"steps": steps}, rt.settings, rt.registry))
        b, c, d = (wf.steps[s].id for s in "bcd")
        tokens = {b: str(uuid.uuid4()), c: str(uuid.uuid4())}
        for tid, token in tokens.items():  # two drainers, each holding one parent
            assert len(rt.store.claim([tid], token, 30, actor=f"drainer-{tid[:4]}")) == 1
        gate = threading.Barrier(2)
        errors: list[BaseException] = []

        def finish(
            tid: str,
            tokens: dict[str, str] = tokens,
            gate: threading.Barrier = gate,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                outcome = Outcome(tid, tokens[tid], Status.COMPLETED, result_json="{}")
                gate.wait(5)
                assert len(rt.store.finish([outcome], actor=f"drainer-{tid[:4]}")) == 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=finish, args=(tid,)) for tid in (b, c)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert not errors, errors
        children.append(d)
    with psycopg.connect(fault_db) as conn:
        released = dict(
            conn.execute(  # type: ignore[arg-type]
                "SELECT task_id::text, count(*) FROM task_events"
                " WHERE task_id = ANY(%s::uuid[]) AND from_status = 'WAITING' GROUP BY task_id",
                (children,),
            ).fetchall()
        )
        states = dict(
            conn.execute(  # type: ignore[arg-type]
                "SELECT id::text, status || ':' || waiting_on FROM tasks WHERE id = ANY(%s::uuid[])", (children,)
            ).fetchall()
        )
        outbox = conn.execute("SELECT count(*) FROM task_outbox").fetchone()
    assert released == dict.fromkeys(children, 1)
    assert states == dict.fromkeys(children, "QUEUED:0")
    assert outbox is not None and outbox[0] == len(children)  # each listed once (nobody drained it here)


def test_diamonds_under_many_drainers_and_sweepers_run_each_step_once_in_order(
    runtime: Container, fault_db: str
) -> None:
    rt = runtime
    diamonds = [_diamond(rt) for _ in range(25)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def drain() -> None:
        d = Drainer(rt, name=f"race-{threading.get_ident()}")
        try:
            while not stop.is_set():
                end = time.monotonic() + rt.settings.drain_margin_seconds + 0.5
                d.run(lambda end=end: end - time.monotonic(), idle_exit_seconds=0.05)  # type: ignore[misc]
        except BaseException as exc:
            errors.append(exc)
        finally:
            d.close()

    def sweeper() -> None:
        try:
            while not stop.is_set():
                sweep(rt, actor=f"sweep-{threading.get_ident()}")
                stop.wait(0.05)  # a sweeper's pacing (its schedule), cut short when the test ends
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=drain) for _ in range(3)] + [threading.Thread(target=sweeper) for _ in range(2)]
    for t in threads:
        t.start()
    ids = [tid for d in diamonds for tid in d.values()]
    try:
        wait_for(
            lambda: all(s["status"] == "COMPLETED" for s in task_stories(fault_db, ids).values()),
            timeout=60,
            interval=0.2,
            message="every step to complete",
        )
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    stories = task_stories(fault_db, ids)
    assert story_problems(stories) == []
    assert all(s["attempts"] == 1 for s in stories.values())
    with psycopg.connect(fault_db) as conn:
        times = {
            str(r[0]): (r[1], r[2])
            for r in conn.execute(  # type: ignore[arg-type]
                "SELECT id, started_at, finished_at FROM tasks WHERE id = ANY(%s::uuid[])", (ids,)
            )
        }
    for d in diamonds:
        for child, parents in (("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")):
            assert times[d[child]][0] >= times[d[parents]][1], f"{child} started before {parents} finished"
