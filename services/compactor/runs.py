"""A run = batches of one tier until no claimable work is left (or the time budget is spent).

Every run, successful, idle or failed, leaves a `jobs` row (kind "compaction" or
"retention"), moves the Prometheus metrics and is traced as one OpenTelemetry span.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from sqlalchemy import Engine, text

from libs.config import Settings
from libs.metrics import Tier
from services.compactor import metrics
from services.compactor.retention import RetentionStats, run_retention
from services.compactor.rollup import RunStats, compact_tier

__all__ = ["RUN_TARGETS", "read_watermarks", "run_compaction", "run_named", "run_retention_job"]

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

#: What RunNow accepts.
RUN_TARGETS = (*(t.label for t in sorted(Tier)), "retention", "all")


def run_compaction(
    engine: Engine, tier: Tier | int, *, batch: int, budget_s: float | None = None, now: int | None = None
) -> RunStats:
    """Compact `tier` batch after batch until a batch comes back short or `budget_s` is spent."""
    tier = Tier(tier)
    total = RunStats(tier=tier.label)
    began, started_at = time.perf_counter(), int(time.time())
    with tracer.start_as_current_span("compactor.run", attributes={"tier": tier.label}) as span:
        try:
            while True:
                stats = compact_tier(engine, tier, batch, now=now)
                total.add(stats)
                if stats.buckets < batch or (budget_s is not None and time.perf_counter() - began >= budget_s):
                    break
        except Exception as exc:
            total.outcome = "error"
            total.duration_s = time.perf_counter() - began
            _fail_span(span, exc)
            _record(engine, "compaction", tier.label, total.as_dict(), total, started_at, exc)
            raise
        total.duration_s = time.perf_counter() - began
        span.set_attributes({"buckets": total.buckets, "facts_read": total.facts_read, "outcome": total.outcome})
    _record(engine, "compaction", tier.label, total.as_dict(), total, started_at)
    return total


def run_retention_job(engine: Engine, settings: Settings, now: int | None = None) -> RetentionStats:
    """`run_retention` with a jobs row, metrics and a span."""
    started_at = int(time.time())
    began = time.perf_counter()
    with tracer.start_as_current_span("compactor.retention", attributes={"tier": "retention"}) as span:
        try:
            stats = run_retention(engine, settings, now=now)
        except Exception as exc:
            _fail_span(span, exc)
            failed = RunStats(tier="retention", outcome="error", duration_s=time.perf_counter() - began)
            _record(engine, "retention", "retention", {}, failed, started_at, exc)
            raise
        span.set_attributes({"rows_deleted": stats.rows_deleted, "buckets": 0, "facts_read": 0})
    summary = RunStats(
        tier="retention", outcome="ok" if stats.rows_deleted else "idle", duration_s=stats.duration_s
    )
    _record(engine, "retention", "retention", stats.as_dict(), summary, started_at)
    return stats


def run_named(
    engine: Engine, settings: Settings, target: str, budget_s: float | None = None, now: int | None = None
) -> RunStats:
    """Run one of RUN_TARGETS; "all" runs every tier finest first, then retention, and sums them."""
    if target not in RUN_TARGETS:
        raise ValueError(f"unknown tier {target!r}")
    if target == "retention":
        stats = run_retention_job(engine, settings, now=now)
        outcome = "ok" if stats.rows_deleted else "idle"
        return RunStats(tier="retention", outcome=outcome, duration_s=stats.duration_s, batches=stats.batches)
    if target != "all":
        return run_compaction(engine, Tier[target.upper()], batch=settings.compact_batch, budget_s=budget_s, now=now)
    total = RunStats(tier="all")
    for tier in Tier:
        total.add(run_compaction(engine, tier, batch=settings.compact_batch, budget_s=budget_s, now=now))
    total.add(run_named(engine, settings, "retention", now=now))
    total.outcome = "ok" if total.buckets else "idle"
    return total


def read_watermarks(engine: Engine) -> list[dict[str, int | str]]:
    """Per tier: watermark, updated_at and how many dirty buckets it has."""
    with engine.connect() as conn:
        marks = {int(t): (int(w), int(u)) for t, w, u in conn.execute(
            text("SELECT tier, watermark, updated_at FROM watermarks")
        )}
        dirty = {int(t): int(n) for t, n in conn.execute(
            text("SELECT tier, count(*) FROM dirty_buckets GROUP BY tier")
        )}
    return [
        {
            "tier": tier.label,
            "watermark": marks.get(tier, (0, 0))[0],
            "updated_at": marks.get(tier, (0, 0))[1],
            "dirty_buckets": dirty.get(tier, 0),
        }
        for tier in Tier
    ]


def _fail_span(span: trace.Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, str(exc)))
    span.set_attribute("outcome", "error")


def _record(
    engine: Engine,
    kind: str,
    tier: str,
    result: dict[str, Any],
    stats: RunStats,
    started_at: int,
    error: BaseException | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """The jobs row and the Prometheus metrics of a finished run; never masks the run's own error."""
    metrics.RUNS.labels(tier=tier, outcome=stats.outcome).inc()
    metrics.DURATION.labels(tier=tier).observe(stats.duration_s)
    if stats.buckets:
        metrics.BUCKETS.labels(tier=tier).inc(stats.buckets)
    err = None if error is None else {"type": type(error).__name__, "message": str(error)[:2000]}
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO jobs (id, kind, state, phase, progress, params, result, error, tier, buckets, "
                    "facts_read, duration_s, outcome, created_at, updated_at) VALUES (:id, :kind, :state, "
                    "'done', 1.0, CAST(:params AS jsonb), CAST(:result AS jsonb), CAST(:error AS jsonb), :tier, "
                    ":buckets, :facts_read, :duration_s, :outcome, :created_at, :updated_at)"
                ),
                {
                    "id": uuid.uuid4().hex,
                    "kind": kind,
                    "state": "failed" if error is not None else "succeeded",
                    "params": json.dumps({"tier": tier}),
                    "result": None if error is not None else json.dumps(result),
                    "error": None if err is None else json.dumps(err),
                    "tier": tier,
                    "buckets": stats.buckets,
                    "facts_read": stats.facts_read,
                    "duration_s": stats.duration_s,
                    "outcome": stats.outcome,
                    "created_at": started_at,
                    "updated_at": int(clock()),
                },
            )
        now = int(clock())
        for mark in read_watermarks(engine):
            metrics.WATERMARK_LAG.labels(tier=mark["tier"]).set(max(0, now - int(mark["watermark"])))
    except Exception:  # telemetry must not turn a finished run into a failure, nor hide its error
        log.exception("could not record the %s run of tier %s", kind, tier)
