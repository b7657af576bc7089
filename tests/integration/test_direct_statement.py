"""``direct.DirectStatement``: the rows a cursor would return, through libpq directly,
prepared once per session (or unnamed behind a proxy), again after the session lost it;
its errors are the driver's, and the connection stays usable after one."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.rows import dict_row

from chalicelib.adapters.postgres.direct import DirectStatement, Unsuitable, text_param
from chalicelib.config import Settings
from chalicelib.container import Container
from chalicelib.services.submit import submit
from tests.helpers import drain_once, query, request
from tests.state import fast_settings

SQL = """SELECT %(id)s::uuid::text AS id, %(n)s::int AS n, %(x)s::float8 AS x, %(at)s::timestamptz AS at,
                %(doc)s::jsonb AS doc, %(none)s::text AS none, %(id)s::uuid IS NOT NULL AS again,
                generate_series(1, %(n)s::int) AS i"""
PARAMS = {
    "id": str(uuid.uuid4()),
    "n": 3,
    "x": 0.1,
    "at": datetime(2026, 12, 3, 15, 0, 0, 123456, tzinfo=UTC),
    "doc": '{"a": [1, "é"]}',
    "none": None,
}


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[dict[str, object]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
        yield c


@pytest.mark.parametrize("prepare", [True, False], ids=["prepared", "unprepared"])
def test_rows_are_the_cursors(conn: psycopg.Connection[dict[str, object]], prepare: bool) -> None:
    statement = DirectStatement("tasklane_test_rows", SQL, prepare=prepare)
    expected = conn.execute(SQL, PARAMS).fetchall()
    for _ in range(3):  # the first prepares, the rest reuse it
        assert statement.rows(conn, PARAMS) == expected
    assert expected[0]["doc"] == {"a": [1, "é"]} and expected[2]["i"] == 3


def test_a_session_that_lost_the_statement_gets_it_again(conn: psycopg.Connection[dict[str, object]]) -> None:
    statement = DirectStatement("tasklane_test_lost", SQL, prepare=True)
    statement.rows(conn, PARAMS)
    conn.execute("DEALLOCATE ALL")
    assert len(statement.rows(conn, PARAMS)) == 3


def test_an_error_is_the_drivers_and_the_connection_stays_usable(
    conn: psycopg.Connection[dict[str, object]],
) -> None:
    statement = DirectStatement("tasklane_test_error", SQL, prepare=True)
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        statement.rows(conn, {**PARAMS, "id": "not-a-uuid"})
    assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    assert len(statement.rows(conn, PARAMS)) == 3


def test_values_libpq_cannot_carry_are_refused_before_sending() -> None:
    with pytest.raises(Unsuitable):
        text_param("a\x00b")
    with pytest.raises(Unsuitable):
        text_param("\udcff")
    with pytest.raises(Unsuitable):
        text_param(True)
    with pytest.raises(Unsuitable):
        text_param(b"bytes")
    assert text_param(None) is None and text_param(2.5) == b"2.5" and text_param(-3) == b"-3"


def test_a_value_libpq_cannot_carry_goes_through_psycopg(conn: psycopg.Connection[dict[str, object]]) -> None:
    statement = DirectStatement("tasklane_test_fallback", "SELECT %(b)s::bool AS b, %(t)s::text AS t", prepare=True)
    assert statement.rows(conn, {"b": True, "t": "x"}) == [{"b": True, "t": "x"}]
    with pytest.raises(psycopg.DataError, match="NUL"):
        statement.rows(conn, {"b": False, "t": "a\x00b"})  # refused whole, never cut short


def test_text_sent_past_psycopg_is_stored_as_written_when_the_connection_is_not_utf8(
    database_url: str, redis_url: str, make_rt: Callable[..., Container]
) -> None:
    """The single submit's INSERT, the claim and the sent finish go through libpq
    directly with UTF-8 text; on a connection of another client_encoding they take
    psycopg's path, which encodes for it (before, 'café' was stored as 'cafÃ©')."""
    make_rt()  # clean tables
    sep = "&" if "?" in database_url else "?"
    settings: Settings = fast_settings(f"{database_url}{sep}client_encoding=LATIN1", redis_url)
    rt = Container.build(settings)
    try:
        rt.registry.task("échec")(lambda payload, ctx: (_ for _ in ()).throw(ValueError("raté: ü")))
        rt.registry.task("réussite")(lambda payload, ctx: {"mot": "déjà"})
        failed = submit(rt, "ténant", request("échec", max_retries=0)).task.id
        done = submit(rt, "ténant", request("réussite")).task.id
        assert drain_once(rt, seconds=5.0)["completed"] == 1
    finally:
        rt.close()
    rows = query(
        database_url,
        "SELECT id::text, tenant, name, last_error, result->>'mot' FROM tasks WHERE id = ANY(%s::uuid[])",
        [failed, done],
    )
    assert {r[0]: r[1:] for r in rows} == {
        failed: ("ténant", "échec", "raté: ü", None),
        done: ("ténant", "réussite", None, "déjà"),
    }
