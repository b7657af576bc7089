"""The metrics trigger's fast path for claims and completions (migrations 0025, 0026)
writes exactly the rows the general query writes for the same events."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from chalicelib.container import Container

# Waits (claims: started - enqueued; completions: now() - started; seconds) on a bound,
# between bounds, negative (counted as 0), past the last finite bound, and one twice.
WAITS = [0.0, 0.005, 0.007, 1.0, 1.0, 2.6, -3.0, 4000.0]

# The events' transitions: a claim from QUEUED or PENDING, or a completion.
_INSERT = """
INSERT INTO task_events (task_id, from_status, to_status, attempt, actor, task_name,
                         task_enqueued_at, task_started_at)
SELECT gen_random_uuid(), w.from_status, w.to_status, 1, 'test', %(name)s,
       CASE WHEN w.to_status = 'PROCESSING' THEN now() - make_interval(secs => w.wait) END,
       CASE WHEN w.to_status = 'PROCESSING' THEN now() ELSE now() - make_interval(secs => w.wait) END
FROM unnest(%(waits)s::float8[], %(froms)s::text[], %(tos)s::text[]) AS w(wait, from_status, to_status)
"""

KINDS = {
    "claims": [("QUEUED" if i % 3 else "PENDING", "PROCESSING") for i in range(len(WAITS))],
    "completions": [("PROCESSING", "COMPLETED")] * len(WAITS),
    "both": [("QUEUED", "PROCESSING") if i % 2 else ("PROCESSING", "COMPLETED") for i in range(len(WAITS))],
}


def _deltas(conn: psycopg.Connection[Any], name: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT metric, le, sum(n), round(sum(total)::numeric, 6) FROM task_metric_deltas"
        " WHERE name = %s GROUP BY 1, 2 ORDER BY 1, 2",
        (name,),
    ).fetchall()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_claims_and_completions_count_as_the_general_query_counts_them(
    database_url: str, rt: Container, kind: str
) -> None:
    fast, general = f"fast-{uuid.uuid4().hex[:8]}", f"general-{uuid.uuid4().hex[:8]}"
    params = {"waits": WAITS, "froms": [f for f, _ in KINDS[kind]], "tos": [t for _, t in KINDS[kind]]}
    with psycopg.connect(database_url) as conn:
        # One transaction: now() is the same for both statements, so the run times are.
        # These events alone: the fast path.
        conn.execute(_INSERT, {**params, "name": fast})
        # The same events in a statement with one more, of another kind (a cancel of
        # another name): the general query.
        conn.execute(
            f"WITH noise AS (INSERT INTO task_events (task_id, from_status, to_status, attempt, actor, task_name)"
            f" VALUES (gen_random_uuid(), 'QUEUED', 'CANCELLED', 0, 'test', %(noise)s)) {_INSERT}",
            {**params, "name": general, "noise": f"noise-{general}"},
        )
        got, want = _deltas(conn, fast), _deltas(conn, general)
    assert got == want
    counted = {"claims": {"started", "queue_wait"}, "completions": {"completed", "run"}}
    assert {m for m, *_ in got} == counted.get(kind, counted["claims"] | counted["completions"])
    assert sum(n for m, _, n, _ in got if m in ("queue_wait", "run")) == len(WAITS)


def test_a_failed_outcome_is_not_taken_for_a_completion(database_url: str, rt: Container) -> None:
    """An outcome with an error, or a completion mixed with a retry, takes the general
    query: 'failed' and 'retried' are counted."""
    name = f"mixed-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            _INSERT + " UNION ALL SELECT gen_random_uuid(), 'PROCESSING', 'PENDING',"
            " 1, 'test', %(name)s, NULL, now() - interval '1 second'",
            {"name": name, "waits": [0.5], "froms": ["PROCESSING"], "tos": ["COMPLETED"]},
        )
        metrics = {m for m, *_ in _deltas(conn, name)}
    assert metrics == {"completed", "failed", "retried", "run"}
