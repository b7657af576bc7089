"""The local API server's environment (``supervisor.local_api_environ``): the shell's
variables over the ``local`` stage's, and a pool sized for a thread per connection."""

from __future__ import annotations

from tools.devstack.supervisor import LOCAL_API_POOL_MAX_SIZE, local_api_environ


def test_the_shell_wins_over_the_stage() -> None:
    stage = {"TASKLANE_LOG_LEVEL": "INFO", "TASKLANE_REDIS_PREFIX": "tasklane", "TASKLANE_EXECUTOR_MODE": "inline"}
    env = local_api_environ(stage, {"TASKLANE_LOG_LEVEL": "WARNING", "TASKLANE_REDIS_PREFIX": "mine"})
    assert env["TASKLANE_LOG_LEVEL"] == "WARNING" and env["TASKLANE_REDIS_PREFIX"] == "mine"
    assert env["TASKLANE_EXECUTOR_MODE"] == "inline"


def test_the_pool_defaults_to_a_connection_per_concurrent_request_unless_set() -> None:
    assert local_api_environ({}, {})["TASKLANE_POOL_MAX_SIZE"] == str(LOCAL_API_POOL_MAX_SIZE) == "16"
    assert local_api_environ({}, {"TASKLANE_POOL_MAX_SIZE": "3"})["TASKLANE_POOL_MAX_SIZE"] == "3"
    assert local_api_environ({"TASKLANE_POOL_MAX_SIZE": "2"}, {})["TASKLANE_POOL_MAX_SIZE"] == "2"
