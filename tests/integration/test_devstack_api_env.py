"""The local API server (``python -m tools.devstack api``) runs with the shell's
environment over the ``local`` stage's ``environment_variables``: a variable the stage
also sets (TASKLANE_REDIS_PREFIX, TASKLANE_LOG_LEVEL) reaches the API as it reaches the
drainers.  Before, the stage's values were applied again when app.py was imported, so
the API pushed to another prefix than the drainers claimed from, and logged at INFO."""

from __future__ import annotations

import uuid
from pathlib import Path

import redis
import requests

from chalicelib.adapters.redis.keys import Keys
from tests.helpers import new_api_key, start_local_api, wait_for

ROOT = Path(__file__).resolve().parents[2]


def _up(base: str) -> bool:
    try:
        return requests.get(base + "/health", timeout=2).status_code in (200, 503)
    # Not up yet: refused, or (a loaded machine) its first request, which imports the app
    # and opens its pools, outlasts the probe's timeout.
    except (requests.ConnectionError, requests.Timeout):
        return False


def test_the_shell_wins_over_the_stage_for_prefix_and_log_level(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    key, prefix = new_api_key(database_url, "env-"), "envtest-" + uuid.uuid4().hex[:8]
    log_path = tmp_path / "api.log"
    # The stage says "tasklane" and INFO; the shell (start_local_api) says the prefix and WARNING.
    proc, port = start_local_api(database_url, redis_url, prefix, log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or _up(base), timeout=60, message="the API server")
        assert proc.poll() is None, log_path.read_text()
        r = requests.post(
            base + "/api/v1/tasks",
            data=b'{"name": "noop"}',
            headers={"X-API-Key": key, "Content-Type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 201, r.text
        task_id = r.json()["id"]
        client = redis.Redis.from_url(redis_url)
        ready = Keys(prefix).tenant_ready("default")
        members = wait_for(lambda: client.zrange(ready, 0, -1), timeout=10, message="the pushed id")
        assert any(m.decode().endswith(task_id) for m in members)
        client.delete(ready, Keys(prefix).active_tenants, Keys(prefix).wake)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "tasks submitted" not in log_path.read_text()  # an INFO line of every submit
