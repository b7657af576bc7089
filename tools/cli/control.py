"""Operator commands of ``python -m tools.cli`` that pause and resume task types.

    python -m tools.cli pause send-email                 # every tenant (a global pause)
    python -m tools.cli pause send-email --tenant acme   # one tenant, as its API key would
    python -m tools.cli resume send-email [--tenant acme]
    python -m tools.cli paused [--tenant acme]           # the pauses in force

Like ``keys`` they talk to PostgreSQL directly (``TASKLANE_DATABASE_URL``), and to
Redis (``TASKLANE_REDIS_URL``) to take the paused work out of the ready queue and put
it back on resume; the process sees the same task types as the functions
(``TASKLANE_TASK_MODULES``, ``TASKLANE_TASK_TYPES_FILE``).  Each change is audited as
``cli:<OS user>`` (tenant ``""`` for a global pause).
"""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import TYPE_CHECKING, Any

from chalicelib.core.control import GLOBAL
from tools.cli import args as cliargs
from tools.cli.render import table

if TYPE_CHECKING:
    from chalicelib.container import Container


def add_commands(sub: Any) -> None:
    pause = sub.add_parser("pause", help="pause a task type (every tenant, or --tenant)")
    pause.add_argument("name")
    pause.add_argument("--tenant", type=cliargs.tenant, default=None, help="only this tenant (default: every tenant)")
    pause.set_defaults(control=pause_cmd)
    resume = sub.add_parser("resume", help="resume a paused task type and push its waiting tasks")
    resume.add_argument("name")
    resume.add_argument(
        "--tenant", type=cliargs.tenant, default=None, help="lift this tenant's pause (default: the global one)"
    )
    resume.set_defaults(control=resume_cmd)
    paused = sub.add_parser("paused", help="list the pauses in force")
    paused.add_argument("--tenant", type=cliargs.tenant, default=None, help="those this tenant is under (default: all)")
    paused.set_defaults(control=paused_cmd)


def run(args: argparse.Namespace, actor: str) -> int:
    # Imported here, and handed to the command: the runtime and the control service
    # (PostgreSQL, Redis, the task types) are ~1.8 s of imports on a slow machine, which
    # every other command of the tool would pay for nothing.
    from chalicelib.config import get_settings
    from chalicelib.container import Container
    from chalicelib.services import control

    rt = Container.build(get_settings())
    try:
        code: int = args.control(rt, control, args, actor)
        return code
    finally:
        rt.close()


def _scope(tenant: str | None) -> str:
    return f"tenant {tenant!r}" if tenant else "every tenant"


def pause_cmd(rt: Container, control: ModuleType, args: argparse.Namespace, actor: str) -> int:
    done = control.pause(rt, args.tenant or GLOBAL, args.name, actor=actor)
    if done.pause.changed:
        print(f"paused {args.name} for {_scope(args.tenant)} ({done.moved} queued tasks held back)")
    else:
        print(f"{args.name} was already paused for {_scope(args.tenant)} (by {done.pause.paused_by})")
    return 0


def resume_cmd(rt: Container, control: ModuleType, args: argparse.Namespace, actor: str) -> int:
    done = control.resume(rt, args.tenant or GLOBAL, args.name, actor=actor)
    if done.lifted is None:
        print(f"{args.name} was not paused for {_scope(args.tenant)}")
        return 1
    note = " (still paused by another pause: see `paused`)" if done.still_paused else ""
    print(f"resumed {args.name} for {_scope(args.tenant)}: {done.requeued} queued tasks pushed back{note}")
    return 0


def paused_cmd(rt: Container, control: ModuleType, args: argparse.Namespace, actor: str) -> int:
    rows = [
        {"name": p.name, "tenant": p.tenant or "*", "paused_at": p.paused_at, "paused_by": p.paused_by}
        for p in control.pauses(rt, args.tenant)
    ]
    print(table(rows, ["name", "tenant", "paused_at", "paused_by"]) if rows else "nothing is paused")
    return 0
