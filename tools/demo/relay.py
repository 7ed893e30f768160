"""An in-process Nostr relay for the demo (nostr_sdk.LocalRelay), seeded over websockets.

The relay stores events in `ArchiveDatabase`, a Python store that keeps every
version: nostr-sdk's default memory store drops replaced versions (older contact
lists, articles, profiles) and applies NIP-09 deletions itself, which would hide
the follower churn and deletion rules the demo exists to show. The relay itself
still verifies ids and signatures (events with a bad id or signature are refused,
as a public relay would refuse them) and caps each query at its filter limit, so
ingest pulls from it exactly as from a public relay, paging included.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import nostr_sdk
import websockets
from nostr_sdk import (
    DatabaseEventStatus,
    LocalRelay,
    LocalRelayBuilder,
    LocalRelayBuilderNip42,
    LocalRelayBuilderNip42Mode,
    NostrDatabase,
    NostrDatabaseFeatures,
    RateLimit,
    RejectedReason,
    SaveEventStatus,
)

log = logging.getLogger(__name__)

PUBLISH_CONNECTIONS = 8
PUBLISH_WINDOW = 256  # events in flight per connection before awaiting their OKs
FILTER_LIMIT = 500  # what one REQ filter returns at most (public relays cap similarly)


def _matches(ev: dict[str, Any], flt: dict[str, Any]) -> bool:
    if "ids" in flt and ev["id"] not in flt["ids"]:
        return False
    if "authors" in flt and ev["pubkey"] not in flt["authors"]:
        return False
    if "kinds" in flt and ev["kind"] not in flt["kinds"]:
        return False
    if "since" in flt and ev["created_at"] < flt["since"]:
        return False
    if "until" in flt and ev["created_at"] > flt["until"]:
        return False
    for key, values in flt.items():
        if key.startswith("#") and len(key) == 2:
            wanted = set(values)
            if not any(len(t) >= 2 and t[0] == key[1] and t[1] in wanted for t in ev["tags"]):
                return False
    return True


def replaceable_key(ev: dict[str, Any]) -> tuple[int, str, str] | None:
    """NIP-01: (kind, pubkey, d) of a replaceable (d = "") or addressable event, else None."""
    kind = ev["kind"]
    if kind in (0, 3) or 10000 <= kind < 20000:
        return kind, ev["pubkey"], ""
    if 30000 <= kind < 40000:
        d = next((t[1] for t in ev["tags"] if len(t) >= 2 and t[0] == "d"), "")
        return kind, ev["pubkey"], d
    return None


class ArchiveDatabase(NostrDatabase):
    """A nostr-sdk database (Python callback interface) that keeps every event it is given.

    Queries return the newest events first (ties: lowest id first, as NIP-01 says),
    at most the filter's `limit`. With `keep_replaced=False` it behaves like a public relay
    for replaceable and addressable events: only the newest version per (kind, pubkey, d) is
    kept (NIP-01: newest `created_at`, ties to the lowest id), an older one is refused.
    """

    def __init__(self, keep_replaced: bool = True) -> None:
        self.keep_replaced = keep_replaced
        self.by_id: dict[str, tuple[dict[str, Any], nostr_sdk.Event]] = {}
        self._order: list[tuple[int, str]] = []  # (-created_at, id), sorted
        self._newest: dict[tuple[int, str, str], str] = {}  # replaceable key -> id kept (keep_replaced=False)
        self.accepted: list[dict[str, Any]] = []  # every event ever saved, replaced ones included
        self.queries: list[dict[str, Any]] = []  # every filter asked for, oldest first (for tests and logs)

    def backend(self) -> str:
        return "canal-archive"

    def features(self) -> NostrDatabaseFeatures:
        return NostrDatabaseFeatures(persistent=False, event_expiration=False, full_text_search=False,
                                     request_to_vanish=False)

    async def save_event(self, event: nostr_sdk.Event) -> SaveEventStatus | None:
        ev = json.loads(event.as_json())
        if ev["id"] in self.by_id:
            return SaveEventStatus.rejected(RejectedReason.DUPLICATE)
        if 20000 <= ev["kind"] < 30000:
            return SaveEventStatus.rejected(RejectedReason.EPHEMERAL)
        key = None if self.keep_replaced else replaceable_key(ev)
        if key is not None:
            kept = self._newest.get(key)
            if kept is not None:
                old = self.by_id[kept][0]
                if (old["created_at"], -int(old["id"], 16)) >= (ev["created_at"], -int(ev["id"], 16)):
                    return SaveEventStatus.rejected(RejectedReason.REPLACED)
                self._drop(kept)
            self._newest[key] = ev["id"]
        self.by_id[ev["id"]] = (ev, event)
        self.accepted.append(ev)
        bisect.insort(self._order, (-ev["created_at"], ev["id"]))
        return SaveEventStatus.success()

    def _drop(self, event_id: str) -> None:
        ev, _ = self.by_id.pop(event_id)
        i = bisect.bisect_left(self._order, (-ev["created_at"], event_id))
        if i < len(self._order) and self._order[i] == (-ev["created_at"], event_id):
            del self._order[i]

    async def check_id(self, event_id: nostr_sdk.EventId) -> DatabaseEventStatus:
        return DatabaseEventStatus.SAVED if event_id.to_hex() in self.by_id else DatabaseEventStatus.NOT_EXISTENT

    async def event_by_id(self, event_id: nostr_sdk.EventId) -> nostr_sdk.Event | None:
        found = self.by_id.get(event_id.to_hex())
        return found[1] if found else None

    async def count(self, filter: nostr_sdk.Filter) -> int:  # noqa: A002 - the interface's name
        return len(self.select(json.loads(filter.as_json()), limit=None))

    async def query(self, filter: nostr_sdk.Filter) -> list[nostr_sdk.Event]:  # noqa: A002
        flt = json.loads(filter.as_json())
        self.queries.append(flt)
        return [self.by_id[i][1] for i in self.select(flt)]

    def select(self, flt: dict[str, Any], limit: int | None = FILTER_LIMIT) -> list[str]:
        """Ids of the events matching one NIP-01 filter, newest first."""
        cap = flt.get("limit", limit)
        if limit is not None:
            cap = min(cap if cap is not None else limit, limit)
        start = 0
        if "until" in flt:
            start = bisect.bisect_left(self._order, (-flt["until"], ""))
        out: list[str] = []
        for neg_t, eid in self._order[start:]:
            if "since" in flt and -neg_t < flt["since"]:
                break
            if cap is not None and len(out) >= cap:
                break
            if _matches(self.by_id[eid][0], flt):
                out.append(eid)
        return out

    async def delete_events(self, filter: nostr_sdk.Filter) -> None:  # noqa: A002
        log.debug("archive relay keeps events a deletion names: %s", filter.as_json())

    async def wipe(self) -> None:
        self.by_id.clear()
        self._order.clear()
        self._newest.clear()


@dataclass
class DemoRelay:
    """A running local relay: its URL, its archive, and what it refused while being seeded."""

    relay: LocalRelay
    url: str
    port: int
    database: ArchiveDatabase
    refused: list[tuple[dict[str, Any], str]] = field(default_factory=list)

    async def publish(self, events: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
        """Send events as a client would (["EVENT", ev], await OK); returns the refused ones with the relay's message."""
        refused = await publish(self.url, events)
        self.refused += refused
        return refused

    def stop(self) -> None:
        """Shut the relay down (its listening socket and every client connection close)."""
        self.relay.shutdown()


async def _publish_one_connection(url: str, events: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    refused: list[tuple[dict[str, Any], str]] = []
    async with websockets.connect(url, max_size=None) as ws:
        for start in range(0, len(events), PUBLISH_WINDOW):
            window = events[start : start + PUBLISH_WINDOW]
            waiting = {ev["id"]: ev for ev in window}
            for ev in window:
                await ws.send(json.dumps(["EVENT", ev], ensure_ascii=False))
            while waiting:
                msg = json.loads(await ws.recv())
                if msg[0] == "OK" and msg[1] in waiting:
                    ev = waiting.pop(msg[1])
                    if not msg[2] and not str(msg[3]).startswith("duplicate"):
                        refused.append((ev, str(msg[3])))
                elif msg[0] == "NOTICE":
                    log.info("demo relay notice: %s", msg[1])
    return refused


async def publish(url: str, events: Sequence[dict[str, Any]],
                  connections: int = PUBLISH_CONNECTIONS) -> list[tuple[dict[str, Any], str]]:
    """Publish `events` to the relay at `url` over a few parallel websocket connections, awaiting every OK.

    Events are split round-robin, so each connection keeps their relative order.
    """
    if not events:
        return []
    parts = [list(events[i::connections]) for i in range(connections)]
    results = await asyncio.gather(*(_publish_one_connection(url, p) for p in parts if p))
    return [r for part in results for r in part]


def build_relay(database: ArchiveDatabase, port: int | None = None, host: str = "127.0.0.1",
                nip42: bool = False) -> LocalRelay:
    """A LocalRelay on `host` (a random free port unless given) storing into `database`, without rate limits."""
    builder = (
        LocalRelayBuilder()
        .addr(host)
        .database(database)
        .rate_limit(RateLimit(max_reqs=10_000, notes_per_minute=1_000_000_000))
        .default_filter_limit(FILTER_LIMIT)
        .max_filter_limit(FILTER_LIMIT)
    )
    if port:
        builder = builder.port(port)
    if nip42:
        builder = builder.nip42(LocalRelayBuilderNip42(mode=LocalRelayBuilderNip42Mode.READ))
    return builder.build()


async def start_local_relay(
    events: Iterable[dict[str, Any]] = (), port: int | None = None, host: str = "127.0.0.1",
    keep_replaced: bool = True, nip42: bool = False,
) -> tuple[DemoRelay, str]:
    """Start an in-process relay on 127.0.0.1 and publish `events` to it over websockets.

    Returns (relay, url). `relay.refused` lists the events the relay itself refused
    (bad id or signature) with its message; ingest never sees those from the relay.
    `keep_replaced=False` keeps only the newest replaceable version, as public relays do;
    `nip42=True` makes readers authenticate (NIP-42) before they get events.
    Must run inside the event loop that will keep running while the relay serves: the
    archive's callbacks run on it (`nostr_sdk.uniffi_set_event_loop` is process-wide, so
    every nostr_sdk coroutine must then be awaited on that loop).
    """
    nostr_sdk.uniffi_set_event_loop(asyncio.get_running_loop())
    database = ArchiveDatabase(keep_replaced)
    relay = build_relay(database, port, host, nip42)
    await relay.run()
    url = str(await relay.url()).rstrip("/")
    bound = int(url.rsplit(":", 1)[1])
    demo = DemoRelay(relay, url, bound, database)
    await demo.publish(list(events))
    return demo, url
