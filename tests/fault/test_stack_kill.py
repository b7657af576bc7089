"""Black box: the whole local stack (API, drainers, sweeper) is SIGKILLed under
submit load, then started again on the same database and Redis."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import redis

from tests.fault.load import SubmitLoad, descendants, kill_tree, shutdown_stack, wait_on_stack
from tests.helpers import FINAL_STATES, query, story_problems, task_stories, wait_for
from tests.stack import start_stack
from tests.state import redis_db_url
from tools.devstack import services as devservices

STACK_KILL_REDIS_DB = 12


def _body(n: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex
    match n % 4:
        case 0:
            return {"name": "sleep", "payload": {"seconds": 1, "tag": tag}}  # long enough to be caught running
        case 1:
            return {"name": "fail", "payload": {"times": 1, "tag": tag}}
        case _:
            return {"name": "noop", "payload": {"tag": tag}}


def _expected_result(body: dict[str, Any], attempts: int) -> Any:
    if body["name"] == "sleep":
        return {"slept": 1, "attempt": attempts}
    if body["name"] == "fail":
        return {"succeeded_on_attempt": attempts}
    return body["payload"]


def test_whole_stack_killed_mid_load_then_restarted(pg_server: str, redis_server: str, tmp_path: Path) -> None:
    redis_url = redis_db_url(redis_server, STACK_KILL_REDIS_DB)
    redis.Redis.from_url(redis_url).flushdb()
    database = devservices.test_database_name("fault")
    env = {"TASKLANE_REDIS_PREFIX": f"tlfault-{uuid.uuid4().hex[:8]}", "TASKLANE_DRAINERS": "2"}
    db_url = devservices.database_url(pg_server, database)
    stacks = []
    try:
        first = start_stack(pg_server, redis_url, tmp_path / "first", env=env, database=database)
        stacks.append(first)
        load = SubmitLoad.on(first, _body, threads=3).start()
        try:

            def busy() -> bool:
                if load.count(lambda r: r.status == 201) < 60:
                    return False
                rows = query(db_url, "SELECT count(*) FROM tasks WHERE status = 'PROCESSING' AND name = 'sleep'")
                return rows[0][0] >= 2

            wait_on_stack(
                first, busy, timeout=60, message="a busy stack: 60 accepted and sleep tasks running", load=load
            )
            killed = kill_tree(first.proc.pid)  # SIGKILL: API, drainers, sweeper, supervisor
            first.proc.wait(timeout=10)
            assert len(killed) >= 5, killed  # supervisor + API + 2 drainers + sweeper
        finally:
            load.stop()
        # Nobody is left to change anything: this is what the crash left behind.
        running_at_crash = {
            r[0]: r[1] for r in query(db_url, "SELECT id::text, attempts FROM tasks WHERE status = 'PROCESSING'")
        }
        assert running_at_crash, "the crash caught no task running"

        second = start_stack(pg_server, redis_url, tmp_path / "second", env=env, database=database)
        stacks.append(second)
        replies = load.snapshot()
        accepted = {r.task_id: r.sent for r in replies if r.task_id is not None}
        assert len(accepted) >= 60
        # Before the kill every answer was a 201; at the kill a request may get none.
        assert {r.status for r in replies} <= {201, None}, {r.status for r in replies}

        wait_on_stack(
            second,
            lambda: {r[0] for r in query(db_url, "SELECT DISTINCT status FROM tasks")} <= FINAL_STATES,
            timeout=90,
            message="every task to reach a final state after the restart",
        )
        stories = task_stories(db_url)
        assert set(accepted) <= set(stories), "an accepted (201) task has no row"
        assert story_problems(stories) == []
        for tid, sent in accepted.items():
            s = stories[tid]
            assert s["status"] == "COMPLETED", (sent, s)
            assert s["result"] == _expected_result(sent, s["attempts"]), (sent, s)
        for tid, attempts in running_at_crash.items():
            s = stories[tid]
            # The attempt the crash interrupted is failed by the new sweeper and retried.
            ended = [e for e in s["events"] if e["from"] == "PROCESSING" and e["attempt"] == attempts]
            assert len(ended) == 1, s["events"]
            assert (ended[0]["actor"], ended[0]["error_type"]) == ("sweep", "LeaseLostError"), s["events"]
            assert s["status"] == "COMPLETED" and s["attempts"] > attempts, s["events"]
    finally:
        for stack in stacks:
            shutdown_stack(stack)
        devservices.drop_database(pg_server, database)


def test_supervisor_killed_then_started_again_at_once_on_the_same_port(
    pg_server: str, redis_server: str, tmp_path: Path
) -> None:
    """``kill -9`` of the supervisor alone: its children (API, drainers, sweeper)
    stop by themselves at once, so ``make run`` right away gets the port back.  Two API
    processes: the one the first forked stops with it in turn (``prefork``)."""
    redis_url = redis_db_url(redis_server, STACK_KILL_REDIS_DB)
    redis.Redis.from_url(redis_url).flushdb()
    database = devservices.test_database_name("fault")
    port = str(devservices.find_free_port())
    env = {
        "TASKLANE_REDIS_PREFIX": f"tlfault-{uuid.uuid4().hex[:8]}",
        "TASKLANE_PORT": port,
        "TASKLANE_API_PROCESSES": "2",
    }
    stacks = []
    children: list[int] = []
    try:
        first = start_stack(pg_server, redis_url, tmp_path / "first", env=env, database=database)
        stacks.append(first)
        children = descendants(first.proc.pid)
        assert len(children) >= 5, children  # 2 API, 2 drainers, sweeper
        first.proc.kill()  # the supervisor only: nothing stops its children for it
        first.proc.wait(timeout=10)

        second = start_stack(pg_server, redis_url, tmp_path / "second", env=env, database=database, timeout=60)
        stacks.append(second)
        assert second.base_url == first.base_url
        task = second.submit("noop", {"after": "restart"})
        wait_for(
            lambda: second.task(task["id"])["status"] == "COMPLETED", timeout=30, message="a task on the new stack"
        )
        wait_for(
            lambda: not any(devservices.pid_alive(pid) for pid in children),
            timeout=5,
            message=f"the first stack's children {children} to exit",
        )
    finally:
        for stack in stacks:
            shutdown_stack(stack)
        for pid in children:
            if devservices.pid_alive(pid):
                kill_tree(pid)  # a surviving orphan (the test failed): never leave it running
        devservices.drop_database(pg_server, database)
