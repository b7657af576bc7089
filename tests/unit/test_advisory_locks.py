"""Every advisory lock constant has one purpose: each is taken in one file only (the
migrations' runner, the event partitions of 0019, the archive of 0027, the metrics
fold, and in the two-int form, key ``7301955, *``, a submit in flight: the submit's
``submit_lock`` takes ``(7301955, uuid_hash(id))`` before its INSERT and holds it until
the commit, and the claim of 0042 waits for it).  Two purposes sharing one constant would
make each skip its work while the other holds it (the archive's try-lock once shared the
fold's).  The two-int form is a key space of its own (``pg_locks.objsubid`` 2), so
``7301955, *`` is not ``7301955``."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The bigint form, (N), and the two-int form, (N, <anything>): the key "N, *".
_LOCK = re.compile(r"advisory_(?:xact_)?lock(?:_shared)?\((\d[\d_]*)(\)|,)|_LOCK_ID = (\d[\d_]*)")
# A later migration or statement that works under an earlier migration's lock (the same
# purpose, a new function; the submit's side of 0042's wait) says so, and its uses
# count as that migration's.
_SHARES = re.compile(r"-- shares advisory lock (\d+(?:, \*)?) with migration (\d{4})")


def _keys(text: str) -> list[str]:
    """The advisory lock keys ``text`` takes: "N" (bigint) or "N, *" (two-int form)."""
    found = []
    for m in _LOCK.finditer(text):
        if m.group(3):
            found.append(str(int(m.group(3).replace("_", ""))))
        else:
            found.append(str(int(m.group(1).replace("_", ""))) + (", *" if m.group(2) == "," else ""))
    return found


def test_each_advisory_lock_constant_belongs_to_one_file() -> None:
    files = [*(ROOT / "infra" / "migrations").glob("*.sql"), *(ROOT / "chalicelib").rglob("*.sql")]
    files += list((ROOT / "chalicelib").rglob("*.py"))
    users: dict[str, set[str]] = defaultdict(set)
    migrations = {p.name[:4]: p.name for p in (ROOT / "infra" / "migrations").glob("*.sql")}
    for path in files:
        text = path.read_text()
        owner = {lock: migrations[number] for lock, number in _SHARES.findall(text)}
        for lock in _keys(text):
            users[lock].add(owner.get(lock, path.name))
    # migrations, event partitions, archive, metrics fold, a submit in flight
    assert len(users) >= 5, users
    assert users["7301955, *"] == {"0042_claim_waits_for_inflight_submit.sql"}, users
    shared = {lock: names for lock, names in users.items() if len(names) > 1}
    assert not shared, f"advisory lock constants taken in more than one file: {shared}"


def test_a_shared_lock_names_a_migration_that_takes_it() -> None:
    """A ``shares advisory lock`` line must point at a migration that takes that lock,
    or it would hide a second purpose behind a wrong claim."""
    migrations = {p.name[:4]: p.read_text() for p in (ROOT / "infra" / "migrations").glob("*.sql")}
    for text in migrations.values():
        for lock, number in _SHARES.findall(text):
            assert number in migrations, f"no migration {number}"
            assert lock in _keys(migrations[number]), (lock, number)
