"""What the harness asks (targets, windows, granularities) and what it exports: no database needed."""

from __future__ import annotations

import http.server
import random
import re
import threading
from datetime import datetime
from pathlib import Path
from typing import ClassVar
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.query.planning.timeseries import time_buckets
from tools.drift import exposition
from tools.drift.harness import plan_probes
from tools.drift.sampling import sample_targets, size_class
from tools.drift.windows import (
    MAX_POINTS,
    ROLLING,
    day_boundary_cases,
    dst_cases,
    finest_granularity,
    retention_cases,
    transitions,
    tz_offset_cases,
)

REPO = Path(__file__).resolve().parents[3]
NOW = 1_750_000_000
STATS = [(f"{i:064x}", (i + 1) ** 2, NOW - 300 * 86_400 + i, NOW - 60 - i) for i in range(50)]


def test_sampling_takes_the_size_anchors_then_random_targets_deterministically() -> None:
    first = sample_targets(STATS, 10, seed=5)
    assert [t.role for t in first].count("random") == 6
    roles = {t.role: t for t in first}
    assert roles["smallest"].facts == 1 and roles["largest"].facts == 2_500
    assert roles["median"].pubkey == STATS[round(0.5 * 49)][0] and roles["p90"].pubkey == STATS[round(0.9 * 49)][0]
    assert first == sample_targets(STATS, 10, seed=5)
    assert first != sample_targets(STATS, 10, seed=6)
    assert len(sample_targets(STATS, 500, seed=1)) == 50
    assert [size_class(r, 50) for r in (0, 24, 25, 44, 45, 49)] == ["small", "small", "medium", "medium", "large",
                                                                   "large"]


def test_windows_are_deterministic_and_cover_every_kind() -> None:
    targets = sample_targets(STATS, 4, seed=1)
    shared = [*dst_cases(random.Random(1), NOW - 300 * 86_400, NOW),
              *retention_cases({"facts (keep 30 d)": NOW - 30 * 86_400}, NOW)]
    probes = plan_probes(targets, 1, NOW, shared)
    assert probes == plan_probes(targets, 1, NOW, shared)
    assert {p.window.kind for p in probes} == {"rolling", "custom", "day_boundary", "dst", "retention", "tz_offset"}
    assert {p.window.label for p in probes if p.window.kind == "rolling"} == set(ROLLING)
    for p in probes:
        start, end = p.window.bounds(NOW)
        assert 0 <= start < end <= NOW
        assert p.window.kind == "rolling" or p.window.spec(NOW).now == NOW
    zones = {p.window.tz for p in probes if p.dimension == "time"}
    assert {"America/New_York", "Europe/London", "Asia/Kolkata", "Asia/Kathmandu", "UTC"} <= zones


def test_day_boundary_windows_cross_a_utc_midnight() -> None:
    for case in day_boundary_cases(random.Random(3), NOW - 100 * 86_400, NOW - 86_400, NOW):
        start, end = case.bounds(NOW)
        assert start // 86_400 < (end - 1) // 86_400


def test_dst_transitions_are_found_to_the_second() -> None:
    # 2025-03-09 07:00:00Z (New York springs forward), 2025-03-30 01:00:00Z (London).
    assert 1_741_503_600 in transitions("America/New_York", NOW - 200 * 86_400, NOW)
    assert 1_743_296_400 in transitions("Europe/London", NOW - 200 * 86_400, NOW)
    cases = dst_cases(random.Random(1), NOW - 200 * 86_400, NOW)
    assert {c.tz for c in cases} == {"America/New_York", "Europe/London"}
    for c in cases:
        start, end = c.bounds(NOW)
        offsets = {datetime.fromtimestamp(t, ZoneInfo(c.tz)).utcoffset() for t in (start, end - 1)}
        assert len(offsets) == 2, c


@pytest.mark.parametrize("span", [1, 59, 3_600, 59_999, 86_400, 40 * 86_400, 41 * 86_400, 400 * 86_400, NOW])
@pytest.mark.parametrize("tz", ["UTC", "Asia/Kathmandu", "America/New_York", "Australia/Lord_Howe"])
def test_auto_granularity_never_exceeds_the_point_limit(span: int, tz: str) -> None:
    end = NOW
    start = max(0, end - span)
    gran = finest_granularity(end - start)
    assert len(time_buckets(start, end, gran, ZoneInfo(tz))) <= MAX_POINTS


def test_offset_zone_series_use_local_buckets() -> None:
    cases = tz_offset_cases(random.Random(2), NOW - 100 * 86_400, NOW - 86_400, NOW)
    assert {c.tz for c in cases} == {"Asia/Kolkata", "Asia/Kathmandu"}
    hourly = [c for c in cases if c.granularity == "hour"]
    starts = {b.start % 3_600 for c in hourly for b in time_buckets(*c.bounds(NOW), "hour", ZoneInfo(c.tz))[1:]}
    assert starts == {1_800, 900}  # :30 in Kolkata, :15 past the UTC hour in Kathmandu (+05:45)


def test_retention_windows_touch_each_horizon() -> None:
    h = NOW - 30 * 86_400
    cases = retention_cases({"facts (published)": h, "minute (keep 7 d)": NOW - 7 * 86_400}, NOW)
    assert len(cases) == 6 and all(c.kind == "retention" for c in cases)
    bounds = [c.bounds(NOW) for c in cases if "facts" in c.note]
    assert any(s == h for s, _ in bounds) and any(e == h for _, e in bounds)
    assert any(s < h < e for s, e in bounds)


def test_prom_file_has_exactly_the_metrics_the_alerts_use(tmp_path: Path) -> None:
    alerts = (REPO / "deploy" / "prometheus" / "alerts.yaml").read_text()
    used = set(re.findall(r"\bcanal_drift_\w+", alerts))
    runbook = (REPO / "docs" / "runbook.md").read_text()
    documented = set(re.findall(r"`(canal_drift_\w+)`", runbook))

    assert exposition.export("drift", 3, tmp_path, None) == []

    families = list(text_string_to_metric_families((tmp_path / exposition.PROM_FILE).read_text()))
    samples = {s.name for f in families for s in f.samples if not s.name.endswith("_created")}
    assert used <= samples and documented == samples, (used, documented, samples)
    values = {(s.name, s.labels.get("outcome")): s.value for f in families for s in f.samples}
    assert values[("canal_drift_max_abs_delta", None)] == 3
    assert {o for n, o in values if n == "canal_drift_runs_total"} == {"clean", "drift", "error"}
    assert values[("canal_drift_runs_total", "drift")] == 1


class _Gateway(http.server.BaseHTTPRequestHandler):
    """A stand-in Pushgateway that records what it is sent."""

    seen: ClassVar[list[tuple[str, str, str]]] = []

    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        self.seen.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()

    do_PUT = do_POST = _record

    def log_message(self, *args: object) -> None:
        pass


def test_pushgateway_gets_the_run_and_a_failed_run_keeps_the_last_gauge(tmp_path: Path) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        assert exposition.export("clean", 0, tmp_path, url) == []
        assert exposition.export("error", None, tmp_path, url) == []
    finally:
        server.shutdown()
    (put_method, put_path, put_body), (post_method, _, post_body) = _Gateway.seen
    assert put_method == "PUT" and put_path == "/metrics/job/canal-drift"  # replaces the group
    assert "canal_drift_max_abs_delta 0.0" in put_body
    assert post_method == "POST" and "canal_drift_max_abs_delta" not in post_body  # adds, keeps the gauge
    assert 'canal_drift_runs_total{outcome="error"} 1.0' in post_body


def test_unreachable_pushgateway_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    warnings = exposition.export("drift", 2, tmp_path, "http://127.0.0.1:1")
    assert len(warnings) == 1 and "Pushgateway" in warnings[0]
    assert (tmp_path / exposition.PROM_FILE).exists()
