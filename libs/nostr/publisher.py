"""Publish signed events to a relay as a client does: `["EVENT", ev]`, then await the relay's `OK`.

NIP-01: every EVENT is answered by `["OK", id, accepted, message]`; `duplicate:` means the relay
already holds it (success for the publisher). NIP-42: a relay may send `["AUTH", challenge]` and
refuse events with `auth-required:` until the client answers with a kind 22242 event naming the
relay and the challenge, signed by its key; refused events are then sent once more.

One `RelayPublisher` holds one connection per relay for its lifetime, so a run that publishes
many events to several relays opens each relay once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import websockets

from libs.nostr.keys import sign_event

log = logging.getLogger(__name__)

__all__ = ["AUTH_KIND", "Outcome", "RelayPublisher", "publish_events"]

AUTH_KIND = 22242
WINDOW = 128  # events in flight per connection before their OKs are awaited
OK_TIMEOUT_S = 10.0
AUTH_WAIT_S = 5.0  # how long an auth-required refusal waits for the relay's challenge and its OK


@dataclass(frozen=True)
class Outcome:
    """What one relay said about one event."""

    ok: bool
    message: str


@dataclass
class _Connection:
    url: str
    ws: Any
    auth_key: bytes | None
    waiting: dict[str, asyncio.Future[Outcome]] = field(default_factory=dict)
    challenge: str | None = None
    challenged: asyncio.Event = field(default_factory=asyncio.Event)
    auth_id: str | None = None
    authenticated: asyncio.Event = field(default_factory=asyncio.Event)
    auth_refused: str | None = None
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                with contextlib.suppress(ValueError, TypeError, IndexError):
                    await self._on(json.loads(raw))
        except websockets.WebSocketException as exc:
            log.info("relay %s: connection ended (%s)", self.url, exc)
        finally:
            for fut in self.waiting.values():
                if not fut.done():
                    fut.set_result(Outcome(False, "error: connection closed"))
            self.challenged.set()
            self.authenticated.set()

    async def _on(self, msg: list[Any]) -> None:
        if msg[0] == "OK" and len(msg) >= 3:
            text = str(msg[3]) if len(msg) > 3 else ""
            if msg[1] == self.auth_id:
                if msg[2] is not True:
                    self.auth_refused = text or "refused"
                self.authenticated.set()
                return
            fut = self.waiting.pop(msg[1], None)
            if fut is not None and not fut.done():
                fut.set_result(Outcome(msg[2] is True or text.startswith("duplicate:"), text))
        elif msg[0] == "AUTH" and isinstance(msg[1], str):
            self.challenge = msg[1]
            self.challenged.set()
        elif msg[0] == "NOTICE":
            log.info("relay %s notice: %s", self.url, msg[1] if len(msg) > 1 else "")

    async def send(self, event: dict[str, Any]) -> Outcome:
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.waiting[event["id"]] = fut
        try:
            await self.ws.send(json.dumps(["EVENT", event], ensure_ascii=False))
            return await asyncio.wait_for(fut, OK_TIMEOUT_S)
        except TimeoutError:
            return Outcome(False, "error: no OK from the relay in time")
        except websockets.WebSocketException as exc:
            return Outcome(False, f"error: {exc}")
        finally:
            self.waiting.pop(event["id"], None)

    async def authenticate(self) -> bool:
        """Answer the relay's challenge (waiting briefly for one); True once the relay accepts."""
        if self.auth_key is None:
            return False
        if self.auth_id is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.challenged.wait(), AUTH_WAIT_S)
            if self.challenge is None:
                return False
            auth = sign_event(self.auth_key, AUTH_KIND, "", [["relay", self.url], ["challenge", self.challenge]],
                              int(time.time()))
            self.auth_id = auth["id"]
            await self.ws.send(json.dumps(["AUTH", auth]))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.authenticated.wait(), AUTH_WAIT_S)
        return self.authenticated.is_set() and self.auth_refused is None


class RelayPublisher:
    """Publish events to relays over one lazily opened connection per relay (an async context manager).

    `auth_key` signs NIP-42 AUTH when a relay asks for it; without one, `auth-required:` refusals stand.
    """

    def __init__(self, auth_key: bytes | None = None, open_timeout: float = 10.0) -> None:
        self.auth_key = auth_key
        self.open_timeout = open_timeout
        self._conns: dict[str, _Connection] = {}
        self._broken: dict[str, str] = {}

    async def __aenter__(self) -> RelayPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection."""
        for conn in self._conns.values():
            with contextlib.suppress(Exception):
                await conn.ws.close()
            if conn.reader is not None:
                conn.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await conn.reader
        self._conns.clear()

    async def _connection(self, url: str) -> _Connection | str:
        if url in self._broken:
            return self._broken[url]
        conn = self._conns.get(url)
        if conn is not None:
            return conn
        try:
            ws = await websockets.connect(url, open_timeout=self.open_timeout, close_timeout=2, max_size=2**22)
        except (OSError, TimeoutError, websockets.WebSocketException, ValueError) as exc:
            self._broken[url] = f"error: cannot connect: {type(exc).__name__}: {exc}"[:300]
            return self._broken[url]
        conn = _Connection(url, ws, self.auth_key)
        conn.reader = asyncio.create_task(conn.read())
        self._conns[url] = conn
        return conn

    async def publish(self, url: str, events: Sequence[dict[str, Any]]) -> dict[str, Outcome]:
        """Send `events` to the relay at `url`; the relay's outcome per event id."""
        conn = await self._connection(url)
        if isinstance(conn, str):
            return {ev["id"]: Outcome(False, conn) for ev in events}
        out: dict[str, Outcome] = {}
        for start in range(0, len(events), WINDOW):
            window = events[start : start + WINDOW]
            results = await asyncio.gather(*(conn.send(ev) for ev in window))
            out.update({ev["id"]: r for ev, r in zip(window, results, strict=True)})
            refused = [ev for ev in window if out[ev["id"]].message.startswith("auth-required")]
            if refused and await conn.authenticate():
                again = await asyncio.gather(*(conn.send(ev) for ev in refused))
                out.update({ev["id"]: r for ev, r in zip(refused, again, strict=True)})
        return out


async def publish_events(url: str, events: Sequence[dict[str, Any]],
                         auth_key: bytes | None = None) -> dict[str, Outcome]:
    """Publish `events` to one relay over a fresh connection (see `RelayPublisher`)."""
    async with RelayPublisher(auth_key) as publisher:
        return await publisher.publish(url, events)
