"""Prometheus metrics of the compactor (exported on :9102 by `serve`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RUNS = Counter(
    "canal_compaction_runs_total",
    "Compaction and retention runs, by tier (minute|hour|day|retention) and outcome (ok|idle|error).",
    ["tier", "outcome"],
)
DURATION = Histogram(
    "canal_compaction_duration_seconds",
    "Wall time of one run (a loop of batches until no claimable work or the budget is spent).",
    ["tier"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
WATERMARK_LAG = Gauge(
    "canal_watermark_lag_seconds",
    "Now minus the tier's watermark (how far behind real time the tier is complete).",
    ["tier"],
)
BUCKETS = Counter(
    "canal_compaction_buckets_total",
    "Dirty buckets settled (rebuilt, emptied or expired), by tier.",
    ["tier"],
)
