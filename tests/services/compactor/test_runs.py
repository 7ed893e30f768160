"""Every run leaves a jobs row, moves the Prometheus metrics and is one OpenTelemetry span."""

from __future__ import annotations

import time
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text

from libs.config import Settings
from libs.metrics import FactType, Tier
from services.compactor import runs
from services.compactor.runs import run_compaction, run_named, run_retention_job
from tests.services.compactor.helpers import fact, insert_facts

DAY = 86_400
BASE = 19_600 * DAY


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture()
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(runs, "tracer", provider.get_tracer("test"))
    return exporter


def _jobs(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT * FROM jobs ORDER BY created_at, updated_at")))


def test_a_compaction_run_records_a_job_row_metrics_and_a_span(engine: Engine, spans: InMemorySpanExporter) -> None:
    insert_facts(engine, [fact(1, BASE + 60 * i, FactType.ZAP, n=i, actor_id=3, msats=10) for i in range(7)])
    runs_before = _sample("canal_compaction_runs_total", tier="minute", outcome="ok")
    observed_before = _sample("canal_compaction_duration_seconds_count", tier="minute")
    buckets_before = _sample("canal_compaction_buckets_total", tier="minute")

    # the run's clock an hour back: the minute tier is then complete up to an hour ago, a lag the gauge
    # must show (with the wall clock the lag is the seconds into the current minute, 0 once a minute)
    stats = run_compaction(engine, Tier.MINUTE, batch=3, now=int(time.time()) - 3600)

    assert (stats.buckets, stats.facts_read, stats.batches, stats.outcome) == (7, 7, 3, "ok")
    [job] = _jobs(engine)
    assert len(job.id) == 32 and job.kind == "compaction" and job.state == "succeeded"
    assert (job.tier, job.buckets, job.facts_read, job.outcome) == ("minute", 7, 7, "ok")
    assert job.duration_s > 0 and job.error is None and job.created_at <= job.updated_at
    assert job.result["buckets"] == 7
    assert _sample("canal_compaction_runs_total", tier="minute", outcome="ok") == runs_before + 1
    assert _sample("canal_compaction_duration_seconds_count", tier="minute") == observed_before + 1
    assert _sample("canal_compaction_buckets_total", tier="minute") == buckets_before + 7
    assert _sample("canal_watermark_lag_seconds", tier="minute") >= 3600 - 60
    [span] = spans.get_finished_spans()
    assert span.name == "compactor.run"
    assert span.attributes is not None
    assert (span.attributes["tier"], span.attributes["buckets"], span.attributes["facts_read"]) == ("minute", 7, 7)


def test_a_failed_run_records_a_failed_job_with_the_error_and_reraises(
    engine: Engine, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runs, "compact_tier", broken)
    errors_before = _sample("canal_compaction_runs_total", tier="hour", outcome="error")
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_compaction(engine, Tier.HOUR, batch=10)
    [job] = _jobs(engine)
    assert (job.kind, job.state, job.tier, job.outcome) == ("compaction", "failed", "hour", "error")
    assert job.error == {"type": "RuntimeError", "message": "disk on fire"}
    assert _sample("canal_compaction_runs_total", tier="hour", outcome="error") == errors_before + 1
    [span] = spans.get_finished_spans()
    assert not span.status.is_ok


def test_idle_and_retention_runs_are_recorded_too(engine: Engine, spans: InMemorySpanExporter) -> None:
    run_compaction(engine, Tier.DAY, batch=10)
    run_retention_job(engine, Settings(database_url=None), now=BASE)
    assert [(j.kind, j.tier, j.outcome, j.state) for j in _jobs(engine)] == [
        ("compaction", "day", "idle", "succeeded"),
        ("retention", "retention", "idle", "succeeded"),
    ]


def test_run_named_all_rolls_every_tier_then_retention(engine: Engine, spans: InMemorySpanExporter) -> None:
    insert_facts(engine, [fact(2, BASE + 5, FactType.NOTE, n=1, actor_id=2)])
    stats = run_named(engine, Settings(database_url=None), "all")
    assert (stats.tier, stats.buckets, stats.facts_read, stats.outcome) == ("all", 5, 1, "ok")
    assert sorted(j.tier for j in _jobs(engine)) == ["day", "day64", "day8", "hour", "minute", "retention"]
    with pytest.raises(ValueError):
        run_named(engine, Settings(database_url=None), "week")
