"""``python -m tools.cli``: Tasklane's command-line tool.

``keys`` manages API keys directly in PostgreSQL (an operator's tool: it needs the
database URL, not an API key):

    python -m tools.cli keys create --tenant acme --rate-limit 600/min
    python -m tools.cli keys list [--tenant acme]
    python -m tools.cli keys revoke tl_AbCdEfGh      # an id or the shown prefix

Creating and revoking a key is recorded in the key's tenant's audit log as
``cli:<OS user>`` (``$TASKLANE_ACTOR`` overrides the user name).

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

from chalicelib.adapters.postgres.store import Store
from chalicelib.config import DEFAULT_DATABASE_URL, ConfigError, parse_rate
from chalicelib.core.audit import cli_actor
from chalicelib.core.errors import TasklaneError
from chalicelib.services.apikeys import create_key
from tools.cli import control as controlcli
from tools.cli import ops as opscli
from tools.cli.render import table


def rate_limit_per_minute(text: str) -> int:
    """``--rate-limit``: ``"600/min"``, ``"10/s"``, ``"3600/hour"`` or a bare number (per
    minute) → whole requests per minute, as API keys store it."""
    try:
        per_minute = parse_rate(text, bare_unit="min") * 60
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if per_minute < 1:
        raise argparse.ArgumentTypeError("rate limit must be at least 1 request per minute")
    return int(per_minute + 1e-9)  # 7/min is 7, not 6.999...


def _database_url() -> str:
    return os.environ.get("TASKLANE_DATABASE_URL") or DEFAULT_DATABASE_URL


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
    expires = datetime.now(UTC) + timedelta(days=args.expires_in_days) if args.expires_in_days else None
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.cli", description="Tasklane's command-line tool.")
    sub = parser.add_subparsers(dest="group", required=True)
    keys = sub.add_parser("keys", help="manage API keys (needs TASKLANE_DATABASE_URL or the local default)")
    keys_sub = keys.add_subparsers(dest="command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="")
    create.add_argument("--rate-limit", type=rate_limit_per_minute, default=None, help="e.g. 600/min or 10/s")
    create.add_argument("--expires-in-days", type=float, default=None)
    create.set_defaults(fn=keys_create)
    lst = keys_sub.add_parser("list", help="list keys (never their secrets)")
    lst.add_argument("--tenant", default=None)
    lst.set_defaults(fn=keys_list)
    revoke = keys_sub.add_parser("revoke", help="disable a key by id or shown prefix")
    revoke.add_argument("key")
    revoke.set_defaults(fn=keys_revoke)
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
        store = Store(_database_url())
        try:
            code: int = args.fn(store, args)
            return code
        finally:
            store.close()
    except TasklaneError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
