"""Prometheus output of a drift run, named as deploy/prometheus/alerts.yaml and the runbook expect.

- ``canal_drift_max_abs_delta`` (gauge): the largest |canonical - legacy| outside partial
  answers; ``CanalDriftDetected`` fires when it is above 0. Left out when the run could not
  compare anything, so a failed run never clears a drift seen earlier.
- ``canal_drift_runs_total{outcome}`` (counter, outcome ``clean|drift|error``): this run.

A drift run is a short-lived job, so nothing is scraped from it: the metrics are written
in text exposition format to ``<out>/drift.prom`` (node-exporter textfile collector) and,
when a Pushgateway URL is configured, pushed there (job ``canal-drift``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    push_to_gateway,
    pushadd_to_gateway,
    write_to_textfile,
)

from tools.drift.report import OUTCOMES

MAX_ABS_DELTA: Final = "canal_drift_max_abs_delta"
RUNS: Final = "canal_drift_runs"  # exported as canal_drift_runs_total
PUSH_JOB: Final = "canal-drift"
PROM_FILE: Final = "drift.prom"


def build_registry(outcome: str, max_abs_delta: int | None) -> CollectorRegistry:
    """A registry of its own (no process-global state) holding this run's metrics."""
    registry = CollectorRegistry()
    runs = Counter(RUNS, "Drift harness runs by outcome (clean, drift, error).", ["outcome"], registry=registry)
    for name in OUTCOMES:
        runs.labels(outcome=name)
    runs.labels(outcome=outcome).inc()
    if max_abs_delta is not None:
        Gauge(MAX_ABS_DELTA, "Largest |canonical - legacy| delta of the last drift run (0 = no drift).",
              registry=registry).set(max_abs_delta)
    return registry


def export(outcome: str, max_abs_delta: int | None, out: Path, pushgateway_url: str | None) -> list[str]:
    """Write `<out>/drift.prom` and push when configured; returns warnings (never raises)."""
    registry = build_registry(outcome, max_abs_delta)
    warnings: list[str] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(out / PROM_FILE), registry)
    except OSError as exc:
        warnings.append(f"could not write {out / PROM_FILE}: {exc}")
    if pushgateway_url:
        # Without a gauge (the run compared nothing) add to the group instead of replacing it,
        # so the last known drift stays visible to CanalDriftDetected.
        push = push_to_gateway if max_abs_delta is not None else pushadd_to_gateway
        try:
            push(pushgateway_url, job=PUSH_JOB, registry=registry, timeout=10)
        except Exception as exc:  # noqa: BLE001 - an unreachable Pushgateway must not hide the drift result
            warnings.append(f"could not push to the Pushgateway at {pushgateway_url}: {exc}")
    return warnings
