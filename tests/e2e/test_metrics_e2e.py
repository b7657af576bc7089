"""/metrics on a live local stack under steady load, parsed by Prometheus' own text
parser, against the tasks table: every counter is bracketed by the table's counts
read just before and just after the scrape (counters commit with the transitions
they count), and once the load stops everything matches exactly."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import query, wait_for
from tests.stack import ROOT, Stack, start_stack
from tools.devstack import services as devservices

TOKEN = "metrics-" + uuid.uuid4().hex
METRICS_REDIS_DB = 10
Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


@pytest.fixture(scope="module")
def mstack(pg_server: str, redis_server: str) -> Iterator[Stack]:
    """A stack of its own with a metrics token (and the global counters to itself)."""
    redis_url = redis_server.rsplit("/", 1)[0] + f"/{METRICS_REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    s = start_stack(pg_server, redis_url, ROOT / "test-artifacts", env={"TASKLANE_METRICS_TOKEN": TOKEN})
    try:
        yield s
    finally:
        s.stop()
        devservices.drop_database(pg_server, s.database_url.rsplit("/", 1)[-1])


def scrape(stack: Stack) -> Samples:
    r = requests.get(stack.base_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return out


def per_name(samples: Samples, metric: str) -> Counter[str]:
    return Counter({dict(k)["task_name"]: int(v) for k, v in samples.get(metric, {}).items() if v})


def table_counters(stack: Stack) -> dict[str, Counter[str]]:
    """The counters as the tasks table and its audit trail say they must be."""
    rows = query(
        stack.database_url,
        """
        SELECT t.name,
               count(*) FILTER (WHERE e.from_status IS NULL),
               count(*) FILTER (WHERE e.to_status = 'PROCESSING'),
               count(*) FILTER (WHERE e.to_status = 'COMPLETED'),
               count(*) FILTER (WHERE e.from_status = 'PROCESSING' AND e.to_status IN ('PENDING', 'FAILED')),
               count(*) FILTER (WHERE e.from_status = 'PROCESSING' AND e.to_status = 'PENDING'),
               count(*) FILTER (WHERE e.to_status = 'FAILED'),
               count(*) FILTER (WHERE e.to_status = 'CANCELLED'),
               count(*) FILTER (WHERE e.from_status = 'FAILED' AND e.to_status = 'QUEUED')
        FROM task_trail e JOIN tasks t ON t.id = e.task_id
        GROUP BY t.name
        """,
    )
    keys = ["submitted", "started", "completed", "failed", "retried", "dead_lettered", "cancelled", "redriven"]
    out: dict[str, Counter[str]] = {k: Counter() for k in keys}
    for name, *values in rows:
        for k, v in zip(keys, values, strict=True):
            if v:
                out[k][name] = int(v)
    return out


def assert_bracketed(before: dict[str, Counter[str]], got: Samples, after: dict[str, Counter[str]]) -> None:
    for key in before:
        metric = per_name(got, f"tasklane_tasks_{key}_total")
        for name in set(before[key]) | set(after[key]) | set(metric):
            assert before[key][name] <= metric[name] <= after[key][name], (key, name, before[key], metric, after[key])


def test_metrics_match_the_task_table_under_steady_load(mstack: Stack) -> None:
    stack = mstack
    stop = threading.Event()
    submitted: list[dict[str, Any]] = []
    errors: list[str] = []

    def load() -> None:
        rnd = random.Random(7)
        while not stop.is_set():
            batch = []
            for _ in range(25):
                roll = rnd.random()
                prio = rnd.choice(["critical", "high", "normal", "low"])
                if roll < 0.75:
                    batch.append({"name": "noop", "payload": {"n": rnd.random()}, "priority": prio})
                elif roll < 0.87:
                    batch.append({"name": "fail", "payload": {"times": 1}, "priority": prio})
                elif roll < 0.95:
                    batch.append({"name": "fail", "payload": {"permanent": True}, "priority": prio})
                else:
                    batch.append({"name": "noop", "priority": prio, "delay_seconds": 3600})
            r = stack.post("/api/v1/tasks/batch", {"tasks": batch})
            if r.status_code != 201:
                errors.append(r.text)
            else:
                submitted.extend(item["task"] for item in r.json()["results"])
            time.sleep(0.15)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        # Scrape while the load runs: at least 5 checks, each after the loader has added
        # another batch, and until 300 tasks went in.  Counted, not timed: on a loaded
        # machine a fixed 8 s held fewer checks and fewer submits than the test needs.
        checks = 0
        deadline = time.monotonic() + 120
        while checks < 5 or len(submitted) <= 300:
            assert time.monotonic() < deadline, f"{checks} checks, {len(submitted)} submitted in 120 s"
            seen = len(submitted)
            wait_for(lambda n=seen: len(submitted) > n or errors, timeout=30, message="the loader's next batch")
            assert not errors, errors[:3]
            before = table_counters(stack)
            got = scrape(stack)
            after = table_counters(stack)
            assert_bracketed(before, got, after)
            checks += 1
    finally:
        stop.set()
        loader.join(timeout=10)
    assert not errors, errors[:3]

    # Redrive a couple of dead letters and cancel a delayed task, then let it settle.
    dead = stack.get("/api/v1/dead-letters", params={"limit": 2}).json()["items"]
    for t in dead:
        assert stack.post(f"/api/v1/dead-letters/{t['id']}/redrive").status_code == 200
    delayed = next(t for t in submitted if t["status"] == "PENDING")
    assert stack.post(f"/api/v1/tasks/{delayed['id']}/cancel").status_code == 200
    sleeper = stack.submit("sleep", {"seconds": 60}, priority="high", timeout_seconds=120)

    def settled() -> bool:
        live = dict(query(stack.database_url, "SELECT status, count(*) FROM tasks GROUP BY status"))
        return (
            not live.get("QUEUED")
            and live.get("PROCESSING") == 1
            and not query(
                stack.database_url,
                "SELECT 1 FROM tasks WHERE status = 'PENDING' AND run_at < now() + interval '1 minute'",
            )
        )

    try:
        wait_for(settled, timeout=60, message="the load to drain")
    except AssertionError:
        live = query(stack.database_url, "SELECT status, name, priority, count(*) FROM tasks GROUP BY 1, 2, 3")
        raise AssertionError(f"not settled: {live}") from None
    got = scrape(stack)
    want = table_counters(stack)
    for key, counts in want.items():
        assert per_name(got, f"tasklane_tasks_{key}_total") == counts, key
    assert per_name(got, "tasklane_tasks_redriven_total")["fail"] == 2

    statuses = {
        (status, prio): int(n)
        for status, prio, n in query(
            stack.database_url, "SELECT status, priority, count(*) FROM tasks GROUP BY status, priority"
        )
    }
    for prom, status in [
        ("tasklane_ready_tasks", "QUEUED"),
        ("tasklane_delayed_tasks", "PENDING"),
        ("tasklane_in_flight_tasks", "PROCESSING"),
    ]:
        shown = {dict(k)["priority"]: int(v) for k, v in got[prom].items()}
        assert shown == {p: statuses.get((status, p), 0) for p in ("critical", "high", "normal", "low")}, prom
    assert {dict(k)["priority"]: v for k, v in got["tasklane_in_flight_tasks"].items()}["high"] == 1
    failed = sum(n for (status, _), n in statuses.items() if status == "FAILED")
    assert got["tasklane_dead_letter_tasks"][frozenset()] == failed > 0

    # Histograms: one queue-wait observation per claim, one run time per recorded outcome.
    assert per_name(got, "tasklane_task_queue_wait_seconds_count") == want["started"]
    outcomes = Counter(
        {
            name: int(n)
            for name, n in query(
                stack.database_url,
                "SELECT t.name, count(*) FROM task_events e JOIN tasks t ON t.id = e.task_id "
                "WHERE e.from_status = 'PROCESSING' GROUP BY t.name",
            )
        }
    )
    assert per_name(got, "tasklane_task_run_seconds_count") == outcomes
    assert got["tasklane_redis_up"][frozenset()] == 1
    assert time.time() - got["tasklane_last_sweep_timestamp_seconds"][frozenset()] < 30
    members = {dict(k)["structure"]: v for k, v in got["tasklane_redis_queue_members"].items()}
    assert members["leases"] == 1

    assert stack.post(f"/api/v1/tasks/{sleeper['id']}/cancel").status_code == 202


def test_metrics_need_the_bearer_token(mstack: Stack) -> None:
    url = mstack.base_url + "/metrics"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"X-API-Key": mstack.api_key}):
        r = requests.get(url, headers=headers, timeout=10)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_metrics_are_off_without_a_token(stack: Stack) -> None:
    r = requests.get(stack.base_url + "/metrics", headers={"Authorization": "Bearer anything"}, timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "metrics_disabled"


def test_health_reports_sweeper_and_migration(mstack: Stack) -> None:
    body = wait_for(
        lambda: (r := requests.get(mstack.base_url + "/health", timeout=10)).status_code == 200 and r.json()
    )
    assert body["status"] == "UP" and body["migration_version"] >= 3
    assert set(body["components"]) == {"db", "redis", "sweeper"}
    assert body["components"]["redis"]["latency_ms"] >= 0
    assert body["components"]["sweeper"]["status"] == "UP"
    assert body["components"]["sweeper"]["age_seconds"] < body["components"]["sweeper"]["stale_after_seconds"]
