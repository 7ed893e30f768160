"""Async jobs through the gateway: 202 on heavy requests, POST /jobs, status, result (JSON, CSV), cancel,
failure errors, and a worker killed mid-job (SIGKILL) whose job completes once a new worker starts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from arq import Worker
from sqlalchemy import text

from services.query.worker import worker_options
from tests.services.gateway.helpers import ALICE_PK, Stack, seed, wait_for
from tests.services.gateway.test_errors import assert_error

pytestmark = pytest.mark.asyncio(loop_scope="session")
REPO = Path(__file__).resolve().parents[3]
JOBS = "/api/v2/analytics/jobs"


async def run_worker_burst(stack: Stack) -> None:
    """An in-process arq worker that runs every queued job, then stops."""
    worker = Worker(**{**worker_options(stack.settings), "burst": True, "handle_signals": False,
                       "poll_delay": 0.05})
    try:
        await worker.async_run()
    finally:
        await worker.close()


async def create(stack: Stack, **body: Any) -> str:
    async with stack.client() as http:
        resp = await http.post(JOBS, json={"kind": "summary", "pubkey": ALICE_PK, "window": "7d", **body})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["data"]["job"]["id"])


async def status(stack: Stack, job_id: str) -> dict[str, Any]:
    async with stack.client() as http:
        resp = await http.get(f"{JOBS}/{job_id}")
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["data"])


async def test_a_heavy_request_answers_202_with_a_job_handle(stack: Stack) -> None:
    stack.settings.sync_cost_limit = -1.0
    async with stack.client() as http:
        resp = await http.get("/api/v2/analytics/summary", params={"pubkey": ALICE_PK, "window": "30d"})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    job = body["data"]["job"]
    assert set(job) == {"id", "state", "status_url"} and job["state"] == "queued"
    assert job["status_url"] == f"{JOBS}/{job['id']}" == resp.headers["location"]
    assert body["meta"]["window"]["label"] == "30d" and body["meta"]["cache"] == "bypass"
    assert stack.counter.calls["GetSummary"] == 1


async def test_repeated_heavy_requests_share_one_job_but_post_always_makes_one(stack: Stack) -> None:
    stack.settings.sync_cost_limit = -1.0
    params = {"pubkey": ALICE_PK, "window": "30d"}
    async with stack.client() as http:
        burst = await asyncio.gather(*(http.get("/api/v2/analytics/summary", params=params) for _ in range(20)))
        later = await http.get("/api/v2/analytics/summary", params=params)
        other = await http.get("/api/v2/analytics/summary", params={**params, "window": "90d"})
    ids = {r.json()["data"]["job"]["id"] for r in [*burst, later]}
    assert len(ids) == 1 and other.json()["data"]["job"]["id"] not in ids
    assert await create(stack, window="30d") != await create(stack, window="30d")
    with stack.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 4


async def test_job_runs_to_a_result_in_the_sync_envelope_as_json_and_csv(stack: Stack) -> None:
    seed(stack.engine)
    job_id = await create(stack)
    queued = await status(stack, job_id)
    assert (queued["state"], queued["phase"], queued["progress"], queued["result_url"]) == ("queued", "queued", 0, None)
    async with stack.client() as http:
        early = await http.get(f"{JOBS}/{job_id}/result")
    assert early.status_code == 202 and early.json()["data"]["job"]["state"] == "queued"
    await run_worker_burst(stack)
    done = await status(stack, job_id)
    assert (done["state"], done["progress"], done["error"]) == ("succeeded", 1, None)
    assert set(done) == {"id", "state", "phase", "progress", "created_at", "updated_at", "result_url", "error"}
    async with stack.client() as http:
        result = await http.get(done["result_url"])
        csv = await http.get(done["result_url"], params={"format": "csv"})
        sync = await http.get("/api/v2/analytics/summary", params={"pubkey": ALICE_PK, "window": "7d"})
    assert result.status_code == 200, result.text
    assert result.json()["data"] == sync.json()["data"]
    assert set(result.json()["meta"]) == set(sync.json()["meta"])
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0] == "metric,value" and "reactions.count,2" in lines


async def test_drilldown_job_csv_flattens_rows(stack: Stack) -> None:
    note = seed(stack.engine)["note"]
    job_id = await create(stack, kind="drilldown", dimension="note")
    await run_worker_burst(stack)
    async with stack.client() as http:
        csv = await http.get(f"{JOBS}/{job_id}/result", params={"format": "csv"})
    header, row = csv.text.strip().splitlines()
    assert header.split(",")[:2] == ["key", "deleted"] and "reactions.count" in header
    assert row.startswith(f"{note},false,")


async def test_cancelled_job_never_runs_and_has_no_result(stack: Stack) -> None:
    job_id = await create(stack)
    async with stack.client() as http:
        cancelled = await http.delete(f"{JOBS}/{job_id}")
    assert cancelled.json()["data"]["state"] == "cancelled"
    await run_worker_burst(stack)
    assert (await status(stack, job_id))["state"] == "cancelled"
    assert stack.counter.calls["GetSummary"] == 0
    async with stack.client() as http:
        result = await http.get(f"{JOBS}/{job_id}/result")
    assert_error(result, 409, "JOB_CANCELLED")


async def test_failed_job_carries_an_actionable_error(stack: Stack) -> None:
    job_id = await create(stack, kind="drilldown", dimension="time", granularity="minute", window="365d")
    await run_worker_burst(stack)
    failed = await status(stack, job_id)
    assert failed["state"] == "failed"
    assert failed["error"]["code"] == "INVALID_WINDOW" and failed["error"]["hint"]
    async with stack.client() as http:
        result = await http.get(f"{JOBS}/{job_id}/result")
    assert_error(result, 409, "JOB_FAILED")


async def test_job_parameters_are_validated_before_a_job_exists(stack: Stack) -> None:
    async with stack.client() as http:
        bad_kind = await http.post(JOBS, json={"kind": "export", "pubkey": ALICE_PK, "window": "7d"})
        bad_window = await http.post(JOBS, json={"kind": "summary", "pubkey": ALICE_PK})
        bad_pubkey = await http.post(JOBS, json={"kind": "summary", "pubkey": "x", "window": "7d"})
    assert_error(bad_kind, 400, "INVALID_KIND")
    assert_error(bad_window, 400, "INVALID_WINDOW")
    assert_error(bad_pubkey, 400, "INVALID_PUBKEY")
    with stack.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 0


def start_worker(stack: Stack) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": stack.settings.database_url or "", "REDIS_URL": stack.settings.redis_url or "",
           "QUERY_ADDR": stack.settings.query_addr, "DEMO": "false", "LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "services.query.worker"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_a_job_survives_its_worker_being_killed(stack: Stack) -> None:
    seed(stack.engine)
    stack.counter.delays["GetSummary"] = 3.0  # long enough to kill the worker mid-query
    first = start_worker(stack)
    second = None
    try:
        job_id = await create(stack)

        async def mid_query() -> bool:
            st = await status(stack, job_id)
            return st["state"] == "running" and st["phase"] in ("reading_aggregates", "scanning_facts")

        await wait_for(mid_query, timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        stack.counter.delays["GetSummary"] = 0.0
        second = start_worker(stack)

        async def finished() -> dict[str, Any] | None:
            st = await status(stack, job_id)
            return st if st["state"] not in ("queued", "running") else None

        done = await wait_for(finished, timeout=45, every=0.25)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    assert done["state"] == "succeeded", done
    with stack.engine.connect() as conn:
        attempts = conn.execute(text("SELECT attempts FROM jobs WHERE id = :i"), {"i": job_id}).scalar()
    assert attempts == 2
    assert stack.counter.calls["GetSummary"] == 2
    async with stack.client() as http:
        result = await http.get(f"{JOBS}/{job_id}/result")
    assert result.json()["data"]["metrics"]["reactions.count"] == 2
    await asyncio.sleep(0)
