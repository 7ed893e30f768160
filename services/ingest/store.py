"""Batch ingest into PostgreSQL: admit, store events, re-derive affected events, write fact diffs.

One batch is one transaction under an advisory lock (derivation reads what earlier batches
wrote, so two ingest processes must not interleave their derivation phases; signature
checks, the expensive part, run before the lock). Every fact inserted or deleted marks its
minute bucket dirty in the same transaction, which is all the compactor needs to know.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, text

from libs.nostr.admission import admit
from libs.nostr.event import Event, Rejection
from libs.nostr.tags import address_of, contact_set, deletion_targets, profile_name
from libs.nostr.zaps import validate_zap
from services.ingest.mapper import (
    FactSpec,
    ListVersion,
    StoredRef,
    ZapRow,
    derive_event_facts,
    derive_follow_history,
)

INGEST_LOCK = 0x63616E616C  # "canal"
RAW_LIMIT = 4096
REF_KINDS = (1, 1111, 6, 7, 16, 9735)

FactRow = tuple[int, str, int, int, int, int | None, int | None, int, int]


def _ids(name: str) -> str:
    """A text[] parameter bound as one array literal (see `_arr`): a constant the planner can index-scan."""
    return f"CAST(:{name} AS text[])"


def _arr(values: Iterable[str]) -> str:
    """A PostgreSQL text[] literal; psycopg's per-element array dumping is otherwise the slowest part of ingest."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def _j(values: Iterable[object]) -> str:
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))
FactKey = tuple[int, str, int]
FACT_NAMES = ("target_id", "source_event_id", "fact_type", "created_at", "kind", "actor_id", "note_id", "msats", "sub")
FACT_FIELDS = ", ".join(FACT_NAMES)


@dataclass(frozen=True, slots=True)
class RawItem:
    """One input: a parsed JSON value (or the Rejection from parsing it), its origin and raw text."""

    value: object
    origin: str
    raw: str


@dataclass(slots=True)
class Outcome:
    """Per-input result: admitted, duplicate or rejected (with reason)."""

    index: int
    status: str
    event_id: str | None = None
    reason: str = ""
    detail: str = ""
    message: str = ""


@dataclass(slots=True)
class BatchResult:
    outcomes: list[Outcome] = field(default_factory=list)
    facts_inserted: int = 0
    facts_deleted: int = 0
    rederived: int = 0

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


def admit_items(items: Sequence[RawItem], receive_time: int) -> list[Event | Rejection]:
    """Admission (CPU only, no database): an Event or the Rejection for each item."""
    out: list[Event | Rejection] = []
    for item in items:
        if isinstance(item.value, Rejection):
            out.append(item.value)
            continue
        try:
            out.append(_storable(admit(item.value, receive_time)))
        except Rejection as rej:
            out.append(rej)
    return out


def _storable(ev: Event) -> Event:
    """PostgreSQL text and jsonb cannot hold U+0000: such an event would fail its whole batch."""
    if "\x00" in ev.content or any("\x00" in v for t in ev.tags for v in t):
        raise Rejection("unstorable", "nul_char", "The event holds U+0000, which PostgreSQL text cannot store.", ev.id)
    return ev


class IngestStore:
    """Writes admitted events and their facts; safe to call from several processes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ingest(self, items: Sequence[RawItem], receive_time: int | None = None) -> BatchResult:
        """Admit and store a batch; returns per-item outcomes once the transaction committed."""
        now = int(time.time()) if receive_time is None else receive_time
        admitted = admit_items(items, now)
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": INGEST_LOCK})
            return _ingest_locked(conn, items, admitted, now)


def _ingest_locked(
    conn: Connection, items: Sequence[RawItem], admitted: list[Event | Rejection], now: int
) -> BatchResult:
    result = BatchResult()
    fresh: dict[str, Event] = {}
    rejects: list[tuple[int, Rejection]] = []
    candidates: dict[str, Event] = {}
    for i, ev in enumerate(admitted):
        if isinstance(ev, Rejection):
            rejects.append((i, ev))
        elif ev.id not in candidates:
            candidates[ev.id] = ev
    inserted = _insert_events(conn, list(candidates.values()), items, admitted, now)
    seen_new: set[str] = set()
    for i, ev in enumerate(admitted):
        if isinstance(ev, Rejection):
            continue
        if ev.id in inserted and ev.id not in seen_new:
            seen_new.add(ev.id)
            fresh[ev.id] = ev
            result.outcomes.append(Outcome(i, "admitted", ev.id))
        else:
            result.outcomes.append(Outcome(i, "duplicate", ev.id))
    _store_rejects(conn, items, rejects, result, now)
    if fresh:
        _store_side_rows(conn, list(fresh.values()))
        result.rederived, result.facts_inserted, result.facts_deleted = _rederive(conn, list(fresh.values()))
    _bump_counters(conn, result, now)
    result.outcomes.sort(key=lambda o: o.index)
    return result


def _insert_events(
    conn: Connection, events: list[Event], items: Sequence[RawItem], admitted: list[Event | Rejection], now: int
) -> set[str]:
    if not events:
        return set()
    origin_of: dict[str, str] = {}
    for item, ev in zip(items, admitted, strict=True):
        if isinstance(ev, Event):
            origin_of.setdefault(ev.id, item.origin)
    rows = [
        {
            "id": e.id, "pubkey": e.pubkey, "kind": e.kind, "created_at": e.created_at,
            "tags": [list(t) for t in e.tags], "content": e.content, "sig": e.sig,
            "address": address_of(e), "received_at": now, "origin": origin_of.get(e.id, ""),
        }
        for e in events
    ]
    got = conn.execute(
        text(
            "INSERT INTO events (id, pubkey, kind, created_at, tags, content, sig, address, received_at, origin) "
            "SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(id text, pubkey text, kind int, "
            "created_at bigint, tags jsonb, content text, sig text, address text, received_at bigint, origin text) "
            "ON CONFLICT (id) DO NOTHING RETURNING id"
        ),
        {"rows": json.dumps(rows, ensure_ascii=False)},
    )
    return {r[0] for r in got}


def _store_rejects(
    conn: Connection, items: Sequence[RawItem], rejects: list[tuple[int, Rejection]], result: BatchResult, now: int
) -> None:
    if not rejects:
        return
    claimed = [r.event_id for _, r in rejects if r.event_id]
    known: set[str] = set()
    if claimed:
        known = {row[0] for row in conn.execute(text("SELECT id FROM events WHERE id = ANY(" + _ids("ids") + ")"), {"ids": _arr(claimed)})}
    rows = []
    for i, rej in rejects:
        if rej.event_id and rej.event_id in known:
            result.outcomes.append(Outcome(i, "duplicate", rej.event_id))
            continue
        result.outcomes.append(Outcome(i, "rejected", rej.event_id, rej.reason, rej.detail, rej.message))
        rows.append({
            "event_id": rej.event_id, "reason": rej.reason, "detail": rej.detail, "message": rej.message,
            "origin": items[i].origin, "raw": items[i].raw[:RAW_LIMIT], "received_at": now,
        })
    if rows:
        conn.execute(
            text("INSERT INTO rejects (event_id, reason, detail, message, origin, raw, received_at) "
                 "VALUES (:event_id, :reason, :detail, :message, :origin, :raw, :received_at)"),
            rows,
        )


def _store_side_rows(conn: Connection, events: list[Event]) -> None:
    """event_refs, zap_receipts, tombstones, contact_lists and profiles for newly admitted events."""
    refs: list[dict[str, Any]] = []
    receipts: list[dict[str, Any]] = []
    stones: list[dict[str, Any]] = []
    lists: list[dict[str, Any]] = []
    profiles: list[dict[str, Any]] = []
    for e in events:
        if e.kind in REF_KINDS:
            for t in e.tags:
                if len(t) >= 2 and t[0] in ("e", "q") and len(t[1]) == 64:
                    refs.append({"ref": t[1], "event_id": e.id})
        if e.kind == 9735:
            zap = validate_zap(e, 2**62)  # already admitted: the time check was done at admission
            note = zap.note_e or zap.note_a
            receipts.append({
                "payment_hash": zap.payment_hash, "event_id": e.id, "created_at": e.created_at,
                "recipient": zap.recipient, "sender": zap.sender, "msats": zap.msats, "anon": zap.anon,
                "note_key": note, "description_hash_mismatch": zap.description_hash_mismatch,
            })
        elif e.kind == 5:
            ids, addrs = deletion_targets(e)
            for ref in {*ids, *addrs}:
                stones.append({"ref": ref, "deletion_id": e.id, "deleter": e.pubkey, "created_at": e.created_at})
        elif e.kind == 3:
            lists.append({"author_pubkey": e.pubkey, "created_at": e.created_at,
                          "event_id": e.id, "follows": sorted(contact_set(e))})
        elif e.kind == 0:
            name = profile_name(e)  # parsed from content JSON: a \u0000 escape there becomes a NUL
            profiles.append({"pubkey": e.pubkey, "display_name": name.replace("\x00", "\ufffd") if name else name,
                             "created_at": e.created_at, "event_id": e.id})
    _insert_rows(conn, "event_refs", refs)
    _insert_rows(conn, "zap_receipts", receipts)
    _insert_rows(conn, "tombstones", stones)
    if lists:
        author_ids = _pubkey_ids(conn, {row["author_pubkey"] for row in lists})
        for row in lists:
            row["author_id"] = author_ids[row.pop("author_pubkey")]
        _insert_rows(conn, "contact_lists", lists)
    newest: dict[str, dict[str, Any]] = {}
    for row in profiles:  # one row per pubkey: newest created_at, then lowest id
        best = newest.get(row["pubkey"])
        if best is None or (row["created_at"], best["event_id"]) > (best["created_at"], row["event_id"]):
            newest[row["pubkey"]] = row
    _insert_rows(conn, "profiles", list(newest.values()),
                 "ON CONFLICT (pubkey) DO UPDATE SET display_name = EXCLUDED.display_name, "
                 "created_at = EXCLUDED.created_at, event_id = EXCLUDED.event_id "
                 "WHERE (profiles.created_at, EXCLUDED.event_id) < (EXCLUDED.created_at, profiles.event_id)")


def _insert_rows(conn: Connection, table: str, rows: list[dict[str, Any]],
                 conflict: str = "ON CONFLICT DO NOTHING") -> None:
    """One INSERT for many rows, bound as a single JSON document (dict keys are column names)."""
    if not rows:
        return
    cols = ", ".join(rows[0])
    conn.execute(text(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM "
                      f"json_populate_recordset(NULL::{table}, CAST(:rows AS json)) {conflict}"), {"rows": _j(rows)})


def _dictionary_ids(conn: Connection, table: str, column: str, values: Iterable[str]) -> dict[str, int]:
    """Dense ids for pubkeys or note keys, creating the missing ones."""
    keys = sorted(set(values))
    if not keys:
        return {}
    params = {"k": _arr(keys)}
    conn.execute(text(f"INSERT INTO {table} ({column}) SELECT unnest(CAST(:k AS text[])) ON CONFLICT DO NOTHING"),
                 params)
    rows = conn.execute(text(f"SELECT {column}, id FROM {table} WHERE {column} = ANY({_ids('k')})"), params).all()
    return {r[0]: r[1] for r in rows}


def _pubkey_ids(conn: Connection, pubkeys: Iterable[str]) -> dict[str, int]:
    return _dictionary_ids(conn, "pubkeys", "pubkey", pubkeys)


def _note_ids(conn: Connection, notes: Iterable[str]) -> dict[str, int]:
    return _dictionary_ids(conn, "notes", "note_key", notes)


class _DbLookup:
    """The mapper's view of the store, loaded in a few batched queries."""

    def __init__(self, refs: dict[str, StoredRef], stones: dict[str, list[tuple[str, int]]],
                 zaps: dict[str, ZapRow]) -> None:
        self.refs, self.stones, self.zaps = refs, stones, zaps

    def ref(self, event_id: str) -> StoredRef | None:
        return self.refs.get(event_id)

    def zap(self, event_id: str) -> ZapRow | None:
        return self.zaps.get(event_id)

    def is_deleted(self, event: Event) -> bool:
        return is_deleted(event, self.stones)


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


def _load_events(conn: Connection, ids: Iterable[str]) -> list[Event]:
    rows = conn.execute(
        text("SELECT id, pubkey, created_at, kind, tags, content, sig FROM events WHERE id = ANY(" + _ids("ids") + ") ORDER BY id"),
        {"ids": _arr(sorted(set(ids)))},
    )
    return [Event(r[0], r[1], r[2], r[3], tuple(tuple(t) for t in r[4]), r[5], r[6]) for r in rows]


def _affected(conn: Connection, fresh: list[Event]) -> tuple[set[str], set[str]]:
    """Event ids to re-derive, and authors whose follow history to rebuild."""
    ids = {e.id for e in fresh if e.kind not in (0, 3, 5)}
    authors = {e.pubkey for e in fresh if e.kind == 3}
    new_ids = [e.id for e in fresh]
    ids |= {r[0] for r in conn.execute(text("SELECT event_id FROM event_refs WHERE ref = ANY(" + _ids("ids") + ")"), {"ids": _arr(new_ids)})}
    deletions = [e for e in fresh if e.kind == 5]
    if deletions:
        pairs = [(ref, d.pubkey) for d in deletions for ref in {*deletion_targets(d)[0], *deletion_targets(d)[1]}]
        rows = conn.execute(
            text("SELECT e.id, e.kind, e.pubkey FROM events e JOIN unnest(CAST(:refs AS text[]), CAST(:who AS text[])) "
                 "AS d(ref, deleter) ON (e.id = d.ref OR e.address = d.ref) AND e.pubkey = d.deleter"),
            {"refs": [p[0] for p in pairs], "who": [p[1] for p in pairs]},
        )
        for eid, kind, pubkey in rows:
            if kind == 3:
                authors.add(pubkey)
            elif kind != 5:
                ids.add(eid)
    hashes = [r[0] for r in conn.execute(
        text("SELECT payment_hash FROM zap_receipts WHERE event_id = ANY(" + _ids("ids") + ")"),
        {"ids": _arr(e.id for e in fresh if e.kind == 9735)})]
    if hashes:
        ids |= {r[0] for r in conn.execute(
            text("SELECT event_id FROM zap_receipts WHERE payment_hash = ANY(" + _ids("h") + ")"), {"h": _arr(hashes)})}
    return ids, authors


def _load_context(conn: Connection, events: list[Event]) -> _DbLookup:
    wanted: set[str] = set()
    for e in events:
        for t in e.tags:
            if len(t) >= 2 and t[0] in ("e", "q") and len(t[1]) == 64:
                wanted.add(t[1])
    refs = {
        r[0]: StoredRef(r[1], r[2], r[3])
        for r in conn.execute(text("SELECT id, pubkey, kind, address FROM events WHERE id = ANY(" + _ids("ids") + ")"),
                              {"ids": _arr(sorted(wanted))})
    }
    stones = _load_stones(conn, events)
    zap_ids = [e.id for e in events if e.kind == 9735]
    zaps: dict[str, ZapRow] = {}
    if zap_ids:
        rows = conn.execute(
            text("SELECT z.event_id, z.recipient, z.sender, z.msats, z.anon, z.note_key, "
                 "z.event_id = (SELECT y.event_id FROM zap_receipts y WHERE y.payment_hash = z.payment_hash "
                 "ORDER BY y.created_at, y.event_id LIMIT 1) FROM zap_receipts z WHERE z.event_id = ANY(" + _ids("ids") + ")"),
            {"ids": _arr(zap_ids)},
        )
        zaps = {r[0]: ZapRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows}
    return _DbLookup(refs, stones, zaps)


def _load_stones(conn: Connection, events: Iterable[Event]) -> dict[str, list[tuple[str, int]]]:
    keys: set[str] = set()
    for e in events:
        keys.add(e.id)
        addr = address_of(e)
        if addr:
            keys.add(addr)
    stones: dict[str, list[tuple[str, int]]] = {}
    for ref, deleter, at in conn.execute(
        text("SELECT ref, deleter, created_at FROM tombstones WHERE ref = ANY(" + _ids("k") + ")"), {"k": _arr(sorted(keys))}
    ):
        stones.setdefault(ref, []).append((deleter, at))
    return stones


def _follow_facts(conn: Connection, authors: set[str]) -> tuple[dict[str, list[FactSpec]], set[str]]:
    """Facts of every list of each author, and the ids of all those lists (deleted ones included)."""
    if not authors:
        return {}, set()
    rows = conn.execute(
        text("SELECT p.pubkey, c.event_id, c.created_at, c.follows FROM contact_lists c "
             "JOIN pubkeys p ON p.id = c.author_id WHERE p.pubkey = ANY(" + _ids("a") + ")"),
        {"a": _arr(sorted(authors))},
    ).all()
    lists = [Event(r[1], r[0], r[2], 3, (), "", "") for r in rows]
    stones = _load_stones(conn, lists)
    by_author: dict[str, list[ListVersion]] = {}
    all_ids: set[str] = set()
    for (author, eid, created_at, follows), ev in zip(rows, lists, strict=True):
        all_ids.add(eid)
        if not is_deleted(ev, stones):
            by_author.setdefault(author, []).append(ListVersion(eid, created_at, frozenset(follows)))
    out: dict[str, list[FactSpec]] = {}
    for author, versions in by_author.items():
        out.update(derive_follow_history(author, versions))
    return out, all_ids


def _rederive(conn: Connection, fresh: list[Event]) -> tuple[int, int, int]:
    ids, authors = _affected(conn, fresh)
    events = _load_events(conn, ids)
    lookup = _load_context(conn, events)
    wanted: dict[str, list[FactSpec]] = {e.id: derive_event_facts(e, lookup) for e in events}
    follows, list_ids = _follow_facts(conn, authors)
    wanted.update(follows)
    sources = set(wanted) | list_ids
    deleted_notes = [e for e in events if lookup.is_deleted(e) and e.kind in (1, 1111, 30023)]
    if deleted_notes:
        keys = [address_of(e) or e.id for e in deleted_notes]
        conn.execute(text("UPDATE events SET deleted = true WHERE id = ANY(" + _ids("ids") + ")"), {"ids": _arr(e.id for e in deleted_notes)})
        note_ids = _note_ids(conn, keys)
        conn.execute(text("UPDATE notes SET deleted = true WHERE id = ANY(CAST(:ids AS int[]))"), {"ids": list(note_ids.values())})
    inserted, removed = _write_fact_diff(conn, sources, wanted)
    return len(sources), inserted, removed


def _write_fact_diff(conn: Connection, sources: set[str], wanted: dict[str, list[FactSpec]]) -> tuple[int, int]:
    specs = [s for facts in wanted.values() for s in facts]
    pk = _pubkey_ids(conn, {s.target for s in specs} | {s.actor for s in specs})
    nk = _note_ids(conn, {s.note for s in specs if s.note})
    new: dict[FactKey, FactRow] = {}
    for source, facts in wanted.items():
        for s in facts:
            row = (pk[s.target], source, int(s.fact_type), s.created_at, s.kind, pk[s.actor],
                   nk[s.note] if s.note else None, s.msats, s.sub)
            new[(row[0], source, row[2])] = row
    old: dict[FactKey, FactRow] = {}
    for r in conn.execute(
        text(f"SELECT {FACT_FIELDS} FROM facts WHERE source_event_id = ANY({_ids('s')})"),
        {"s": _arr(sorted(sources))},
    ).all():
        row = tuple(r)
        old[(row[0], row[1], row[2])] = row  # type: ignore[assignment]
    gone = [row for key, row in old.items() if new.get(key) != row]
    added = [row for key, row in new.items() if old.get(key) != row]
    if gone:
        conn.execute(
            text("DELETE FROM facts f USING (SELECT (x->>0)::int AS t, x->>1 AS s, (x->>2)::smallint AS f "
                 "FROM jsonb_array_elements(CAST(:rows AS jsonb)) x) d "
                 "WHERE f.target_id = d.t AND f.source_event_id = d.s AND f.fact_type = d.f"),
            {"rows": _j([g[0], g[1], g[2]] for g in gone)},
        )
    if added:
        conn.execute(
            text(f"INSERT INTO facts ({FACT_FIELDS}) SELECT {FACT_FIELDS} FROM "
                 "json_populate_recordset(NULL::facts, CAST(:rows AS json))"),
            {"rows": _j(dict(zip(FACT_NAMES, row, strict=True)) for row in added)},
        )
    mark_dirty(conn, {(row[0], row[3] - row[3] % 60) for row in gone + added})
    return len(added), len(gone)


def mark_dirty(conn: Connection, buckets: set[tuple[int, int]]) -> None:
    """Mark minute buckets dirty (the compactor recomputes them and cascades up the tiers)."""
    if not buckets:
        return
    conn.execute(
        text("INSERT INTO dirty_buckets (target_id, tier, bucket_start, gen, marked_at) "
             "SELECT (x->>0)::int AS t, 1, (x->>1)::bigint AS b, 1, :now "
             "FROM jsonb_array_elements(CAST(:rows AS jsonb)) x ORDER BY t, b "
             "ON CONFLICT (target_id, tier, bucket_start) DO UPDATE SET gen = dirty_buckets.gen + 1, "
             "marked_at = EXCLUDED.marked_at"),
        {"rows": _j(list(b) for b in sorted(buckets)), "now": int(time.time())},
    )


def _bump_counters(conn: Connection, result: BatchResult, now: int) -> None:
    conn.execute(
        text("INSERT INTO ingest_state (name, value) VALUES ('admitted', :a), ('duplicates', :d), ('rejected', :r), "
             "('last_commit_at', :now), ('commits', 1) ON CONFLICT (name) DO UPDATE SET value = CASE WHEN ingest_state.name = "
             "'last_commit_at' THEN GREATEST(ingest_state.value, EXCLUDED.value) "
             "ELSE ingest_state.value + EXCLUDED.value END"),
        {"a": result.count("admitted"), "d": result.count("duplicate"), "r": result.count("rejected"), "now": now},
    )
