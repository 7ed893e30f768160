"""A NIP-01 websocket client per relay: subscribe from a persisted cursor, batch into the store.

Per relay, one subscription (REQ) carries the filters: every kind the metrics use,
restricted to the tracked pubkeys when TRACK is set (events BY them: `authors`;
events tagging them: `#p`). `since` is the persisted cursor minus an overlap
(duplicates are free). Relays cap what one REQ returns, so the stored backlog is
paged backwards with `until` until a page brings nothing new.

The cursor only advances after the events behind it are committed: during the
backfill not at all (pages arrive newest first, so a gap could hide behind it),
then to the newest `created_at` of the backfill, then after each live batch. It
never passes the receive time. A process killed mid-batch therefore loses
nothing: the next run asks again from the old cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import websockets
from sqlalchemy import Engine, text

from libs.nostr.bech32 import parse_pubkey
from libs.nostr.event import loads_strict
from services.ingest.batches import ingest_resilient
from services.ingest.store import BatchResult, IngestStore, RawItem

log = logging.getLogger(__name__)

KINDS = (0, 1, 3, 5, 6, 7, 16, 1111, 9735, 30023)
OVERLAP_S = 60
HEARTBEAT_S = 5.0
MAX_FRAME = 4 * 1024 * 1024

BatchHook = Callable[[BatchResult, float], None]


def parse_track(track: str | Sequence[str]) -> list[str]:
    """TRACK (comma-separated hex or npub, or a list) as sorted unique hex pubkeys; ValueError names a bad one."""
    items = track.split(",") if isinstance(track, str) else list(track)
    return sorted({parse_pubkey(t.strip()) for t in items if t.strip()})


def relay_filters(track: Sequence[str]) -> list[dict[str, Any]]:
    """The REQ filters: everything of our kinds, or (TRACK set) events by and events tagging the tracked keys."""
    if not track:
        return [{"kinds": list(KINDS)}]
    keys = sorted(track)
    return [{"kinds": list(KINDS), "authors": keys}, {"kinds": list(KINDS), "#p": keys}]


def filter_hash(filters: Sequence[dict[str, Any]]) -> str:
    """The relay_cursors key of a filter set (sha256 of its canonical JSON, without since/until)."""
    canon = [{k: v for k, v in f.items() if k not in ("since", "until", "limit")} for f in filters]
    return hashlib.sha256(json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class RelayStatus:
    """A snapshot of one relay subscription, for GetIngestStatus and freshness metadata."""

    url: str
    cursor: int
    lag_seconds: int
    connected: bool
    caught_up: bool
    events_received: int
    last_error: str
    last_event_at: int
    last_seen_at: int


class _Closed(Exception):
    """The relay ended our subscription (CLOSED)."""


@dataclass
class _Page:
    """One backfill request: events with created_at <= until (none for the first), newest first."""

    sub: str
    until: int | None = None
    known_at_until: frozenset[str] = frozenset()  # ids already seen at second `until`
    fresh: int = 0


@dataclass
class _Backfill:
    """The oldest second reached so far and the ids seen at it."""

    oldest: int | None = None
    at_oldest: set[str] = field(default_factory=set)

    def saw(self, t: int, eid: str) -> None:
        if self.oldest is None or t < self.oldest:
            self.oldest, self.at_oldest = t, {eid}
        elif t == self.oldest:
            self.at_oldest.add(eid)


class CursorStore:
    """relay_cursors rows: the persisted `since` and per-relay health."""

    def __init__(self, engine: Engine, relay: str, fhash: str) -> None:
        self.engine, self.relay, self.fhash = engine, relay, fhash

    def load(self) -> dict[str, Any]:
        with self.engine.begin() as conn:
            conn.execute(text("INSERT INTO relay_cursors (relay, filter_hash) VALUES (:r, :f) ON CONFLICT DO NOTHING"),
                         {"r": self.relay, "f": self.fhash})
            row = conn.execute(
                text("SELECT since, last_event_at, last_seen_at, events_received, last_error FROM relay_cursors "
                     "WHERE relay = :r AND filter_hash = :f"), {"r": self.relay, "f": self.fhash}).one()
        return dict(row._mapping)

    def health(self, connected: bool, seen_at: int | None = None, error: str | None = None) -> None:
        sets = ["connected = :c"]
        if seen_at is not None:
            sets.append("last_seen_at = GREATEST(last_seen_at, :s)")
        if error is not None:
            sets.append("last_error = :e")
        with self.engine.begin() as conn:
            conn.execute(text(f"UPDATE relay_cursors SET {', '.join(sets)} WHERE relay = :r AND filter_hash = :f"),
                         {"c": connected, "s": seen_at, "e": error, "r": self.relay, "f": self.fhash})

    def committed(self, received: int, last_event_at: int, seen_at: int, since: int | None) -> None:
        """After a batch committed: counts, newest event, and (when allowed) the advanced cursor."""
        with self.engine.begin() as conn:
            conn.execute(
                text("UPDATE relay_cursors SET events_received = events_received + :n, "
                     "last_event_at = GREATEST(last_event_at, :t), last_seen_at = GREATEST(last_seen_at, :s), "
                     "since = GREATEST(since, COALESCE(:since, since)) WHERE relay = :r AND filter_hash = :f"),
                {"n": received, "t": last_event_at, "s": seen_at, "since": since, "r": self.relay, "f": self.fhash})


class RelayClient:
    """Subscribes to one relay and ingests what it sends, reconnecting with jittered exponential backoff."""

    def __init__(
        self,
        url: str,
        engine: Engine,
        track: Sequence[str] = (),
        *,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        overlap: int = OVERLAP_S,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        on_batch: BatchHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.store = IngestStore(engine)
        self.filters = relay_filters(list(track))
        self.cursors = CursorStore(engine, url, filter_hash(self.filters))
        self.batch_size, self.flush_interval, self.overlap = batch_size, flush_interval, overlap
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.on_batch = on_batch
        self.clock = clock
        self.cursor = 0
        self.connected = False
        self.caught_up = False
        self.events_received = 0
        self.last_error = ""
        self.last_event_at = 0
        self.last_seen_at = 0
        self.last_commit_at = 0
        self.connects = 0
        self._pending: list[RawItem] = []
        self._pending_max_t = 0
        self._pending_since: float | None = None
        self._session_max_t = 0
        self._flush_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._ws: Any = None
        self._broken = False  # a batch of this session was lost: the cursor must not move
        self._task: asyncio.Task[None] | None = None
        self._subs = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> asyncio.Task[None]:
        """Run in the background (see `stop`)."""
        self._task = asyncio.create_task(self.run(), name=f"relay {self.url}")
        return self._task

    async def stop(self) -> None:
        """Close the connection, commit the in-flight batch, and wait for the client to end."""
        self._stopping.set()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        """Connect, subscribe, ingest; reconnect on failure until `stop`."""
        row = await self._load_cursor()
        if row is None:
            return
        self.cursor, self.last_event_at = int(row["since"]), int(row["last_event_at"])
        self.last_seen_at, self.events_received = int(row["last_seen_at"]), int(row["events_received"])
        self.last_error = row["last_error"]
        ticker = asyncio.create_task(self._tick())
        attempt = 0
        try:
            while not self._stopping.is_set():
                if await self._connect_once():
                    attempt = 0
                if self._stopping.is_set():
                    break
                delay = min(self.backoff_cap, self.backoff_base * 2**attempt) * random.uniform(0.5, 1.0)
                attempt += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await self._flush()
            await self._record(self.cursors.health, False, None, None)

    async def _load_cursor(self) -> dict[str, Any] | None:
        """The persisted cursor row, retried with backoff while the database is unreachable (None: stopped)."""
        attempt = 0
        while not self._stopping.is_set():
            try:
                return await asyncio.to_thread(self.cursors.load)
            except Exception as exc:
                self.last_error = f"cursor load failed: {exc}"[:500]
                log.warning("relay %s: %s", self.url, self.last_error)
            attempt += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), min(self.backoff_cap, self.backoff_base * 2**attempt))
        return None

    async def _record(self, fn: Callable[..., None], *args: Any) -> None:
        """Health and cursor bookkeeping in a worker thread; a database hiccup is logged, not fatal."""
        try:
            await asyncio.to_thread(fn, *args)
        except Exception as exc:
            log.warning("relay %s: could not record %s: %s", self.url, getattr(fn, "__name__", fn), exc)

    async def _connect_once(self) -> bool:
        """One connection; True when it got as far as a finished backfill (resets the backoff)."""
        self.caught_up = False
        self._broken = False
        self._session_max_t = 0
        error: str | None = None
        try:
            async with websockets.connect(self.url, max_size=MAX_FRAME, open_timeout=10, close_timeout=2,
                                          ping_interval=20, ping_timeout=20) as ws:
                self._ws = ws
                self.connected = True
                self.connects += 1
                self.last_seen_at = int(self.clock())
                await self._record(self.cursors.health, True, self.last_seen_at, None)
                log.info("connected to %s; since %s", self.url, max(0, self.cursor - self.overlap))
                await self._session(ws)
        except (TimeoutError, OSError, websockets.WebSocketException, _Closed, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            if not self._stopping.is_set():
                log.warning("relay %s: %s", self.url, error)
        finally:
            self._ws = None
            was_caught_up = self.caught_up
            self.connected = False
            self.caught_up = False
        if self._stopping.is_set():
            error = None
        elif self._broken:
            error = self.last_error
        elif error is None:
            error = "connection closed by the relay"
        if error is not None:
            self.last_error = error
        await self._flush()
        await self._record(self.cursors.health, False, None, error)
        return was_caught_up

    # -- protocol ----------------------------------------------------------------------------
    def _sub_id(self) -> str:
        self._subs += 1
        return f"canal-{self._subs}"

    async def _req(self, ws: Any, sub: str, **bounds: int) -> None:
        filters = [{**f, **bounds} for f in self.filters]
        await ws.send(json.dumps(["REQ", sub, *filters]))

    async def _session(self, ws: Any) -> None:
        since = max(0, self.cursor - self.overlap)
        main = self._sub_id()
        page = _Page(main)
        backfill = _Backfill()
        await self._req(ws, main, since=since)
        async for message in ws:
            self.last_seen_at = int(self.clock())
            msg = self._decode(message)
            if not msg:
                continue
            kind = msg[0]
            if kind == "EVENT" and len(msg) >= 3:
                self._on_event(msg, message, page, backfill)
                if len(self._pending) >= self.batch_size:
                    await self._flush()
            elif kind == "EOSE" and len(msg) >= 2 and msg[1] == page.sub and not self.caught_up:
                page = await self._next_page(ws, page, main, since, backfill)
            elif kind == "CLOSED" and len(msg) >= 2:
                raise _Closed(f"subscription {msg[1]} closed by the relay: {msg[2] if len(msg) > 2 else ''}")
            elif kind == "NOTICE":
                log.info("relay %s notice: %s", self.url, msg[1] if len(msg) > 1 else "")
            elif kind == "OK":
                log.debug("relay %s OK: %s", self.url, msg[1:])

    def _decode(self, message: str | bytes) -> list[Any] | None:
        try:
            text_msg = message.decode("utf-8") if isinstance(message, bytes) else message
            msg = loads_strict(text_msg)
        except (ValueError, UnicodeDecodeError):
            log.warning("relay %s sent a frame that is not JSON", self.url)
            return None
        return msg if isinstance(msg, list) and msg and isinstance(msg[0], str) else None

    def _on_event(self, msg: list[Any], raw: str | bytes, page: _Page, backfill: _Backfill) -> None:
        ev = msg[2]
        raw_text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        self._pending.append(RawItem(ev, self.url, raw_text))
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        t = ev.get("created_at") if isinstance(ev, dict) else None
        if type(t) is not int:
            return
        self._pending_max_t = max(self._pending_max_t, t)
        self._session_max_t = max(self._session_max_t, t)
        if self.caught_up or msg[1] != page.sub:
            return  # a live event, not part of the page being counted
        eid = str(ev.get("id"))
        if page.until is None or t < page.until or (t == page.until and eid not in page.known_at_until):
            page.fresh += 1
        backfill.saw(t, eid)

    async def _next_page(self, ws: Any, page: _Page, main: str, since: int, backfill: _Backfill) -> _Page:
        """After a page's EOSE: ask for older events (`until` = the oldest second seen), or finish the backfill.

        `until` is inclusive, so a page overlaps the previous one at that second; the
        backfill ends with the first page that brings nothing new.
        """
        if page.sub != main:
            await ws.send(json.dumps(["CLOSE", page.sub]))
        if page.fresh == 0 or backfill.oldest is None:
            await self._finish_backfill()
            return page
        nxt = _Page(self._sub_id(), backfill.oldest, frozenset(backfill.at_oldest))
        await self._req(ws, nxt.sub, since=since, until=backfill.oldest)
        return nxt

    async def _finish_backfill(self) -> None:
        await self._flush()
        now = int(self.clock())
        self.caught_up = True
        if self._session_max_t and not self._broken:
            new_cursor = min(self._session_max_t, now)
            if new_cursor > self.cursor:
                self.cursor = new_cursor
                await self._record(self.cursors.committed, 0, 0, now, self.cursor)
        log.info("relay %s caught up; cursor %s", self.url, self.cursor)

    # -- batches -----------------------------------------------------------------------------
    async def _tick(self) -> None:
        last_beat = 0.0
        while True:
            await asyncio.sleep(self.flush_interval / 2)
            if self._pending_since is not None and time.monotonic() - self._pending_since >= self.flush_interval:
                await self._flush()
            if self.connected and time.monotonic() - last_beat >= HEARTBEAT_S:
                last_beat = time.monotonic()
                await self._record(self.cursors.health, True, int(self.clock()), None)

    async def _flush(self) -> None:
        """Commit the pending events; then record counts and (when caught up) advance the cursor.

        If the database fails (an outage: bad items are isolated by `ingest_resilient`), the batch is
        dropped, the cursor frozen and the connection closed: the next session asks again from the cursor.
        """
        async with self._flush_lock:
            if not self._pending:
                return
            items, max_t = self._pending, self._pending_max_t
            self._pending, self._pending_max_t, self._pending_since = [], 0, None
            now = int(self.clock())
            started = time.perf_counter()
            try:
                result = await asyncio.to_thread(ingest_resilient, self.store, items, now)
            except Exception as exc:
                self._broken = True
                self.last_error = f"ingest failed, {len(items)} events will be fetched again: {exc}"[:500]
                log.error("relay %s: %s", self.url, self.last_error)
                if self._ws is not None:
                    with contextlib.suppress(Exception):
                        await self._ws.close()
                return
            elapsed = time.perf_counter() - started
            new_cursor: int | None = None
            if self.caught_up and max_t and not self._broken:
                new_cursor = max(self.cursor, min(max_t, now))
            try:
                await asyncio.to_thread(self.cursors.committed, len(items), min(max_t, now), now, new_cursor)
                if new_cursor is not None:
                    self.cursor = new_cursor
            except Exception as exc:  # bookkeeping only: the events are committed, the cursor stays behind
                log.warning("relay %s: could not advance the cursor: %s", self.url, exc)
            self.events_received += len(items)
            self.last_event_at = max(self.last_event_at, min(max_t, now))
            self.last_commit_at = now
            if self.on_batch is not None:
                self.on_batch(result, elapsed)

    # -- status ------------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """Connected, caught up, nothing waiting to be committed."""
        return self.connected and self.caught_up and not self._pending

    def status(self, now: int | None = None) -> RelayStatus:
        """Lag: 0 while connected and caught up; behind the cursor while backfilling; since last contact when down."""
        now = int(self.clock()) if now is None else now
        if self.connected and self.caught_up:
            lag = 0
        elif self.connected:
            lag = now - self.cursor
        else:
            lag = now - (self.last_seen_at or self.cursor)
        return RelayStatus(self.url, self.cursor, max(0, lag), self.connected, self.caught_up, self.events_received,
                           self.last_error, self.last_event_at, self.last_seen_at)
