"""Errors that need their own stack: rate limits, an unreachable query service, unexpected failures."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tests.services.gateway.helpers import ALICE_PK, Stack, running_stack
from tests.services.gateway.test_errors import SUMMARY, assert_error

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_rate_limit_is_429_with_retry_after(db: str, redis_url: str) -> None:
    if time.time() % 60 > 56:  # the limit is per calendar minute: do not straddle two
        await asyncio.sleep(60.2 - time.time() % 60)
    async with running_stack(db, redis_url, rate_limit_per_minute=3) as stack, stack.client() as http:
        codes = [(await http.get(SUMMARY, params={"pubkey": ALICE_PK, "window": "7d"})) for _ in range(4)]
    assert [r.status_code for r in codes[:3]] == [200, 200, 200]
    assert_error(codes[3], 429, "RATE_LIMITED")
    assert 1 <= int(codes[3].headers["retry-after"]) <= 60


async def test_query_service_down_without_a_kept_answer_is_503(stack: Stack) -> None:
    await stack.stop_query()
    async with stack.client() as http:
        resp = await http.get(SUMMARY, params={"pubkey": ALICE_PK, "window": "7d"})
    err = assert_error(resp, 503, "UNAVAILABLE")
    assert "retry" in err["hint"].lower()


async def test_unexpected_failure_is_500_with_a_request_id_found_in_the_logs(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("SELECT secret FROM keys -- at 10.1.2.3:5432")

    stack.app.state.gw.flags.current = broken
    with caplog.at_level(logging.ERROR):
        async with stack.client() as http:
            resp = await http.get(SUMMARY, params={"pubkey": ALICE_PK, "window": "7d"})
    err = assert_error(resp, 500, "INTERNAL")
    assert "10.1.2.3" not in resp.text
    logged = [r for r in caplog.records if err["request_id"] in r.getMessage()]
    assert logged and logged[0].exc_info is not None
