"""A NIP-01 websocket client per relay: subscribe, backfill from persisted marks, batch into the store.

Without tracked keys one filter takes every kind the metrics use; with tracked keys (TRACK mode)
the filters come from the interest set (`services.ingest.subscriptions`) and change as it grows.

A session, per connection:

1. NIP-11: the relay's limits (filters per REQ, subscriptions, page size, frame size).
2. Live subscriptions for everything, opened first so nothing published during the backfill is
   missed. They carry `limit: 0` (no stored events: the fetches below read those) and a `since`
   far back (TRACK mode: the backfill floor; untracked: the cursor minus the overlap), because relays
   apply `since` to live events too and a newly published event may carry an older `created_at`
   (a rebroadcast, a slow client).
3. Catch-up: what is already covered is fetched from the persisted cursor (minus the overlap);
   interest added since this relay last backfilled (rows after its `interest_mark`) is fetched
   from the backfill floor (`BACKFILL_DAYS`; untracked mode reads the relay's whole history).
   Fetches page backwards with `until`, one filter per REQ (with several filters, one filter's
   older events could hide behind another's oldest), until a page brings nothing new.
4. Live: new interest re-issues the live subscriptions and backfills just the new rows.

NIP-42: an `AUTH` challenge is answered with a kind 22242 event signed by the service key, and
subscriptions the relay closed with `auth-required:` are sent again once it accepts.

The cursor and the interest mark only advance after the events behind them are committed: a
process killed mid-batch loses nothing, the next session asks again. The cursor never passes
the receive time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import websockets
from sqlalchemy import Engine, text

from libs.nostr.event import loads_strict
from libs.nostr.identity import parse_key
from libs.nostr.keys import sign_event
from services.ingest.batches import ingest_resilient
from services.ingest.relay_info import DEFAULT_LIMITS, RelayLimits, fetch_limits
from services.ingest.store import BatchResult, IngestStore, RawItem
from services.ingest.subscriptions import KINDS, Filter, Item, fetch_filters, plan_live, untracked_filters

log = logging.getLogger(__name__)

__all__ = ["HEARTBEAT_S", "KINDS", "OVERLAP_S", "TRACK_FILTER_HASH", "CursorStore", "InterestView", "RelayClient",
           "RelayStatus", "filter_hash", "parse_track"]

OVERLAP_S = 60
HEARTBEAT_S = 5.0
MAX_FRAME = 4 * 1024 * 1024
AUTH_KIND = 22242
FUTURE_S = 900  # METRICS.md: created_at up to receive time + 900 s is admitted
#: relay_cursors key of TRACK mode's subscriptions (their filters change; the interest mark says how far).
TRACK_FILTER_HASH = "track"

BatchHook = Callable[[BatchResult, float], None]


class InterestView(Protocol):
    """What a TRACK-mode client reads from the tracker (services.ingest.tracker.Tracker)."""

    def items(self) -> list[Item]: ...

    def floor(self, now: int) -> int: ...

    def subscribe(self) -> asyncio.Event: ...

    async def learned(self, items: Sequence[RawItem], result: BatchResult) -> None: ...


def parse_track(track: str | Sequence[str]) -> list[str]:
    """TRACK (comma-separated hex, npub or nprofile, or a list) as sorted unique hex keys; ValueError names a bad one.

    NIP-05 identifiers need the network: the tracker resolves those (`libs.nostr.identity.resolve_key`)."""
    items = track.split(",") if isinstance(track, str) else list(track)
    return sorted({parse_key(t.strip()).pubkey for t in items if t.strip()})


def filter_hash(filters: Sequence[dict[str, Any]]) -> str:
    """The relay_cursors key of a fixed filter set (sha256 of its canonical JSON, without since/until)."""
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
    """The relay ended a live subscription (CLOSED) for a reason other than authentication."""


@dataclass
class _Page:
    """One backfill request: events with created_at <= until, newest first; the oldest second reached."""

    sub: str
    until: int
    known_at_until: frozenset[str] = frozenset()  # ids already seen at second `until`
    fresh: int = 0
    oldest: int | None = None
    at_oldest: set[str] = field(default_factory=set)
    done: asyncio.Future[str] | None = None  # resolved with "" at EOSE or the CLOSED reason

    def saw(self, t: int, eid: str) -> None:
        if t < self.until or (t == self.until and eid not in self.known_at_until):
            self.fresh += 1
        if self.oldest is None or t < self.oldest:
            self.oldest, self.at_oldest = t, {eid}
        elif t == self.oldest:
            self.at_oldest.add(eid)


class CursorStore:
    """relay_cursors rows: the persisted `since`, the interest mark, and per-relay health."""

    def __init__(self, engine: Engine, relay: str, fhash: str) -> None:
        self.engine, self.relay, self.fhash = engine, relay, fhash

    def load(self) -> dict[str, Any]:
        with self.engine.begin() as conn:
            conn.execute(text("INSERT INTO relay_cursors (relay, filter_hash) VALUES (:r, :f) ON CONFLICT DO NOTHING"),
                         {"r": self.relay, "f": self.fhash})
            row = conn.execute(
                text("SELECT since, last_event_at, last_seen_at, events_received, last_error, interest_mark "
                     "FROM relay_cursors WHERE relay = :r AND filter_hash = :f"),
                {"r": self.relay, "f": self.fhash}).one()
        return dict(row._mapping)

    def forget(self) -> None:
        """Remove a relay that never answered (nothing was ever received from it)."""
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM relay_cursors WHERE relay = :r AND filter_hash = :f AND last_seen_at = 0 "
                              "AND events_received = 0"), {"r": self.relay, "f": self.fhash})

    def health(self, connected: bool, seen_at: int | None = None, error: str | None = None) -> None:
        sets = ["connected = :c"]
        if seen_at is not None:
            sets.append("last_seen_at = GREATEST(last_seen_at, :s)")
        if error is not None:
            sets.append("last_error = :e")
        with self.engine.begin() as conn:
            conn.execute(text(f"UPDATE relay_cursors SET {', '.join(sets)} WHERE relay = :r AND filter_hash = :f"),
                         {"c": connected, "s": seen_at, "e": error, "r": self.relay, "f": self.fhash})

    def committed(self, received: int, last_event_at: int, seen_at: int, since: int | None,
                  interest_mark: int | None = None) -> None:
        """After a batch committed: counts, newest event, and (when allowed) the advanced cursor and mark."""
        with self.engine.begin() as conn:
            conn.execute(
                text("UPDATE relay_cursors SET events_received = events_received + :n, "
                     "last_event_at = GREATEST(last_event_at, :t), last_seen_at = GREATEST(last_seen_at, :s), "
                     "since = GREATEST(since, COALESCE(:since, since)), "
                     "interest_mark = GREATEST(interest_mark, COALESCE(:mark, interest_mark)) "
                     "WHERE relay = :r AND filter_hash = :f"),
                {"n": received, "t": last_event_at, "s": seen_at, "since": since, "mark": interest_mark,
                 "r": self.relay, "f": self.fhash})


class RelayClient:
    """Subscribes to one relay and ingests what it sends, reconnecting with jittered exponential backoff."""

    def __init__(
        self,
        url: str,
        engine: Engine,
        interest: InterestView | None = None,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        overlap: int = OVERLAP_S,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        on_batch: BatchHook | None = None,
        clock: Callable[[], float] = time.time,
        auth_key: bytes | None = None,
        chunk: int = 256,
        limits: RelayLimits | None = None,
        page_timeout: float = 30.0,
        give_up_after: int | None = None,
    ) -> None:
        self.url = url
        self.store = IngestStore(engine)
        self.interest = interest
        fhash = TRACK_FILTER_HASH if interest is not None else filter_hash(untracked_filters())
        self.cursors = CursorStore(engine, url, fhash)
        self.batch_size, self.flush_interval, self.overlap = batch_size, flush_interval, overlap
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.on_batch = on_batch
        self.clock = clock
        self.auth_key = auth_key
        self.chunk = chunk
        self.limits = limits or DEFAULT_LIMITS
        self._fixed_limits = limits is not None
        self.page_timeout = page_timeout
        self.give_up_after = give_up_after  # attempts before a relay never reached is dropped (discovered ones)
        self.abandoned = False
        self.cursor = 0
        self.mark = 0
        self.connected = False
        self.caught_up = False
        self.backfilling = False
        self.attempts = 0
        self.events_received = 0
        self.last_error = ""
        self.last_event_at = 0
        self.last_seen_at = 0
        self.last_commit_at = 0
        self.connects = 0
        self.authenticated = False
        self._pending: list[RawItem] = []
        self._pending_max_t = 0
        self._pending_since: float | None = None
        self._session_max_t = 0
        self._flush_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._changed: asyncio.Event | None = None
        self._ws: Any = None
        self._broken = False  # a batch or page of this session was lost: cursor and mark must not move
        self._task: asyncio.Task[None] | None = None
        self._subs = 0
        self._pages: dict[str, _Page] = {}
        self._live: list[str] = []
        self._sent: dict[str, list[Any]] = {}
        self._blocked: set[str] = set()  # subscriptions closed with auth-required, sent again after AUTH
        self._auth_id: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> asyncio.Task[None]:
        """Run in the background (see `stop`)."""
        if self.interest is not None:
            self._changed = self.interest.subscribe()
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
        if self.interest is not None and self._changed is None:
            self._changed = self.interest.subscribe()
        row = await self._load_cursor()
        if row is None:
            return
        self.cursor, self.last_event_at = int(row["since"]), int(row["last_event_at"])
        self.last_seen_at, self.events_received = int(row["last_seen_at"]), int(row["events_received"])
        self.last_error, self.mark = row["last_error"], int(row["interest_mark"])
        ticker = asyncio.create_task(self._tick())
        attempt = 0
        try:
            while not self._stopping.is_set():
                if await self._connect_once():
                    attempt = 0
                if self._stopping.is_set():
                    break
                if self._never_reached() and self.give_up_after is not None and self.attempts >= self.give_up_after:
                    await self._abandon()
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
            if not self.abandoned:
                await self._record(self.cursors.health, False, None, None)

    def _never_reached(self) -> bool:
        return self.connects == 0 and self.last_seen_at == 0 and self.events_received == 0

    async def _abandon(self) -> None:
        """A relay that was never reachable (a dead entry in someone's NIP-65 list): drop it, so that it
        does not make every answer `relay_behind`; its row goes, it is logged."""
        self.abandoned = True
        log.warning("relay %s was never reachable in %d attempts (%s): dropped from the pool", self.url,
                    self.attempts, self.last_error)
        await self._record(self.cursors.forget)

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
        self.attempts += 1
        error: str | None = None
        if not self._fixed_limits:
            self.limits = await fetch_limits(self.url)
        try:
            async with websockets.connect(self.url, max_size=MAX_FRAME, open_timeout=10, close_timeout=2,
                                          ping_interval=20, ping_timeout=20) as ws:
                self._ws = ws
                self.connected = True
                self.connects += 1
                self.last_seen_at = int(self.clock())
                await self._record(self.cursors.health, True, self.last_seen_at, None)
                log.info("connected to %s; cursor %s, interest mark %s", self.url, self.cursor, self.mark)
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
            self.backfilling = False
            self.authenticated = False
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

    async def _send_req(self, ws: Any, sub: str, filters: Sequence[Filter]) -> None:
        frame: list[Any] = ["REQ", sub, *filters]
        self._sent[sub] = frame
        await ws.send(json.dumps(frame))

    async def _close_sub(self, ws: Any, sub: str) -> None:
        self._sent.pop(sub, None)
        self._blocked.discard(sub)
        await ws.send(json.dumps(["CLOSE", sub]))

    async def _session(self, ws: Any) -> None:
        """Read frames and drive the subscriptions side by side; either ending ends the session."""
        self._pages.clear()
        self._live = []
        self._sent.clear()
        self._blocked.clear()
        self._auth_id = None
        reader = asyncio.create_task(self._read(ws))
        driver = asyncio.create_task(self._drive(ws))
        try:
            done, _ = await asyncio.wait({reader, driver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, driver):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc

    async def _read(self, ws: Any) -> None:
        async for message in ws:
            self.last_seen_at = int(self.clock())
            msg = self._decode(message)
            if not msg:
                continue
            kind = msg[0]
            if kind == "EVENT" and len(msg) >= 3:
                self._on_event(msg, message)
                if len(self._pending) >= self.batch_size:
                    await self._flush()
            elif kind == "EOSE" and len(msg) >= 2:
                self._page_done(str(msg[1]), "")
            elif kind == "CLOSED" and len(msg) >= 2:
                await self._on_closed(ws, str(msg[1]), str(msg[2]) if len(msg) > 2 else "")
            elif kind == "AUTH" and len(msg) >= 2 and isinstance(msg[1], str):
                await self._authenticate(ws, msg[1])
            elif kind == "OK" and len(msg) >= 3:
                await self._on_ok(ws, msg)
            elif kind == "NOTICE":
                log.info("relay %s notice: %s", self.url, msg[1] if len(msg) > 1 else "")

    def _decode(self, message: str | bytes) -> list[Any] | None:
        try:
            text_msg = message.decode("utf-8") if isinstance(message, bytes) else message
            msg = loads_strict(text_msg)
        except (ValueError, UnicodeDecodeError):
            log.warning("relay %s sent a frame that is not JSON", self.url)
            return None
        return msg if isinstance(msg, list) and msg and isinstance(msg[0], str) else None

    def _on_event(self, msg: list[Any], raw: str | bytes) -> None:
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
        page = self._pages.get(str(msg[1]))
        if page is not None:
            page.saw(t, str(ev.get("id")))

    def _page_done(self, sub: str, reason: str) -> None:
        page = self._pages.get(sub)
        if page is not None and page.done is not None and not page.done.done():
            page.done.set_result(reason)

    async def _on_closed(self, ws: Any, sub: str, reason: str) -> None:
        if reason.startswith("auth-required") and self.auth_key is not None and not self.authenticated:
            self._blocked.add(sub)  # sent again once the relay accepts our AUTH
            return
        if sub in self._pages:
            self._broken = True
            self.last_error = f"relay closed a backfill page: {reason}"[:500]
            self._page_done(sub, reason or "closed")
            return
        if sub in self._live:
            raise _Closed(f"subscription {sub} closed by the relay: {reason}")

    async def _authenticate(self, ws: Any, challenge: str) -> None:
        """NIP-42: answer a challenge with a kind 22242 event naming this relay and the challenge."""
        if self.auth_key is None:
            log.warning("relay %s asks for AUTH but no service key is configured", self.url)
            return
        event = sign_event(self.auth_key, AUTH_KIND, "", [["relay", self.url], ["challenge", challenge]],
                           int(self.clock()))
        self._auth_id = event["id"]
        await ws.send(json.dumps(["AUTH", event]))

    async def _on_ok(self, ws: Any, msg: list[Any]) -> None:
        if self._auth_id is None or msg[1] != self._auth_id:
            log.debug("relay %s OK: %s", self.url, msg[1:])
            return
        if msg[2] is not True:
            raise _Closed(f"the relay refused our AUTH: {msg[3] if len(msg) > 3 else ''}")
        self.authenticated = True
        for sub in sorted(self._blocked):
            frame = self._sent.get(sub)
            if frame is not None:
                await ws.send(json.dumps(frame))
        self._blocked.clear()

    # -- subscriptions -----------------------------------------------------------------------
    async def _drive(self, ws: Any) -> None:
        """Live subscriptions, the catch-up and backfill fetches, then follow the interest set."""
        start = int(self.clock())
        items = self.interest.items() if self.interest is not None else []
        if self._changed is not None:
            self._changed.clear()
        floor = self.interest.floor(start) if self.interest is not None else 0
        since = max(0, self.cursor - self.overlap) if self.cursor else floor
        await self._open_live(ws, items, floor if self.interest is not None else since)
        horizon = start + FUTURE_S  # admission takes events up to 900 s ahead; they may predate our live REQs
        if self.interest is None:
            await self._fetch_all(ws, fetch_filters([], self.limits, self.chunk, untracked=True), since, horizon)
        else:
            covered = [i for i in items if i.id <= self.mark]
            new = [i for i in items if i.id > self.mark]
            await self._fetch_all(ws, fetch_filters(covered, self.limits, self.chunk), since, horizon)
            self.backfilling = bool(new)
            await self._fetch_all(ws, fetch_filters(new, self.limits, self.chunk), floor, horizon)
        await self._finish_backfill(max((i.id for i in items), default=self.mark))
        if self._changed is None:
            await asyncio.Future()  # untracked: the reader does the rest
        while True:
            assert self._changed is not None
            await self._changed.wait()
            self._changed.clear()
            await self._follow_interest(ws)

    async def _follow_interest(self, ws: Any) -> None:
        """The interest set changed: re-issue the live subscriptions, backfill the rows after the mark."""
        assert self.interest is not None
        items = self.interest.items()
        now = int(self.clock())
        await self._open_live(ws, items, self.interest.floor(now))
        new = [i for i in items if i.id > self.mark]
        if not new:
            return
        self.backfilling = True
        await self._fetch_all(ws, fetch_filters(new, self.limits, self.chunk), self.interest.floor(now), now + FUTURE_S)
        await self._flush()
        if not self._broken:
            self.mark = max(self.mark, max(i.id for i in new))
            await self._record(self.cursors.committed, 0, 0, now, None, self.mark)
        self.backfilling = False

    async def _open_live(self, ws: Any, items: list[Item], since: int) -> None:
        plan = plan_live(items, self.limits, self.chunk, untracked=self.interest is None)
        subs: list[str] = []
        for i, group in enumerate(plan.requests):
            sub = f"canal-live-{i}"
            await self._send_req(ws, sub, [{**f, "since": max(0, since), "limit": 0} for f in group])
            subs.append(sub)
        for old in self._live[len(subs):]:
            await self._close_sub(ws, old)
        self._live = subs
        if plan.overflow:
            self.last_error = (f"the interest set needs {len(subs) + plan.overflow} subscriptions but the relay "
                               f"allows {self.limits.max_subscriptions}: {plan.overflow} are not followed live")
            log.warning("relay %s: %s", self.url, self.last_error)

    async def _fetch_all(self, ws: Any, filters: Sequence[Filter], since: int, until: int) -> None:
        for flt in filters:
            await self._fetch(ws, flt, since, until)

    async def _fetch(self, ws: Any, flt: Filter, since: int, until: int) -> None:
        """Every stored event of one filter in [since, until], paging backwards with `until`.

        `until` is inclusive, so a page overlaps the previous one at that second; the fetch ends
        with the first page that brings nothing new.
        """
        known: frozenset[str] = frozenset()
        while since <= until:
            done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            page = _Page(self._sub_id(), until, known, done=done)
            self._pages[page.sub] = page
            bounds: dict[str, int] = {"since": since, "until": until}
            if self.limits.max_limit:
                bounds["limit"] = self.limits.max_limit
            try:
                await self._send_req(ws, page.sub, [{**flt, **bounds}])
                try:
                    await asyncio.wait_for(asyncio.shield(done), self.page_timeout)
                except TimeoutError:
                    self._broken = True
                    self.last_error = f"no EOSE within {self.page_timeout:.0f} s for a backfill page"
                    log.warning("relay %s: %s", self.url, self.last_error)
                    return
                await self._close_sub(ws, page.sub)
            finally:
                self._pages.pop(page.sub, None)
            if page.fresh == 0 or page.oldest is None or done.result():
                return
            until, known = page.oldest, frozenset(page.at_oldest)

    async def _finish_backfill(self, mark: int) -> None:
        await self._flush()
        now = int(self.clock())
        self.caught_up = True
        self.backfilling = False
        if self._broken:
            return
        new_cursor = min(self._session_max_t, now) if self._session_max_t else self.cursor
        self.cursor = max(self.cursor, new_cursor)
        self.mark = max(self.mark, mark)
        await self._record(self.cursors.committed, 0, 0, now, self.cursor, self.mark)
        log.info("relay %s caught up; cursor %s, interest mark %s", self.url, self.cursor, self.mark)

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
            if self.interest is not None:
                await _quietly(self.interest.learned(items, result), f"relay {self.url}: learning interest")
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
        """Connected, caught up, nothing being backfilled, nothing waiting to be committed."""
        return self.connected and self.caught_up and not self.backfilling and not self._pending

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


async def _quietly(work: Awaitable[None], what: str) -> None:
    """Await bookkeeping that must not break ingest; failures are logged."""
    try:
        await work
    except Exception as exc:
        log.warning("%s failed: %s", what, exc)
