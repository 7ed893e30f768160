"""The normalization mapper: which facts an admitted event produces, given what else is stored.

Pure logic. `derive_event_facts` is a function of the event and a `Lookup` view of the
store (referenced events, deletions, zap dedup), so re-running it after any later
arrival (a parent, a deletion, an earlier receipt for the same payment hash) yields the
facts the event should have now. That is what makes ingest order-independent: the store
re-derives every event a new arrival can affect and writes the difference.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from libs.metrics import SUB_ANON, SUB_DISLIKE, SUB_LIKE, FactType
from libs.nostr.event import Event, is_hex64
from libs.nostr.tags import (
    address_of,
    address_pubkey,
    mentioned_pubkeys,
    quote_refs,
    reaction_target,
    reply_parent,
    repost_target,
)

PARAM_REPLACEABLE = range(30000, 40000)


@dataclass(frozen=True, slots=True)
class StoredRef:
    """What the store knows about an ingested event that others point at."""

    pubkey: str
    kind: int
    address: str | None


@dataclass(frozen=True, slots=True)
class FactSpec:
    """A fact before pubkeys and notes are mapped to dense ids."""

    target: str
    fact_type: FactType
    created_at: int
    kind: int
    actor: str
    note: str | None = None
    msats: int = 0
    sub: int = 0


@dataclass(frozen=True, slots=True)
class ZapRow:
    """A valid receipt as stored in zap_receipts."""

    event_id: str
    recipient: str
    sender: str
    msats: int
    anon: bool
    note_key: str | None
    counts: bool  # the earliest receipt for its payment hash


class Lookup(Protocol):
    """The store as the mapper sees it."""

    def ref(self, event_id: str) -> StoredRef | None: ...

    def is_deleted(self, event: Event) -> bool: ...

    def zap(self, event_id: str) -> ZapRow | None: ...


def note_key(event_id: str, lookup: Lookup) -> str:
    """A note is its id, unless the referenced event is ingested and parameterized replaceable."""
    ref = lookup.ref(event_id)
    if ref is not None and ref.kind in PARAM_REPLACEABLE and ref.address:
        return ref.address
    return event_id


def reaction_sub(content: str) -> int:
    """Likes are `+` or empty, dislikes `-`, everything else is an emoji reaction."""
    if content in ("+", ""):
        return SUB_LIKE
    if content == "-":
        return SUB_DISLIKE
    return 0


def _parent(event: Event, lookup: Lookup) -> tuple[str | None, str | None]:
    """(parent author, parent note key) of a reply, or (None, key) while unresolved."""
    parent = reply_parent(event)
    if parent is None:
        return None, None
    if parent.kind == "a":
        return address_pubkey(parent.value) or parent.author_hint, parent.value
    ref = lookup.ref(parent.value)
    key = note_key(parent.value, lookup)
    if ref is not None:
        return ref.pubkey, key
    return parent.author_hint, key


def _quoted(event: Event, lookup: Lookup) -> dict[str, str]:
    """Quoted author -> the first quoted note key by that author."""
    out: dict[str, str] = {}
    for q in quote_refs(event):
        author: str | None
        key = q.value
        if ":" in q.value:
            author = address_pubkey(q.value)
        elif is_hex64(q.value):
            ref = lookup.ref(q.value)
            if ref is not None:
                author = ref.pubkey
                key = note_key(q.value, lookup)
            else:
                author = q.fourth if q.fourth and is_hex64(q.fourth) else None
        else:
            author = None
        if author and author not in out:
            out[author] = key
    return out


def _text_note_facts(event: Event, lookup: Lookup) -> list[FactSpec]:
    me, t, k = event.pubkey, event.created_at, event.kind
    facts: list[FactSpec] = []
    if k == 1:
        facts.append(FactSpec(me, FactType.NOTE, t, k, me, event.id))
    parent_author, parent_key = _parent(event, lookup)
    if parent_author and parent_author != me:
        facts.append(FactSpec(parent_author, FactType.REPLY, t, k, me, parent_key))
    quoted = _quoted(event, lookup)
    for author, key in quoted.items():
        if author != me:
            facts.append(FactSpec(author, FactType.QUOTE, t, k, me, key))
    if k == 1:
        for p in sorted(mentioned_pubkeys(event.content)):
            if p != me and p != parent_author and p not in quoted:
                facts.append(FactSpec(p, FactType.MENTION, t, k, me, None))
    return facts


def derive_event_facts(event: Event, lookup: Lookup) -> list[FactSpec]:
    """The facts `event` produces now (kind 3 lists are handled by `derive_follow_history`)."""
    if lookup.is_deleted(event):
        return []
    me, t, k = event.pubkey, event.created_at, event.kind
    if k in (1, 1111):
        return _text_note_facts(event, lookup)
    if k == 7:
        note, target = reaction_target(event)
        if not target or target == me:
            return []
        key = note_key(note, lookup) if note else None
        return [FactSpec(target, FactType.REACTION, t, k, me, key, 0, reaction_sub(event.content))]
    if k in (6, 16):
        note, target = repost_target(event)
        if not target or target == me:
            return []
        key = note_key(note, lookup) if note else None
        return [FactSpec(target, FactType.REPOST, t, k, me, key)]
    if k == 9735:
        zap = lookup.zap(event.id)
        if zap is None or not zap.counts or zap.sender == zap.recipient:
            return []
        key = zap.note_key
        if key and is_hex64(key):
            key = note_key(key, lookup)
        return [FactSpec(zap.recipient, FactType.ZAP, t, k, zap.sender, key, zap.msats, SUB_ANON if zap.anon else 0)]
    if k == 30023:
        return [FactSpec(me, FactType.ARTICLE, t, k, me, address_of(event))]
    return []


@dataclass(frozen=True, slots=True)
class ListVersion:
    """One admitted, non-deleted kind 3 version of an author."""

    event_id: str
    created_at: int
    follows: frozenset[str]


def derive_follow_history(author: str, versions: Iterable[ListVersion]) -> dict[str, list[FactSpec]]:
    """Follow/unfollow moments of an author's whole contact-list history, per list event id.

    Lists are ordered by (created_at ascending, id descending): among lists with the same
    created_at the lowest id comes last and is effective. The first list is compared with
    an empty one; self-follows never count.
    """
    ordered: Sequence[ListVersion] = sorted(versions, key=lambda v: (v.created_at, _desc(v.event_id)))
    out: dict[str, list[FactSpec]] = {}
    prev: frozenset[str] = frozenset()
    for version in ordered:
        cur = version.follows - {author}
        facts = [FactSpec(p, FactType.FOLLOW, version.created_at, 3, author) for p in sorted(cur - prev)]
        facts += [FactSpec(p, FactType.UNFOLLOW, version.created_at, 3, author) for p in sorted(prev - cur)]
        out[version.event_id] = facts
        prev = cur
    return out


def _desc(hex_id: str) -> str:
    """Sort key that orders hex ids descending under an ascending sort."""
    return "".join("0123456789abcdef"[15 - int(c, 16)] for c in hex_id)
