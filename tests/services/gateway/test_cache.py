"""Answer cache: request coalescing (no stampede), in one gateway and across gateways sharing Redis."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from tests.services.gateway.helpers import ALICE_PK, Stack, gateway_app, seed, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")
SUMMARY = "/api/v2/analytics/summary"


def window(stack: Stack) -> dict[str, str]:
    t = seed(stack.engine)["t"]
    return {"pubkey": ALICE_PK, "start": str(t - 60), "end": str(t + 3600)}


async def burst(base_url: str, secret: str, params: dict[str, str], n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {secret}"}, timeout=60,
                                 verify=False, limits=httpx.Limits(max_connections=n)) as http:
        return await asyncio.gather(*(http.get(SUMMARY, params=params) for _ in range(n)))


async def test_200_concurrent_identical_requests_compute_once(stack: Stack) -> None:
    params = window(stack)
    stack.counter.delays["GetSummary"] = 0.3  # every request arrives while the first one computes
    answers = await burst(stack.base_url, stack.keys["reader"], params, 200)
    assert [r.status_code for r in answers] == [200] * 200
    assert stack.counter.calls["GetSummary"] == 1
    caches = Counter(r.json()["meta"]["cache"] for r in answers)
    assert caches["miss"] == 1 and caches["hit"] == 199
    assert len({r.json()["meta"]["request_id"] for r in answers}) == 200
    assert len({str(r.json()["data"]) for r in answers}) == 1


async def test_two_gateways_sharing_redis_compute_once(stack: Stack) -> None:
    params = window(stack)
    stack.counter.delays["GetSummary"] = 0.5
    other = gateway_app(stack.settings.model_copy(), stack.engine, stack.query_port)
    async with serving(other) as other_url:
        first, second = await asyncio.gather(burst(stack.base_url, stack.keys["reader"], params, 100),
                                             burst(other_url, stack.keys["reader"], params, 100))
    answers = first + second
    assert all(r.status_code == 200 for r in answers)
    assert stack.counter.calls["GetSummary"] == 1
    assert Counter(r.json()["meta"]["cache"] for r in answers)["miss"] == 1


async def test_an_error_is_shared_not_recomputed_by_every_waiter(stack: Stack) -> None:
    stack.counter.delays["GetDrilldown"] = 0.3
    params = {**window(stack), "dimension": "note", "cursor": f"p{int(time.time())}_Zm9yZ2Vk"}
    async with stack.client(limits=httpx.Limits(max_connections=50)) as http:
        answers = await asyncio.gather(*(http.get("/api/v2/analytics/drilldown", params=params) for _ in range(50)))
    assert {r.json()["error"]["code"] for r in answers} == {"INVALID_CURSOR"}
    assert stack.counter.calls["GetDrilldown"] == 1


async def test_cache_ttl_zero_turns_the_cache_off_every_request_computes(stack: Stack) -> None:
    params = window(stack)
    off = gateway_app(stack.settings.model_copy(update={"cache_ttl_s": 0}), stack.engine, stack.query_port)
    async with serving(off) as off_url:
        answers = [*(await burst(off_url, stack.keys["reader"], params, 1)),
                   *(await burst(off_url, stack.keys["reader"], params, 1))]
    assert [r.status_code for r in answers] == [200, 200]
    assert [r.json()["meta"]["cache"] for r in answers] == ["bypass", "bypass"]
    assert stack.counter.calls["GetSummary"] == 2
    assert answers[0].json()["data"] == answers[1].json()["data"]
