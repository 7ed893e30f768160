"""TRACK mode's coordinator in the ingest process: tracked keys, the interest set, the relay pool.

Every `TRACK_REFRESH_S` (and at once when something changes) it

1. seeds newly tracked keys (added by TRACK at start, `canal track add` or the admin API) from
   what the store holds, and drops the interest of removed keys;
2. reloads the interest set when it changed and wakes every relay client, which re-issues its
   live subscriptions and backfills just the new rows (`services.ingest.relay_client`);
3. discovers relays through NIP-65 (the newest kind 10002 of tracked keys: read and write
   relays; of followers and engagers: write relays) and starts a client for each new one, at
   most `RELAY_DISCOVERY_CAP` beyond the `RELAYS` seeds;
4. marks keys ready once every reachable relay has backfilled all interest that existed when
   they were added and the set has settled (answers for a key are partial until then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine, text

from libs.config import Settings
from libs.nostr.identity import resolve_key
from libs.nostr.relays import RELAY_LIST_KIND, is_private_relay, normalize_relay_url, parse_relay_list
from services.ingest.interest import InterestStore, learn_rows
from services.ingest.relay_client import RelayClient
from services.ingest.store import BatchResult, RawItem
from services.ingest.subscriptions import Item

log = logging.getLogger(__name__)
LEARN_STATUSES = ("admitted", "duplicate")


class Tracker:
    """The InterestView every TRACK-mode relay client reads, and the relay pool it grows."""

    def __init__(self, engine: Engine, settings: Settings, clients: list[RelayClient],
                 spawn: Callable[[str, bool], RelayClient] | None = None) -> None:
        self.engine, self.settings = engine, settings
        self.store = InterestStore(engine)
        self.clients = clients  # shared with the ingest service (status) and extended by discovery
        self.spawn = spawn  # (url, discovered) -> a client; discovered relays are dropped if never reachable
        self.keys: set[str] = set()
        self._items: list[Item] = []
        self._owners: dict[str, str] = {}
        self._version: tuple[int, int] = (-1, -1)
        self._subscribers: list[asyncio.Event] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._discovery_due = True  # interest or a relay list changed since the last discovery
        self._last_discovery = 0.0
        self.discovered: list[str] = []

    # -- InterestView ------------------------------------------------------------------------
    def items(self) -> list[Item]:
        return list(self._items)

    def floor(self, now: int) -> int:
        return max(0, now - self.settings.backfill_seconds())

    def subscribe(self) -> asyncio.Event:
        event = asyncio.Event()
        event.set()
        self._subscribers.append(event)
        return event

    async def learned(self, items: Sequence[RawItem], result: BatchResult) -> None:
        """Grow the interest set from a committed batch; reload at once so no client settles on a stale view."""
        if not self.keys:
            return
        events: list[dict[str, Any]] = [
            v for o in result.outcomes
            if o.status in LEARN_STATUSES and 0 <= o.index < len(items) and isinstance(v := items[o.index].value, dict)]
        if any(e.get("kind") == RELAY_LIST_KIND for e in events):
            self._discovery_due = True
        rows = learn_rows(events, self.keys, self._owners)
        if not rows:
            return
        inserted: int = await asyncio.to_thread(self.store.add, rows)
        if inserted:
            await self.refresh(discover=False)

    # -- the loop ----------------------------------------------------------------------------
    async def add_configured(self, track: str) -> list[str]:
        """Add the TRACK keys (hex, npub, nprofile or NIP-05); a key that cannot be resolved is logged and skipped."""
        added: list[str] = []
        for entry in (t.strip() for t in track.split(",")):
            if not entry:
                continue
            try:
                key = await asyncio.to_thread(resolve_key, entry)
            except ValueError as exc:
                log.error("TRACK entry %r skipped: %s", entry, exc)
                continue
            await asyncio.to_thread(self.store.add_key, key.pubkey, "env", entry if key.form == "nip05" else "")
            added.append(key.pubkey)
        return added

    def poke(self) -> None:
        """Refresh now (a key was added or removed)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh()
            except Exception as exc:  # the database may be away: try again next round
                log.warning("tracker refresh failed: %s", exc)
            self._wake.clear()
            waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
            await asyncio.wait(waits, timeout=self.settings.track_refresh_s, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await w

    async def refresh(self, discover: bool = True) -> None:
        async with self._lock:
            tracked = await asyncio.to_thread(self.store.tracked)
            for key in tracked:
                if key.first_seq == 0:
                    await asyncio.to_thread(self.store.seed_key, key.pubkey)
            self.keys = {k.pubkey for k in tracked}
            version = await asyncio.to_thread(self.store.version)
            if version != self._version:
                # rows only ever grow, except when a key is untracked: then the whole set is read again
                (count, _), (known, known_top) = version, self._version
                after = known_top if known >= 0 else 0
                rows = await asyncio.to_thread(_interest_rows, self.engine, after)
                if after and known + len(rows) == count:
                    self._items += [Item(i, s, v) for i, s, v, _ in rows]
                else:
                    if after:
                        rows = await asyncio.to_thread(_interest_rows, self.engine, 0)
                    self._items = [Item(i, s, v) for i, s, v, _ in rows]
                    self._owners = {}
                self._owners.update({v: o for _, s, v, o in rows if s in ("note", "addr")})
                self._version = version
                self._discovery_due = True
                for event in self._subscribers:
                    event.set()
        if discover:
            await self._discover()
            await self._mark_ready()

    async def _discover(self) -> None:
        cap = self.settings.relay_discovery_cap
        if cap <= 0 or self.spawn is None or not self.keys:
            return
        if not self._discovery_due and time.monotonic() - self._last_discovery < 30:
            return
        self._discovery_due, self._last_discovery = False, time.monotonic()
        try:
            await self._spawn_discovered(cap)
        except BaseException:
            self._discovery_due = True  # not done: readiness waits for the next round
            raise

    async def _spawn_discovered(self, cap: int) -> None:
        assert self.spawn is not None
        known = {normalize_relay_url(c.url) or c.url for c in self.clients}
        urls = await asyncio.to_thread(discover_relays, self.engine, sorted(self.keys),
                                       [i.value for i in self._items if i.sort == "author"],
                                       self.settings.relay_discovery_private)
        for url in urls:
            if len(self.discovered) >= cap:
                break
            if url in known:
                continue
            log.info("NIP-65: subscribing to %s", url)
            self.discovered.append(url)
            known.add(url)
            client = self.spawn(url, True)
            self.clients.append(client)
            client.start()

    def settled(self) -> bool:
        """Every reachable relay client is connected, caught up and has backfilled every interest row."""
        top = max((i.id for i in self._items), default=0)
        considered = [c for c in self.clients
                      if not c.abandoned and (c.connected or (c.connects == 0 and c.attempts <= 1))]
        return bool(considered) and all(
            c.connected and c.caught_up and not c.backfilling and c.mark >= top for c in considered)

    async def _mark_ready(self) -> None:
        if not self.keys or self._discovery_due or not self.settled():
            return
        top = max((i.id for i in self._items), default=0)
        ready = await asyncio.to_thread(self.store.mark_ready, top, int(time.time()))
        for key in ready:
            log.info("tracked key %s: backfill complete", key)


def _interest_rows(engine: Engine, after: int) -> list[tuple[int, str, str, str]]:
    """Interest rows with an id above `after`, in id order."""
    with engine.connect() as conn:
        return [(int(i), s, v, o) for i, s, v, o in
                conn.execute(text("SELECT id, sort, value, owner FROM interest WHERE id > :a ORDER BY id"),
                             {"a": after})]


def discover_relays(engine: Engine, keys: Sequence[str], authors: Sequence[str], allow_private: bool) -> list[str]:
    """Relays worth subscribing to, best first: the tracked keys' NIP-65 read and write relays (in their
    order), then the write relays of followers and engagers by how many of them write there."""
    lists = _newest_relay_lists(engine, [*keys, *authors])
    ordered: list[str] = []
    for key in keys:
        rl = lists.get(key)
        if rl is not None:
            ordered += [u for u in (*rl.write, *rl.read) if u not in ordered]
    votes: Counter[str] = Counter()
    for author in authors:
        rl = lists.get(author)
        if rl is not None:
            votes.update(set(rl.write))
    ordered += [u for u, _ in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0])) if u not in ordered]
    return [u for u in ordered if allow_private or not is_private_relay(u)]


def _newest_relay_lists(engine: Engine, pubkeys: Sequence[str]) -> dict[str, Any]:
    if not pubkeys:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT DISTINCT ON (pubkey) pubkey, tags FROM events WHERE kind = :k AND pubkey = ANY(:p) "
            "AND NOT deleted ORDER BY pubkey, created_at DESC, id"), {"k": RELAY_LIST_KIND, "p": list(pubkeys)}).all()
    return {pk: parse_relay_list(tags) for pk, tags in rows}
