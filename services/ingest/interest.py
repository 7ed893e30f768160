"""The interest set of TRACK mode: which note ids, addresses and authors the subscriptions follow.

It grows as data arrives (`learn`): a tracked key's new note adds its id (replies and quotes
of it need no `p` tag), a new engager or follower adds their pubkey (their later contact lists
and deletions name no tracked key). A newly tracked key is first seeded from what the store
already holds (`seed_key`). Rows are append-only with a sequence, so every relay records how
far it has backfilled (`relay_cursors.interest_mark`) and backfills exactly the rows after it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text

from libs.nostr.tags import address_pubkey
from services.ingest.subscriptions import NOTE_KINDS, Item

Row = tuple[str, str, str]  # (sort, value, owner)
INTEREST_LOCK = 0x63616E616C01  # serializes interest inserts (see InterestStore.add)


@dataclass(frozen=True)
class TrackedKey:
    """One tracked_keys row."""

    pubkey: str
    added_at: int
    source: str
    label: str
    first_seq: int
    ready_at: int | None

    @property
    def state(self) -> str:
        return "ready" if self.ready_at is not None else "backfilling"


def _tag_values(ev: Mapping[str, Any], name: str) -> list[str]:
    tags = ev.get("tags")
    if not isinstance(tags, list):
        return []
    return [t[1] for t in tags if isinstance(t, list) and len(t) >= 2 and t[0] == name and isinstance(t[1], str)]


def _address(ev: Mapping[str, Any]) -> str:
    d = next(iter(_tag_values(ev, "d")), "")
    return f"{ev['kind']}:{ev['pubkey']}:{d}"


def learn_rows(events: Iterable[Mapping[str, Any]], keys: set[str], owners: Mapping[str, str]) -> list[Row]:
    """New interest rows implied by events: notes/addresses of tracked keys, and the authors who tag a
    tracked key or reference one of its notes (they may later unfollow or delete what they did).

    `owners` maps the known note ids and addresses of tracked keys to their key."""
    out: list[Row] = []
    for ev in events:
        pubkey, kind = ev.get("pubkey"), ev.get("kind")
        if not isinstance(pubkey, str) or not isinstance(kind, int):
            continue
        if pubkey in keys:
            if kind in NOTE_KINDS:
                out.append(("note", str(ev["id"]), pubkey))
            if 30000 <= kind <= 39999:
                out.append(("addr", _address(ev), pubkey))
            continue
        owner = _owner(ev, keys, owners)
        if owner is not None:
            out.append(("author", pubkey, owner))
    return out


def _owner(ev: Mapping[str, Any], keys: set[str], owners: Mapping[str, str]) -> str | None:
    """The tracked key an event is about (tagged, or one of its notes referenced), else None."""
    for p in _tag_values(ev, "p"):
        if p in keys:
            return p
    refs = _tag_values(ev, "e") + _tag_values(ev, "q") + _tag_values(ev, "a")
    for ref in refs:
        owner = owners.get(ref) or address_pubkey(ref)
        if owner in keys:
            return owner
    return None


class InterestStore:
    """tracked_keys and interest rows in PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- tracked keys -----------------------------------------------------------------------
    def tracked(self) -> list[TrackedKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT pubkey, added_at, source, label, first_seq, ready_at FROM tracked_keys "
                                     "ORDER BY added_at, pubkey")).all()
        return [TrackedKey(*r) for r in rows]

    def add_key(self, pubkey: str, source: str, label: str = "") -> tuple[TrackedKey, bool]:
        """Track a key (idempotent); True when it was not tracked before."""
        with self.engine.begin() as conn:
            added = conn.execute(text(
                "INSERT INTO tracked_keys (pubkey, added_at, source, label) VALUES (:p, :t, :s, :l) "
                "ON CONFLICT (pubkey) DO NOTHING RETURNING pubkey"),
                {"p": pubkey, "t": int(time.time()), "s": source, "l": label}).first() is not None
            row = conn.execute(text("SELECT pubkey, added_at, source, label, first_seq, ready_at FROM tracked_keys "
                                    "WHERE pubkey = :p"), {"p": pubkey}).one()
        return TrackedKey(*row), added

    def remove_key(self, pubkey: str) -> bool:
        """Stop tracking a key: its row and the interest it owns go; shared interest is re-seeded for the rest."""
        with self.engine.begin() as conn:
            _lock_interest(conn)
            gone = conn.execute(text("DELETE FROM tracked_keys WHERE pubkey = :p RETURNING pubkey"),
                                {"p": pubkey}).first() is not None
            conn.execute(text("DELETE FROM interest WHERE owner = :p OR (sort = 'key' AND value = :p)"), {"p": pubkey})
            remaining = [r[0] for r in conn.execute(text("SELECT pubkey FROM tracked_keys WHERE first_seq > 0"))]
            for other in remaining:
                _seed_derived(conn, other)
        return gone

    def seed_key(self, pubkey: str) -> int:
        """Interest for a newly tracked key: the key itself, then its notes, addresses, followers and engagers
        already in the store. Records the key row's sequence as the key's `first_seq`."""
        now = int(time.time())
        with self.engine.begin() as conn:
            _lock_interest(conn)
            conn.execute(text("INSERT INTO interest (sort, value, owner, added_at) VALUES ('key', CAST(:p AS text), CAST(:p AS text), :t) "
                              "ON CONFLICT (sort, value) DO NOTHING"), {"p": pubkey, "t": now})
            seq = int(conn.execute(text("SELECT id FROM interest WHERE sort = 'key' AND value = :p"),
                                   {"p": pubkey}).scalar_one())
            _seed_derived(conn, pubkey)
            conn.execute(text("UPDATE tracked_keys SET first_seq = :s WHERE pubkey = :p AND first_seq = 0"),
                         {"s": seq, "p": pubkey})
        return seq

    def mark_ready(self, max_first_seq: int, now: int) -> list[str]:
        """Keys seeded at or before `max_first_seq` and not yet ready become ready; returns them."""
        with self.engine.begin() as conn:
            rows = conn.execute(text("UPDATE tracked_keys SET ready_at = :t WHERE ready_at IS NULL AND first_seq > 0 "
                                     "AND first_seq <= :s RETURNING pubkey"), {"t": now, "s": max_first_seq}).all()
        return [r[0] for r in rows]

    # -- interest rows ----------------------------------------------------------------------
    def items(self) -> list[Item]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, sort, value FROM interest ORDER BY id")).all()
        return [Item(int(i), s, v) for i, s, v in rows]

    def version(self) -> tuple[int, int]:
        """(row count, highest id): changes whenever rows are added or removed."""
        with self.engine.connect() as conn:
            n, top = conn.execute(text("SELECT count(*), coalesce(max(id), 0) FROM interest")).one()
        return int(n), int(top)

    def add(self, rows: Sequence[Row]) -> int:
        """Insert rows not yet known; the number inserted."""
        if not rows:
            return 0
        sorts, values, owners = (list(x) for x in zip(*dict.fromkeys(rows), strict=True))
        with self.engine.begin() as conn:
            _lock_interest(conn)
            inserted = conn.execute(text(
                "INSERT INTO interest (sort, value, owner, added_at) "
                "SELECT s, v, o, :t FROM unnest(CAST(:s AS text[]), CAST(:v AS text[]), CAST(:o AS text[])) AS x(s, v, o) "
                "ORDER BY s, v ON CONFLICT (sort, value) DO NOTHING RETURNING id"),
                {"s": sorts, "v": values, "o": owners, "t": int(time.time())}).all()
        return len(inserted)


def _lock_interest(conn: Connection) -> None:
    """Interest rows must commit in id order (a relay's interest_mark means "every row up to here is
    backfilled"), so every transaction that inserts them holds this lock until it commits."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": INTEREST_LOCK})


def _seed_derived(conn: Connection, pubkey: str) -> None:
    """Interest rows of one tracked key from what the store holds (idempotent)."""
    params: dict[str, Any] = {"p": pubkey, "t": int(time.time()), "kinds": list(NOTE_KINDS)}
    conn.execute(text(
        "INSERT INTO interest (sort, value, owner, added_at) "
        "SELECT 'note', id, CAST(:p AS text), :t FROM events WHERE pubkey = :p AND kind = ANY(:kinds) ORDER BY created_at, id "
        "ON CONFLICT (sort, value) DO NOTHING"), params)
    conn.execute(text(
        "INSERT INTO interest (sort, value, owner, added_at) "
        "SELECT DISTINCT 'addr', address, CAST(:p AS text), :t FROM events WHERE pubkey = :p AND kind BETWEEN 30000 AND 39999 "
        "AND address IS NOT NULL ON CONFLICT (sort, value) DO NOTHING"), params)
    conn.execute(text(
        "INSERT INTO interest (sort, value, owner, added_at) "
        "SELECT 'author', a.pubkey, CAST(:p AS text), :t FROM ("
        "  SELECT DISTINCT e.pubkey FROM facts f JOIN events e ON e.id = f.source_event_id "
        "  WHERE f.target_id = (SELECT id FROM pubkeys WHERE pubkey = :p) AND e.pubkey <> :p "
        "  UNION SELECT k.pubkey FROM contact_lists c JOIN pubkeys k ON k.id = c.author_id "
        "  WHERE :p = ANY(c.follows) AND k.pubkey <> :p "
        "  UNION SELECT e.pubkey FROM event_refs r JOIN events e ON e.id = r.event_id "
        "  WHERE r.ref IN (SELECT id FROM events WHERE pubkey = :p) AND e.pubkey <> :p"
        ") a ORDER BY a.pubkey ON CONFLICT (sort, value) DO NOTHING"), params)
