"""TRACK mode at runtime and relay manners: a key added while ingest runs backfills on its own, answers
say when a key is still backfilling or not tracked, NIP-42 AUTH is answered, NIP-11 limits are kept."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Engine, text
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from libs.nostr.keys import privkey_from_seed, pubkey_of, sign_event
from services.ingest.interest import InterestStore
from tests.services.ingest.helpers import wait_until
from tests.services.ingest.tracking import differences, ingest_all, reference_db, start_tracked, summary
from tools.demo.relay import start_local_relay

NOW = int(time.time())
KEYS = {name: privkey_from_seed(f"runtime-{name}") for name in ("a", "b", "fan1", "fan2", "fan3")}
P = {name: pubkey_of(k) for name, k in KEYS.items()}


def ev(who: str, kind: int, content: str = "", tags: list[list[str]] | None = None, ago: int = 3600) -> dict[str, Any]:
    return sign_event(KEYS[who], kind, content, tags or [], NOW - ago)


def history(creator: str) -> list[dict[str, Any]]:
    """A creator's note with reactions, a reply by `e` only, a quote by `q` only, and two followers."""
    note = ev(creator, 1, f"{creator}'s note", ago=5 * 86400)
    return [
        note,
        ev("fan1", 7, "+", [["e", note["id"]], ["p", P[creator]]], ago=4 * 86400),
        ev("fan2", 7, "-", [["e", note["id"]], ["p", P[creator]]], ago=4 * 86400 - 5),
        ev("fan3", 1, "reply", [["e", note["id"], "", "root"]], ago=3 * 86400),
        ev("fan2", 1, "quote", [["q", note["id"]]], ago=2 * 86400),
    ]


FOLLOWS_BOTH = ev("fan1", 3, "", [["p", P["a"]], ["p", P["b"]]], ago=86400)


async def test_a_key_added_at_runtime_backfills_alone_and_then_equals_the_reference(engine: Engine,
                                                                                   pg_server: str) -> None:
    relay, url = await start_local_relay([*history("a"), *history("b"), FOLLOWS_BOTH], keep_replaced=False)
    try:
        canal = await start_tracked(engine, [url], [P["a"]])
        try:
            await wait_until(lambda: canal.ready(P["a"]) and canal.tracker.settled(), what="a's backfill")
            assert not canal.ready(P["b"])
            live = await summary(engine, P["b"], int(time.time()))
            assert "not_tracked" in live.reasons
            with engine.connect() as conn:
                (since_before,) = conn.execute(text("SELECT since FROM relay_cursors WHERE relay = :r"),
                                               {"r": url}).one()
            asked_before = len(relay.database.queries)

            await canal.track(P["b"])
            await wait_until(lambda: canal.ready(P["b"]) and canal.tracker.settled(), what="b's backfill")
            # fan1 replaces its contact list live, without b and so without a `p` for b: an unfollow
            await relay.publish([ev("fan1", 3, "", [["p", P["a"]]], ago=60)])
            await wait_until(lambda: _followers_lost(engine, P["b"]) == 1 and canal.tracker.settled(),
                             what="the unfollow of b")
        finally:
            await canal.close()
        fetched = [q for q in relay.database.queries[asked_before:] if "until" in q]
        assert fetched, "b was backfilled"
        for q in fetched:  # only b's interest is backfilled: a's subscriptions keep their cursor
            assert P["a"] not in json.dumps(q), q
        with engine.connect() as conn:
            (since_after,) = conn.execute(text("SELECT since FROM relay_cursors WHERE relay = :r"), {"r": url}).one()
        assert since_after >= since_before > 0

        now = int(time.time())
        async with reference_db(pg_server) as ref:
            ingest_all(ref, relay.database.accepted, now)
            for key in (P["a"], P["b"]):
                assert await differences(engine, ref, key, now) == []
            truth = await summary(ref, P["b"], now)
            m = truth.rows[""]
            assert (m["reactions.count"], m["replies.count"], m["quotes.count"], m["followers.lost"]) == (2, 1, 1, 1)
    finally:
        relay.stop()


def _followers_lost(engine: Engine, pubkey: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM facts f JOIN pubkeys p ON p.id = f.target_id "
                                     "WHERE p.pubkey = :p AND f.fact_type = 8"), {"p": pubkey}).scalar() or 0)


async def test_answers_say_backfilling_or_not_tracked_only_in_track_mode(engine: Engine) -> None:
    now = int(time.time())
    assert (await summary(engine, P["a"], now)).reasons == ()  # no tracked key: ingest takes everything
    store = InterestStore(engine)
    store.add_key(P["a"], "test")
    a = await summary(engine, P["a"], now)
    assert a.partial and a.reasons == ("backfilling",)
    assert (await summary(engine, P["b"], now)).reasons == ("not_tracked",)
    store.mark_ready(store.seed_key(P["a"]), now)
    assert (await summary(engine, P["a"], now)).reasons == ()


async def test_a_relay_that_requires_nip42_auth_is_answered_with_the_service_key(engine: Engine) -> None:
    relay, url = await start_local_relay(history("a"), nip42=True)
    try:
        async with connect(url) as ws:  # without AUTH the relay gives nothing
            await ws.send(json.dumps(["REQ", "x", {"kinds": [1]}]))
            frames = [json.loads(await ws.recv()) for _ in range(2)]
            assert frames[0][0] == "AUTH" and frames[1][:2] == ["CLOSED", "x"] and "auth-required" in frames[1][2]
        canal = await start_tracked(engine, [url], [P["a"]])
        try:
            await wait_until(lambda: canal.ready(P["a"]), what="the backfill behind AUTH")
            assert canal.clients[0].authenticated
        finally:
            await canal.close()
        with engine.connect() as conn:
            stored = {r[0] for r in conn.execute(text("SELECT id FROM events"))}
        assert stored == {e["id"] for e in history("a")}
    finally:
        relay.stop()


class Nip11Front:
    """A relay front: serves a NIP-11 document and proxies websockets to a LocalRelay, refusing (CLOSED)
    any REQ beyond the limits it announces and recording what it was asked."""

    def __init__(self, upstream: str, limitation: dict[str, int]) -> None:
        self.upstream, self.limitation = upstream, limitation
        self.reqs: list[list[Any]] = []
        self.violations: list[str] = []
        self.max_open = 0
        self.port = 0

    def info(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Accept") == "application/nostr+json":
            response = connection.respond(200, json.dumps({"name": "front", "limitation": self.limitation}))
            response.headers["Content-Type"] = "application/nostr+json"
            return response
        return None

    async def handle(self, client: ServerConnection) -> None:
        open_subs: set[str] = set()
        async with connect(self.upstream, max_size=None) as up:
            async def down() -> None:
                async for frame in up:
                    msg = json.loads(frame)
                    if msg[0] == "CLOSED":
                        open_subs.discard(msg[1])
                    await client.send(frame)

            pump = asyncio.create_task(down())
            try:
                async for frame in client:
                    msg = json.loads(frame)
                    if msg[0] == "REQ":
                        self.reqs.append(msg)
                        filters = msg[2:]
                        problem = ""
                        if len(filters) > self.limitation["max_filters"]:
                            problem = f"too many filters ({len(filters)})"
                        elif msg[1] not in open_subs and len(open_subs) >= self.limitation["max_subscriptions"]:
                            problem = "too many subscriptions"
                        elif any(f.get("limit", 0) > self.limitation["max_limit"] for f in filters):
                            problem = "limit above max_limit"
                        if problem:
                            self.violations.append(problem)
                            await client.send(json.dumps(["CLOSED", msg[1], f"error: {problem}"]))
                            continue
                        open_subs.add(msg[1])
                        self.max_open = max(self.max_open, len(open_subs))
                    elif msg[0] == "CLOSE":
                        open_subs.discard(msg[1])
                    await up.send(frame)
            finally:
                pump.cancel()


@pytest.fixture()
async def front() -> AsyncIterator[tuple[Nip11Front, Any]]:
    many = history("a") + [ev("fan3", 7, "+", [["p", P["a"]]], ago=7200 + i) for i in range(60)]
    relay, url = await start_local_relay(many)
    proxy = Nip11Front(url, {"max_filters": 1, "max_subscriptions": 3, "max_limit": 20})
    async with serve(proxy.handle, "127.0.0.1", 0, process_request=proxy.info) as server:
        proxy.port = server.sockets[0].getsockname()[1]  # type: ignore[index]
        yield proxy, many
    relay.stop()


async def test_nip11_limits_are_kept_filters_subscriptions_and_page_size(engine: Engine,
                                                                        front: tuple[Nip11Front, Any]) -> None:
    proxy, events = front
    url = f"ws://127.0.0.1:{proxy.port}"
    canal = await start_tracked(engine, [url], [P["a"]])
    try:
        await wait_until(lambda: canal.ready(P["a"]), what="the backfill through the front")
        limits = canal.clients[0].limits
        assert (limits.max_filters, limits.max_subscriptions, limits.max_limit, limits.announced) == (1, 3, 20, True)
    finally:
        await canal.close()
    assert proxy.violations == []
    assert proxy.max_open <= 3
    assert all(len(r) == 3 for r in proxy.reqs)  # one filter per REQ
    assert any(f.get("limit") == 20 for r in proxy.reqs for f in r[2:])
    with engine.connect() as conn:
        stored = {r[0] for r in conn.execute(text("SELECT id FROM events"))}
    assert stored == {e["id"] for e in events}  # 60 reactions, paged 20 at a time


async def test_a_dead_relay_in_a_nip65_list_is_dropped_and_does_not_keep_answers_partial(engine: Engine) -> None:
    dead = "ws://127.0.0.1:9"  # nothing listens on the discard port
    relay_list = sign_event(KEYS["a"], 10002, "", [["r", dead], ["r", "ws://127.0.0.1:7/"]], NOW - 7200)
    relay, url = await start_local_relay([*history("a"), relay_list])
    try:
        canal = await start_tracked(engine, [url], [P["a"]])
        try:
            await wait_until(lambda: canal.ready(P["a"]) and len(canal.tracker.discovered) == 2
                             and all(c.abandoned for c in canal.clients[1:]), what="the dead relays to be dropped")
            live = await summary(engine, P["a"], int(time.time()))
            assert live.reasons == (), live.reasons
            with engine.connect() as conn:
                relays = {r[0] for r in conn.execute(text("SELECT relay FROM relay_cursors"))}
            assert relays == {url}
        finally:
            await canal.close()
    finally:
        relay.stop()
