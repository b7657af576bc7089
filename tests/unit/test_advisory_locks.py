"""Every advisory lock constant has one purpose: each is taken in one file only (the
migrations' runner, the event partitions of 0019, the archive of 0027, the metrics
fold).  Two purposes sharing one constant would make each skip its work while the
other holds it (the archive's try-lock once shared the fold's)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_LOCK = re.compile(r"advisory_(?:xact_)?lock\((\d[\d_]*)\)|_LOCK_ID = (\d[\d_]*)")
# A later migration that works under an earlier one's lock (the same purpose, a new
# function) says so, and its uses count as that migration's.
_SHARES = re.compile(r"-- shares advisory lock (\d+) with migration (\d{4})")


def test_each_advisory_lock_constant_belongs_to_one_file() -> None:
    files = [*(ROOT / "infra" / "migrations").glob("*.sql"), *(ROOT / "chalicelib").rglob("*.sql")]
    files += list((ROOT / "chalicelib").rglob("*.py"))
    users: dict[int, set[str]] = defaultdict(set)
    migrations = {p.name[:4]: p.name for p in (ROOT / "infra" / "migrations").glob("*.sql")}
    for path in files:
        text = path.read_text()
        owner = {int(lock): migrations[number] for lock, number in _SHARES.findall(text)}
        for m in _LOCK.finditer(text):
            lock = int((m.group(1) or m.group(2)).replace("_", ""))
            users[lock].add(owner.get(lock, path.name))
    assert len(users) >= 4, users  # migrations, event partitions, archive, metrics fold
    shared = {lock: names for lock, names in users.items() if len(names) > 1}
    assert not shared, f"advisory lock constants taken in more than one file: {shared}"


def test_a_shared_lock_names_a_migration_that_takes_it() -> None:
    """A ``shares advisory lock`` line must point at a migration that takes that lock,
    or it would hide a second purpose behind a wrong claim."""
    migrations = {p.name[:4]: p.read_text() for p in (ROOT / "infra" / "migrations").glob("*.sql")}
    for text in migrations.values():
        for lock, number in _SHARES.findall(text):
            assert number in migrations, f"no migration {number}"
            assert f"advisory_xact_lock({lock})" in migrations[number], (lock, number)
