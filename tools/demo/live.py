"""A live trickle of new demo events, so rolling windows and freshness move while the demo runs."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from libs.nostr.keys import privkey_from_seed, sign_event
from tools.demo.generator import demo_pubkey
from tools.demo.relay import DemoRelay

TRICKLE_EVERY_S = 3.0


def trickle_event(rng: random.Random, creator: str, notes: list[str], now: int) -> dict[str, Any]:
    """A fresh reaction (or repost) by one of a few fans to one of the creator's notes."""
    fan = privkey_from_seed(f"canal-demo-fan-{rng.randrange(40)}")
    note = rng.choice(notes)
    if rng.random() < 0.8:
        return sign_event(fan, 7, rng.choice(["+", "+", "🤙", "-"]), [["e", note], ["p", creator]], now)
    return sign_event(fan, 6, "", [["e", note], ["p", creator]], now)


async def trickle(relay: DemoRelay, events: list[dict[str, Any]], seed: int, stop: asyncio.Event) -> None:
    """Publish a new event every few seconds until `stop` is set."""
    creator = demo_pubkey(seed)
    notes = [str(e["id"]) for e in events if e["kind"] == 1 and e["pubkey"] == creator] or ["0" * 64]
    rng = random.Random(time.time_ns())
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), TRICKLE_EVERY_S)
            return
        with contextlib.suppress(Exception):  # a relay hiccup must not stop the demo
            await relay.publish([trickle_event(rng, creator, notes, int(time.time()))])
