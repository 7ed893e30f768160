"""Faults: query service stopped or too slow -> the last good answer, marked stale; Redis stopped -> the
sync path still answers (cache bypass) and the async path says 503 with a hint."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from libs.embedded import EmbeddedRedis, start_redis
from tests.services.gateway.helpers import ALICE_PK, BOB_PK, Stack, running_stack, seed
from tests.services.gateway.test_errors import assert_error

pytestmark = pytest.mark.asyncio(loop_scope="session")
SUMMARY = "/api/v2/analytics/summary"


async def test_query_service_stopped_serves_the_last_good_answer_as_stale(stack: Stack) -> None:
    seed(stack.engine)
    params = {"pubkey": ALICE_PK, "window": "24h"}
    async with stack.client() as http:
        live = (await http.get(SUMMARY, params=params)).json()
        await stack.stop_query()
        await asyncio.sleep(1.1)  # a new second: a rolling window is a new exact request
        stale = await http.get(SUMMARY, params=params)
        unknown = await http.get(SUMMARY, params={"pubkey": BOB_PK, "window": "24h"})
    assert stale.status_code == 200, stale.text
    body = stale.json()
    assert body["meta"]["cache"] == "stale" and body["meta"]["freshness"]["stale"] is True
    assert live["meta"]["cache"] == "miss" and live["meta"]["freshness"]["stale"] is False
    assert body["data"] == live["data"] and body["meta"]["request_id"] != live["meta"]["request_id"]
    err = assert_error(unknown, 503, "UNAVAILABLE")
    assert err["hint"]


async def test_query_past_its_deadline_serves_the_stale_answer(db: str, redis_url: str) -> None:
    async with running_stack(db, redis_url, query_deadline_s=1.0) as stack:
        seed(stack.engine)
        params = {"pubkey": ALICE_PK, "window": "24h"}
        async with stack.client() as http:
            live = (await http.get(SUMMARY, params=params)).json()
            stack.counter.delays["GetSummary"] = 2.5
            await asyncio.sleep(1.1)
            slow = await http.get(SUMMARY, params=params)
    assert slow.status_code == 200, slow.text
    assert slow.json()["meta"]["cache"] == "stale" and slow.json()["meta"]["freshness"]["stale"] is True
    assert slow.json()["data"] == live["data"]


@pytest.fixture()
def own_redis() -> Iterator[EmbeddedRedis]:
    folder = Path(tempfile.mkdtemp(prefix="cgw-", dir="/tmp"))  # short: a unix socket path has a length limit
    server = start_redis(folder)
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


async def test_redis_stopped_sync_still_answers_and_async_says_503(db: str, own_redis: EmbeddedRedis) -> None:
    async with running_stack(db, own_redis.url) as stack:
        seed(stack.engine)
        async with stack.client() as http:
            before = await http.get(SUMMARY, params={"pubkey": ALICE_PK, "window": "24h"})
            own_redis.stop()
            during = await http.get(SUMMARY, params={"pubkey": ALICE_PK, "window": "24h"})
            drill = await http.get("/api/v2/analytics/drilldown",
                                   params={"pubkey": ALICE_PK, "window": "24h", "dimension": "note"})
            job = await http.post("/api/v2/analytics/jobs", json={"kind": "summary", "pubkey": ALICE_PK,
                                                                   "window": "7d"})
            stack.settings.sync_cost_limit = -1.0  # everything is "heavy" now: the 202 path needs Redis
            heavy = await http.get(SUMMARY, params={"pubkey": ALICE_PK, "window": "30d"})
            ready = await http.get("/readyz")
    assert before.json()["meta"]["cache"] == "miss"
    assert during.status_code == 200, during.text
    assert during.json()["meta"]["cache"] == "bypass"
    assert during.json()["data"] == before.json()["data"]
    assert drill.status_code == 200 and drill.json()["meta"]["cache"] == "bypass"
    for resp in (job, heavy):
        err = assert_error(resp, 503, "UNAVAILABLE")
        assert "Redis" in err["hint"] or "queue" in err["hint"]
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded" and ready.json()["checks"]["redis"] == "unavailable"
