"""Applies the numbered SQL migrations in ``infra/migrations``.

Idempotent (applied versions are recorded in ``schema_migrations``) and safe to
run from many processes at once: a transaction-scoped advisory lock serialises
them, and each migration commits together with its version row.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg

# Any constant works; it only has to be the same for every Tasklane process.
_LOCK_ID = 7_301_955_001
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def default_dir() -> Path:
    """``$TASKLANE_MIGRATIONS_DIR`` or ``infra/migrations`` of this checkout."""
    env = os.environ.get("TASKLANE_MIGRATIONS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "infra" / "migrations"


def load(directory: Path) -> list[Migration]:
    """The migrations in ``directory``, ordered by version; gaps or duplicates are errors."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        m = _FILE.match(path.name)
        if not m:
            raise ValueError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text()))
    for expected, mig in enumerate(found, start=1):
        if mig.version != expected:
            raise ValueError(f"migration {expected:04d} is missing (found {mig.version:04d}_{mig.name})")
    return found


def migrate(database_url: str, directory: Path | None = None) -> list[int]:
    """Apply pending migrations; returns the versions applied by this call."""
    migrations = load(directory or default_dir())
    applied_now: list[int] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.transaction():
            # Under the lock: two first runs must not both try to create the table.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        for mig in migrations:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (mig.version,)).fetchone()
                if done:
                    continue
                conn.execute(mig.sql)  # no parameters: sent as a script
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (mig.version, mig.name),
                )
                applied_now.append(mig.version)
    return applied_now


def current_version(conn: psycopg.Connection[object]) -> int:
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0  # type: ignore[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Apply Tasklane's SQL migrations.")
    parser.add_argument("--database-url", default=os.environ.get("TASKLANE_DATABASE_URL"))
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("set TASKLANE_DATABASE_URL or pass --database-url")
    applied = migrate(args.database_url)
    print(f"applied {applied}" if applied else "schema is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
