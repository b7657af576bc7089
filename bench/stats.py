"""Pure helpers: percentiles, medians, /proc parsing, ratios.  No I/O except the
small /proc readers at the bottom (which take a path so tests can feed text)."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (``p`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    k = (len(xs) - 1) * (p / 100.0)
    lo = math.floor(k)
    hi = math.ceil(k)
    if lo == hi:
        return float(xs[int(k)])
    return float(xs[lo] + (xs[hi] - xs[lo]) * (k - lo))


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds, and the count."""
    return {
        "n": len(seconds),
        "p50_ms": percentile(seconds, 50) * 1000,
        "p95_ms": percentile(seconds, 95) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "max_ms": (max(seconds) * 1000) if seconds else math.nan,
    }


def median(values: Iterable[float]) -> float:
    xs = [v for v in values if v is not None and not math.isnan(v)]
    return float(statistics.median(xs)) if xs else math.nan


def spread(values: Iterable[float]) -> float:
    """(max - min) / median, as a fraction: how noisy the repeats were."""
    xs = [v for v in values if v is not None and not math.isnan(v)]
    if len(xs) < 2:
        return 0.0
    m = statistics.median(xs)
    return float((max(xs) - min(xs)) / m) if m else math.nan


def advantage(ours: float, theirs: float, *, higher_is_better: bool) -> float:
    """How many times better Tasklane is (>1: ours better, <1: theirs better)."""
    if ours is None or theirs is None or math.isnan(ours) or math.isnan(theirs):
        return math.nan
    if higher_is_better:
        return ours / theirs if theirs else math.inf
    return theirs / ours if ours else math.inf


def parse_proc_stat(text: str) -> tuple[int, int]:
    """(utime, stime) in clock ticks from the text of /proc/<pid>/stat.

    The command name (field 2) may contain spaces and parentheses, so split after
    the last ')'."""
    rest = text.rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state); utime is field 14, stime field 15.
    return int(rest[11]), int(rest[12])


def parse_ppid(text: str) -> int:
    return int(text.rsplit(")", 1)[1].split()[1])


def parse_status_kb(text: str, field: str) -> int | None:
    """A ``kB`` field (VmHWM, VmRSS, ...) of /proc/<pid>/status."""
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a whole process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            u, s = parse_proc_stat(f.read())
    except OSError:
        return math.nan
    return (u + s) / CLK_TCK


def proc_hwm_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) in MiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            kb = parse_status_kb(f.read(), "VmHWM")
    except OSError:
        return math.nan
    return kb / 1024 if kb is not None else math.nan


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = parse_ppid(f.read())
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def system_cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts[:8]]
    idle = vals[3] + vals[4]
    return float(sum(vals) - idle), float(sum(vals))


def fmt(value: Any, digits: int = 0) -> str:
    """A number for the table: thousands separators, NaN as 'n/a'."""
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return "n/a"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"
