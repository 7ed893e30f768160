"""GET /api/v2/analytics/drilldown (and v1): row shapes per dimension, paging, cursors."""

from __future__ import annotations

import asyncio

import pytest

from libs.nostr.bech32 import npub_encode
from tests.services.gateway.helpers import ALICE_PK, BOB_PK, CAROL_PK, Stack, seed
from tests.services.gateway.test_summary_contract import assert_envelope

pytestmark = pytest.mark.asyncio(loop_scope="session")
URL = "/api/v2/analytics/drilldown"


async def test_note_rows_carry_key_deleted_and_metrics(stack: Stack) -> None:
    note = seed(stack.engine)["note"]
    async with stack.client() as http:
        resp = await http.get(URL, params={"pubkey": ALICE_PK, "window": "24h", "dimension": "note",
                                           "metric": "reactions.count"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert_envelope(body, "canonical", "miss")
    assert body["data"]["dimension"] == "note" and body["data"]["next_cursor"] is None
    [row] = body["data"]["rows"]
    assert set(row) == {"key", "deleted", "metrics"}
    assert row["key"] == note and row["deleted"] is False
    assert row["metrics"]["reactions.count"] == 2 and row["metrics"]["reposts.count"] == 1


async def test_counterparty_rows_carry_npub_and_display_name(stack: Stack) -> None:
    seed(stack.engine)
    async with stack.client() as http:
        resp = await http.get(URL, params={"pubkey": ALICE_PK, "window": "24h", "dimension": "counterparty",
                                           "metric": "reactions.count"})
    rows = resp.json()["data"]["rows"]
    assert {r["key"] for r in rows} == {BOB_PK, CAROL_PK}
    for row in rows:
        assert set(row) == {"key", "npub", "display_name", "metrics"}
        assert row["npub"] == npub_encode(row["key"])
        assert row["display_name"] is None


async def test_kind_rows_count_facts_per_kind(stack: Stack) -> None:
    seed(stack.engine)
    async with stack.client() as http:
        resp = await http.get(URL, params={"pubkey": ALICE_PK, "window": "24h", "dimension": "kind"})
    rows = {r["kind"]: r for r in resp.json()["data"]["rows"]}
    assert rows[7] == {"key": "7", "kind": 7, "metrics": {"facts": 2}}
    assert rows[6]["metrics"] == {"facts": 1}


async def test_time_rows_are_buckets_with_start_and_end(stack: Stack) -> None:
    seed(stack.engine)
    async with stack.client() as http:
        resp = await http.get(URL, params={"pubkey": ALICE_PK, "window": "24h", "dimension": "time",
                                           "granularity": "hour", "metric": "reactions.count", "tz": "Europe/Berlin"})
    rows = resp.json()["data"]["rows"]
    assert len(rows) in (24, 25)
    assert all(set(r) == {"key", "start", "end", "metrics"} and r["start"] < r["end"] for r in rows)
    assert sum(r["metrics"]["reactions.count"] for r in rows) == 2


async def test_pages_of_a_rolling_window_follow_next_cursor_seconds_later(stack: Stack) -> None:
    seed(stack.engine)
    params = {"pubkey": ALICE_PK, "window": "24h", "dimension": "counterparty", "metric": "reactions.count",
              "limit": "1"}
    async with stack.client() as http:
        first = (await http.get(URL, params=params)).json()
        assert first["data"]["next_cursor"]
        await asyncio.sleep(1.1)  # "24h" now ends a second later: the cursor keeps the first page's window
        resp = await http.get(URL, params={**params, "cursor": first["data"]["next_cursor"]})
        assert resp.status_code == 200, resp.text
        second = resp.json()["data"]
        assert resp.json()["meta"]["window"] == first["meta"]["window"]
        first = first["data"]
    assert second["next_cursor"] is None
    assert {first["rows"][0]["key"], second["rows"][0]["key"]} == {BOB_PK, CAROL_PK}


async def test_legacy_v1_drilldown_matches_v2(stack: Stack) -> None:
    seed(stack.engine)
    params = {"pubkey": ALICE_PK, "window": "24h", "dimension": "note"}
    async with stack.client() as http:
        v1 = await http.get("/api/v1/analytics/drilldown", params=params)
        v2 = await http.get(URL, params=params)
    assert v1.json()["meta"]["source"] == "legacy"
    assert v1.json()["data"] == v2.json()["data"]
