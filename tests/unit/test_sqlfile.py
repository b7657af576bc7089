import pytest

from chalicelib.adapters.postgres.migrate import default_dir, load
from chalicelib.adapters.postgres.sqlfile import parse_queries, queries


def test_parse_queries_splits_named_blocks() -> None:
    text = "-- header\n-- name: a\nSELECT 1;\n\n-- name: b\n-- why\nSELECT 2\n"
    assert parse_queries(text) == {"a": "SELECT 1", "b": "-- why\nSELECT 2"}


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")


def test_every_shipped_query_uses_bound_parameters_only() -> None:
    for name, sql in queries().items():
        assert "{" not in sql, f"{name} looks like a format string"
        assert "%s" not in sql.replace("%(", ""), f"{name} should use named parameters"


def test_migrations_load_in_order(tmp_path: object) -> None:
    migrations = load(__import__("chalicelib.adapters.postgres.migrate", fromlist=["default_dir"]).default_dir())
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))


def test_migration_gap_is_an_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "0001_a.sql").write_text("SELECT 1")
    (tmp_path / "0003_c.sql").write_text("SELECT 1")
    with pytest.raises(ValueError, match="0002 is missing"):
        load(tmp_path)


def test_only_claim_and_heartbeat_commit_without_waiting_for_the_wal() -> None:
    """Submits and outcomes stay durable; a lost claim or heartbeat only makes an
    attempt run again (see the comment on ``claim`` in queries.sql).  The claim's
    statement is the function tasklane_claim (migrations 0024, 0028), which sets it there."""
    relaxed = {name for name, sql in queries().items() if "synchronous_commit" in sql}
    assert relaxed == {"extend_leases"}
    # transaction-local (true): the pooled connection's later statements are durable again
    assert "set_config('synchronous_commit', 'off', true)" in queries()["extend_leases"]
    assert "CROSS JOIN nosync" in queries()["extend_leases"] or "FROM nosync" in queries()["extend_leases"]
    assert "tasklane_claim(" in queries()["claim"]
    # The function as the last migration that defines it leaves it.
    claim_fn = [m for m in load(default_dir()) if "FUNCTION tasklane_claim(" in m.sql][-1]
    assert "set_config('synchronous_commit', 'off', true)" in claim_fn.sql
    # Setting it as a SET clause of the function would undo it when the call returns.
    assert "SET synchronous_commit" not in claim_fn.sql


def test_the_finish_is_a_function_whose_plans_are_kept() -> None:
    """As a statement the finish was planned on every call (custom plans: bench/RESULTS.md
    round 8); tasklane_finish (migration 0038) keeps generic plans that can only probe."""
    assert "tasklane_finish(" in queries()["finish"]
    finish_fn = [m for m in load(default_dir()) if "FUNCTION tasklane_finish(" in m.sql][-1]
    for setting in ("force_generic_plan", "enable_seqscan = off", "enable_bitmapscan = off", "enable_sort = off"):
        assert setting in finish_fn.sql, setting


def test_the_drain_statements_fit_psycopgs_query_cache() -> None:
    """psycopg converts a query's ``%(name)s`` placeholders with a regex and caches the
    result only for queries up to MAX_CACHED_STATEMENT_LENGTH bytes; a longer one is
    parsed again on every call.  The comments count: they are part of the text sent."""
    from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH

    for name in ("claim", "finish", "extend_leases"):
        assert len(queries()[name].encode()) <= MAX_CACHED_STATEMENT_LENGTH, name
