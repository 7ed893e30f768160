"""The NIP-85 provider against a real relay (nostr_sdk.LocalRelay asking for NIP-42 AUTH on writes) and the
real query service: a client reading the assertions gets the query service's numbers; an unchanged run
publishes nothing; a change publishes a replacement."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import nostr_sdk
import pytest
import websockets
from nostr_sdk import LocalRelayBuilder, LocalRelayBuilderNip42, LocalRelayBuilderNip42Mode
from sqlalchemy import Engine, text

from canal.common.v1 import types_pb2
from canal.query.v1 import query_service_pb2 as pb
from canal.query.v1 import query_service_pb2_grpc as pb_grpc
from libs.config import Settings
from libs.nostr.bech32 import npub_encode
from libs.service_key import service_pubkey
from services.query.provider.assertions import (
    ADDRESS_KIND,
    EVENT_KIND,
    NOTE_TAGS,
    USER_KIND,
    USER_TAGS,
    note_assertion,
    parse_windows,
    tag_values,
    user_assertion,
    user_d,
)
from services.query.provider.runner import provider_cron, run_provider, schedule
from services.query.server import create_server
from tests.services.ingest.helpers import ALICE, BOB, CAROL, DAVE, A, ev, ingest, zap_receipt, zap_request
from tools.demo.relay import ArchiveDatabase

NOW = int(time.time()) // 60 * 60
DAY = 86_400


# ---------------------------------------------------------------- the tag mapping (pure)

def test_user_assertion_maps_metrics_to_nip85_tags_and_window_to_d() -> None:
    metrics = {"followers.total": 3, "notes.count": 4, "replies.count": 5, "reactions.count": 6, "zaps.count": 2,
               "zaps.msats": 21_999}
    a = user_assertion(A, "all", metrics)
    assert (a.kind, a.d) == (USER_KIND, A)
    assert tag_values(a.tags) == {"followers": 3, "post_cnt": 4, "reply_cnt": 5, "reactions_cnt": 6,
                                  "zap_cnt_recd": 2, "zap_amt_recd": 21}  # sats, floored
    assert user_assertion(A, "7d", metrics).d == f"{A}:7d" == user_d(A, "7d")
    assert a.event(ALICE, NOW)["tags"][0] == ["d", A]


def test_note_assertions_are_30383_for_ids_and_30384_for_addresses() -> None:
    row = {"replies.count": 1, "quotes.count": 2, "reposts.count": 3, "reactions.count": 4, "zaps.count": 5,
           "zaps.msats": 5_000}
    by_id = note_assertion(A, "ab" * 32, row)
    assert (by_id.kind, by_id.d) == (EVENT_KIND, "ab" * 32)
    assert tag_values(by_id.tags) == {"comment_cnt": 1, "quote_cnt": 2, "repost_cnt": 3, "reaction_cnt": 4,
                                      "zap_cnt": 5, "zap_amount": 5}
    assert note_assertion(A, f"30023:{A}:post", row).kind == ADDRESS_KIND


def test_windows_and_schedule_are_validated() -> None:
    allowed = ["1h", "24h", "7d", "30d", "90d", "365d"]
    assert parse_windows("7d, 30d,all,7d,", allowed) == ["7d", "30d"]
    assert parse_windows("", allowed) == []
    with pytest.raises(ValueError):
        parse_windows("2d", allowed)
    assert schedule(600) == {"minute": {0, 10, 20, 30, 40, 50}, "second": 30}
    assert schedule(7200)["hour"] == set(range(0, 24, 2))
    with pytest.raises(ValueError):
        schedule(45)
    assert provider_cron(Settings(provider_relays="")) == []
    assert len(provider_cron(Settings(provider_relays="wss://relay.example"))) == 1


# ---------------------------------------------------------------- against a relay and the query service

@dataclass
class Stack:
    engine: Engine
    stub: pb_grpc.QueryServiceStub
    settings: Settings
    relay_url: str
    relay_db: ArchiveDatabase


@pytest.fixture()
async def stack(engine: Engine, db: str) -> AsyncIterator[Stack]:
    nostr_sdk.uniffi_set_event_loop(asyncio.get_running_loop())
    relay_db = ArchiveDatabase(keep_replaced=False)  # keeps only the newest version per address, as relays do
    relay = (LocalRelayBuilder().addr("127.0.0.1").database(relay_db)
             .nip42(LocalRelayBuilderNip42(mode=LocalRelayBuilderNip42Mode.WRITE)).build())
    await relay.run()
    url = str(await relay.url()).rstrip("/")
    settings = Settings(database_url=db, canal_secret="x" * 32, provider_relays=url,  # type: ignore[arg-type]
                        provider_windows="7d,30d")
    server, port = create_server("127.0.0.1:0", engine, settings)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Stack(engine, pb_grpc.QueryServiceStub(channel), settings, url, relay_db)
    finally:
        await channel.close(None)
        await server.stop(0)
        relay.shutdown()


async def read_assertions(url: str, author: str, kinds: list[int]) -> list[dict[str, Any]]:
    """What a client gets: REQ {kinds, authors: [provider]} until EOSE."""
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps(["REQ", "nip85", {"kinds": kinds, "authors": [author]}]))
        out = []
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg[0] == "EVENT":
                out.append(msg[2])
            elif msg[0] == "EOSE":
                return out


def by_d(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        d = next(t[1] for t in e["tags"] if t[0] == "d")
        assert d not in out, f"two assertions with d={d} on the relay"
        out[d] = e
    return out


async def summary(stub: pb_grpc.QueryServiceStub, window: str, now: int) -> dict[str, int]:
    resp = await stub.GetSummary(pb.GetSummaryRequest(pubkey=A, window=types_pb2.WindowSpec(window=window, now=now)))
    assert not resp.meta.partial
    return {m.name: int(m.value) for m in resp.metrics}


async def notes(stub: pb_grpc.QueryServiceStub, now: int) -> dict[str, dict[str, int]]:
    resp = await stub.GetDrilldown(pb.GetDrilldownRequest(
        pubkey=A, window=types_pb2.WindowSpec(window="all", now=now), dimension="note", page_size=500))
    assert not resp.next_page_token
    return {r.key: dict(r.metrics) for r in resp.rows}


def expected_user(metrics: dict[str, int]) -> dict[str, int]:
    return {tag: metrics[m] // 1000 if m == "zaps.msats" else metrics[m] for tag, m in USER_TAGS}


def expected_note(metrics: dict[str, int]) -> dict[str, int]:
    return {tag: metrics.get(m, 0) // 1000 if m == "zaps.msats" else metrics.get(m, 0) for tag, m in NOTE_TAGS}


def seed(engine: Engine) -> tuple[dict[str, Any], dict[str, Any]]:
    """A tracked creator (A, backfill done) with a recent note and an older one, engaged with every way."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tracked_keys (pubkey, added_at, source, ready_at) VALUES (:p, :t, 'api', :t)"),
                     {"p": A, "t": NOW - 40 * DAY})
    old = ev(ALICE, 1, "older note", t=NOW - 25 * DAY)
    note = ev(ALICE, 1, "hello nostr", t=NOW - 2 * DAY)
    request = zap_request(BOB, A, 21_500, tags=[["e", note["id"]]], t=NOW - DAY)
    ingest(engine, old, note,
           ev(DAVE, 7, "+", [["e", old["id"]], ["p", A]], NOW - 20 * DAY),
           ev(BOB, 7, "+", [["e", note["id"]], ["p", A]], NOW - DAY),
           ev(CAROL, 1, "a reply", [["e", note["id"], "", "reply"], ["p", A]], NOW - DAY),
           ev(CAROL, 1, "a quote", [["q", note["id"]], ["p", A]], NOW - DAY + 10),
           ev(DAVE, 6, "", [["e", note["id"]], ["p", A]], NOW - DAY + 20),
           ev(BOB, 3, "", [["p", A]], NOW - 30 * DAY),
           zap_receipt(request, 21_500, A, tags=[["e", note["id"]]], t=NOW - DAY + 5),
           receive_time=NOW)
    return old, note


async def test_a_client_reads_the_query_services_numbers_and_unchanged_runs_publish_nothing(stack: Stack) -> None:
    old, note = seed(stack.engine)
    provider = service_pubkey(stack.engine)

    stats = await run_provider(stack.engine, stack.stub, stack.settings, now=NOW)
    assert (stats.subjects, stats.partial, stats.errors, stats.refused) == (1, 0, 0, 0)
    assert stats.published == 3 + 2  # all, 7d, 30d + two notes

    users = by_d(await read_assertions(stack.relay_url, provider, [USER_KIND]))
    assert set(users) == {A, f"{A}:7d", f"{A}:30d"}
    for window, d in (("all", A), ("7d", f"{A}:7d"), ("30d", f"{A}:30d")):
        assert tag_values(users[d]["tags"]) == expected_user(await summary(stack.stub, window, NOW)), window
    assert tag_values(users[A]["tags"]) == {"followers": 1, "post_cnt": 2, "reply_cnt": 1, "reactions_cnt": 2,
                                            "zap_cnt_recd": 1, "zap_amt_recd": 21}
    assert tag_values(users[f"{A}:7d"]["tags"])["reactions_cnt"] == 1
    assert users[A]["pubkey"] == provider and users[A]["content"] == ""

    by_note = by_d(await read_assertions(stack.relay_url, provider, [EVENT_KIND]))
    drill = await notes(stack.stub, NOW)
    assert set(by_note) == set(drill) == {old["id"], note["id"]}
    for key, metrics in drill.items():
        assert tag_values(by_note[key]["tags"]) == expected_note(metrics)
    assert tag_values(by_note[note["id"]]["tags"]) == {"comment_cnt": 1, "quote_cnt": 1, "repost_cnt": 1,
                                                        "reaction_cnt": 1, "zap_cnt": 1, "zap_amount": 21}

    # the same numbers again: nothing is signed or sent
    saved = len(stack.relay_db.accepted)
    again = await run_provider(stack.engine, stack.stub, stack.settings, now=NOW + 60)
    assert (again.published, again.resent, again.unchanged) == (0, 0, 5)
    assert len(stack.relay_db.accepted) == saved

    # a new reaction to the recent note: its assertions are replaced, the older note's stay
    ingest(stack.engine, ev(CAROL, 7, "🔥", [["e", note["id"]], ["p", A]], NOW + 30), receive_time=NOW + 60)
    changed = await run_provider(stack.engine, stack.stub, stack.settings, now=NOW + 120)
    assert (changed.published, changed.unchanged) == (3 + 1, 1)
    users_after = by_d(await read_assertions(stack.relay_url, provider, [USER_KIND]))
    assert tag_values(users_after[A]["tags"]) == expected_user(await summary(stack.stub, "all", NOW + 120))
    assert tag_values(users_after[A]["tags"])["reactions_cnt"] == 3
    assert users_after[A]["created_at"] > users[A]["created_at"]
    notes_after = by_d(await read_assertions(stack.relay_url, provider, [EVENT_KIND]))
    assert tag_values(notes_after[note["id"]]["tags"])["reaction_cnt"] == 2
    assert notes_after[old["id"]]["id"] == by_note[old["id"]]["id"]
    assert len(stack.relay_db.accepted) == saved + 4


async def test_a_relay_that_missed_an_assertion_gets_the_same_event_later(stack: Stack) -> None:
    seed(stack.engine)
    down = "ws://127.0.0.1:9"  # nothing listens there
    settings = stack.settings.model_copy(update={"provider_relays": f"{stack.relay_url},{down}",
                                                 "provider_windows": ""})
    first = await run_provider(stack.engine, stack.stub, settings, now=NOW)
    assert first.published == 3 and first.refused == 3
    with stack.engine.connect() as conn:
        relays = {tuple(r[0]) for r in conn.execute(text("SELECT relays FROM provider_assertions"))}
    assert relays == {(stack.relay_url,)}

    second = await run_provider(stack.engine, stack.stub, settings, now=NOW + 60)
    assert (second.published, second.resent) == (0, 3)  # the same events, not new ones


async def test_partial_answers_are_not_published_and_nothing_without_subjects(stack: Stack) -> None:
    nothing = await run_provider(stack.engine, stack.stub, stack.settings, now=NOW)
    assert (nothing.subjects, nothing.published) == (0, 0)

    seed(stack.engine)
    with stack.engine.begin() as conn:
        conn.execute(text("UPDATE tracked_keys SET ready_at = NULL"))  # still backfilling: answers are partial
    stats = await run_provider(stack.engine, stack.stub, stack.settings, now=NOW)
    assert stats.published == 0 and stats.partial == 4  # all, 7d, 30d and the note drilldown
    assert await read_assertions(stack.relay_url, service_pubkey(stack.engine), [USER_KIND, EVENT_KIND]) == []


async def test_a_client_reads_what_the_rest_api_answers_for_window_all(db: str, redis_url: str) -> None:
    from tests.services.gateway.helpers import running_stack

    nostr_sdk.uniffi_set_event_loop(asyncio.get_running_loop())
    relay_db = ArchiveDatabase(keep_replaced=False)
    relay = LocalRelayBuilder().addr("127.0.0.1").database(relay_db).build()
    await relay.run()
    url = str(await relay.url()).rstrip("/")
    try:
        async with running_stack(db, redis_url, provider_relays=url) as gw:
            seed(gw.engine)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.query_port}") as channel:
                stats = await run_provider(gw.engine, pb_grpc.QueryServiceStub(channel), gw.settings)
            assert stats.published == 3 + 2 and stats.refused == 0
            provider = service_pubkey(gw.engine)
            async with gw.client() as http:
                summary_ = (await http.get("/api/v2/analytics/summary", params={"pubkey": A, "window": "all"})).json()
                drill = (await http.get("/api/v2/analytics/drilldown",
                                        params={"pubkey": A, "window": "all", "dimension": "note"})).json()
            assert summary_["meta"]["partial"] is False
            users = by_d(await read_assertions(url, provider, [USER_KIND]))
            assert tag_values(users[A]["tags"]) == expected_user(summary_["data"]["metrics"])
            notes_ = by_d(await read_assertions(url, provider, [EVENT_KIND]))
            assert {k: tag_values(e["tags"]) for k, e in notes_.items()} == {
                row["key"]: expected_note(row["metrics"]) for row in drill["data"]["rows"]}
    finally:
        relay.shutdown()


def test_provider_show_prints_the_key(engine: Engine, db: str, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from tools.cli import provider as provider_cli

    monkeypatch.setattr(provider_cli, "get_settings", lambda: Settings(database_url=db))  # type: ignore[arg-type]
    assert provider_cli.provider(provider_cli.argparse.Namespace(action="show", json=False)) == 0
    pubkey = service_pubkey(engine)
    out = capsys.readouterr().out
    assert npub_encode(pubkey) in out and pubkey in out
