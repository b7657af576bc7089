"""Where the time goes: py-spy sampling of the drainer subprocesses during a drain run
or a steady-rate latency run, summarised as the hottest functions of the drain loop's
thread and of the executor threads.  ``python -m bench --profile``."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import ours
from bench.env import RESULTS_DIR, BenchEnv, Proc

PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


class Spy:
    def __init__(self, seconds: float, tag: str) -> None:
        self.seconds = seconds
        self.tag = tag
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []

    def attach(self, procs: list[Proc]) -> None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        for p in procs:
            out = RESULTS_DIR / f"profile-{self.tag}-{p.pid}.txt"
            argv = [
                PY_SPY,
                "record",
                "--pid",
                str(p.pid),
                "--duration",
                str(int(self.seconds)),
                "--rate",
                "250",
                "--format",
                "raw",
                "--threads",
                "--gil",
                "-o",
                str(out),
            ]
            self.running.append((subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out))
        time.sleep(0.5)  # py-spy attaches

    def collect(self) -> list[Path]:
        outs = []
        for popen, out in self.running:
            try:
                popen.wait(timeout=self.seconds + 30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
            if out.exists():
                outs.append(out)
        return outs


def summarize(paths: list[Path], top: int = 18) -> dict[str, Any]:
    """Self and inclusive sample shares per function (file:line dropped)."""
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    main_total = 0
    exec_total = 0
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            frames = [_short(f) for f in stack.split(";")]
            total += n
            if "MainThread" in frames[0]:
                main_total += n
            elif "tasklane-exec" in frames[0]:
                exec_total += n
            self_c[frames[-1]] += n
            for f in set(frames[1:]):
                incl[f] += n

    def share(c: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(n / total * 100, 1)) for f, n in c.most_common(top)] if total else []

    return {
        "samples_holding_gil": total,
        "main_thread_share": round(main_total / total * 100, 1) if total else 0,
        "executor_threads_share": round(exec_total / total * 100, 1) if total else 0,
        "self": share(self_c),
        "inclusive": share(incl),
    }


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"
    if " (" in frame and frame.endswith(")"):
        name, _, where = frame.partition(" (")
        file = where.rstrip(")").rsplit(":", 1)[0].rsplit("/", 1)[-1]
        return f"{name} ({file})"
    return frame


def profile_drain(env: BenchEnv, *, n: int, seconds: float) -> dict[str, Any]:
    spy = Spy(seconds, "drain")
    result = ours.drain_run(env, drainers=2, n=n, on_release=spy.attach)
    return {"run": result, "profile": summarize(spy.collect())}


def profile_latency(env: BenchEnv, *, count: int, seconds: float) -> dict[str, Any]:
    spy = Spy(seconds, "latency")
    result = ours.latency_run(env, per_second=200, count=count, on_start=spy.attach)
    return {"run": result, "profile": summarize(spy.collect())}
