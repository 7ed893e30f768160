"""Prometheus metrics of the ingest service (exported on :9101 by `serve`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.ingest.store import BatchResult

EVENTS = Counter(
    "canal_ingest_events_total",
    "Inputs ingested, by outcome (admitted|duplicate|rejected).",
    ["outcome"],
)
RELAY_LAG = Gauge(
    "canal_relay_lag_seconds",
    "Per relay: 0 while connected and caught up; now minus the cursor while backfilling; "
    "now minus the last contact while disconnected.",
    ["relay"],
)
BATCH_SECONDS = Histogram(
    "canal_ingest_batch_seconds",
    "Wall time of one ingest batch (admission plus the database transaction).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def observe_batch(result: BatchResult, seconds: float) -> None:
    """Count a committed batch's outcomes and time it."""
    for status in ("admitted", "duplicate", "rejected"):
        n = result.count(status)
        if n:
            EVENTS.labels(status).inc(n)
    BATCH_SECONDS.observe(seconds)
