"""The SQL the application sends leaves no session state, so RDS Proxy (or PgBouncer
in transaction mode) never has to pin a connection (infra/deploy.md, "RDS Proxy").
Statements that set session state are refused here by name; the integration test
``test_proxy_sessions`` checks a real connection after real work."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from chalicelib.adapters.postgres.sqlfile import queries

ROOT = Path(__file__).resolve().parents[2]
SQL_SOURCES = sorted((ROOT / "chalicelib" / "adapters" / "postgres").glob("*.py"))

# Each pins a proxied session (AWS, "Avoiding pinning an RDS Proxy", PostgreSQL).
_PINNING_COMMANDS = {
    "SET",
    "RESET",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "DISCARD",
    "LISTEN",
    "UNLISTEN",
    "DECLARE",
    "LOAD",
}
_PINNING_CALL = re.compile(r"\b(nextval|setval|currval|lastval|pg_advisory_lock\w*|pg_try_advisory_lock\w*)\s*\(", re.I)
_TEMP = re.compile(r"\bCREATE\s+(GLOBAL\s+|LOCAL\s+)?(TEMP|TEMPORARY|UNLOGGED\s+TEMP)\b", re.I)
_SET_CONFIG = re.compile(r"set_config\s*\(([^()]*)\)", re.I)


def _sql_texts() -> dict[str, str]:
    """Every named query, and every string constant of the PostgreSQL adapter that
    looks like SQL (migrate.py's lock, for one)."""
    texts = {f"queries.sql:{name}": sql for name, sql in queries().items()}
    for path in SQL_SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(r"\bSELECT\b", node.value):
                texts[f"{path.name}:{node.lineno}"] = node.value
    return texts


def _commands(sql: str) -> list[str]:
    """The first word of each statement (``UPDATE ... SET`` is an UPDATE)."""
    text = re.sub(r"--[^\n]*", "", sql)
    return [stmt.split()[0].upper() for stmt in text.split(";") if stmt.strip()]


def _pinning(sql: str) -> str | None:
    for command in _commands(sql):
        if command in _PINNING_COMMANDS:
            return command
    m = _PINNING_CALL.search(sql) or _TEMP.search(sql)
    return m.group(0) if m else None


def test_no_statement_sets_session_state() -> None:
    bad = {where: found for where, sql in _sql_texts().items() if (found := _pinning(sql))}
    assert bad == {}


def test_every_set_config_is_transaction_local() -> None:
    calls = [(where, m.group(1)) for where, sql in _sql_texts().items() for m in _SET_CONFIG.finditer(sql)]
    assert calls, "the claim and the heartbeat set synchronous_commit for their own transaction"
    assert [c for c in calls if not re.search(r",\s*true\s*$", c[1], re.I)] == []


def test_advisory_locks_are_transaction_scoped() -> None:
    locks = [m.group(0) for sql in _sql_texts().values() for m in re.finditer(r"pg_\w*advisory\w*", sql)]
    assert locks and all("_xact_" in lock for lock in locks), locks


def test_the_detectors_catch_what_they_are_for() -> None:
    assert _pinning("SELECT 1;\n-- note\nSET TRANSACTION ISOLATION LEVEL SERIALIZABLE") == "SET"
    assert _pinning("WITH u AS (UPDATE tasks\nSET status = 'QUEUED' RETURNING id) SELECT * FROM u") is None
    assert _pinning("SELECT pg_advisory_lock(1)") and _pinning("select nextval('s')")
    assert _pinning("SELECT pg_try_advisory_xact_lock(1)") is None
    assert _pinning("CREATE TEMP TABLE x (a int)") and _pinning("LISTEN tasks") == "LISTEN"
