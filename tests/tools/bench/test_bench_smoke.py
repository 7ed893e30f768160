"""The bench's report writer on a tiny fake result (no database, no servers)."""

from __future__ import annotations

import json
from pathlib import Path

from tools.bench import report
from tools.bench.stats import percentile, summarize_ms


def _lat(p50: float, p95: float) -> dict[str, float]:
    return {"n": 10, "p50": p50, "p95": p95, "p99": p95, "mean": p50, "max": p95}


def fake_results() -> dict:
    summary = {
        w: {"canonical": {"latency_ms": _lat(3.0, 5.0), "plan": {"tiers": {"day": 30}, "raw_facts_scanned": 0}},
            "legacy": {"latency_ms": _lat(900.0, 1000.0)}, "speedup_vs_legacy_p50": 300.0, "answers_equal": True}
        for w in report.ROLLING
    }
    summary["30d"]["canonical"]["latency_ms"] = _lat(12.0, 40.0)  # misses the 15 ms target
    summary["30d"]["speedup_vs_legacy_p50"] = 75.0  # and the 100x one
    return {
        "meta": {"date": "2025-10-09T00:00:00+00:00", "mode": "quick", "commit": "abc123",
                 "machine": {"cores": 2, "memory_gb": 23.4, "cpu": "fake"}, "duration_s": 1.0},
        "workload": {"facts": 1000, "big_target_facts": 900, "days": 14, "build": {"cached": True}},
        "query": {
            "grpc": {"summary": summary},
            "custom": {"count": 3, "canonical_latency_ms": _lat(4.0, 6.0), "min_speedup_long": 150.0,
                       "all_equal": True, "legacy_sample": []},
            "duckdb": {"rolling": {w: {"latency_ms": _lat(60.0, 70.0), "canonical_p50": 3.0,
                                       "speedup_canonical_vs_duckdb": 20.0, "equal": True} for w in report.ROLLING},
                       "custom": {"min_speedup": 8.0, "median_speedup": 15.0, "all_equal": True}},
            "gateway": {"measured": False, "reason": "no gateway in this checkout"},
            "growth": {"sizes": [10, 900], "worst_p95_ratio": 1.5, "windows": {}},
        },
        "ingest": {"file": {"1": {"processes": 1, "items": 100, "seconds": 0.1, "events_per_s": 1000.0},
                            "2": {"processes": 2, "items": 100, "seconds": 0.05, "events_per_s": 16_000.0}},
                   "relay": {"reason": "not measured: no relay"}},
        "freshness": {"rate_target": 200, "delay_ms": _lat(50.0, 80.0), "commit_ms": _lat(10.0, 20.0)},
        "compaction": {"new_facts": {"facts": 1000, "seconds": 2.0, "facts_per_s": 500.0,
                                     "tiers": {"minute": {"buckets": 5, "seconds": 1.0}}}},
    }


def test_report_writer_marks_each_target_and_writes_both_files(tmp_path: Path) -> None:
    results = fake_results()
    json_path, md_path = report.write(tmp_path, results)
    rows: dict[str, dict] = {}
    for r in results["targets"]:
        rows.setdefault(r["figure"].split(",")[0], r)  # the first row of each kind
    assert rows["Summary p95 via gRPC"]["pass"] is False and rows["Summary p95 via gRPC"]["value"] == 40.0
    assert rows["Canonical vs legacy scan"]["pass"] is False and rows["Canonical vs legacy scan"]["ratio"] == 75.0
    assert rows["Canonical vs DuckDB Parquet scan"]["pass"] is True
    assert rows["Ingest"]["pass"] is True and rows["Ingest"]["ratio"] == 16.0
    assert rows["Summary p95 via gateway"]["value"] == "not measured"
    assert json.loads(json_path.read_text())["meta"]["commit"] == "abc123"
    text = md_path.read_text()
    assert "| figure | value | baseline | ratio | target | result |" in text
    assert "**FAIL**" in text and "**pass**" in text and "2 cores" in text and "abc123" in text


def test_drilldown_growth_and_storage_rows_judge_issue_15_targets(tmp_path: Path) -> None:
    results = fake_results()
    drill = {w: {"canonical": {"latency_ms": _lat(5.0, 9.0)}, "legacy": {"latency_ms": _lat(200.0, 220.0)},
                 "speedup_vs_legacy_p50": 40.0, "answers_equal": True} for w in report.ROLLING}
    drill["7d"]["speedup_vs_legacy_p50"] = 12.0  # misses >= 20x on a window >= 7 d
    results["query"]["grpc"]["note"] = drill
    per_event = {"wal_bytes": 900.0, "wal_fpi": 0.01, "wal_records": 20.0, "blks_read": 0.0, "blks_hit": 60.0,
                 "indexes": {"pk_facts": {"read": 0.0, "hit": 4.0}}, "heap": {}}
    results["ingest"]["growth"] = [
        {"facts_before": 0, "events_per_s": 10_000.0, "server_per_event": per_event, "facts_bytes": 1},
        {"facts_before": 6_000_000, "events_per_s": 8_000.0, "server_per_event": per_event, "facts_bytes": 2},
    ]
    results["storage"] = {"facts": 100, "total_bytes": 30_000, "facts_table_bytes": 20_000,
                          "bytes_per_fact": {"all_tables": 300.0, "facts_table": 200.0},
                          "total_over_facts_table": 1.5, "rows_by_tier": {},
                          "tables": {"facts": {"heap_bytes": 10_000, "index_bytes": 10_000, "rows_estimate": 100}}}
    _, md_path = report.write(tmp_path, results)
    rows = {r["figure"]: r for r in results["targets"]}
    p95 = next(r for f, r in rows.items() if f.startswith("Drilldown `note` first page p95"))
    assert p95["value"] == 9.0 and p95["pass"] is True
    speed = rows["Drilldown `note` vs legacy scan, p50, windows >= 7 days"]
    assert speed["ratio"] == 12.0 and speed["pass"] is False and speed["note"] == "worst window 7d"
    growth = next(r for f, r in rows.items() if f.startswith("Ingest rate at 6,000,000 facts"))
    assert growth["ratio"] == 1.25 and growth["pass"] is True
    storage = next(r for f, r in rows.items() if f.startswith("Storage"))
    assert storage["ratio"] == 1.5 and storage["pass"] is True
    text = md_path.read_text()
    assert "### Ingest as the store grows" in text and "## Storage" in text


def test_percentiles_interpolate_and_summaries_are_in_ms() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert summarize_ms([0.001, 0.002])["p50"] == 1.5
    assert summarize_ms([]) == {"n": 0}
