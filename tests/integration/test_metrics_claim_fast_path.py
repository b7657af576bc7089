"""The metrics trigger's claim fast path (migration 0025) writes exactly the rows the
general query writes for the same claim events."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from chalicelib.container import Container

# Waits (started - enqueued, seconds) on a bound, between bounds, negative (counted as
# 0), past the last finite bound, and the same wait twice.
WAITS = [0.0, 0.005, 0.007, 1.0, 1.0, 2.6, -3.0, 4000.0]

_INSERT = """
INSERT INTO task_events (task_id, from_status, to_status, attempt, actor, task_name,
                         task_enqueued_at, task_started_at)
SELECT gen_random_uuid(), w.from_status, 'PROCESSING', 1, 'test', %(name)s,
       now() - make_interval(secs => w.wait), now()
FROM unnest(%(waits)s::float8[], %(froms)s::text[]) AS w(wait, from_status)
"""


def _deltas(conn: psycopg.Connection[Any], name: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT metric, le, sum(n), round(sum(total)::numeric, 6) FROM task_metric_deltas"
        " WHERE name = %s GROUP BY 1, 2 ORDER BY 1, 2",
        (name,),
    ).fetchall()


def test_claim_events_alone_count_as_the_general_query_counts_them(database_url: str, rt: Container) -> None:
    fast, general = f"fast-{uuid.uuid4().hex[:8]}", f"general-{uuid.uuid4().hex[:8]}"
    froms = ["QUEUED" if i % 3 else "PENDING" for i in range(len(WAITS))]
    with psycopg.connect(database_url, autocommit=True) as conn:
        # Claim events only: the fast path.
        conn.execute(_INSERT, {"name": fast, "waits": WAITS, "froms": froms})
        # The same events in a statement with one more, of another kind (a cancel of
        # another name): the general query.
        conn.execute(
            f"WITH noise AS (INSERT INTO task_events (task_id, from_status, to_status, attempt, actor, task_name)"
            f" VALUES (gen_random_uuid(), 'QUEUED', 'CANCELLED', 0, 'test', %(noise)s)) {_INSERT}",
            {"name": general, "waits": WAITS, "froms": froms, "noise": f"noise-{general}"},
        )
        got, want = _deltas(conn, fast), _deltas(conn, general)
    assert got == want
    metrics = {m for m, *_ in got}
    assert metrics == {"started", "queue_wait"}
    assert sum(n for m, _, n, _ in got if m == "queue_wait") == len(WAITS)
