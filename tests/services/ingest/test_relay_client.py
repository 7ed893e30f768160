"""RelayClient against a real in-process relay (nostr_sdk.LocalRelay): backfill, live, restart, cursor."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from libs.nostr.bech32 import npub_encode
from services.ingest.relay_client import (
    KINDS,
    OVERLAP_S,
    filter_hash,
    parse_track,
)
from services.ingest.store import IngestStore
from services.ingest.subscriptions import Item, track_filters, untracked_filters
from tests.services.ingest.helpers import (
    ALICE,
    BOB,
    CAROL,
    A,
    B,
    C,
    client,
    ev,
    facts,
    ingest,
    rows,
    scalar,
    wait_until,
)
from tests.services.ingest.tracking import start_tracked
from tools.demo.generator import generate
from tools.demo.relay import FILTER_LIMIT, DemoRelay, start_local_relay

NOW = int(time.time())


def catch_up(queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The backfill pages among a relay's queries (live subscriptions carry no `until`)."""
    return [q for q in queries if "until" in q]


def event_count(engine: Engine) -> int:
    return int(scalar(engine, "SELECT count(*) FROM events"))


def test_filters_cover_our_kinds_and_both_directions_of_tracked_keys() -> None:
    assert untracked_filters() == [{"kinds": list(KINDS)}]
    by, about = track_filters([Item(1, "key", A)], 256)
    assert by == {"kinds": [*KINDS, 10002], "authors": [A]} and about == {"kinds": list(KINDS), "#p": [A]}
    assert parse_track(f" {npub_encode(B)}, {A},{A}") == sorted([A, B])
    assert filter_hash(track_filters([Item(1, "key", A)], 256)) != filter_hash(untracked_filters())
    with pytest.raises(ValueError):
        parse_track("not-a-key")


async def test_client_backfills_pages_goes_live_and_survives_a_relay_restart(engine: Engine) -> None:
    history = generate(3, NOW - 3600, users=30, scale=0.3)  # paging: more than one relay page
    assert len(history) > FILTER_LIMIT
    relay, url = await start_local_relay(history)
    rc = client(url, engine)
    rc.start()
    try:
        await wait_until(lambda: rc.caught_up, what="the backfill")
        stored = event_count(engine)
        assert stored == len(history) - len(relay.refused) - 3  # three invalid zaps pass the relay, not ingest
        assert len(catch_up(relay.database.queries)) > 1  # the backlog was paged
        assert rc.cursor == max(e["created_at"] for e in history if e not in [r[0] for r in relay.refused])

        # live: events published while connected arrive without a new REQ
        note = ev(ALICE, 1, "live note", t=NOW - 30)
        reaction = ev(BOB, 7, "+", [["e", note["id"]], ["p", A]], NOW - 20)
        await relay.publish([note, reaction])
        await wait_until(lambda: event_count(engine) == stored + 2, what="live events")
        assert (A, reaction["id"], "REACTION") in {f[:3] for f in facts(engine)}

        # the relay goes away: the client notices, lag grows from the last contact
        await wait_until(lambda: rc.cursor == NOW - 20, what="the cursor to follow the committed live batch")
        cursor_before = rc.cursor
        relay.stop()
        await wait_until(lambda: not rc.connected, what="the disconnect")
        assert rc.status().connected is False
        await asyncio.sleep(1.1)
        assert rc.status().lag_seconds >= 1

        # a new relay on the same URL holds newer events (and one already ingested): backfill from the cursor
        reply = ev(CAROL, 1, "re", [["e", note["id"], "", "reply", A]], NOW - 10)
        later = ev(CAROL, 7, "🔥", [["e", note["id"]], ["p", A]], NOW - 5)
        relay2, url2 = await start_local_relay([note, reply, later], port=relay.port)
        assert url2 == url
        try:
            await wait_until(lambda: rc.connected and rc.caught_up and event_count(engine) == stored + 4,
                             what="the reconnect and backfill")
            assert catch_up(relay2.database.queries)[0]["since"] == cursor_before - OVERLAP_S
            assert rc.cursor == NOW - 5
            assert rc.status().lag_seconds == 0
        finally:
            await rc.stop()
            relay2.stop()
    finally:
        relay.stop()
    got = facts(engine)
    assert {(f[0], f[1], f[2]) for f in got} >= {(A, reply["id"], "REPLY"), (A, later["id"], "REACTION")}
    admitted = dict(rows(engine, "SELECT name, value FROM ingest_state"))["admitted"]
    assert admitted == event_count(engine)  # nothing admitted twice

    # the facts equal those of ingesting the same events straight into the store
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE facts, events, event_refs, zap_receipts, tombstones, contact_lists, profiles, "
                          "pubkeys, notes, dirty_buckets, rejects, ingest_state"))
    for start in range(0, len(history), 500):
        ingest(engine, *history[start : start + 500], receive_time=NOW)
    ingest(engine, note, reaction, reply, later, receive_time=NOW)
    assert facts(engine) == got


async def test_cursor_is_persisted_and_a_new_client_resumes_from_it(engine: Engine) -> None:
    old = [ev(ALICE, 1, f"n{i}", t=NOW - 5000 + i) for i in range(5)]
    relay: DemoRelay
    relay, url = await start_local_relay(old)
    try:
        first = client(url, engine)
        first.start()
        await wait_until(lambda: first.caught_up and event_count(engine) == 5, what="the first backfill")
        await first.stop()
        cursor = first.cursor
        assert cursor == NOW - 5000 + 4
        (since, connected, received) = rows(engine, "SELECT since, connected, events_received FROM relay_cursors")[0]
        assert (since, connected) == (cursor, False)
        assert received >= 5  # frames received: paging re-sends the boundary second

        newer = ev(BOB, 1, "after restart", t=NOW - 100)
        await relay.publish([newer])
        asked = len(relay.database.queries)
        second = client(url, engine)
        second.start()
        await wait_until(lambda: second.caught_up and event_count(engine) == 6, what="the resumed backfill")
        await second.stop()
        assert catch_up(relay.database.queries[asked:])[0]["since"] == cursor - OVERLAP_S
        assert second.cursor == NOW - 100
        assert rows(engine, "SELECT since FROM relay_cursors") == [(NOW - 100,)]
    finally:
        relay.stop()


async def test_tracked_pubkeys_get_events_by_them_and_events_tagging_them(engine: Engine) -> None:
    by_a = ev(ALICE, 1, "mine", t=NOW - 50)
    about_a = ev(BOB, 7, "+", [["e", by_a["id"]], ["p", A]], NOW - 40)
    unrelated = ev(CAROL, 1, "elsewhere", t=NOW - 30)
    relay, url = await start_local_relay([by_a, about_a, unrelated])
    try:
        canal = await start_tracked(engine, [url], [A])
        try:
            await wait_until(lambda: canal.ready(A), what="the backfill")
        finally:
            await canal.close()
        assert {r[0] for r in rows(engine, "SELECT id FROM events")} == {by_a["id"], about_a["id"]}
        assert C not in {r[0] for r in rows(engine, "SELECT pubkey FROM events")}
    finally:
        relay.stop()


async def test_an_unreachable_relay_is_reported_with_its_error_and_retried(engine: Engine) -> None:
    rc = client("ws://127.0.0.1:9", engine)  # nothing listens on the discard port
    rc.start()
    await wait_until(lambda: rc.last_error != "", what="the connection error")
    await asyncio.sleep(0.3)
    await rc.stop()
    ((connected, error),) = rows(engine, "SELECT connected, last_error FROM relay_cursors")
    assert connected is False and error
    assert rc.status().connected is False


async def test_a_batch_lost_before_its_commit_is_fetched_again(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    events = [ev(ALICE, 1, f"n{i}", t=NOW - 500 + i) for i in range(20)]
    relay, url = await start_local_relay(events)
    calls = {"n": 0}
    real_ingest = IngestStore.ingest

    def dying_ingest(self: IngestStore, items: Any, receive_time: Any = None) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:  # the process "dies" before the first batch commits
            raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))
        return real_ingest(self, items, receive_time)

    monkeypatch.setattr(IngestStore, "ingest", dying_ingest)
    try:
        rc = client(url, engine)
        rc.start()
        await wait_until(lambda: rc.caught_up and event_count(engine) == 20, what="the refetch")
        await rc.stop()
        assert rc.connects >= 2 and rc.cursor == NOW - 500 + 19
        assert "ingest failed" in rows(engine, "SELECT last_error FROM relay_cursors")[0][0]
    finally:
        relay.stop()
