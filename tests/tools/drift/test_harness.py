"""The drift harness end to end: real PostgreSQL, real ingest and compaction, real gRPC query server."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from libs.config import Settings
from libs.db.engine import make_engine
from tests.tools.drift import dataset
from tools.drift.harness import LocalQueryServer, main

SAMPLES = 6
SEED = 3
UNREACHABLE = "127.0.0.1:1"


def _settings(db: str, tmp_path: Path, query_addr: str = UNREACHABLE) -> Settings:
    return Settings(_env_file=None, database_url=db, query_addr=query_addr,  # type: ignore[call-arg]
                         data_dir=tmp_path / "data", pushgateway_url=None)


def _args(out: Path) -> argparse.Namespace:
    return argparse.Namespace(out=str(out), samples=SAMPLES, seed=SEED, now=dataset.NOW)


def _load(db: str) -> None:
    engine = make_engine(db, pool_size=2)
    try:
        dataset.load(engine, dataset.generate_events(SEED, dataset.NOW), dataset.NOW)
        dataset.compact(engine, dataset.NOW)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM dirty_buckets")).scalar_one() == 0
            assert conn.execute(text("SELECT count(*) FROM aggregates WHERE tier = 3")).scalar_one() > 0
    finally:
        engine.dispose()


def _prom(path: Path) -> dict[str, float]:
    """Sample name (with labels) -> value of a text-format file."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_clean_data_reports_zero_drift_and_exits_0(db: str, tmp_path: Path) -> None:
    _load(db)
    out = tmp_path / "report"

    # QUERY_ADDR is not serving: the harness starts its own query server against DATABASE_URL.
    assert main(_args(out), _settings(db, tmp_path)) == 0

    report = json.loads((out / "drift-report.json").read_text())
    assert report["outcome"] == "clean" and report["exit_code"] == 0 and report["max_abs_delta"] == 0
    assert report["error_count"] == 0 and report["worst_cases"] == []
    assert report["totals"]["comparisons"] > 1_000
    classes = report["by_metric_class"]
    for name in ("zaps", "reactions", "reposts", "replies", "quotes", "mentions", "followers", "notes", "articles"):
        assert classes[name]["comparisons"] > 0 and classes[name]["mismatches"] == 0, name
    assert {k for k, v in report["by_window_kind"].items() if v["comparisons"]} == {
        "rolling", "custom", "day_boundary", "dst", "retention", "tz_offset"}
    assert {k for k, v in report["by_size_class"].items() if v["comparisons"]} == {"small", "medium", "large"}
    assert {t["role"] for t in report["targets"]} >= {"smallest", "median", "p90", "largest"}
    assert len(report["targets"]) == SAMPLES
    markdown = (out / "drift-report.md").read_text()
    assert "**Outcome: clean** (exit 0)" in markdown and "## Per window kind" in markdown

    metrics = _prom(out / "drift.prom")
    assert metrics["canal_drift_max_abs_delta"] == 0
    assert metrics['canal_drift_runs_total{outcome="clean"}'] == 1
    assert metrics['canal_drift_runs_total{outcome="drift"}'] == 0


def _corrupt_largest_target(db: str) -> tuple[str, str]:
    """+1 on a day bucket of the largest target (every run samples it; `all` reads its day buckets)."""
    engine = make_engine(db, pool_size=1)
    try:
        with engine.begin() as conn:
            pubkey, target = conn.execute(text(
                "SELECT p.pubkey, p.id FROM facts f JOIN pubkeys p ON p.id = f.target_id "
                "GROUP BY p.pubkey, p.id ORDER BY count(*) DESC, p.pubkey DESC LIMIT 1")).one()
            for column, metric in (("zaps_count", "zaps.count"), ("reactions_count", "reactions.count")):
                bucket = conn.execute(text(
                    f"SELECT bucket_start FROM aggregates WHERE target_id = :t AND tier = 3 AND {column} > 0 "
                    "AND bucket_start + 86400 <= :now ORDER BY bucket_start LIMIT 1"),
                    {"t": target, "now": dataset.NOW}).scalar()
                if bucket is not None:
                    conn.execute(text(f"UPDATE aggregates SET {column} = {column} + 1 "
                                      "WHERE target_id = :t AND tier = 3 AND bucket_start = :b"),
                                 {"t": target, "b": bucket})
                    return str(pubkey), metric
    finally:
        engine.dispose()
    raise AssertionError("the data set has no day bucket with zaps or reactions")


def test_corrupted_aggregate_row_is_drift_and_exits_1(db: str, tmp_path: Path) -> None:
    _load(db)
    pubkey, metric = _corrupt_largest_target(db)
    out = tmp_path / "report"
    engine = make_engine(db, pool_size=4)
    try:
        # A query service already serving at QUERY_ADDR is used as it is.
        with LocalQueryServer(engine, _settings(db, tmp_path)) as addr:
            code = main(_args(out), _settings(db, tmp_path, query_addr=addr))
    finally:
        engine.dispose()
    assert code == 1

    report = json.loads((out / "drift-report.json").read_text())
    assert report["outcome"] == "drift" and report["max_abs_delta"] == 1
    metric_class = metric.split(".")[0]
    assert report["by_metric_class"][metric_class]["mismatches"] > 0
    assert report["by_size_class"]["large"]["mismatches"] > 0
    worst = report["worst_cases"]
    assert worst and all(case["pubkey"] == pubkey for case in worst)
    assert any(case["metric"] == metric and case["dimension"] == "summary" for case in worst)
    case = next(c for c in worst if c["metric"] == metric and c["dimension"] == "summary")
    assert case["canonical"] - case["legacy"] == case["delta"] == 1
    assert f"pubkey={pubkey}" in case["curl_v1"] and "/api/v1/analytics/summary" in case["curl_v1"]
    assert "/api/v2/analytics/summary" in case["curl_v2"]
    assert f"{addr} canal.query.v1.QueryService/GetSummary" in case["grpcurl_canonical"]
    assert "SOURCE_LEGACY" in case["grpcurl_legacy"] and "SOURCE_CANONICAL" in case["grpcurl_canonical"]
    markdown = (out / "drift-report.md").read_text()
    assert "**Outcome: drift** (exit 1)" in markdown and pubkey in markdown and f"`{metric}`" in markdown

    metrics = _prom(out / "drift.prom")
    assert metrics["canal_drift_max_abs_delta"] == 1
    assert metrics['canal_drift_runs_total{outcome="drift"}'] == 1


def test_unreachable_database_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = _settings("postgresql://nobody:secret@127.0.0.1:1/none", tmp_path)
    out = tmp_path / "report"

    assert main(_args(out), settings) == 2

    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("canal drift:")]
    assert len(err) == 1 and "could not run" in err[0] and "PostgreSQL" in err[0] and "secret" not in err[0]
    metrics = _prom(out / "drift.prom")
    assert metrics['canal_drift_runs_total{outcome="error"}'] == 1
    assert "canal_drift_max_abs_delta" not in metrics  # a failed run never clears an earlier drift
    assert not (out / "drift-report.json").exists()
