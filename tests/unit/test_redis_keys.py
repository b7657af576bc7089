"""Every Redis key comes from ``adapters/redis/keys.py`` and shares one hash tag."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from chalicelib.adapters.redis.keys import FAMILIES, Keys, hash_tag

ROOT = Path(__file__).resolve().parents[2]


def _pattern(family: str) -> re.Pattern[str]:
    body = re.sub(r"<[^>]+>", "[^:]+", re.escape(FAMILIES[family].pattern).replace(r"\<", "<").replace(r"\>", ">"))
    return re.compile(re.escape("{app}") + body.replace(r"\*", ".*") + "$")


def test_every_built_key_matches_a_documented_family_and_carries_the_tag() -> None:
    keys = Keys("app")
    built = {
        "tenant_ready": keys.tenant_ready("acme"),
        "active_tenants": keys.active_tenants,
        "fair_finish": keys.fair_finish,
        "fair_clock": keys.fair_clock,
        "tenant_weight": keys.tenant_weight,
        "tenant_max_running": keys.tenant_max_running,
        "tenant_running": keys.tenant_running("acme"),
        "quota_refused": keys.quota_refused,
        "typed_ready": keys.typed_ready("send-email"),
        "delayed": keys.delayed,
        "leases": keys.leases,
        "inflight": keys.inflight("send-email"),
        "type_rate": keys.type_rate("send-email"),
        "wake": keys.wake,
        "epoch": keys.epoch,
        "last_sweep": keys.last_sweep,
        "drainer_alive": keys.drainer_alive,
        "drainer_waking": keys.drainer_waking,
        "api_rate": keys.api_rate("key-1"),
        "idempotency": keys.idempotency_prefix("send-email") + ":abc",
    }
    assert set(built) == set(FAMILIES)
    for family, key in built.items():
        assert key.startswith(hash_tag("app") + ":")
        assert _pattern(family).match(key), (family, key)
    assert all(f.redis_type and f.owner and f.lifetime for f in FAMILIES.values())


def test_no_module_outside_keys_py_writes_the_hash_tag() -> None:
    """The ``{prefix}`` tag is built once: no other chalicelib module spells a brace
    around the prefix."""
    offenders = []
    for path in sorted((ROOT / "chalicelib").rglob("*.py")):
        if path.name == "keys.py" and path.parent.name == "redis":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr) and any(
                isinstance(v, ast.Constant) and isinstance(v.value, str) and v.value.endswith("{") for v in node.values
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Constant) and node.value in ("{", "}"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def _scripts() -> dict[str, str]:
    from chalicelib.adapters.redis import queue, ratelimit

    return {
        "claim": queue._CLAIM,
        "extend": queue._EXTEND,
        "expired": queue._EXPIRED,
        "gcra": ratelimit._GCRA_LUA,
    }


def test_every_lua_script_opens_with_its_keys_and_argv_contract() -> None:
    for name, script in _scripts().items():
        head = script.strip().splitlines()[0]
        assert head.startswith("-- KEYS["), (name, head)
        assert "ARGV" in script.split("\nlocal ", 1)[0], f"{name}: the opening comment must name ARGV"


def test_no_lua_script_builds_a_key_name() -> None:
    """Redis Cluster forbids keys a script did not declare: every key comes in KEYS,
    never by concatenating a prefix inside Lua."""
    for name, script in _scripts().items():
        code = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
        assert not re.search(r"\.\.\s*'[^']*:", code), name
        assert not re.search(r"ARGV\[\d+\]\s*\.\.", code), name
