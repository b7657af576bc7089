"""How many API processes the local stack starts: ``TASKLANE_API_PROCESSES``, else
one per two cores, 1 to 4 (``supervisor.api_processes``)."""

from __future__ import annotations

import os

import pytest

from tools.devstack import prefork
from tools.devstack.supervisor import api_processes


def test_the_variable_decides() -> None:
    assert api_processes({"TASKLANE_API_PROCESSES": "3"}) == 3
    assert api_processes({"TASKLANE_API_PROCESSES": " 1 "}) == 1


def test_without_it_one_per_two_cores_from_one_to_four() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    assert api_processes({}) == api_processes({"TASKLANE_API_PROCESSES": ""}) == prefork.default_processes(cores)
    sizes = {cores: prefork.default_processes(cores) for cores in (1, 2, 3, 4, 8, 16, 64)}
    assert sizes == {1: 1, 2: 1, 3: 1, 4: 2, 8: 4, 16: 4, 64: 4}


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_anything_but_a_positive_whole_number_is_refused_with_a_message(value: str) -> None:
    with pytest.raises(SystemExit, match="TASKLANE_API_PROCESSES must be a whole number of at least 1"):
        api_processes({"TASKLANE_API_PROCESSES": value})
