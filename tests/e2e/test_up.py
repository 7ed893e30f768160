"""`canal up` lifecycle (issue 2, Done when): five processes, health, SIGINT with no child left, and a
second start on the same DATA_DIR that reuses the embedded data (same answers, nothing admitted twice)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from libs.rpc import check_health
from tests.chaos.helpers import Db, short_tmp, start_suite_or_explain, suite_db_url, wait_until
from tests.e2e.suite import Suite, stop_suite, suite_env
from tools.demo.generator import demo_pubkey

pytestmark = pytest.mark.timeout(240)
SERVICES = {"ingest", "compactor", "query", "worker", "gateway", "demo-relay"}
GRPC = [("INGEST_ADDR", "canal.ingest.v1.IngestService"), ("COMPACTOR_ADDR", "canal.compactor.v1.CompactorService"),
        ("QUERY_ADDR", "canal.query.v1.QueryService"), ("QUERY_ADDR", "canal.jobs.v1.JobsService")]


def _summary(suite: Suite, path: str, pubkey: str, start: int, end: int) -> dict[str, Any]:
    resp = httpx.get(suite.base_url + path, params={"pubkey": pubkey, "start": str(start), "end": str(end)},
                     headers=suite.headers, timeout=30)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _counters(db: Db) -> dict[str, int]:
    """ingest_state counters and the stored events, read in one statement (one snapshot)."""
    row = db.rows("SELECT (SELECT value FROM ingest_state WHERE name = 'admitted'), "
                  "(SELECT value FROM ingest_state WHERE name = 'duplicates'), (SELECT count(*) FROM events)")[0]
    return {"admitted": int(row[0] or 0), "duplicates": int(row[1] or 0), "events": int(row[2])}


def _leftovers(data_dir: Path, pids: list[int]) -> list[str]:
    """Processes still alive from the stopped suite: its descendants, or anything serving from its data dir."""
    left = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if proc.info["pid"] in pids or str(data_dir) in cmd:
                left.append(f"{proc.info['pid']}: {cmd[:120]}")
        except psutil.Error:
            continue
    return left


def test_canal_up_runs_every_process_healthy_stops_cleanly_and_restarts_on_the_same_data(tmp_path: Path) -> None:
    log = tmp_path / "canal-up.log"
    with short_tmp("cup-") as data_dir:
        env = suite_env(data_dir)
        suite = start_suite_or_explain(env, log, timeout=120)
        db = Db(suite_db_url(data_dir))
        try:
            serving = {p.cmdline()[-1] for p in suite.descendants if p.cmdline()[-2:-1] == ["serve"]}
            assert serving == SERVICES
            assert httpx.get(suite.base_url + "/healthz", timeout=5).status_code == 200
            ready = httpx.get(suite.base_url + "/readyz", timeout=5)
            assert ready.status_code == 200 and ready.json()["status"] == "ok", ready.text
            for var, service in GRPC:
                assert check_health(env[var]), f"{var}: overall health not SERVING"
                assert check_health(env[var], service), f"{var}: {service} not SERVING"

            # the demo relay's backfill is done (the cursor moved): the data is settled up to now
            wait_until(lambda: int(db.scalar("SELECT coalesce(max(since), 0) FROM relay_cursors")) > 0, 120,
                       "the demo backfill")
            pubkey = suite.default_pubkey or demo_pubkey(7)
            end = int(time.time()) - 10  # live demo events older than 10 s are committed
            start = end - 60 * 86_400
            first_v2 = _summary(suite, "/api/v2/analytics/summary", pubkey, start, end)
            first_v1 = _summary(suite, "/api/v1/analytics/summary", pubkey, start, end)
            assert first_v2["data"]["metrics"]["reactions.count"] > 0
            before_stop = _counters(db)
            assert before_stop["admitted"] == before_stop["events"]
            pids = [p.pid for p in psutil.Process(suite.proc.pid).children(recursive=True)]
        finally:
            db.close()
            stopping = time.monotonic()
            code = stop_suite(suite)
        stop_s = time.monotonic() - stopping
        assert code == 0, log.read_text()[-3000:]
        gone, alive = psutil.wait_procs([p for p in suite.descendants if p.is_running()], timeout=10)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        assert _leftovers(data_dir, pids) == []

        restarted_at = int(time.time())
        again = start_suite_or_explain(env, log, timeout=120)  # same DATA_DIR, same ports
        db = Db(suite_db_url(data_dir))
        try:
            second_v2 = _summary(again, "/api/v2/analytics/summary", pubkey, start, end)
            second_v1 = _summary(again, "/api/v1/analytics/summary", pubkey, start, end)
            # ingest reconnected to the (re-filled) demo relay and re-read the overlap before its cursor
            wait_until(lambda: _counters(db)["duplicates"] > before_stop["duplicates"], 60,
                       "the restarted ingest to re-read the relay")
            time.sleep(2)
            after = _counters(db)
            readmitted = db.scalar("SELECT count(*) FROM events WHERE received_at >= :t AND created_at < :s",
                                   t=restarted_at, s=restarted_at - 60)
        finally:
            db.close()
            assert stop_suite(again) == 0
    assert second_v2["data"] == first_v2["data"]
    assert second_v1["data"] == first_v1["data"]
    assert after["admitted"] == after["events"]  # every admitted event stored once: nothing admitted twice
    assert after["events"] >= before_stop["events"]
    assert readmitted == 0  # no old event was admitted again by the second run
    assert stop_s < 30
