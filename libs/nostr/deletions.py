"""NIP-09 deletions: which events a set of deletion references (tombstones) retracts."""

from __future__ import annotations

from .event import Event
from .tags import address_of


def is_deleted(event: Event, stones: dict[str, list[tuple[str, int]]]) -> bool:
    """NIP-09 with the same-author rule; `a` deletions cover versions up to the deletion's created_at."""
    if event.kind == 5:
        return False
    if any(deleter == event.pubkey for deleter, _ in stones.get(event.id, ())):
        return True
    addr = address_of(event)
    return bool(addr) and any(
        deleter == event.pubkey and event.created_at <= at for deleter, at in stones.get(addr or "", ())
    )
