"""bench/capacity.py: the capacity model's arithmetic, on round made-up figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import capacity
from bench.capacity import Measured


def _run(**over: float) -> dict[str, Any]:
    ours = {
        "api": {"cpu_ms_per_call": 1.0, "p50_ms": 2.0},
        "bulk": {"cpu_s_per_1000": 0.05},
        "single": {"pg_cpu_ms_per_submit": 0.2, "redis_cpu_ms_per_submit": 0.02},
        "drain1": {"rate": 5000.0},
        "drain2": {
            "drain_cpu_s_per_1000": 0.1,
            "sweep_cpu_s_per_1000": 0.0,
            "pg_cpu_s_per_1000": 0.1,
            "redis_cpu_s_per_1000": 0.01,
            "drainer_rss_mb": 50.0,
        },
    }
    for dotted, value in over.items():
        part, key = dotted.split("__")
        ours[part][key] = value
    return {
        "environment": {"git": "abc1234", "started": "2026-12-02 12:00", "mode": "quick"},
        "medians": {"ours": ours},
    }


def test_inputs_come_from_the_named_bench_keys_and_sum_their_terms() -> None:
    m = Measured.from_bench(_run(), source="x.json")
    assert m.api_cpu_s == pytest.approx(0.001) and m.api_ms == 2.0
    assert m.pg_cpu_s == pytest.approx(0.0003)  # 0.2 ms single submit + 0.1 ms drain side
    assert m.redis_cpu_s == pytest.approx(0.00003)
    assert m.drain_cpu_s == pytest.approx(0.0001) and m.drain1_rate == 5000
    assert "git abc1234" in m.source and "quick mode" in m.source


def test_capacity_of_each_piece() -> None:
    m = Measured.from_bench(_run())
    # 2 vCPUs x 70 % / 0.3 ms
    assert capacity.pg_rate(m, "db.m7g.large") == pytest.approx(2 * 0.7 / 0.0003)
    assert capacity.redis_rate(m, "cache.m7g.large") == pytest.approx(0.7 / 0.00003)
    # 512 MB is 0.289 vCPU: 0.289 x 0.7 / 0.1 ms = 2,026/s, under the measured 5,000/s
    assert capacity.drainer_rate(m) == pytest.approx(512 / 1769 * 0.7 / 0.0001)
    assert capacity.drainer_rate(m, task_seconds=0.5) == 16  # 8 lanes of 0.5 s tasks
    # wall 2 ms = 1 ms waiting + 1 ms CPU, stretched to 1769/256 ms on 256 MB
    assert capacity.api_duration_s(m) == pytest.approx(0.001 + 0.001 * 1769 / 256)
    assert capacity.max_connections("db.t4g.micro") == 112


def test_plan_takes_the_smallest_sizes_that_carry_the_rate() -> None:
    m = Measured.from_bench(_run())
    small, big = capacity.plan(m, 100), capacity.plan(m, 6000)
    assert (small.rds_class, small.cache_node, small.drainers) == ("db.t4g.micro", "cache.t4g.micro", 1)
    # db.m7g.large carries 4,667/s, db.m7g.xlarge 9,333/s; Redis on cache.t4g.micro
    # 4,667/s, on cache.t4g.small 9,333/s
    assert (big.rds_class, big.cache_node) == ("db.m7g.xlarge", "cache.t4g.small")
    assert big.drainers == 3  # 6,000 / 2,026 per drainer
    api_pools = math.ceil(6000 * capacity.api_duration_s(m)) * 2
    assert big.connections == api_pools + 3 * 4 + 2  # API pools of 2, drainers' of 4, the sweeper's 2


def test_costs_per_million() -> None:
    m = Measured.from_bench(_run())
    p = capacity.plan(m, 100)
    costs = capacity.cost_per_million(m, p)
    assert costs["API Gateway (REST), one request a task"] == pytest.approx(3.50)
    # a million tasks at 100/s take 2.78 h of the instance and the node
    assert costs["RDS instance (the class above)"] == pytest.approx(0.016 * 1e6 / 100 / 3600)
    assert costs["ElastiCache node (the node above)"] == pytest.approx(0.016 * 1e6 / 100 / 3600)
    assert capacity.batched(m, costs) < sum(costs.values()) - 3.4  # API Gateway per 500, not per task
    assert sum(capacity.sqs_cost_per_million().values()) == pytest.approx(0.40 + 0.08 + 0.02)
    assert sum(capacity.sqs_cost_per_million(send_batch=10).values()) == pytest.approx(0.04 + 0.08 + 0.02)


def test_render_and_main_print_the_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latest.json"
    path.write_text(json.dumps(_run()))
    capacity.main([str(path), "--rates", "10,1000"])
    out = capsys.readouterr().out
    assert "medians.ours.single.pg_cpu_ms_per_submit + medians.ours.drain2.pg_cpu_s_per_1000" in out
    assert "| 10 tasks/s | 1,000 tasks/s |" in out
    assert "**SQS + Lambda, per million tasks** | **0.50** | **0.50** |" in out
    assert "us-east-1" in out


def test_write_replaces_only_the_block_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "scaling.md"
    doc.write_text("intro\n<!-- capacity:begin (generated) -->\nold\n<!-- capacity:end -->\nanalysis\n")
    capacity.write_block(doc, "new table\n")
    assert doc.read_text() == "intro\n<!-- capacity:begin (generated) -->\nnew table\n<!-- capacity:end -->\nanalysis\n"


def test_ceiling_names_the_first_limit() -> None:
    m = Measured.from_bench(_run())
    top, what = capacity.ceiling(m)
    # 20 reserved API environments / 7.9 ms a submit = 2,530/s, below PostgreSQL's
    # 16 x 0.7 / 0.3 ms = 37,333/s and Redis's 0.7 / 0.03 ms = 23,333/s
    assert what == "the API's reserved concurrency"
    assert top == pytest.approx(20 / capacity.api_duration_s(m))
    assert "none: cache.m7g.large is too small" in capacity.render(m, [30000])


def test_every_price_names_where_it_was_checked_and_the_doc_cites_the_same_pages() -> None:
    priced = [*capacity.PRICES, *capacity.RDS, *capacity.CACHE]
    assert sorted(capacity.SOURCES) == sorted(priced)
    urls = {word.rstrip(":,;)") for text in capacity.SOURCES.values() for word in text.split() if "://" in word}
    doc = (Path(__file__).resolve().parents[2] / "docs" / "scaling.md").read_text()
    assert len(urls) >= 6 and not [url for url in urls if url not in doc]
