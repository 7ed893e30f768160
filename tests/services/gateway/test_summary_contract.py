"""GET /api/v2/analytics/summary and the envelope of API.md, through real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from libs.metrics import METRIC_NAMES
from libs.nostr.bech32 import npub_encode
from libs.nostr.keys import sign_event
from services.ingest.store import IngestStore, RawItem
from tests.services.gateway.helpers import ALICE_PK, CAROL, Stack, seed

pytestmark = pytest.mark.asyncio(loop_scope="session")


def assert_envelope(body: dict, source: str, cache: str) -> None:
    meta = body["meta"]
    assert list(meta) == ["request_id", "source", "window", "freshness", "partial", "partial_reasons", "plan",
                          "cache"]
    assert meta["source"] == source and meta["cache"] == cache
    assert set(meta["window"]) == {"start", "end", "label"}
    assert {"as_of", "watermark", "lag_seconds", "stale"} <= set(meta["freshness"])
    assert isinstance(meta["partial"], bool) and isinstance(meta["partial_reasons"], list)
    assert set(meta["plan"]) == {"tiers", "raw_facts_scanned"}
    assert set(meta["plan"]["tiers"]) == {"day64", "day8", "day", "hour", "minute"}  # API.md three, plus blocks


async def test_summary_answers_every_metric_in_the_envelope(stack: Stack) -> None:
    seed(stack.engine)
    async with stack.client() as http:
        resp = await http.get("/api/v2/analytics/summary", params={"pubkey": ALICE_PK, "window": "24h"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert_envelope(body, "canonical", "miss")
    assert body["data"]["pubkey"] == ALICE_PK
    assert list(body["data"]["metrics"]) == list(METRIC_NAMES)
    assert body["data"]["metrics"]["reactions.count"] == 2
    assert body["data"]["metrics"]["reposts.count"] == 1
    assert body["meta"]["window"]["label"] == "24h"
    assert body["meta"]["window"]["end"] - body["meta"]["window"]["start"] == 86400
    assert resp.headers["x-request-id"] == body["meta"]["request_id"]


async def test_summary_accepts_npub_and_narrows_metrics(stack: Stack) -> None:
    seed(stack.engine)
    async with stack.client() as http:
        resp = await http.get("/api/v2/analytics/summary", params={
            "pubkey": npub_encode(ALICE_PK), "window": "7d", "metrics": "reactions.count,reactions.likes"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["metrics"] == {"reactions.count": 2, "reactions.likes": 1}


async def test_summary_custom_window_is_cached_and_served_as_hit(stack: Stack) -> None:
    t = seed(stack.engine)["t"]
    params = {"pubkey": ALICE_PK, "start": str(t - 60), "end": str(t + 3600)}
    async with stack.client() as http:
        first = await http.get("/api/v2/analytics/summary", params=params)
        rfc = {**params, "start": _rfc3339(t - 60)}
        second = await http.get("/api/v2/analytics/summary", params=rfc)
    assert first.json()["meta"]["cache"] == "miss"
    assert second.json()["meta"]["cache"] == "hit"
    assert second.json()["data"] == first.json()["data"]
    assert second.json()["meta"]["window"] == {"start": t - 60, "end": t + 3600, "label": "custom"}
    assert stack.counter.calls["GetSummary"] == 1


async def test_new_data_changes_the_data_version_and_misses_the_cache(stack: Stack) -> None:
    t = seed(stack.engine)["t"]
    params = {"pubkey": ALICE_PK, "start": str(t - 60), "end": str(t + 3600)}
    async with stack.client() as http:
        before = (await http.get("/api/v2/analytics/summary", params=params)).json()
        ev = sign_event(CAROL, 6, "", [["e", "ab" * 32], ["p", ALICE_PK]], t + 100)
        IngestStore(stack.engine).ingest([RawItem(ev, "t", json.dumps(ev))])
        await asyncio.sleep(1.1)  # the data version is cached for a second
        after = (await http.get("/api/v2/analytics/summary", params=params)).json()
    assert after["meta"]["cache"] == "miss"
    assert after["data"]["metrics"]["reposts.count"] == before["data"]["metrics"]["reposts.count"] + 1


async def test_legacy_v1_summary_is_always_the_legacy_path(stack: Stack) -> None:
    seed(stack.engine)
    async with stack.client() as http:
        v1 = await http.get("/api/v1/analytics/summary", params={"pubkey": ALICE_PK, "window": "24h"})
        v2 = await http.get("/api/v2/analytics/summary", params={"pubkey": ALICE_PK, "window": "24h"})
    assert v1.status_code == 200, v1.text
    assert_envelope(v1.json(), "legacy", "miss")
    assert v1.json()["data"]["metrics"] == v2.json()["data"]["metrics"]


async def test_request_id_is_taken_from_the_caller_when_sane(stack: Stack) -> None:
    async with stack.client() as http:
        resp = await http.get("/api/v2/analytics/summary", params={"pubkey": ALICE_PK, "window": "1h"},
                              headers={"X-Request-ID": "trace-me-12345"})
        bad = await http.get("/api/v2/analytics/summary", params={"pubkey": ALICE_PK, "window": "1h"},
                             headers={"X-Request-ID": "<script>"})
    assert resp.json()["meta"]["request_id"] == "trace-me-12345"
    assert bad.json()["meta"]["request_id"] != "<script>"


def _rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_envelope_reports_relay_lag_and_partial_windows(stack: Stack) -> None:
    seed(stack.engine)
    now = int(time.time())
    with stack.engine.begin() as conn:
        conn.execute(text("INSERT INTO relay_cursors (relay, filter_hash, last_seen_at, connected) "
                          "VALUES ('wss://relay.example', 'f', :t, false)"), {"t": now - 600})
        for tier in ("facts", "minute", "hour", "day"):  # nothing older than an hour is kept anywhere
            conn.execute(text("INSERT INTO retention_horizons (tier, keep_days, horizon, updated_at) "
                              "VALUES (:tier, 1, :h, :t)"), {"tier": tier, "h": now - 3600, "t": now})
    async with stack.client() as http:
        body = (await http.get("/api/v2/analytics/summary", params={"pubkey": ALICE_PK, "window": "24h"})).json()
    fresh = body["meta"]["freshness"]
    assert fresh["relays"] == [{"url": "wss://relay.example", "lag_seconds": fresh["relays"][0]["lag_seconds"],
                                "healthy": False}]
    assert fresh["relays"][0]["lag_seconds"] >= 600 and fresh["stale"] is True
    assert fresh["lag_seconds"] >= 600 and fresh["as_of"] <= now - 600
    assert body["meta"]["partial"] is True
    assert body["meta"]["partial_reasons"] == ["retention", "relay_behind:wss://relay.example"]
    assert body["meta"]["cache"] == "miss"
