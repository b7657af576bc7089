"""The benchmark's pure helpers: percentiles, /proc parsing, ratios, the report."""

from __future__ import annotations

import math
from pathlib import Path

from bench import report, stats


def test_percentile_interpolates_and_handles_edges() -> None:
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert stats.percentile(xs, 50) == 3.0
    assert stats.percentile(xs, 0) == 1.0
    assert stats.percentile(xs, 100) == 5.0
    assert stats.percentile([1.0, 2.0], 50) == 1.5
    assert stats.percentile([7.0], 99) == 7.0
    assert math.isnan(stats.percentile([], 50))


def test_latency_summary_is_in_milliseconds() -> None:
    s = stats.latency_summary([0.001] * 98 + [0.010, 0.020])
    assert s["n"] == 100
    assert s["p50_ms"] == 1.0
    assert s["max_ms"] == 20.0
    assert 1.0 < s["p99_ms"] <= 20.0


def test_median_and_spread_ignore_nan() -> None:
    assert stats.median([3.0, math.nan, 1.0, 2.0]) == 2.0
    assert math.isnan(stats.median([]))
    assert stats.spread([90.0, 100.0, 110.0]) == 0.2
    assert stats.spread([5.0]) == 0.0


def test_advantage_reads_as_times_better() -> None:
    assert stats.advantage(10_000, 2_500, higher_is_better=True) == 4.0
    assert stats.advantage(2.0, 8.0, higher_is_better=False) == 4.0
    assert stats.advantage(1.0, 0.5, higher_is_better=False) == 0.5
    assert math.isnan(stats.advantage(math.nan, 1.0, higher_is_better=True))


def test_proc_stat_parsing_survives_odd_command_names() -> None:
    # comm may contain spaces and parentheses; utime/stime are fields 14 and 15.
    text = "4242 (python (drain) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 9 0 100 0 0"
    assert stats.parse_proc_stat(text) == (250, 31)
    assert stats.parse_ppid(text) == 1


def test_status_field_in_kb() -> None:
    text = "Name:\tpython\nVmPeak:\t  100 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 40000 kB\n"
    assert stats.parse_status_kb(text, "VmHWM") == 51200
    assert stats.parse_status_kb(text, "VmSwap") is None


def test_fmt() -> None:
    assert stats.fmt(12345.6) == "12,346"
    assert stats.fmt(1.23456, 2) == "1.23"
    assert stats.fmt(math.nan) == "n/a"
    assert stats.fmt(None) == "n/a"


def _results() -> dict:
    return {
        "environment": {
            "started": "2026-01-01 00:00",
            "mode": "full",
            "repeats": 3,
            "duration_seconds": 200.0,
            "cpus": 2,
            "load_before": "1.0 1.0 1.0",
            "load_after": "1.0 1.0 1.0",
            "python": "3.11",
            "versions": {},
            "pg": {},
        },
        "medians": {
            "ours": {
                "single": {"rate": 900.0, "p50_ms": 1.1, "p99_ms": 3.0},
                "bulk": {"rate": 31_000.0},
                "drain2": {"rate": 10_500.0, "cpu_s_per_1000": 0.12, "rss_mb": 50.0},
                "latency": {"p50_ms": 1.9, "p95_ms": 3.0, "p99_ms": 4.5, "split_claim_commit_p50_ms": 0.61},
                "latency_burst": {"p50_ms": 2.6, "p99_ms": 6.0, "burst": 20_000.0},
                "api": {"p50_ms": 1.2, "p99_ms": 2.0},
                "http": {"rate": 400.0, "concurrent8_rate": 900.0},
                "single_vs_insert": 0.85,
                "drain4_vs_2": 0.97,
            },
            "naive": {
                "drain2": {"rate": 500.0, "cpu_s_per_1000": 1.0, "rss_mb": 40.0},
                "latency": {"p50_ms": 1.5},
            },
            "dramatiq": {"drain2": {"rate": 5_000.0}},
            "hardware": {"pg_single_insert": {"rate": 1000.0, "ms_per_commit": 1.0}},
        },
        "noise": {"ours/drain2": 0.1},
        "skipped": ["procrastinate/single: ImportError: nope"],
    }


def test_goals_are_judged_from_the_medians() -> None:
    goals = {g["goal"]: g["met"] for g in report.goals(_results())}
    assert goals["drain, 2 drainers"] is True
    assert goals["drain vs naive seed"] is True  # 21x >= 4x
    assert goals["drain vs Dramatiq"] is True  # 2.1x >= 2x
    assert "drain vs Procrastinate" not in goals  # peer missing: no verdict
    assert goals["4 drainers vs 2 (same tasks, back to back)"] is False  # 0.97x < 1.0x
    assert goals["bulk submit"] is True
    assert goals["single submit vs bare INSERT"] is True
    assert goals["e2e latency p50 at 200/s, fresh table"] is True
    assert goals["e2e latency p50 at 200/s, after a burst"] is False  # 2.6 ms > 2 ms
    assert goals["e2e p50, after a burst, vs naive seed"] is False  # 1.5 (naive fresh: no burst row) / 2.6
    assert goals["API function per submit, in-process, p50"] is True
    assert goals["HTTP single submits, 8 keep-alive clients"] is False
    assert goals["CPU per 1,000 tasks"] is True
    assert goals["drainer peak RSS"] is True


def test_e2e_vs_naive_is_judged_from_the_back_to_back_pairs_when_the_run_has_them() -> None:
    results = _results()
    # Medians alone: naive 1.5 ms against ours 1.9 (0.79x); each repeat's pair: 1.04x.
    results["medians"]["ours"]["latency_vs_naive"] = 1.04
    results["medians"]["ours"]["latency_burst_vs_naive"] = 0.64
    goals = {g["goal"]: g for g in report.goals(results)}
    assert goals["e2e p50, fresh table, vs naive seed (back to back)"]["met"] is True
    assert goals["e2e p50, fresh table, vs naive seed (back to back)"]["measured"] == "1.04x"
    assert goals["e2e p50, after a burst, vs naive seed (back to back)"]["met"] is False
    assert "e2e p50, fresh table, vs naive seed" not in goals


def test_until_finished_is_judged_like_until_started_when_the_run_measured_it() -> None:
    results = _results()
    goals = {g["goal"] for g in report.goals(results)}
    assert not any(g.startswith("submit -> finished") for g in goals)  # a run before round 19
    results["medians"]["ours"]["latency"] |= {"finish_p50_ms": 1.9, "finish_p99_ms": 5.5}
    results["medians"]["ours"]["latency_finish_vs_naive"] = 0.78
    judged = {g["goal"]: g for g in report.goals(results)}
    assert judged["submit -> finished p50 at 200/s, fresh table"]["met"] is True
    assert judged["submit -> finished p99 at 200/s, fresh table"]["met"] is False  # 5.5 ms > 5 ms
    paired = judged["submit -> finished p50, fresh table, vs naive seed (back to back)"]
    assert paired["met"] is False and paired["measured"] == "0.78x"


def test_the_http_goal_takes_the_lean_clients_rate_and_names_both_clients() -> None:
    results = _results()
    # A run before round 17: http.client only, and said so.
    older = {g["goal"]: g for g in report.goals(results)}["HTTP single submits, 8 keep-alive clients"]
    assert older["measured"] == "900 (http.client)"
    results["medians"]["ours"]["http"] |= {"lean8_rate": 1_600.0, "api_processes": 1}
    newer = {g["goal"]: g for g in report.goals(results)}["HTTP single submits, 8 keep-alive clients"]
    assert newer["met"] is True
    assert newer["measured"] == "1,600 (lean client; http.client 900/s; 1 API process)"


def test_render_has_every_section_and_the_ratio_direction() -> None:
    text = report.render(_results())
    assert "### Goals" in text and "### Hardware baselines" in text
    assert "| drain, 2 drainers / workers (tasks/s) | 10,500 | 500 | 5,000 | 21.0x | 2.1x |" in text
    assert "failed: procrastinate/single" in text
    assert "| claim UPDATE committed, its rows read (with any wait for the submit's commit) | 0.61 | n/a |" in text
    assert "| e2e latency at 200/s after a burst, p50 / p99 (ms) | 2.60 / 6.00 |" in text


def test_latency_split_takes_each_steps_own_median() -> None:
    from bench.ours import _split

    stamps = [
        {"t0": 0.0, "committed": 0.001, "pushed": 0.0015, "wake": 0.002, "script_start": 0.002, "script": 0.0025},
        {"t0": 1.0, "committed": 1.003, "pushed": 1.0035},  # never claimed: only its own steps count
    ]
    split = _split(stamps)
    assert math.isclose(split["split_submit_commit_p50_ms"], 2.0)
    assert math.isclose(split["split_submit_push_p50_ms"], 2.5)  # the push may end before the commit
    assert math.isclose(split["split_claim_script_p50_ms"], 0.5)
    assert math.isnan(split["split_claim_commit_p50_ms"])


def test_results_md_keeps_the_hand_written_analysis(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    report.write_results_md(path, "table one")
    text = path.read_text()
    assert "table one" in text and "## Analysis" in text
    path.write_text(text.replace("(to be written)", "my analysis"))
    report.write_results_md(path, "table two")
    text = path.read_text()
    assert "table two" in text and "table one" not in text and "my analysis" in text


def test_big_table_submit_ratio_is_each_block_pairs_not_the_pooled_sides() -> None:
    from bench import bigtable

    # The disk drifts 10x between the pairs; within a pair the big side is 1.1x. The
    # ratio of the pooled p50s is the drift's; each pair's ratio is the table's.
    lat = {
        "empty": [[0.001] * 3, [0.010] * 3, [0.001] * 3, [0.010] * 3],
        "big": [[0.0011] * 3, [0.011] * 3, [0.0011] * 3, [0.011] * 3],
    }
    db = {side: [t * 0.9 for b in blocks for t in b] for side, blocks in lat.items()}
    s = bigtable._block_summary(lat, db)
    assert s["block_pairs"] == 4 and s["block"] == 3
    assert all(abs(r - 1.1) < 1e-9 for r in s["ratios"])
    assert abs(s["ratio_median"] - 1.1) < 1e-9
    low, high = s["ratio_median_ci95"]
    assert low <= s["ratio_median"] <= high
    assert s["big_slower_share"] == 1.0
    assert abs(s["empty"]["db_p50_ms"] - 0.9 * s["empty"]["p50_ms"]) < 1e-6
