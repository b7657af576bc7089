"""Operator commands of ``python -m tools.cli`` that talk to the HTTP API.

    python -m tools.cli submit noop --payload '{"x": 1}' --priority high --count 1000
    python -m tools.cli status <task id>
    python -m tools.cli tail [--name fail] [--status FAILED]
    python -m tools.cli dlq list [--name fail]
    python -m tools.cli dlq redrive --name fail | --id ID [--id ID ...] | --all
    python -m tools.cli dlq purge [--id ID ...] [--name fail] [--older-than 7d]
    python -m tools.cli cancel [--name noop] [--status QUEUED] [--priority low] [--older-than 1h]
    python -m tools.cli audit [--action schedule.created] [--limit 50]
    python -m tools.cli stats

The API is ``TASKLANE_API_URL`` (default http://127.0.0.1:8000) and the key is
``TASKLANE_API_KEY`` or ``--api-key``.  Every call goes through the Python client
(``tasklane_client``): one HTTP client in the project, with its safe retries
(idempotency keys on submits, 429 ``Retry-After``, backoff on 503 and network errors).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from tasklane_client import Client, NetworkError, NewTask, TasklaneError

from tools.cli import args as cliargs
from tools.cli.render import table

DEFAULT_API_URL = "http://127.0.0.1:8000"
# Retries after a connection error, a timeout, a 503 or a 429: enough for a blip (an API
# restarting), not the client's backoff of a long-running producer.  With 5, an API
# that is not running was "cannot reach" after 7.75 s of waiting (0.25 + 0.5 + 1 + 2 + 4);
# with 2, after at most 0.75 s.
CLI_RETRIES = 2
BATCH = 500  # the API's batch and bulk-redrive limit
FINAL = ("COMPLETED", "FAILED", "CANCELLED")
_EPSILON = timedelta(microseconds=1)


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = max(total, 0)
        self.label = label
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last_line = -1.0

    def update(self, n: int) -> None:
        self.done += n
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        frac = self.done / self.total if self.total else 1.0
        if self.tty:
            width = 30
            filled = int(width * min(frac, 1.0))
            bar = "█" * filled + "·" * (width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {frac:4.0%} {rate:,.0f}/s ")
            self.stream.flush()
        elif self.done >= self.total or time.monotonic() - self._last_line >= 2:
            self._last_line = time.monotonic()
            print(f"{self.label}: {self.done}/{self.total} ({frac:.0%}, {rate:,.0f}/s)", file=self.stream)

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _short_ts(iso: str | None) -> str | None:
    return iso[:19].replace("T", " ") if iso else None


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _run_time(task: dict[str, Any]) -> str:
    if not task.get("started_at") or not task.get("finished_at"):
        return "-"
    started = datetime.fromisoformat(task["started_at"])
    finished = datetime.fromisoformat(task["finished_at"])
    return _seconds((finished - started).total_seconds())


# --- commands -----------------------------------------------------------------------------


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    payload = args.payload if args.payload is not None else {}
    task = NewTask(args.name, payload, priority=args.priority, delay_seconds=args.delay)
    if args.count == 1:
        created = client.submit(args.name, payload, priority=args.priority, delay_seconds=args.delay)
        print(table([created.raw], ["id", "name", "status", "priority"]))
        return 0
    bar = Progress(args.count, f"submitting {args.name}")
    accepted = failed = 0
    first_error = ""
    remaining = args.count
    try:
        while remaining:
            n = min(BATCH, remaining)
            result = client.submit_many([task] * n)  # each item gets its own idempotency key
            accepted += result.created
            failed += result.failed
            if result.failed and not first_error:
                first_error = next(str(r.error) for r in result.results if r.error is not None)
            remaining -= n
            bar.update(n)
    finally:
        bar.close()
    elapsed = time.monotonic() - bar.started
    print(f"submitted {accepted} {args.name} task(s) in {elapsed:.1f} s ({accepted / max(elapsed, 1e-6):,.0f}/s)")
    if failed:
        print(f"{failed} rejected: {first_error}", file=sys.stderr)
        return 1
    return 0


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    task = client.get(args.id).raw
    events = client.events(args.id)
    fields = [
        ("id", task["id"]),
        ("name", task["name"]),
        ("status", task["status"] + (" (cancel requested)" if task.get("cancel_requested") else "")),
        ("priority", task["priority"]),
        ("attempts", f"{task['attempts']} of {task['max_retries'] + 1}"),
        ("created", _short_ts(task["created_at"])),
        ("started", _short_ts(task.get("started_at")) or "-"),
        ("finished", _short_ts(task.get("finished_at")) or "-"),
        ("run time", _run_time(task)),
    ]
    if task.get("last_error"):
        fields.append(("last error", f"{task.get('last_error_type') or 'Error'}: {task['last_error']}"))
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        print(f"{key.rjust(width)}  {value}")
    if task.get("result") is not None:
        print(f"{'result'.rjust(width)}  {json.dumps(task['result'])[:500]}")
    print()
    rows = [
        {
            "at": e.at,
            "transition": f"{e.from_status or 'new'} -> {e.to_status}",
            "attempt": e.attempt,
            "actor": e.actor,
            "error": f"{e.error_type}: {e.error[:80]}" if e.error else None,
        }
        for e in events
    ]
    print(table(rows, ["at", "transition", "attempt", "actor", "error"]))
    return 0


def _pages(client: Client, *, name: str | None, created_after: str) -> Iterator[list[dict[str, Any]]]:
    """Pages of tasks created after ``created_after``, newest first, as the API's JSON."""
    cursor = None
    while True:
        page = client.list_page(created_after=created_after, name=name, limit=500, cursor=cursor)
        yield [task.raw for task in page.items]
        cursor = page.next_cursor
        if not cursor:
            return


def follow(
    client: Client,
    *,
    name: str | None,
    statuses: Sequence[str],
    since: datetime,
    emit: Callable[[dict[str, Any]], None],
    interval: float = 1.0,
    max_pages: int = 20,
    until: Callable[[], bool] = lambda: False,
) -> None:
    """Poll ``GET /api/v1/tasks?created_after=`` and emit each task once it is final.

    The window starts at the oldest task still waiting or running, so a task created
    long ago that finishes now is still seen; tasks already final when first seen are
    emitted at once."""
    seen: dict[str, str] = {}  # id -> created_at of tasks already emitted (or skipped)
    waiting: dict[str, str] = {}  # id -> created_at of tasks not final yet
    watermark = since.isoformat()
    while not until():
        newest = watermark
        for pages, items in enumerate(_pages(client, name=name, created_after=watermark)):
            for task in items:
                newest = max(newest, task["created_at"])
                if task["id"] in seen:
                    continue
                if task["status"] in FINAL:
                    seen[task["id"]] = task["created_at"]
                    waiting.pop(task["id"], None)
                    if task["status"] in statuses:
                        emit(task)
                else:
                    waiting[task["id"]] = task["created_at"]
            if pages + 1 >= max_pages:
                break
        # Next window: from just before the oldest unfinished task, else from the newest seen.
        start = min(waiting.values(), default=newest)
        watermark = (datetime.fromisoformat(start) - _EPSILON).isoformat()
        seen = {i: c for i, c in seen.items() if c >= start}  # older ones cannot come back
        if until():
            return
        time.sleep(interval)


def cmd_tail(client: Client, args: argparse.Namespace) -> int:
    statuses = [args.status] if args.status else list(FINAL)
    since = datetime.now(UTC) - timedelta(seconds=args.since)
    deadline = time.monotonic() + args.duration if args.duration else None

    def emit(task: dict[str, Any]) -> None:
        err = (
            f"  {task.get('last_error_type')}: {(task.get('last_error') or '')[:80]}"
            if task["status"] == "FAILED"
            else ""
        )
        print(
            f"{_short_ts(task['finished_at']) or '-'}  {task['status']:<9}  {task['name']:<16}  {task['id']}"
            f"  attempts={task['attempts']}  run={_run_time(task)}{err}",
            flush=True,
        )

    try:
        follow(
            client,
            name=args.name,
            statuses=statuses,
            since=since,
            emit=emit,
            interval=args.interval,
            until=lambda: deadline is not None and time.monotonic() >= deadline,
        )
    except KeyboardInterrupt:
        pass
    return 0


def cmd_dlq_list(client: Client, args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for task in client.dead_letters(name=args.name, page_size=min(args.limit, 500)):
        rows.append(dict(task.raw))
        if len(rows) >= args.limit:
            break
    for r in rows:
        r["failed_at"] = _short_ts(r.get("finished_at"))
        r["error"] = f"{r.get('last_error_type') or 'Error'}: {(r.get('last_error') or '')[:60]}"
    print(table(rows, ["id", "name", "priority", "attempts", "failed_at", "error"]) if rows else "no dead letters")
    return 0


def cmd_dlq_redrive(client: Client, args: argparse.Namespace) -> int:
    if args.ids:
        ids = list(dict.fromkeys(args.ids))
    else:
        ids = [t.id for t in client.dead_letters(name=args.name, page_size=500)]
    if not ids:
        print("no dead letters to redrive")
        return 0
    bar = Progress(len(ids), "redriving")
    redriven = 0
    try:
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            redriven += client.redrive_many(ids=chunk).redriven
            bar.update(len(chunk))
    finally:
        bar.close()
    print(f"redriven {redriven} of {len(ids)} task(s)")
    return 0 if redriven == len(ids) else 1


def cmd_dlq_purge(client: Client, args: argparse.Namespace) -> int:
    """Delete dead letters for good: those matching every filter given.  The API
    purges at most 500 a call, so this calls until nothing more matches."""
    if not (args.ids or args.name or args.older_than):
        print("error: give --id, --name and/or --older-than: a purge never empties the queue unasked", file=sys.stderr)
        return 2
    failed_before = datetime.now(UTC) - args.older_than if args.older_than else None
    id_chunks: list[list[str] | None] = [None]
    if args.ids:
        ids = list(dict.fromkeys(args.ids))
        id_chunks = [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)]
    purged = 0
    for chunk in id_chunks:
        while True:
            result = client.purge_dead_letters(ids=chunk, name=args.name, failed_before=failed_before)
            purged += result.purged
            if not result.more or not result.purged:
                break
    print(f"purged {purged} dead letter(s)")
    return 0


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    """Cancel the live tasks matching every filter given (waiting ones are cancelled,
    running ones asked to stop).  The API cancels at most 500 a call, so this calls
    until nothing more matches."""
    if not (args.name or args.status or args.priority or args.older_than):
        print("error: give --name, --status, --priority and/or --older-than", file=sys.stderr)
        return 2
    created_before = datetime.now(UTC) - args.older_than if args.older_than else None
    cancelled = requested = 0
    while True:
        result = client.cancel_many(
            status=args.status, name=args.name, priority=args.priority, created_before=created_before
        )
        cancelled += result.cancelled
        requested += result.cancel_requested
        if not result.more or not (result.cancelled or result.cancel_requested):
            break
    print(f"cancelled {cancelled} task(s), asked {requested} running task(s) to stop")
    return 0


def cmd_audit(client: Client, args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for entry in client.audit(action=args.action, page_size=min(args.limit, 500)):
        subject = f"{entry.subject_type}:{entry.subject_id}" if entry.subject_id else entry.subject_type
        details = json.dumps(entry.details, separators=(",", ":"), sort_keys=True)
        rows.append(
            {
                "at": _short_ts(entry.raw.get("at")),
                "actor": entry.actor,
                "action": entry.action,
                "subject": subject,
                "details": details if len(details) <= 80 else details[:79] + "…",
            }
        )
        if len(rows) >= args.limit:
            break
    print(table(rows, ["at", "actor", "action", "subject", "details"]) if rows else "no audit entries")
    return 0


def cmd_stats(client: Client, args: argparse.Namespace) -> int:
    s = client.stats().raw
    t = s["totals"]
    sweeper = s.get("sweeper", {})
    print(f"tenant {s['tenant']}: today since {_short_ts(s['today_since'])} UTC")
    print(
        f"submitted {t['submitted']}  completed {t['completed']}  failed {t['failed']}  cancelled {t['cancelled']}"
        f"  |  queue {t['queue_size']} ({t['queued']} ready, {t['pending']} delayed)  running {t['processing']}"
        f"  dead letters {t['dead_letters']}  |  avg run {_seconds(t['avg_run_seconds'])}"
        f"  avg wait {_seconds(t['avg_wait_seconds'])}  |  sweeper {sweeper.get('status', '?')}"
    )
    print()
    cols = ["submitted", "completed", "failed", "queued", "pending", "processing", "dead_letters"]
    prio = [{**p, "avg_run": _seconds(p["avg_run_seconds"])} for p in s["by_priority"]]
    print(table(prio, ["priority", *cols, "avg_run"]))
    print()
    names = [{**n, "avg_run": _seconds(n["avg_run_seconds"])} for n in s["by_name"]]
    print(table(names, ["name", *cols, "avg_run"]) if names else "no tasks today")
    return 0


# --- wiring -------------------------------------------------------------------------------


def _tail_times(tail: argparse.ArgumentParser) -> None:
    """``tail``'s times: finite, and a poll interval and duration above zero."""
    a_year = 31_536_000
    since_help = "also show tasks created this many seconds ago"
    tail.add_argument("--since", type=cliargs.number(0, a_year), default=60.0, help=since_help)
    tail.add_argument("--interval", type=cliargs.number(0, 3600, open_lo=True), default=1.0, help="poll interval (s)")
    tail.add_argument("--duration", type=cliargs.number(0, a_year, open_lo=True), default=None, help="stop after (s)")


def add_commands(sub: Any) -> None:
    """Add the API commands to ``python -m tools.cli``'s subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api-url", default=None, help=f"default $TASKLANE_API_URL or {DEFAULT_API_URL}")
    common.add_argument("--api-key", default=None, help="default $TASKLANE_API_KEY")

    submit = sub.add_parser("submit", parents=[common], help="submit tasks (bulk with --count, via the batch API)")
    submit.add_argument("name")
    submit.add_argument("--payload", type=cliargs.json_object, default=None, help="a JSON object")
    submit.add_argument(
        "--priority",
        default=None,
        choices=["critical", "high", "normal", "low"],
        help="default: the task type's own priority, else normal",
    )
    submit.add_argument("--delay", type=cliargs.number(0, 31_536_000), default=None, help="seconds before it may run")
    submit.add_argument("--count", type=_positive, default=1)
    submit.set_defaults(api=cmd_submit)

    status = sub.add_parser("status", parents=[common], help="a task with its history")
    status.add_argument("id")
    status.set_defaults(api=cmd_status)

    tail = sub.add_parser("tail", parents=[common], help="follow tasks as they finish (Ctrl-C stops)")
    tail.add_argument("--name", default=None)
    tail.add_argument("--status", default=None, choices=list(FINAL))
    _tail_times(tail)
    tail.set_defaults(api=cmd_tail)

    dlq = sub.add_parser("dlq", help="the dead-letter queue")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    lst = dlq_sub.add_parser("list", parents=[common], help="dead letters, newest first")
    lst.add_argument("--name", default=None)
    lst.add_argument("--limit", type=_positive, default=50)
    lst.set_defaults(api=cmd_dlq_list)
    redrive = dlq_sub.add_parser("redrive", parents=[common], help="send dead letters back to the queue")
    which = redrive.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="ids", action="append", help="a task id (repeatable)")
    which.add_argument("--name", default=None, help="every dead letter of this task name")
    which.add_argument("--all", action="store_true", help="every dead letter of the tenant")
    redrive.set_defaults(api=cmd_dlq_redrive)
    purge = dlq_sub.add_parser(
        "purge", parents=[common], help="delete dead letters for good (those matching every filter given)"
    )
    purge.add_argument("--id", dest="ids", action="append", help="a task id (repeatable)")
    purge.add_argument("--name", default=None, help="only dead letters of this task name")
    purge.add_argument("--older-than", type=_age, default=None, help="only those failed longer ago, e.g. 7d, 12h, 30m")
    purge.set_defaults(api=cmd_dlq_purge)

    _add_cancel(sub, common)
    audit = sub.add_parser("audit", parents=[common], help="the tenant's audit log, newest first")
    audit.add_argument("--action", default=None, help="only this action, e.g. schedule.created")
    audit.add_argument("--limit", type=_positive, default=50)
    audit.set_defaults(api=cmd_audit)

    stats = sub.add_parser("stats", parents=[common], help="today's numbers by priority and task name")
    stats.set_defaults(api=cmd_stats)


def _add_cancel(sub: Any, common: argparse.ArgumentParser) -> None:
    cancel = sub.add_parser("cancel", parents=[common], help="cancel live tasks matching every filter given")
    cancel.add_argument("--name", default=None, help="only tasks of this task name")
    cancel.add_argument("--status", choices=["PENDING", "QUEUED", "PROCESSING"], default=None)
    cancel.add_argument("--priority", choices=["critical", "high", "normal", "low"], default=None)
    cancel.add_argument("--older-than", type=_age, default=None, help="only those created longer ago, e.g. 1h")
    cancel.set_defaults(api=cmd_cancel)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _age(text: str) -> timedelta:
    """``--older-than``: a number and a unit (s, m, h, d), e.g. ``7d``."""
    unit = text[-1:].lower()
    try:
        value = float(text[:-1]) if unit in _AGE_UNITS else float("nan")
    except ValueError:
        value = float("nan")
    if not value >= 0 or value * _AGE_UNITS.get(unit, 0) > 3650 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number and a unit (s, m, h or d), e.g. 7d")
    return timedelta(seconds=value * _AGE_UNITS[unit])


def run(args: argparse.Namespace) -> int:
    """Run an API command; returns the exit code."""
    api_url = args.api_url or os.environ.get("TASKLANE_API_URL") or DEFAULT_API_URL
    api_key = args.api_key or os.environ.get("TASKLANE_API_KEY")
    if not api_key:
        print("error: set TASKLANE_API_KEY or pass --api-key", file=sys.stderr)
        return 2
    if not (api_key.isascii() and api_key.isprintable() and api_key.strip() == api_key):
        # An HTTP header cannot carry it (a key read from a file with its line break):
        # said without echoing the key, which the client's error would.
        print(
            "error: the API key holds spaces, line breaks or non-ASCII characters; check how it was set",
            file=sys.stderr,
        )
        return 2
    try:
        with Client(api_url, api_key, timeout=30.0, max_retries=CLI_RETRIES) as client:
            code: int = args.api(client, args)
        return code
    except NetworkError as exc:
        print(f"error: cannot reach {api_url}: {exc} (set TASKLANE_API_URL or --api-url)", file=sys.stderr)
        return 1
    except TasklaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # the client's argument errors, raised before any request
        print(f"error: {exc}", file=sys.stderr)
        return 2
