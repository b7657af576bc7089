"""The capacity model of docs/scaling.md, computed from a benchmark run.

    .venv/bin/python -m bench.capacity [bench/results/latest.json] [--rates 10,100,1000]
    .venv/bin/python -m bench.capacity --write docs/scaling.md   # refresh the document's tables

Every per-task input comes from the run's JSON (``MEASURED`` names the key of each);
everything else is a stated assumption: AWS list prices (``PRICES``, ``RDS``, ``CACHE``;
their region, and where each was checked, in ``PRICE_NOTE`` and ``SOURCES``), instance
sizes (``RDS``, ``CACHE``), Lambda's CPU share per MB, the functions' memory and pool
sizes (``.chalice/config.json``) and the target utilisation.  The output is the Markdown that docs/scaling.md shows.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# --- assumptions --------------------------------------------------------------------

PRICE_NOTE = (
    "AWS list prices, us-east-1, on-demand, single-AZ, ElastiCache's Redis OSS engine; checked on 2026-12-03"
    " against offline copies of the sources named in bench/capacity.py (SOURCES) and docs/scaling.md, not against"
    " the live pages; db.m7g.4xlarge is twice db.m7g.2xlarge, a price no source found states"
)
PRICES = {
    "lambda_gb_s": 0.0000166667,  # x86_64 (Chalice's default architecture), the first 6 billion GB-s a month
    "lambda_request": 0.20 / 1e6,
    "apigw_rest_request": 3.50 / 1e6,  # REST API (what Chalice deploys), first 333 M a month
    "sqs_request": 0.40 / 1e6,  # standard queue, first 100 billion a month; a batch of up to 10 is one request
}
# class: (vCPUs usable when sustained, memory GiB, USD an hour, single-AZ, PostgreSQL).
# t4g classes are burstable: sustained means their baseline (10 % of 2 vCPUs on micro,
# 20 % on small, 20 % on medium).
RDS = {
    "db.t4g.micro": (0.2, 1, 0.016),
    "db.t4g.small": (0.4, 2, 0.032),
    "db.t4g.medium": (0.4, 4, 0.065),
    "db.m7g.large": (2, 8, 0.168),
    "db.m7g.xlarge": (4, 16, 0.337),
    "db.m7g.2xlarge": (8, 32, 0.674),
    "db.m7g.4xlarge": (16, 64, 1.348),
}
# node: (share of Redis's one command thread usable when sustained, USD an hour, Redis
# OSS engine as infra/template.yaml deploys it; Valkey nodes are listed 20 % lower).
# Redis runs commands on one thread, so a shard is at most one core whatever the node's
# size; t4g nodes are burstable (their baseline, as for RDS).
CACHE = {"cache.t4g.micro": (0.2, 0.016), "cache.t4g.small": (0.4, 0.032), "cache.m7g.large": (1.0, 0.158)}

# Where each price above was checked, on 2026-12-03 without internet access, in copies
# held by an offline search index (not the live pages).  The copies of AWS's own pricing
# pages carry no figures (their tables are filled in by the browser), so AWS's
# whitepapers and third parties stand in; "code" is public source the index found
# without naming its repository.  Each entry gives the date its source states, if any;
# docs/scaling.md cites the same pages.
_LAMBDA_WP = (
    "https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html (undated, region unstated)"
)
_APIGW_WP = (
    "https://docs.aws.amazon.com/pt_br/whitepapers/latest/best-practices-api-gateway-private-apis-integration/"
    "cost-optimization.html (undated, English text, Table 4)"
)
_INFRATALLY = "https://infratally.com/articles/aws-rds-pricing-explained-2026.html (2026, PostgreSQL, single-AZ)"
_RDS_M7G = (
    "no AWS page or doc found; code: a table of 'approximate us-east-1 on-demand prices, April 2026' (engine"
    " unstated) gives db.m7g.large 0.168, xlarge 0.337, 2xlarge 0.674; a test fixture quotes the AWS"
    " Price List's '$ 0.337 per RDS db.m7g.xlarge Single-AZ instance hour (or partial hour) running PostgreSQL';"
    " a table labelled PostgreSQL 'as of 2025' gives 0.168, 0.336, 0.672, 1.344 (sources disagree by $0.001-0.004/h)"
)
_CACHE_CODE = (
    "code: a table 'from the AWS Price List API (AmazonElastiCache, cacheEngine Redis, read 2026-10-02)' gives"
    " cache.t4g.micro 0.016, cache.t4g.small 0.032, cache.m7g.large 0.158 (its Valkey rows: 0.8x those); another"
    " us-east-1 Redis table gives cache.t4g.small 0.032, cache.m7g.large 0.158"
)
SOURCES: dict[str, str] = {
    "lambda_gb_s": f"{_LAMBDA_WP}: $0.00001667 per GB-s (rounded); https://cloudchipr.com/blog/aws-lambda-pricing"
    " (2024, US East): x86, first 6 billion GB-s a month, $0.0000166667",
    "lambda_request": f"{_LAMBDA_WP}: $0.20 per 1 million requests",
    "apigw_rest_request": f"{_APIGW_WP}: REST, first 333 million a month, $3.50 per million (HTTP APIs $1.00);"
    " https://awsforengineers.com/blog/aws-api-gateway-pricing-explained (19 May 2025, US East): the same",
    "sqs_request": "https://cloudburn.io/blog/amazon-sqs-pricing (14 March 2026, US East): standard, first 100"
    " billion a month, $0.40 per million; https://unanswered.io/guide/aws-sqs-pricing-and-cost-optimization"
    " (undated): the same",
    "db.t4g.micro": f"{_INFRATALLY}: $0.016",
    "db.t4g.small": f"{_INFRATALLY}: $0.032",
    "db.t4g.medium": f"{_INFRATALLY}: $0.065",
    "db.m7g.large": _RDS_M7G,
    "db.m7g.xlarge": _RDS_M7G,
    "db.m7g.2xlarge": _RDS_M7G,
    "db.m7g.4xlarge": f"no source states 1.348; twice db.m7g.2xlarge. {_RDS_M7G}",
    "cache.t4g.micro": _CACHE_CODE,
    "cache.t4g.small": _CACHE_CODE,
    "cache.m7g.large": _CACHE_CODE,
}
LAMBDA_MB_PER_VCPU = 1769  # Lambda gives a function one full vCPU at 1,769 MB
# MB, pool max, reserved concurrency: the dev stage of .chalice/config.json
FUNCTIONS = {"api": (256, 2, 20), "drain": (512, 4, 5), "sweep": (256, 2, 2)}
UTILISATION = 0.7  # run nothing hotter than this
SQS_BATCH = 10  # messages per ReceiveMessage, DeleteMessageBatch and Lambda invoke

# --- what the benchmark measured -------------------------------------------------------

# field: the terms it sums, each (bench part, key, scale to seconds or ms as named).
MEASURED: dict[str, tuple[tuple[str, str, float], ...]] = {
    # the API function's own CPU per submit, and its wall time (an in-process Lambda event)
    "api_cpu_s": (("api", "cpu_ms_per_call", 1e-3),),
    "api_ms": (("api", "p50_ms", 1.0),),
    "bulk_cpu_s": (("bulk", "cpu_s_per_1000", 1e-3),),  # the submitting process, 500-task calls
    "drain_cpu_s": (("drain2", "drain_cpu_s_per_1000", 1e-3),),
    "sweep_cpu_s": (("drain2", "sweep_cpu_s_per_1000", 1e-3),),
    # PostgreSQL and Redis per task: a single submit's server side, plus the 2-drainer
    # run's (which also counts its bulk inserts: an overcount, on the safe side)
    "pg_cpu_s": (("single", "pg_cpu_ms_per_submit", 1e-3), ("drain2", "pg_cpu_s_per_1000", 1e-3)),
    "redis_cpu_s": (("single", "redis_cpu_ms_per_submit", 1e-3), ("drain2", "redis_cpu_s_per_1000", 1e-3)),
    "drain1_rate": (("drain1", "rate", 1.0),),  # one drainer process, noop tasks, tasks/s
    "drainer_rss_mb": (("drain2", "drainer_rss_mb", 1.0),),
}


@dataclass(frozen=True)
class Measured:
    """Per-task figures of one benchmark run (seconds of CPU per task, ms, tasks/s)."""

    api_cpu_s: float
    api_ms: float
    bulk_cpu_s: float
    drain_cpu_s: float
    sweep_cpu_s: float
    pg_cpu_s: float
    redis_cpu_s: float
    drain1_rate: float
    drainer_rss_mb: float
    source: str = ""

    @classmethod
    def from_bench(cls, run: dict[str, Any], source: str = "") -> Measured:
        ours = run["medians"]["ours"]
        values = {f: sum(float(ours[part][key]) * k for part, key, k in terms) for f, terms in MEASURED.items()}
        env = run.get("environment", {})
        where = f"{source} (git {env.get('git', '?')}, {env.get('started', '?')} UTC, {env.get('mode', '?')} mode)"
        return cls(**values, source=where)


# --- the model ----------------------------------------------------------------------------


def lambda_vcpu(mb: int) -> float:
    return mb / LAMBDA_MB_PER_VCPU


def api_duration_s(m: Measured, mb: int = FUNCTIONS["api"][0]) -> float:
    """A submit's billed time on a Lambda of ``mb``: the measured wall time, with its CPU
    part stretched to the function's CPU share (the bench process had a whole core)."""
    waiting = max(m.api_ms / 1000 - m.api_cpu_s, 0.0)
    return waiting + m.api_cpu_s / min(lambda_vcpu(mb), 1.0)


def drainer_rate(m: Measured, mb: int = FUNCTIONS["drain"][0], task_seconds: float = 0.0, lanes: int = 8) -> float:
    """Tasks/s one drain Lambda carries: its CPU share over the measured CPU per task,
    capped by the measured rate of a drainer with a whole core, and by its executor
    lanes when tasks take ``task_seconds`` each."""
    cpu_bound = lambda_vcpu(mb) * UTILISATION / m.drain_cpu_s
    rate = min(cpu_bound, m.drain1_rate)
    return min(rate, lanes / task_seconds) if task_seconds > 0 else rate


def pg_rate(m: Measured, rds_class: str) -> float:
    vcpus, _, _ = RDS[rds_class]
    return vcpus * UTILISATION / m.pg_cpu_s


def redis_rate(m: Measured, node: str = "cache.m7g.large") -> float:
    return CACHE[node][0] * UTILISATION / m.redis_cpu_s


def max_connections(rds_class: str) -> int:
    """RDS PostgreSQL's default: LEAST(DBInstanceClassMemory / 9531392, 5000)."""
    return min(RDS[rds_class][1] * 1024**3 // 9531392, 5000)


@dataclass(frozen=True)
class Plan:
    """What a sustained ``rate`` (tasks/s, one submit request each) needs."""

    rate: float
    rds_class: str
    cache_node: str
    drainers: int
    api_concurrency: float
    connections: int
    redis_busy: float


def plan(m: Measured, rate: float, task_seconds: float = 0.0) -> Plan:
    fits = [c for c in RDS if pg_rate(m, c) >= rate]
    rds_class = fits[0] if fits else max(RDS, key=lambda c: RDS[c][0])
    nodes = [n for n in CACHE if redis_rate(m, n) >= rate]
    cache_node = nodes[0] if nodes else "cache.m7g.large"
    drainers = max(1, math.ceil(rate / drainer_rate(m, task_seconds=task_seconds)))
    api_concurrency = rate * api_duration_s(m)
    connections = (
        math.ceil(api_concurrency) * FUNCTIONS["api"][1] + drainers * FUNCTIONS["drain"][1] + FUNCTIONS["sweep"][1]
    )
    return Plan(rate, rds_class, cache_node, drainers, api_concurrency, connections, rate / redis_rate(m, cache_node))


def cost_per_million(m: Measured, p: Plan) -> dict[str, float]:
    """USD per million tasks at the plan's sustained rate, by line item."""
    hours = 1e6 / p.rate / 3600  # how long a million tasks take at this rate
    gb_s = PRICES["lambda_gb_s"]
    api_gb_s = api_duration_s(m) * FUNCTIONS["api"][0] / 1024
    drain_gb_s = p.drainers * FUNCTIONS["drain"][0] / 1024 * hours * 3600 / 1e6
    sweep_gb_s = 60 * hours * 1.0 * FUNCTIONS["sweep"][0] / 1024 / 1e6  # a sweep a minute, ~1 s each
    return {
        "API Gateway (REST), one request a task": PRICES["apigw_rest_request"] * 1e6,
        "Lambda requests (API)": PRICES["lambda_request"] * 1e6,
        "Lambda GB-s, API": api_gb_s * gb_s * 1e6,
        "Lambda GB-s, drainers (running while the load lasts)": drain_gb_s * gb_s * 1e6,
        "Lambda, sweep": sweep_gb_s * gb_s * 1e6 + 60 * hours * PRICES["lambda_request"],
        "RDS instance (the class above)": RDS[p.rds_class][2] * hours,
        "ElastiCache node (the node above)": CACHE[p.cache_node][1] * hours,
    }


def batched(m: Measured, costs: dict[str, float], per_request: int = 500) -> float:
    """The same million tasks submitted ``per_request`` to a request
    (``POST /api/v1/tasks/batch``): the per-request lines shrink by that factor and the
    API function's CPU per task is the bulk path's."""
    per_request_items = ("API Gateway (REST), one request a task", "Lambda requests (API)", "Lambda GB-s, API")
    api_gb_s = m.bulk_cpu_s / min(lambda_vcpu(FUNCTIONS["api"][0]), 1.0) * FUNCTIONS["api"][0] / 1024
    rest = sum(v for k, v in costs.items() if k not in per_request_items)
    return (
        rest
        + (costs[per_request_items[0]] + costs[per_request_items[1]]) / per_request
        + (api_gb_s * PRICES["lambda_gb_s"] * 1e6)
    )


def sqs_cost_per_million(send_batch: int = 1) -> dict[str, float]:
    """SQS + Lambda doing the same hand-off: SendMessage per task (or SendMessageBatch
    per ``send_batch``); the event source mapping's ReceiveMessage and
    DeleteMessageBatch, and one invoke, per batch of 10.  The executor's own work costs
    the same in both designs and is left out of both."""
    per_batch = 1e6 / SQS_BATCH
    return {
        "SQS SendMessage, one a task": PRICES["sqs_request"] * 1e6 / send_batch,
        "SQS ReceiveMessage + DeleteMessageBatch, one each per 10": PRICES["sqs_request"] * 2 * per_batch,
        "Lambda requests, one invoke per 10": PRICES["lambda_request"] * per_batch,
    }


# --- the report -----------------------------------------------------------------------------


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _fit(size: str, fits: bool) -> str:
    return size if fits else f"none: {size} is too small"


def ceiling(m: Measured) -> tuple[float, str]:
    """The highest sustained submit rate one deployment carries, and what stops it: the
    largest RDS class, one Redis shard, or the API's and drainers' reserved concurrency."""
    limits = {
        f"PostgreSQL on {max(RDS, key=lambda c: RDS[c][0])}": max(pg_rate(m, c) for c in RDS),
        "one Redis shard": max(redis_rate(m, n) for n in CACHE),
        "the API's reserved concurrency": FUNCTIONS["api"][2] / api_duration_s(m),
        "the drainers' reserved concurrency": FUNCTIONS["drain"][2] * drainer_rate(m),
    }
    what = min(limits, key=lambda k: limits[k])
    return limits[what], what


def _inputs(m: Measured) -> list[str]:
    out = [f"Inputs measured by the benchmark: {m.source}.", ""]
    out += [_row("measured input", "value", "bench JSON key"), _row("---", "---:", "---")]
    for field, terms in MEASURED.items():
        keys = " + ".join(f"medians.ours.{part}.{key}" for part, key, _ in terms)
        out.append(_row(field, f"{getattr(m, field):.6g}", keys))
    return out


def _pieces(m: Measured) -> list[str]:
    out = ["Capacity of one piece (sustained, at 70 % utilisation):", ""]
    out += [_row("piece", "tasks/s"), _row("---", "---:")]
    out += [_row(f"PostgreSQL, RDS {c} ({max_connections(c)} connections)", f"{pg_rate(m, c):,.0f}") for c in RDS]
    out += [_row(f"Redis, one shard on {n}", f"{redis_rate(m, n):,.0f}") for n in CACHE]
    api_s = api_duration_s(m)
    label = f"API Lambda, 256 MB, {api_s * 1000:.1f} ms a submit, on 1,000 concurrent executions (the default quota)"
    out.append(_row(label, f"{1000 / api_s:,.0f}"))
    reserved = FUNCTIONS["api"][2]
    out.append(
        _row(f"API Lambda at its reserved concurrency ({reserved}, .chalice/config.json)", f"{reserved / api_s:,.0f}")
    )
    reserved = FUNCTIONS["drain"][2]
    label = f"drain Lambdas at their reserved concurrency ({reserved}), noop tasks"
    out.append(_row(label, f"{reserved * drainer_rate(m):,.0f}"))
    for secs in (0.0, 0.1, 1.0):
        label = "noop tasks" if secs == 0 else f"tasks of {secs:g} s, 8 lanes"
        out.append(_row(f"one drain Lambda, 512 MB, {label}", f"{drainer_rate(m, task_seconds=secs):,.0f}"))
    top, what = ceiling(m)
    out.append(_row(f"**one deployment, single submits (limited by {what})**", f"**{top:,.0f}**"))
    return out


def _plans(m: Measured, rates: list[float]) -> list[str]:
    out = ["What a sustained rate needs, and what a million tasks cost there (USD):", ""]
    plans = [plan(m, r) for r in rates]
    out += [_row("", *(f"{r:,.0f} tasks/s" for r in rates)), _row("---", *("---:" for _ in rates))]
    rds = (_fit(p.rds_class, pg_rate(m, p.rds_class) >= p.rate) for p in plans)
    out.append(_row("RDS class (smallest that carries it)", *rds))
    out.append(
        _row("ElastiCache node (smallest that carries it)", *(_fit(p.cache_node, p.redis_busy <= 1) for p in plans))
    )
    out.append(_row("drain Lambdas (noop tasks)", *(p.drainers for p in plans)))
    out.append(_row("API Lambda concurrency", *(f"{p.api_concurrency:,.1f}" for p in plans)))
    out.append(_row("PostgreSQL connections (pools)", *(p.connections for p in plans)))
    out.append(_row("Redis shard busy", *(f"{p.redis_busy:.1%}" for p in plans)))
    costs = [cost_per_million(m, p) for p in plans]
    out += [_row(item, *(f"{c[item]:,.2f}" for c in costs)) for item in costs[0]]
    out.append(_row("**Tasklane, per million tasks**", *(f"**{sum(c.values()):,.2f}**" for c in costs)))
    out.append(_row("**Tasklane, submitted in batches of 500**", *(f"**{batched(m, c):,.2f}**" for c in costs)))
    sqs = sqs_cost_per_million()
    out += [_row(item, *(f"{value:,.2f}" for _ in rates)) for item, value in sqs.items()]
    out.append(_row("**SQS + Lambda, per million tasks**", *(f"**{sum(sqs.values()):,.2f}**" for _ in rates)))
    sent10 = sum(sqs_cost_per_million(send_batch=10).values())
    out.append(_row("**SQS + Lambda, sent in batches of 10**", *(f"**{sent10:,.2f}**" for _ in rates)))
    return out


def render(m: Measured, rates: list[float]) -> str:
    """The Markdown of docs/scaling.md's generated block."""
    return "\n".join([*_inputs(m), "", *_pieces(m), "", *_plans(m, rates), "", f"Prices: {PRICE_NOTE}."])


BEGIN, END = "<!-- capacity:begin", "<!-- capacity:end -->"


def write_block(doc: Path, block: str) -> None:
    """Replace what lies between the capacity markers of ``doc`` with ``block``."""
    text = doc.read_text()
    start = text.index("\n", text.index(BEGIN)) + 1
    end = text.index(END)
    doc.write_text(text[:start] + block.rstrip("\n") + "\n" + text[end:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_json", nargs="?", default="bench/results/latest.json")
    parser.add_argument("--rates", default="10,100,1000,5000", help="sustained tasks/s, comma-separated")
    parser.add_argument("--write", type=Path, help="put the tables into this document (docs/scaling.md)")
    args = parser.parse_args(argv)
    path = Path(args.bench_json)
    m = Measured.from_bench(json.loads(path.read_text()), source=str(path))
    block = render(m, [float(r) for r in args.rates.split(",")])
    if args.write:
        write_block(args.write, block)
    else:
        print(block)


if __name__ == "__main__":
    main()
