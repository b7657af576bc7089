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


def test_each_advisory_lock_constant_belongs_to_one_file() -> None:
    files = [*(ROOT / "infra" / "migrations").glob("*.sql"), *(ROOT / "chalicelib").rglob("*.sql")]
    files += list((ROOT / "chalicelib").rglob("*.py"))
    users: dict[int, set[str]] = defaultdict(set)
    for path in files:
        for m in _LOCK.finditer(path.read_text()):
            users[int((m.group(1) or m.group(2)).replace("_", ""))].add(path.name)
    assert len(users) >= 4, users  # migrations, event partitions, archive, metrics fold
    shared = {lock: names for lock, names in users.items() if len(names) > 1}
    assert not shared, f"advisory lock constants taken in more than one file: {shared}"
