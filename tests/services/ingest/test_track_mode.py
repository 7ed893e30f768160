"""TRACK mode on public-relay behaviour: three LocalRelays that keep only the newest replaceable event,
a creator whose fans write to other relays (found through NIP-65), and a live story of every way an
event can reach the creator's numbers. Canal's answers must equal a reference over everything the
relays accepted, on every window and drilldown."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Engine

from canal.common.v1 import types_pb2
from libs.nostr.bech32 import note_encode
from libs.nostr.keys import privkey_from_seed, pubkey_of, sign_event
from tests.services.ingest.helpers import PROVIDER, wait_until, zap_receipt, zap_request
from tests.services.ingest.tracking import differences, ingest_all, reference_db, start_tracked, summary
from tools.demo.relay import DemoRelay, start_local_relay

NOW = int(time.time())
DAY = 86_400
CREATOR = privkey_from_seed("track-creator")
CR = pubkey_of(CREATOR)
FANS = [privkey_from_seed(f"track-fan-{i}") for i in range(8)]
F = [pubkey_of(k) for k in FANS]
STRANGER = privkey_from_seed("track-stranger")
OTHER = privkey_from_seed("track-other")


def ev(priv: bytes, kind: int, content: str = "", tags: list[list[str]] | None = None, t: int = NOW) -> dict[str, Any]:
    return sign_event(priv, kind, content, tags or [], t)


def accepted(*relays: DemoRelay) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for r in relays:
        for e in r.database.accepted:
            seen.setdefault(e["id"], e)
    return list(seen.values())


async def test_tracked_creator_numbers_equal_the_reference_through_a_live_story(engine: Engine, pg_server: str) -> None:
    seed, seed_url = await start_local_relay(keep_replaced=False)      # the RELAYS seed, also an "indexer"
    inbox, inbox_url = await start_local_relay(keep_replaced=False)    # the creator's NIP-65 read relay
    fanrelay, fan_url = await start_local_relay(keep_replaced=False)   # where the fans write (their NIP-65)
    try:
        # -- history before canal connects -------------------------------------------------------------
        n1 = ev(CREATOR, 1, "first note", t=NOW - 10 * DAY)
        n3 = ev(CREATOR, 1, "to be deleted", t=NOW - 9 * DAY)
        art = ev(CREATOR, 30023, "long form", [["d", "essay"], ["title", "Essay"]], NOW - 8 * DAY)
        addr = f"30023:{CR}:essay"
        await seed.publish([
            ev(CREATOR, 10002, tags=[["r", seed_url, "write"], ["r", inbox_url, "read"]], t=NOW - 20 * DAY),
            *[ev(k, 10002, tags=[["r", fan_url, "write"], ["r", seed_url, "read"]], t=NOW - 20 * DAY) for k in FANS],
            n1, n3, art,
        ])
        follow0 = ev(FANS[0], 3, tags=[["p", CR], ["p", pubkey_of(OTHER)]], t=NOW - 7 * DAY)
        reaction2 = ev(FANS[2], 7, "+", [["e", n1["id"]], ["p", CR]], NOW - 6 * DAY)
        repost3 = ev(FANS[3], 6, json.dumps(n1), [["e", n1["id"]], ["p", CR]], NOW - 6 * DAY)
        zap_req = zap_request(FANS[4], CR, 21_000, [["e", n1["id"]]], t=NOW - 5 * DAY)
        receipt = zap_receipt(zap_req, 21_000, CR, [["e", n1["id"]]], t=NOW - 5 * DAY + 3)
        await inbox.publish([follow0, reaction2, repost3, receipt])
        await fanrelay.publish([
            follow0,
            ev(FANS[1], 3, tags=[["p", CR]], t=NOW - 7 * DAY),                 # only on the fans' relay
            ev(FANS[5], 7, "🔥", [["e", n1["id"]], ["p", CR]], NOW - 4 * DAY),
            ev(FANS[6], 1, "reply", [["e", n1["id"], "", "root"], ["p", CR]], NOW - 3 * DAY),
        ])

        canal = await start_tracked(engine, [seed_url], [CR])
        try:
            await wait_until(lambda: canal.ready(CR) and canal.tracker.settled(), timeout=60,
                             what="the tracked creator's backfill")
            assert {inbox_url, fan_url} <= set(canal.tracker.discovered)  # both found through NIP-65

            # -- the live story ------------------------------------------------------------------------
            t = NOW - 600
            comment_f1 = ev(FANS[1], 1111, "comment", [["E", n1["id"], "", CR], ["K", "1"], ["P", CR],
                                                       ["e", n1["id"], "", CR], ["k", "1"], ["p", CR]], t + 9)
            # a comment in the creator's thread whose parent is a fan's comment: it counts for the fan, and
            # (tagging the creator only in uppercase root tags) no TRACK filter needs it
            to_f1 = ev(FANS[4], 1111, "to f1", [["E", n1["id"], "", CR], ["K", "1"], ["P", CR],
                                                ["e", comment_f1["id"], "", F[1]], ["k", "1111"], ["p", F[1]]], t + 10)
            n2 = ev(CREATOR, 1, "second note", t=t + 12)
            zap_req2 = zap_request(FANS[6], CR, 5_000, [["e", n2["id"]]], t=t + 20)
            live_fans = [
                ev(FANS[0], 3, tags=[["p", pubkey_of(OTHER)]], t=t),                       # unfollow: no #p
                ev(FANS[2], 5, "", [["e", reaction2["id"]], ["k", "7"]], t + 1),           # e + k only
                ev(FANS[7], 1, f"see nostr:{note_encode(n1['id'])}", [["q", n1["id"]]], t + 2),  # q only
                ev(FANS[3], 5, "", [["e", repost3["id"]], ["k", "6"]], t + 4),
                ev(FANS[5], 1, "on the essay", [["q", addr]], t + 5),                       # article quote
                ev(FANS[6], 1111, "essay comment", [["A", addr], ["K", "30023"], ["a", addr], ["k", "30023"]], t + 6),
                ev(FANS[7], 1111, "lowercase only", [["e", n1["id"]], ["k", "1"]], t + 7),
                to_f1,
                ev(FANS[5], 1, "re n2", [["e", n2["id"], "", "root"]], t + 15),             # a note canal just learned
                ev(FANS[7], 3, tags=[["p", CR]], t=t + 16),
            ]
            await fanrelay.publish(live_fans)
            await inbox.publish([comment_f1, zap_receipt(zap_req2, 5_000, CR, [["e", n2["id"]]], t=t + 22)])
            await seed.publish([
                n2,
                ev(STRANGER, 1, "root only", [["e", n1["id"], "", "root"]], t + 3),          # reply without p
                ev(PROVIDER, 5, "", [["e", receipt["id"]], ["k", "9735"]], t + 8),          # the provider retracts
                ev(CREATOR, 5, "", [["e", n3["id"]], ["k", "1"]], t + 30),
                ev(OTHER, 1, "unrelated", t=t + 31),
            ])

            relays = (seed, inbox, fanrelay)
            wanted = {e["id"] for e in accepted(*relays)
                      if e["kind"] != 10002 and e["pubkey"] != pubkey_of(OTHER) and e["id"] != to_f1["id"]}
            by_id = {e["id"]: e for e in accepted(*relays)}
            try:
                await wait_until(lambda: wanted <= canal.event_ids() and canal.tracker.settled(), timeout=60,
                                 what="every relevant live event")
            except AssertionError:
                missing = [(by_id[i]["kind"], by_id[i]["content"][:20]) for i in wanted - canal.event_ids()]
                raise AssertionError(f"missing {missing}; settled {canal.tracker.settled()}, clients "
                                     f"{[(c.url, c.connected, c.caught_up, c.backfilling, c.mark, c.last_error) for c in canal.clients]}, "
                                     f"top {max(i.id for i in canal.tracker.items())}") from None
            live = await summary(engine, CR, int(time.time()), source=types_pb2.SOURCE_CANONICAL)
            assert not live.partial, live.reasons  # tracked, backfilled, every relay connected
        finally:
            await canal.close()

        now = int(time.time())
        async with reference_db(pg_server) as ref:
            ingest_all(ref, accepted(*relays), now)
            truth = await summary(ref, CR, now)
            assert not truth.partial
            m = truth.rows[""]
            # the table of the issue, plus the deletions, article quote and comments of the story
            assert (m["followers.gained"], m["followers.lost"], m["followers.total"]) == (3, 1, 2)
            assert (m["reactions.count"], m["reposts.count"], m["zaps.count"], m["zaps.msats"]) == (1, 0, 1, 5_000)
            assert (m["quotes.count"], m["replies.count"], m["notes.count"], m["articles.count"]) == (2, 6, 2, 1)
            assert await differences(engine, ref, CR, now) == []
    finally:
        for r in (seed, inbox, fanrelay):
            r.stop()
