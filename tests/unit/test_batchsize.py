"""The drainer's claim size: small while the queue is short, large while it is long."""

from __future__ import annotations

from chalicelib.core.batchsize import BatchSizer


def test_starts_small_and_grows_eightfold_while_quick_claims_come_back_full() -> None:
    sizer = BatchSizer(500, 10)
    sizes = []
    for _ in range(4):
        asked = sizer.size
        sizes.append(asked)
        sizer.observe(asked, asked, 0.01)
    assert sizes == [10, 80, 500, 500]


def test_doubles_when_a_full_batch_took_a_good_part_of_the_target() -> None:
    sizer = BatchSizer(500, 10, target_seconds=1.0)
    sizes = []
    for _ in range(7):
        asked = sizer.size
        sizes.append(asked)
        sizer.observe(asked, asked, 0.3)
    assert sizes == [10, 20, 40, 80, 160, 320, 500]
    growth = BatchSizer(500, 10, target_seconds=1.0)
    growth.observe(10, 10, 0.05)  # four times as long is 0.2 s of the 1 s target: 5x
    assert growth.size == 50


def test_a_short_claim_means_a_short_queue_and_starts_over() -> None:
    sizer = BatchSizer(500, 10)
    for _ in range(3):
        sizer.observe(sizer.size, sizer.size, 0.01)
    assert sizer.size == 500
    sizer.observe(sizer.size, 3, 0.01)
    assert sizer.size == 10
    sizer.observe(10, 0, 0.0)
    assert sizer.size == 10


def test_a_slow_batch_halves_what_it_ran_even_when_full() -> None:
    sizer = BatchSizer(500, 10, target_seconds=1.0)
    sizer.observe(10, 10, 0.3)
    sizer.observe(20, 20, 0.3)
    assert sizer.size == 40
    sizer.observe(40, 40, 2.0)
    assert sizer.size == 20
    sizer.observe(20, 20, 1.5)
    sizer.observe(10, 10, 1.5)
    assert sizer.size == 10  # never below the smallest


def test_bounds_are_kept_consistent() -> None:
    assert BatchSizer(1, 10).size == 1  # the smallest never exceeds the largest
    one = BatchSizer(1, 10)
    one.observe(1, 1, 0.0)
    assert one.size == 1
    assert BatchSizer(0, 0).size == 1
    fixed = BatchSizer(500, 500)
    fixed.observe(500, 2, 0.0)
    assert fixed.size == 500


def test_deployed_stages_claim_up_to_the_size_the_readme_documents() -> None:
    """``.chalice/config.json`` gives the drain function the code's (and the README's)
    largest claim, and no stage overrides it for every function."""
    import json
    import re
    from pathlib import Path

    from chalicelib.config import Settings

    root = Path(__file__).resolve().parents[2]
    config = json.loads((root / ".chalice" / "config.json").read_text())
    documented = re.search(r"^\| `TASKLANE_DRAIN_BATCH_SIZE` \| `(\d+)` \|", (root / "README.md").read_text(), re.M)
    assert documented is not None and int(documented.group(1)) == Settings.drain_batch_size
    for name in ("dev", "prod"):
        stage = config["stages"][name]
        assert "TASKLANE_DRAIN_BATCH_SIZE" not in stage["environment_variables"], name
        drain = stage["lambda_functions"]["drain"]["environment_variables"]
        assert drain["TASKLANE_DRAIN_BATCH_SIZE"] == str(Settings.drain_batch_size), name
