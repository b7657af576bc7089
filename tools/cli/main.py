"""``python -m tools.cli``: Tasklane's command-line tool.

``keys`` manages API keys directly in PostgreSQL (an operator's tool: it needs the
database URL, not an API key):

    python -m tools.cli keys create --tenant acme --rate-limit 600/min
    python -m tools.cli keys list [--tenant acme]
    python -m tools.cli keys revoke tl_AbCdEfGh      # an id or the shown prefix

``tenants`` sets a tenant's fair-share weight and quotas, also in PostgreSQL:

    python -m tools.cli tenants set acme --weight 3 --max-queued 10000 --max-running 50
    python -m tools.cli tenants set acme --max-queued none   # drop a quota
    python -m tools.cli tenants list [--tenant acme]

Creating and revoking a key, and changing a tenant's limits, are recorded in the
tenant's audit log as ``cli:<OS user>`` (``$TASKLANE_ACTOR`` overrides the user name).

``pause``, ``resume`` and ``paused`` pause task types, globally or for one tenant,
with the database and Redis URLs: see ``tools.cli.control``.

``submit``, ``status``, ``tail``, ``dlq``, ``audit`` and ``stats`` talk to the HTTP API with
an API key instead (``TASKLANE_API_URL``, ``TASKLANE_API_KEY``): see ``opscli``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from chalicelib.config import DEFAULT_DATABASE_URL, ConfigError, parse_rate
from chalicelib.core.audit import cli_actor
from chalicelib.core.errors import TasklaneError
from tools.cli import args as cliargs
from tools.cli import control as controlcli
from tools.cli import ops as opscli
from tools.cli.render import table

if TYPE_CHECKING:
    from chalicelib.adapters.postgres.store import Store


def rate_limit_per_minute(text: str) -> int:
    """``--rate-limit``: ``"600/min"``, ``"10/s"``, ``"3600/hour"`` or a bare number (per
    minute) → whole requests per minute, as API keys store it."""
    try:
        per_minute = parse_rate(text, bare_unit="min") * 60
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if per_minute > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"rate limit must be at most {2**31 - 1} requests per minute; got {text!r}")
    if per_minute < 1:
        raise argparse.ArgumentTypeError("rate limit must be at least 1 request per minute")
    return int(per_minute + 1e-9)  # 7/min is 7, not 6.999...


_days = cliargs.number(0, 36_500, open_lo=True)  # --expires-in-days


def _database_url() -> str:
    return os.environ.get("TASKLANE_DATABASE_URL") or DEFAULT_DATABASE_URL


def _checked_database_url() -> str:
    """The database URL, once libpq can read it: a password with an unescaped space,
    '#' or '@' broke it, and the pool's warnings printed the password on every retry."""
    import logging

    import psycopg

    url = _database_url()
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ConfigError(
            "TASKLANE_DATABASE_URL is not a valid connection URL: percent-encode spaces, '#', '@' and"
            " '/' in the user name and password"
        ) from None
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # this tool says what failed, once
    return url


def operator() -> str:
    """Who the audit log names for this CLI's changes: ``cli:<OS user>``."""
    name = os.environ.get("TASKLANE_ACTOR")
    if not name:
        try:
            name = getpass.getuser()
        except (OSError, KeyError):  # no login name and no passwd entry (some containers)
            name = "unknown"
    return cli_actor(name)


def keys_create(store: Store, args: argparse.Namespace) -> int:
    from chalicelib.services.apikeys import create_key  # with the store: see main

    expires = datetime.now(UTC) + timedelta(days=args.expires_in_days) if args.expires_in_days is not None else None
    secret, key = create_key(
        store,
        args.tenant,
        actor=operator(),
        name=args.name or "",
        rate_limit_per_minute=args.rate_limit,
        expires_at=expires,
    )
    print(secret)
    print(
        f"# key {key.id} for tenant {key.tenant!r}"
        f" (rate limit {key.rate_limit_per_minute or 'default'}/min"
        f"{', expires ' + key.expires_at.isoformat() if key.expires_at else ''})."
        " Store it now: it is not shown again.",
        file=sys.stderr,
    )
    return 0


def keys_list(store: Store, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    rows = [
        {
            "id": k.id,
            "key_prefix": k.key_prefix,
            "tenant": k.tenant,
            "name": k.name,
            "state": k.state(now),
            "rate_limit": f"{k.rate_limit_per_minute}/min" if k.rate_limit_per_minute else "default",
            "created_at": k.created_at,
            "expires_at": k.expires_at,
        }
        for k in store.list_api_keys(args.tenant)
    ]
    columns = ["id", "key_prefix", "tenant", "name", "state", "rate_limit", "created_at", "expires_at"]
    print(table(rows, columns) if rows else "no keys")
    return 0


def keys_revoke(store: Store, args: argparse.Namespace) -> int:
    key = store.revoke_api_key(args.key, actor=operator())
    if key is None:
        print(f"no key with id or prefix {args.key!r}", file=sys.stderr)
        return 1
    print(f"revoked {key.key_prefix}… (tenant {key.tenant}, id {key.id})")
    return 0


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"weight must be a number; got {text!r}") from None
    if not 0.01 <= value <= 1000:
        raise argparse.ArgumentTypeError("weight must be from 0.01 to 1000")
    return value


def _quota(text: str) -> int:
    """A positive whole number, or ``none`` (0 stands for it) to drop the quota."""
    if text.strip().lower() == "none":
        return 0
    if not text.strip().isdigit() or int(text) < 1 or int(text) > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"a quota is a whole number from 1, or 'none'; got {text!r}")
    return int(text)


def tenants_set(store: Store, args: argparse.Namespace) -> int:
    if args.weight is None and args.max_queued is None and args.max_running is None:
        print("nothing to change: give --weight, --max-queued and/or --max-running", file=sys.stderr)
        return 2
    limits = store.set_tenant_limits(
        args.tenant,
        actor=operator(),
        weight=args.weight,
        max_queued=args.max_queued or None,
        max_running=args.max_running or None,
        clear_max_queued=args.max_queued == 0,
        clear_max_running=args.max_running == 0,
    )
    print(
        f"tenant {limits.tenant!r}: weight {limits.weight:g}, max queued {limits.max_queued or 'none'},"
        f" max running {limits.max_running or 'none'} (in effect within a sweep interval)"
    )
    return 0


def tenants_list(store: Store, args: argparse.Namespace) -> int:
    rows = [
        {
            "tenant": t.tenant,
            "weight": f"{t.weight:g}",
            "max_queued": t.max_queued or "none",
            "max_running": t.max_running or "none",
            "updated_at": t.updated_at,
        }
        for t in store.list_tenant_limits(args.tenant)
    ]
    columns = ["tenant", "weight", "max_queued", "max_running", "updated_at"]
    print(table(rows, columns) if rows else "no tenant has limits (every tenant: weight 1, no quota)")
    return 0


def _tenant_commands(sub: Any) -> None:
    tenants = sub.add_parser("tenants", help="fair-share weights and quotas (needs TASKLANE_DATABASE_URL)")
    tenants_sub = tenants.add_subparsers(dest="command", required=True)
    st = tenants_sub.add_parser("set", help="set a tenant's weight and/or quotas (others stay)")
    st.add_argument("tenant", type=cliargs.tenant)
    st.add_argument("--weight", type=_weight, default=None, help="share of the drainers (default 1)")
    st.add_argument("--max-queued", type=_quota, default=None, help="most ready tasks; 'none' drops it")
    st.add_argument("--max-running", type=_quota, default=None, help="most tasks running; 'none' drops it")
    st.set_defaults(fn=tenants_set)
    lst = tenants_sub.add_parser("list", help="tenants with limits")
    lst.add_argument("--tenant", type=cliargs.tenant, default=None)
    lst.set_defaults(fn=tenants_list)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.cli", description="Tasklane's command-line tool.")
    sub = parser.add_subparsers(dest="group", required=True)
    keys = sub.add_parser("keys", help="manage API keys (needs TASKLANE_DATABASE_URL or the local default)")
    keys_sub = keys.add_subparsers(dest="command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--tenant", type=cliargs.tenant, required=True)
    create.add_argument("--name", type=cliargs.key_name, default="")
    create.add_argument("--rate-limit", type=rate_limit_per_minute, default=None, help="e.g. 600/min or 10/s")
    create.add_argument("--expires-in-days", type=_days, default=None, help="more than 0, at most 36500")
    create.set_defaults(fn=keys_create)
    lst = keys_sub.add_parser("list", help="list keys (never their secrets)")
    lst.add_argument("--tenant", type=cliargs.tenant, default=None)
    lst.set_defaults(fn=keys_list)
    revoke = keys_sub.add_parser("revoke", help="disable a key by id or shown prefix")
    revoke.add_argument("key")
    revoke.set_defaults(fn=keys_revoke)
    _tenant_commands(sub)
    opscli.add_commands(sub)  # submit, status, tail, dlq, audit, stats: over the HTTP API
    controlcli.add_commands(sub)  # pause, resume, paused: PostgreSQL and Redis directly
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "api"):
        return opscli.run(args)
    try:
        if hasattr(args, "control"):
            return controlcli.run(args, operator())
        # Imported here, as control's runtime is: the HTTP commands above need neither.
        from chalicelib.adapters.postgres.store import Store

        store = Store(_checked_database_url())
        try:
            code: int = args.fn(store, args)
            return code
        finally:
            store.close()
    except TasklaneError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        import psycopg

        if isinstance(exc, psycopg.errors.UndefinedTable):
            print(
                "error: the database has no Tasklane tables yet: apply the migrations"
                " (python -m chalicelib.adapters.postgres.migrate, or make run)",
                file=sys.stderr,
            )
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
