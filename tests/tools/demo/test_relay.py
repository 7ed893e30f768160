"""The demo relay: a real nostr_sdk.LocalRelay that keeps every version and refuses what a relay refuses."""

from __future__ import annotations

import json

import websockets

from tests.services.ingest.helpers import ALICE, BOB, T0, A, ev
from tools.demo.relay import FILTER_LIMIT, start_local_relay


async def _req(url: str, flt: dict[str, object]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps(["REQ", "q", flt]))
        while True:
            msg = json.loads(await ws.recv())
            if msg[0] == "EOSE":
                return out
            out.append(msg[2])


async def test_demo_relay_keeps_replaced_and_deleted_events_and_refuses_bad_ones() -> None:
    note = ev(ALICE, 1, "note", t=T0)
    deletion = ev(ALICE, 5, "", [["e", note["id"]]], T0 + 10)
    older_list, newer_list = ev(BOB, 3, "", [["p", A]], T0), ev(BOB, 3, "", [], T0 + 5)
    bad_sig = {**ev(BOB, 1, "forged", t=T0), "sig": "00" * 64}
    bad_id = {**ev(BOB, 1, "orig", t=T0), "content": "edited"}
    relay, url = await start_local_relay([note, deletion, newer_list, older_list, bad_sig, bad_id])
    try:
        assert url.startswith("ws://127.0.0.1:") and relay.port == int(url.rsplit(":", 1)[1])
        assert {e["id"] for e, _ in relay.refused} == {bad_sig["id"], bad_id["id"]}
        got = await _req(url, {"kinds": [1, 3, 5]})
        assert {e["id"] for e in got} == {note["id"], deletion["id"], older_list["id"], newer_list["id"]}
        assert [e["created_at"] for e in got] == sorted((e["created_at"] for e in got), reverse=True)
    finally:
        relay.stop()


async def test_demo_relay_caps_each_filter_like_a_public_relay() -> None:
    notes = [ev(ALICE, 1, f"n{i}", t=T0 + i) for i in range(FILTER_LIMIT + 20)]
    relay, url = await start_local_relay(notes)
    try:
        assert len(await _req(url, {"kinds": [1]})) == FILTER_LIMIT
        older = await _req(url, {"kinds": [1], "until": T0 + 19})
        assert {e["content"] for e in older} == {f"n{i}" for i in range(20)}
        assert len(await _req(url, {"authors": [A], "since": T0 + FILTER_LIMIT + 10})) == 10
    finally:
        relay.stop()
