"""Slow database and Redis down, under the real gateway app and query gRPC server running in this process
(real sockets, real PostgreSQL, real redis-server)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest
from arq import Worker

from libs.db.engine import normalize_url
from libs.embedded import start_redis
from services.query.worker import worker_options
from tests.chaos.helpers import Db, short_tmp
from tests.services.gateway.helpers import ALICE_PK, BOB_PK, CAROL_PK, Stack, running_stack, seed

pytestmark = [pytest.mark.chaos, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]
SUMMARY = "/api/v2/analytics/summary"
JOBS = "/api/v2/analytics/jobs"
DEADLINE_S = 1.0


def _error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = dict(resp.json()["error"])
    assert err["code"] == code and err["hint"], err
    return err


class TableLock:
    """A session of its own holding LOCK TABLE ... IN ACCESS EXCLUSIVE MODE until released."""

    def __init__(self, url: str, table: str) -> None:
        self.url = normalize_url(url).replace("postgresql+psycopg://", "postgresql://")
        self.table = table
        self.locked = threading.Event()
        self.release = threading.Event()
        self.pid = 0
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        with psycopg.connect(self.url) as conn:
            self.pid = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
            conn.execute(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE")
            self.locked.set()
            self.release.wait(60)
            conn.rollback()

    def __enter__(self) -> TableLock:
        self.thread.start()
        assert self.locked.wait(10), "could not take the lock"
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(10)


async def test_slow_database_hits_the_deadline_and_the_gateway_serves_the_stale_fallback(
        db: str, redis_url: str, facts: dict[str, Any]) -> None:
    """A session holds `LOCK TABLE facts IN ACCESS EXCLUSIVE MODE` (a real lock: every read of facts waits):
    the query path hits its deadline (QUERY_DEADLINE_S=1), the gateway answers a request it answered before
    with the stale fallback (meta.cache "stale", freshness.stale true) and one it never answered with 503
    UNAVAILABLE and a hint; once the lock is gone, answers are live again."""
    async with running_stack(db, redis_url, query_deadline_s=DEADLINE_S) as stack:
        seed(stack.engine)
        waiting = Db(db)
        params = {"pubkey": ALICE_PK, "window": "24h"}
        async with stack.client() as http:
            live = await http.get(SUMMARY, params=params)
            assert live.status_code == 200 and live.json()["meta"]["cache"] == "miss"
            await asyncio.sleep(1.1)  # a new second: the rolling window is a new exact request
            with TableLock(db, "facts") as lock:
                began = time.perf_counter()
                stale_task = asyncio.ensure_future(http.get(SUMMARY, params=params))
                blocked = 0
                for _ in range(20):  # see the query wait on the lock while the gateway waits on the query
                    await asyncio.sleep(0.05)
                    blocked = max(blocked, int(await asyncio.to_thread(
                        waiting.scalar, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND :pid = ANY(pg_blocking_pids(pid))", pid=lock.pid) or 0))
                stale = await stale_task
                stale_s = time.perf_counter() - began
                never = await http.get(SUMMARY, params={"pubkey": BOB_PK, "window": "24h"})
            await asyncio.sleep(1.1)
            after = await http.get(SUMMARY, params=params)
        waiting.close()
    assert blocked >= 1
    assert stale.status_code == 200, stale.text
    body = stale.json()
    assert body["meta"]["cache"] == "stale" and body["meta"]["freshness"]["stale"] is True
    assert body["data"] == live.json()["data"]
    assert DEADLINE_S <= stale_s < DEADLINE_S + 2.5
    err = _error(never, 503, "UNAVAILABLE")
    assert after.status_code == 200 and after.json()["meta"]["cache"] in ("miss", "hit")
    assert after.json()["meta"]["freshness"]["stale"] is False
    facts.update({"QUERY_DEADLINE_S": DEADLINE_S, "queries blocked by the lock (pg_blocking_pids)": blocked,
                  "stale fallback answered after (s)": round(stale_s, 2),
                  "request never answered before": f"{never.status_code} {err['code']}: {err['hint']}",
                  "after the lock is released": f"{after.status_code}, cache={after.json()['meta']['cache']}"})


async def _run_jobs(stack: Stack) -> None:
    worker = Worker(**{**worker_options(stack.settings), "burst": True, "handle_signals": False, "poll_delay": 0.05})
    try:
        await worker.async_run()
    finally:
        await worker.close()


async def test_redis_down_then_back(db: str, facts: dict[str, Any]) -> None:
    """Stop the embedded redis-server under a running gateway + query server: the sync summary still answers
    (meta.cache "bypass"), job endpoints answer 503 UNAVAILABLE with a hint, /readyz says degraded; start it
    again on the same socket: the cache (miss then hit), job creation and an arq worker run work again."""
    with short_tmp("crd-") as folder:
        server = start_redis(folder)
        try:
            async with running_stack(db, server.url) as stack:
                seed(stack.engine)
                params = {"pubkey": ALICE_PK, "window": "24h"}
                job_body = {"kind": "summary", "pubkey": ALICE_PK, "window": "7d"}
                async with stack.client() as http:
                    before = await http.get(SUMMARY, params=params)
                    server.stop()
                    stopped_at = time.monotonic()
                    during = await http.get(SUMMARY, params=params)
                    other = await http.get(SUMMARY, params={"pubkey": CAROL_PK, "window": "7d"})
                    job = await http.post(JOBS, json=job_body)
                    ready = await http.get("/readyz")
                    outage: dict[str, int] = {}
                    while time.monotonic() - stopped_at < 3.0:  # keep asking during a 3 s outage
                        resp = await http.get(SUMMARY, params={"pubkey": BOB_PK, "window": "24h"})
                        key = f"{resp.status_code} {resp.json()['meta']['cache'] if resp.status_code == 200 else ''}"
                        outage[key] = outage.get(key, 0) + 1
                        await asyncio.sleep(0.05)
                    server = start_redis(folder)
                    back_at = time.monotonic()

                    async def recovered() -> bool:
                        resp = await http.get(SUMMARY, params={"pubkey": ALICE_PK, "window": "30d"})
                        return resp.status_code == 200 and resp.json()["meta"]["cache"] != "bypass"

                    deadline = time.monotonic() + 15
                    while not await recovered():
                        assert time.monotonic() < deadline, "the cache did not come back"
                        await asyncio.sleep(0.2)
                    recovered_s = time.monotonic() - back_at
                    await asyncio.sleep(1.1)
                    miss = await http.get(SUMMARY, params=params)
                    hit = await http.get(SUMMARY, params=params)
                    created = await http.post(JOBS, json=job_body)
                    assert created.status_code == 202, created.text
                    job_id = created.json()["data"]["job"]["id"]
                    await _run_jobs(stack)
                    done = await http.get(f"{JOBS}/{job_id}")
                    result = await http.get(f"{JOBS}/{job_id}/result")
                    ready_after = await http.get("/readyz")
        finally:
            server.stop()
    assert before.status_code == 200 and before.json()["meta"]["cache"] == "miss"
    assert during.status_code == 200 and during.json()["meta"]["cache"] == "bypass"
    assert during.json()["data"] == before.json()["data"]
    assert other.status_code == 200 and other.json()["meta"]["cache"] == "bypass"
    err = _error(job, 503, "UNAVAILABLE")
    assert set(outage) == {"200 bypass"}, outage
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert (miss.json()["meta"]["cache"], hit.json()["meta"]["cache"]) == ("miss", "hit")
    assert done.json()["data"]["state"] == "succeeded", done.text
    assert result.status_code == 200 and result.json()["data"]["metrics"] == before.json()["data"]["metrics"]
    assert ready_after.json()["status"] == "ok"
    facts.update({"sync summary while Redis is down": f"{during.status_code}, cache=bypass",
                  "POST /api/v2/analytics/jobs while down": f"{job.status_code} {err['code']}: {err['hint']}",
                  "/readyz while down": ready.json()["status"],
                  "summaries asked during the outage": outage,
                  "Redis down for (s)": round(back_at - stopped_at, 2),
                  "cache working again within (s) of Redis' return": round(recovered_s, 2),
                  "after the return": f"cache miss then hit; job {done.json()['data']['state']}, result "
                                      f"{result.status_code}; /readyz {ready_after.json()['status']}"})
