"""Admin tracked keys over REST (through the real ingest service) and their effect on answers' meta."""

from __future__ import annotations

import pytest

from libs.nostr.bech32 import nprofile_encode, npub_encode
from tests.services.gateway.helpers import ALICE_PK, BOB_PK, Stack, seed

pytestmark = pytest.mark.asyncio(loop_scope="session")
URL = "/api/v2/admin/tracked-keys"


async def test_admin_tracks_lists_and_untracks_keys_in_any_form(stack: Stack) -> None:
    async with stack.client("admin") as admin:
        first = await admin.post(URL, json={"key": npub_encode(ALICE_PK)})
        assert first.status_code == 201, first.text
        data = first.json()["data"]
        assert data["added"] is True and data["key"]["pubkey"] == ALICE_PK and data["key"]["state"] == "backfilling"
        again = await admin.post(URL, json={"key": nprofile_encode(ALICE_PK, ["wss://relay.example"])})
        assert again.status_code == 200 and again.json()["data"]["added"] is False
        listed = (await admin.get(URL)).json()["data"]
        assert [k["pubkey"] for k in listed["keys"]] == [ALICE_PK]
        assert listed["track_mode"] is False  # this ingest runs untracked: the key waits for TRACK mode

        bad = await admin.post(URL, json={"key": "not-a-key"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_PUBKEY"
        assert "npub" in bad.json()["error"]["hint"]

        gone = await admin.delete(f"{URL}/{ALICE_PK}")
        assert gone.status_code == 200 and gone.json()["data"]["removed"] is True
        assert (await admin.get(URL)).json()["data"]["keys"] == []
    async with stack.client("reader") as reader:
        assert (await reader.post(URL, json={"key": ALICE_PK})).status_code == 403


async def test_answers_name_backfilling_and_not_tracked_keys(stack: Stack) -> None:
    seed(stack.engine)
    async with stack.client("admin") as admin:
        assert (await admin.post(URL, json={"key": ALICE_PK})).status_code == 201
        alice = (await admin.get("/api/v2/analytics/summary", params={"pubkey": ALICE_PK, "window": "all"})).json()
        bob = (await admin.get("/api/v2/analytics/summary", params={"pubkey": BOB_PK, "window": "all"})).json()
        await admin.delete(f"{URL}/{ALICE_PK}")
        after = (await admin.get("/api/v2/analytics/summary", params={"pubkey": ALICE_PK, "window": "all"})).json()
    assert alice["meta"]["partial"] is True and "backfilling" in alice["meta"]["partial_reasons"]
    assert alice["data"]["metrics"]["reactions.count"] == 2  # the numbers are there, flagged, not hidden
    assert "not_tracked" in bob["meta"]["partial_reasons"]
    assert after["meta"]["partial_reasons"] == []  # no tracked key left: ingest takes everything
