"""PostgreSQL stops and comes back while clients submit over HTTP.

A private PostgreSQL (the shared one is never stopped) under a whole local stack.
While it is down, submit answers 503 with a JSON error and accepts nothing; a 201
always means a committed row; the API and the drainers recover by themselves.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import redis
import requests

from tests.fault.load import Reply, SubmitLoad, live_stack, wait_on_stack
from tests.helpers import FINAL_STATES, query, story_problems, task_stories
from tests.state import redis_db_url
from tools.devstack import services as devservices

OUTAGE_REDIS_DB = 11


def _body(n: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex
    if n % 3 == 0:  # some run long enough for the outage to catch them between claim and outcome
        return {"name": "sleep", "payload": {"seconds": 0.3, "n": n, "tag": tag}}
    return {"name": "noop", "payload": {"n": n, "tag": tag}}


def _is_json_error(reply: Reply) -> bool:
    body = reply.body
    return (
        isinstance(body, dict)
        and isinstance(body.get("error"), dict)
        and isinstance(body["error"].get("code"), str)
        and isinstance(body["error"].get("message"), str)
    )


def test_postgres_stopped_and_restarted_under_submit_load(
    private_pg: devservices.PostgresHandle, redis_server: str, tmp_path: Path
) -> None:
    redis_url = redis_db_url(redis_server, OUTAGE_REDIS_DB)
    redis.Redis.from_url(redis_url).flushdb()
    env = {"TASKLANE_REDIS_PREFIX": f"tlfault-{uuid.uuid4().hex[:8]}"}
    with live_stack(private_pg.url, redis_url, tmp_path / "stack", database="tasklane_outage", env=env) as stack:
        load = SubmitLoad.on(stack, _body, threads=3).start()
        try:

            def busy() -> bool:
                if load.count(lambda r: r.status == 201) < 30:
                    return False
                counts = dict(query(stack.database_url, "SELECT status, count(*) FROM tasks GROUP BY 1"))
                return counts.get("COMPLETED", 0) >= 10 and counts.get("PROCESSING", 0) >= 1

            wait_on_stack(
                stack, busy, timeout=60, message="a busy stack: 30 accepted, 10 completed, some running", load=load
            )

            private_pg.stop()  # pg_ctl stop -m fast: every connection is cut
            stopped_at = time.monotonic()
            down = lambda: [r for r in load.snapshot() if r.at > stopped_at and r.status == 503]  # noqa: E731
            wait_on_stack(
                stack, lambda: len(down()) >= 3, timeout=60, message="submits to be refused with 503", load=load
            )
            health = requests.get(stack.base_url + "/health", timeout=30)
            assert health.status_code == 503, health.text
            assert health.json()["components"]["db"]["status"] == "DOWN"

            private_pg.start()
            started_at = time.monotonic()
            wait_on_stack(
                stack,
                lambda: load.count(lambda r: r.at > started_at and r.status == 201) >= 30,
                timeout=60,
                message="submits to be accepted again after PostgreSQL came back",
                load=load,
            )
        finally:
            load.stop()

        replies = load.snapshot()
        unexpected = [r for r in replies if r.status not in (201, 503) or (r.status == 503 and not _is_json_error(r))]
        assert unexpected == [], unexpected[:5]  # never a 500, never a dropped connection
        accepted = load.accepted_ids()
        assert len(accepted) == len(set(accepted))
        assert sum(1 for r in replies if r.status == 503) >= 3

        # Every 201 is a committed row, and every one of them completes.
        found = {
            r[0] for r in query(stack.database_url, "SELECT id::text FROM tasks WHERE id = ANY(%s::uuid[])", accepted)
        }
        assert set(accepted) - found == set(), "accepted (201) but no row"

        def all_done() -> bool:
            rows = query(
                stack.database_url,
                "SELECT count(*) FROM tasks WHERE id = ANY(%s::uuid[]) AND status = 'COMPLETED'",
                accepted,
            )
            return rows[0][0] == len(accepted)

        wait_on_stack(stack, all_done, timeout=90, message=f"the {len(accepted)} accepted tasks to complete")
        # Rows from requests answered 503 (committed as the connection was cut) are
        # possible; they must not get stuck either.
        wait_on_stack(
            stack,
            lambda: {r[0] for r in query(stack.database_url, "SELECT DISTINCT status FROM tasks")} <= FINAL_STATES,
            timeout=60,
            message="every row to reach a final state",
        )
        stories = task_stories(stack.database_url)
        assert story_problems(stories) == []
        for tid in accepted:
            assert stories[tid]["status"] == "COMPLETED"
        # Each 201 named the task made from that very request, and it ran that request's payload.
        payloads = dict(
            query(stack.database_url, "SELECT id::text, payload FROM tasks WHERE id = ANY(%s::uuid[])", accepted)
        )
        mixed = [
            (r.sent, payloads[r.task_id]) for r in replies if r.task_id and payloads[r.task_id] != r.sent["payload"]
        ]
        assert mixed == [], mixed[:3]
        for r in replies:
            if r.task_id:
                result = stories[r.task_id]["result"]
                if r.sent["name"] == "noop":
                    assert result == r.sent["payload"]
                else:
                    assert result == {"slept": 0.3, "attempt": stories[r.task_id]["attempts"]}
