"""Batch ingest into PostgreSQL: admit, store events, re-derive affected events, write fact diffs.

One batch is one transaction in three phases:

1. admission (signatures, zap checks; CPU only, no database);
2. storage, without any lock: the new events (COPY) and their side rows (event_refs, zap_receipts,
   tombstones, profiles) and reject rows;
3. derivation, under a global transaction advisory lock held until commit: contact lists, then
   re-deriving every event the new ones can affect and writing the fact difference.

Why the storage phase needs no lock: derivation only ever reads committed rows (READ COMMITTED)
plus this transaction's own, and a batch commits while holding the lock. So whichever batch takes
the lock second sees everything the first one stored and derived, and the first sees none of the
second's rows, whether those were already written or not: the outcome is that of running the
batches' derivations one after the other in lock order, each seeing exactly its predecessors,
which is what makes facts independent of order, duplication and concurrency. Two batches holding
the same new event id: the second one's insert waits for the first to commit and then treats it as
a duplicate. No lock holder ever waits for a row that an unlocked storage phase writes (storage
writes only rows keyed by its own new event ids, the events rows themselves and profiles;
dictionary ids, facts, dirty buckets and notes are written under the lock only), so the advisory
lock cannot join a deadlock; storage writes each table once, in key order, so storage phases
cannot deadlock among themselves either.

Every fact inserted or deleted marks its minute bucket dirty in the same transaction, which is
all the compactor needs to know.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from libs.nostr.admission import ZAP_RECEIPT_KIND
from libs.nostr.event import Event, Rejection
from libs.nostr.integrity import check_integrity
from libs.nostr.tags import address_of, contact_set, deletion_targets, profile_name
from libs.nostr.zaps import Zap, validate_zap
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
FactKey = tuple[int, str, int]
FACT_NAMES = ("target_id", "source_event_id", "fact_type", "created_at", "kind", "actor_id", "note_id", "msats", "sub")
FACT_FIELDS = ", ".join(FACT_NAMES)
EVENT_FIELDS = "id, pubkey, kind, created_at, tags, content, sig, address, received_at, origin"


def _ids(name: str) -> str:
    """A text[] parameter bound as one array literal (see `_arr`): a constant the planner can index-scan."""
    return f"CAST(:{name} AS text[])"


def _arr(values: Iterable[str]) -> str:
    """A PostgreSQL text[] literal; psycopg's per-element array dumping is otherwise the slowest part of ingest.

    Every element is double-quoted; only `"` and `\\` need escaping inside quotes, and ids, pubkeys
    and most note keys hold neither, so the common case is one join.
    """
    vals = values if isinstance(values, list) else list(values)
    if not vals:
        return "{}"
    body = '","'.join(vals)
    if "\\" in body or body.count('"') != 2 * (len(vals) - 1):  # only the separators' quotes: nothing to escape
        return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in vals) + "}"
    return '{"' + body + '"}'


def _iarr(values: Iterable[int | None]) -> str:
    """A PostgreSQL integer array literal (None is NULL)."""
    return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"


def _j(values: Iterable[object]) -> str:
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))


def _copy_text(value: str) -> str:
    """A value escaped for COPY's text format."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\n" in value or "\r" in value or "\t" in value:
        value = value.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return value


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


def admit_items(items: Sequence[RawItem], receive_time: int,
                zaps: dict[str, Zap] | None = None) -> list[Event | Rejection]:
    """Admission (CPU only, no database): an Event or the Rejection for each item.

    The same checks as `libs.nostr.admission.admit`; the valid zaps of admitted receipts are kept in
    `zaps` (by receipt id) when given, so storage does not validate them a second time.
    """
    out: list[Event | Rejection] = []
    for item in items:
        if isinstance(item.value, Rejection):
            out.append(item.value)
            continue
        try:
            ev = check_integrity(item.value, receive_time)
            if ev.kind == ZAP_RECEIPT_KIND:
                zap = validate_zap(ev, receive_time)
                if zaps is not None:
                    zaps[ev.id] = zap
            out.append(_storable(ev))
        except Rejection as rej:
            out.append(rej)
    return out


def _storable(ev: Event) -> Event:
    """PostgreSQL text and jsonb cannot hold U+0000: such an event would fail its whole batch."""
    # The tags' JSON writes a NUL as \u0000; without that text no tag value holds one.
    tags_may_hold_nul = ev.tags_json is None or "\\u0000" in ev.tags_json
    if "\x00" in ev.content or (tags_may_hold_nul and any("\x00" in v for t in ev.tags for v in t)):
        raise Rejection("unstorable", "nul_char", "The event holds U+0000, which PostgreSQL text cannot store.", ev.id)
    return ev


@contextmanager
def _as_sqlalchemy_errors() -> Iterator[None]:
    """Raise psycopg errors of direct driver calls as SQLAlchemy's (callers tell data errors from outages by those)."""
    try:
        yield
    except psycopg.Error as exc:
        raise DBAPIError.instance("ingest (psycopg)", None, exc, psycopg.Error) from exc


GC_GEN0_THRESHOLD = 10_000
_gc_lock = threading.Lock()
_gc_tuned = False


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for ingest (once per process; process-wide).

    A batch allocates a few hundred thousand short-lived containers (tags tuples, rows, dicts) that
    reference counting frees; with the default gen-0 threshold of 700 the collector still runs
    every ~700 allocations and, as survivors pile up, full collections walk the whole heap: 15-25 µs
    of CPU per event. Raising the gen-0 threshold (never lowering it) and freezing the objects that
    exist at start-up (modules, SQLAlchemy, psycopg) brings that to ~2 µs; garbage cycles are still
    collected, only less often.
    """
    global _gc_tuned
    with _gc_lock:
        if _gc_tuned:
            return
        _gc_tuned = True
        gen0, gen1, gen2 = gc.get_threshold()
        if 0 < gen0 < GC_GEN0_THRESHOLD:
            gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
        gc.freeze()


class IngestStore:
    """Writes admitted events and their facts; safe to call from several processes.

    Creating one tunes the process's garbage collector for ingest (`tune_gc`).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        tune_gc()

    def ingest(self, items: Sequence[RawItem], receive_time: int | None = None) -> BatchResult:
        """Admit and store a batch; returns per-item outcomes once the transaction committed."""
        now = int(time.time()) if receive_time is None else receive_time
        zaps: dict[str, Zap] = {}
        admitted = admit_items(items, now, zaps)
        with self.engine.begin() as conn, _as_sqlalchemy_errors():
            pg: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
            result, stored = _store(conn, pg, items, admitted, now, zaps)
            if stored.events:
                pg.execute("SELECT pg_advisory_xact_lock(%s)", (INGEST_LOCK,))
                _ingest_locked(pg, stored, result)
            _bump_counters(pg, result, now)
            return result


@dataclass(slots=True)
class _Stored:
    """What the unlocked storage phase wrote: the new events (id order) and what derivation needs of them."""

    events: list[Event] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)  # new receipt id -> payment hash


def _store(conn: Connection, pg: psycopg.Connection[Any], items: Sequence[RawItem],
           admitted: list[Event | Rejection], now: int,
           zaps: dict[str, Zap] | None = None) -> tuple[BatchResult, _Stored]:
    """The storage phase (no lock): events, side rows, rejects; per-item outcomes."""
    result = BatchResult()
    rejects: list[tuple[int, Rejection]] = []
    candidates: dict[str, Event] = {}
    origin_of: dict[str, str] = {}
    for i, ev in enumerate(admitted):
        if isinstance(ev, Rejection):
            rejects.append((i, ev))
        elif ev.id not in candidates:
            candidates[ev.id] = ev
            origin_of[ev.id] = items[i].origin
    stored = _Stored()
    if candidates:
        stored.events, stored.hashes = _insert_new(pg, [candidates[k] for k in sorted(candidates)], origin_of, now,
                                                   zaps or {})
    inserted = {e.id for e in stored.events}
    seen_new: set[str] = set()
    for i, ev in enumerate(admitted):
        if isinstance(ev, Rejection):
            continue
        if ev.id in inserted and ev.id not in seen_new:
            seen_new.add(ev.id)
            result.outcomes.append(Outcome(i, "admitted", ev.id))
        else:
            result.outcomes.append(Outcome(i, "duplicate", ev.id))
    _store_rejects(conn, items, rejects, result, now)
    result.outcomes.sort(key=lambda o: o.index)
    return result, stored


def _insert_new(pg: psycopg.Connection[Any], candidates: list[Event], origin_of: dict[str, str],
                now: int, zaps: dict[str, Zap]) -> tuple[list[Event], dict[str, str]]:
    """Insert the candidates not stored yet with their side rows; returns (the inserted events, their zap hashes).

    Fast path: COPY the candidates not already stored. A concurrent batch inserting one of them
    meanwhile makes COPY fail on the key; then the whole step is redone with ON CONFLICT DO NOTHING.
    """
    known = {r[0] for r in pg.execute("SELECT id FROM events WHERE id = ANY(%s::text[])",
                                      (_arr(e.id for e in candidates),))}
    new = [e for e in candidates if e.id not in known]
    if not new:
        return [], {}
    side = _side_rows(new, zaps)
    pg.execute("SAVEPOINT canal_ingest_copy")
    try:
        _copy_events(pg, new, origin_of, now)
        _copy_side_rows(pg, side)
    except pg_errors.UniqueViolation:
        pg.execute("ROLLBACK TO SAVEPOINT canal_ingest_copy")
        inserted = _insert_events(pg, new, origin_of, now)
        new = [e for e in new if e.id in inserted]
        side = _side_rows(new, zaps)
        _insert_side_rows(pg, side)
    else:
        pg.execute("RELEASE SAVEPOINT canal_ingest_copy")
    _upsert_profiles(pg, side.profiles)
    return new, {r[1]: r[0] for r in side.receipts}


def _event_row(e: Event, origin: str, now: int) -> tuple[Any, ...]:
    return (e.id, e.pubkey, e.kind, e.created_at, [list(t) for t in e.tags], e.content, e.sig, address_of(e), now, origin)


def _copy_events(pg: psycopg.Connection[Any], events: list[Event], origin_of: dict[str, str], now: int) -> None:
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    parts = []
    for e in events:
        addr = address_of(e)
        tags = e.tags_json if e.tags_json is not None else dumps(e.tags)  # admission's text: same JSON value
        parts.append(
            f"{e.id}\t{e.pubkey}\t{e.kind}\t{e.created_at}\t{_copy_text(tags)}\t{_copy_text(e.content)}\t"
            f"{e.sig}\t{_copy_text(addr) if addr is not None else chr(92) + 'N'}\t{now}\t"
            f"{_copy_text(origin_of.get(e.id, ''))}\n"
        )
    with pg.cursor().copy(f"COPY events ({EVENT_FIELDS}) FROM STDIN") as copy:
        copy.write("".join(parts))


def _insert_events(pg: psycopg.Connection[Any], events: list[Event], origin_of: dict[str, str], now: int) -> set[str]:
    """INSERT … ON CONFLICT DO NOTHING (key order); the ids this transaction inserted."""
    rows = [dict(zip(EVENT_FIELDS.split(", "), _event_row(e, origin_of.get(e.id, ""), now), strict=True))
            for e in events]
    got = pg.execute(
        f"INSERT INTO events ({EVENT_FIELDS}) "
        "SELECT * FROM jsonb_to_recordset(%s::jsonb) AS r(id text, pubkey text, kind int, "
        "created_at bigint, tags jsonb, content text, sig text, address text, received_at bigint, origin text) "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        (json.dumps(rows, ensure_ascii=False),),
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


@dataclass(slots=True)
class _SideRows:
    refs: list[tuple[str, str]] = field(default_factory=list)  # (ref, event_id)
    # (payment_hash, event_id, created_at, recipient, sender, msats, anon, note_key, description_hash_mismatch)
    receipts: list[tuple[Any, ...]] = field(default_factory=list)
    stones: list[tuple[str, str, str, int]] = field(default_factory=list)  # (ref, deletion_id, deleter, created_at)
    profiles: list[dict[str, Any]] = field(default_factory=list)


def _side_rows(events: list[Event], zaps: dict[str, Zap] | None = None) -> _SideRows:
    """event_refs, zap_receipts, tombstones and profiles rows of newly admitted events (no duplicates).

    `zaps` holds the zaps admission found (by receipt id); receipts missing there are validated here.
    """
    out = _SideRows()
    for e in events:
        if e.kind in REF_KINDS:
            seen: set[str] = set()
            for t in e.tags:
                if len(t) >= 2 and t[0] in ("e", "q") and len(t[1]) == 64 and t[1] not in seen:
                    seen.add(t[1])
                    out.refs.append((t[1], e.id))
        if e.kind == 9735:
            zap = zaps.get(e.id) if zaps is not None else None
            if zap is None:
                zap = validate_zap(e, 2**62)  # already admitted: the time check was done at admission
            out.receipts.append((zap.payment_hash, e.id, e.created_at, zap.recipient, zap.sender, zap.msats, zap.anon,
                                 zap.note_e or zap.note_a, zap.description_hash_mismatch))
        elif e.kind == 5:
            ids, addrs = deletion_targets(e)
            for ref in sorted({*ids, *addrs}):
                out.stones.append((ref, e.id, e.pubkey, e.created_at))
        elif e.kind == 0:
            name = profile_name(e)  # parsed from content JSON: a \u0000 escape there becomes a NUL
            out.profiles.append({"pubkey": e.pubkey, "display_name": name.replace("\x00", "\ufffd") if name else name,
                                 "created_at": e.created_at, "event_id": e.id})
    return out


def _copy_rows(pg: psycopg.Connection[Any], table: str, columns: str, rows: Iterable[Sequence[Any]]) -> None:
    lines = []
    for row in rows:
        lines.append("\t".join("\\N" if v is None else _copy_text(v) if isinstance(v, str) else
                               ("t" if v else "f") if isinstance(v, bool) else str(v) for v in row) + "\n")
    if lines:
        with pg.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            copy.write("".join(lines))


RECEIPT_FIELDS = "payment_hash, event_id, created_at, recipient, sender, msats, anon, note_key, description_hash_mismatch"


def _copy_side_rows(pg: psycopg.Connection[Any], side: _SideRows) -> None:
    _copy_rows(pg, "event_refs", "ref, event_id", side.refs)
    _copy_rows(pg, "zap_receipts", RECEIPT_FIELDS, side.receipts)
    _copy_rows(pg, "tombstones", "ref, deletion_id, deleter, created_at", side.stones)


def _insert_side_rows(pg: psycopg.Connection[Any], side: _SideRows) -> None:
    """The slow path of `_copy_side_rows`: ON CONFLICT DO NOTHING."""
    for table, columns, rows in (("event_refs", "ref, event_id", side.refs),
                                 ("zap_receipts", RECEIPT_FIELDS, side.receipts),
                                 ("tombstones", "ref, deletion_id, deleter, created_at", side.stones)):
        names = columns.split(", ")
        _insert_rows(pg, table, [dict(zip(names, r, strict=True)) for r in rows])


def _upsert_profiles(pg: psycopg.Connection[Any], profiles: list[dict[str, Any]]) -> None:
    newest: dict[str, dict[str, Any]] = {}
    for row in profiles:  # one row per pubkey: newest created_at, then lowest id
        best = newest.get(row["pubkey"])
        if best is None or (row["created_at"], best["event_id"]) > (best["created_at"], row["event_id"]):
            newest[row["pubkey"]] = row
    _insert_rows(pg, "profiles", [newest[k] for k in sorted(newest)],  # key order: no deadlock between batches
                 "ON CONFLICT (pubkey) DO UPDATE SET display_name = EXCLUDED.display_name, "
                 "created_at = EXCLUDED.created_at, event_id = EXCLUDED.event_id "
                 "WHERE (profiles.created_at, EXCLUDED.event_id) < (EXCLUDED.created_at, profiles.event_id)")


def _insert_rows(pg: psycopg.Connection[Any], table: str, rows: list[dict[str, Any]],
                 conflict: str = "ON CONFLICT DO NOTHING") -> None:
    """One INSERT for many rows, bound as a single JSON document (dict keys are column names)."""
    if not rows:
        return
    cols = ", ".join(rows[0])
    pg.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM "
               f"json_populate_recordset(NULL::{table}, %s::json) {conflict}", (_j(rows),))


# ------------------------------------------------------------------------------------ derivation (locked)

def _ingest_locked(pg: psycopg.Connection[Any], stored: _Stored, result: BatchResult) -> None:
    """Under the ingest lock: contact lists of the new events, then re-derive everything they affect."""
    lists = [e for e in stored.events if e.kind == 3]
    if lists:
        author_ids = _dictionary_ids(pg, "pubkeys", "pubkey", {e.pubkey for e in lists})
        _copy_rows(pg, "contact_lists", "author_id, created_at, event_id, follows",
                   ((author_ids[e.pubkey], e.created_at, e.id, _arr(sorted(contact_set(e)))) for e in lists))
    result.rederived, result.facts_inserted, result.facts_deleted = _rederive(pg, stored)


def _dictionary_ids(pg: psycopg.Connection[Any], table: str, column: str, values: Iterable[str]) -> dict[str, int]:
    """Dense ids for pubkeys or note keys, creating the missing ones (only ever under the ingest lock)."""
    keys = sorted(set(values))
    if not keys:
        return {}
    k = _arr(keys)
    with pg.pipeline():
        pg.execute(f"INSERT INTO {table} ({column}) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING", (k,))
        cur = pg.execute(f"SELECT {column}, id FROM {table} WHERE {column} = ANY(%s::text[])", (k,))
    return {r[0]: r[1] for r in cur}


class _DbLookup:
    """The mapper's view of the store, loaded in a few batched queries."""

    def __init__(self, refs: dict[str, StoredRef], stones: dict[str, list[tuple[str, int]]],
                 zaps: dict[str, ZapRow]) -> None:
        self.refs, self.stones, self.zaps = refs, stones, zaps
        self.deleted: dict[str, bool] = {}

    def ref(self, event_id: str) -> StoredRef | None:
        return self.refs.get(event_id)

    def zap(self, event_id: str) -> ZapRow | None:
        return self.zaps.get(event_id)

    def is_deleted(self, event: Event) -> bool:
        got = self.deleted.get(event.id)
        if got is None:
            got = self.deleted[event.id] = is_deleted(event, self.stones)
        return got


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


def _affected(pg: psycopg.Connection[Any], stored: _Stored) -> tuple[list[Event], set[str]]:
    """Stored events (other than the new ones) to re-derive, and authors whose follow history to rebuild.

    The referrers of the new events, the targets of new deletions and the other receipts of new
    receipts' payment hashes. Kind 3 targets are loaded without tags (their author is rebuilt).
    """
    fresh = stored.events
    authors = {e.pubkey for e in fresh if e.kind == 3}
    pairs = sorted({(ref, d.pubkey) for d in fresh if d.kind == 5 for ref in (*deletion_targets(d)[0],
                                                                            *deletion_targets(d)[1])})
    rows = pg.execute(
        "WITH fresh(id) AS (SELECT unnest(%(fresh)s::text[])), "
        "d(ref, deleter) AS (SELECT * FROM unnest(%(refs)s::text[], %(who)s::text[])), "
        "a(id) AS (SELECT event_id FROM event_refs WHERE ref IN (SELECT id FROM fresh) "
        "  UNION SELECT event_id FROM zap_receipts WHERE payment_hash = ANY(%(hashes)s::text[]) "
        "  UNION SELECT e.id FROM events e JOIN d ON e.id = d.ref AND e.pubkey = d.deleter "
        "  UNION SELECT e.id FROM events e JOIN d ON e.address = d.ref AND e.pubkey = d.deleter) "
        "SELECT e.id, e.pubkey, e.created_at, e.kind, CASE WHEN e.kind IN (3, 5) THEN NULL ELSE e.tags END, "
        "CASE WHEN e.kind IN (3, 5) THEN '' ELSE e.content END, e.sig "
        "FROM events e WHERE e.id IN (SELECT id FROM a EXCEPT SELECT id FROM fresh) ORDER BY e.id",
        {"fresh": _arr(e.id for e in fresh), "refs": _arr(p[0] for p in pairs), "who": _arr(p[1] for p in pairs),
         "hashes": _arr(sorted(set(stored.hashes.values())))},
    ).fetchall()
    others: list[Event] = []
    for eid, pubkey, created_at, kind, tags, content, sig in rows:
        if kind == 3:
            authors.add(pubkey)
        elif kind != 5:
            others.append(Event(eid, pubkey, created_at, kind, tuple(tuple(t) for t in tags), content, sig))
    return others, authors


def _stone_keys(events: Iterable[Event]) -> set[str]:
    keys: set[str] = set()
    for e in events:
        keys.add(e.id)
        addr = address_of(e)
        if addr:
            keys.add(addr)
    return keys


def _load_context(pg: psycopg.Connection[Any], events: list[Event], fresh: list[Event],
                  authors: set[str]) -> tuple[_DbLookup, list[tuple[str, str, int, list[str]]]]:
    """The mapper's lookup for `events`, and every contact list of `authors` (stones of both included)."""
    known = {e.id: e for e in fresh}
    refs: dict[str, StoredRef] = {}
    wanted: set[str] = set()
    for e in events:
        for t in e.tags:
            if len(t) >= 2 and t[0] in ("e", "q") and len(t[1]) == 64:
                hit = known.get(t[1])
                if hit is not None:
                    refs[hit.id] = StoredRef(hit.pubkey, hit.kind, address_of(hit))
                else:
                    wanted.add(t[1])
    keys = _stone_keys(events) | {f"3:{a}:" for a in authors}
    zap_ids = [e.id for e in events if e.kind == 9735]
    a = _arr(sorted(authors))
    with pg.pipeline():
        ref_cur = pg.execute("SELECT id, pubkey, kind, address FROM events WHERE id = ANY(%s::text[])",
                             (_arr(sorted(wanted)),)) if wanted else None
        stone_cur = pg.execute(
            "SELECT ref, deleter, created_at FROM tombstones WHERE ref = ANY(%s::text[]) UNION ALL "
            "SELECT t.ref, t.deleter, t.created_at FROM tombstones t JOIN contact_lists c ON t.ref = c.event_id "
            "JOIN pubkeys p ON p.id = c.author_id WHERE p.pubkey = ANY(%s::text[])",
            (_arr(sorted(keys)), a))
        zap_cur = pg.execute(
            "SELECT z.event_id, z.recipient, z.sender, z.msats, z.anon, z.note_key, "
            "z.event_id = (SELECT y.event_id FROM zap_receipts y WHERE y.payment_hash = z.payment_hash "
            "ORDER BY y.created_at, y.event_id LIMIT 1) FROM zap_receipts z WHERE z.event_id = ANY(%s::text[])",
            (_arr(zap_ids),)) if zap_ids else None
        list_cur = pg.execute(
            "SELECT p.pubkey, c.event_id, c.created_at, c.follows FROM contact_lists c "
            "JOIN pubkeys p ON p.id = c.author_id WHERE p.pubkey = ANY(%s::text[])", (a,)) if authors else None
    if ref_cur is not None:
        for r in ref_cur:
            refs[r[0]] = StoredRef(r[1], r[2], r[3])
    stones: dict[str, list[tuple[str, int]]] = {}
    for ref, deleter, at in stone_cur:
        stones.setdefault(ref, []).append((deleter, at))
    zaps = {r[0]: ZapRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in zap_cur} if zap_cur is not None else {}
    lists = [(r[0], r[1], r[2], r[3]) for r in list_cur] if list_cur is not None else []
    return _DbLookup(refs, stones, zaps), lists


def _follow_facts(lists: list[tuple[str, str, int, list[str]]],
                  stones: dict[str, list[tuple[str, int]]]) -> tuple[dict[str, list[FactSpec]], set[str]]:
    """Facts of every list of each author, and the ids of all those lists (deleted ones included)."""
    by_author: dict[str, list[ListVersion]] = {}
    all_ids: set[str] = set()
    for author, eid, created_at, follows in lists:
        all_ids.add(eid)
        if not is_deleted(Event(eid, author, created_at, 3, (), "", ""), stones):
            by_author.setdefault(author, []).append(ListVersion(eid, created_at, frozenset(follows)))
    out: dict[str, list[FactSpec]] = {}
    for author, versions in by_author.items():
        out.update(derive_follow_history(author, versions))
    return out, all_ids


def _rederive(pg: psycopg.Connection[Any], stored: _Stored) -> tuple[int, int, int]:
    others, authors = _affected(pg, stored)
    events = [e for e in stored.events if e.kind not in (0, 3, 5)] + others
    lookup, lists = _load_context(pg, events, stored.events, authors)
    wanted: dict[str, list[FactSpec]] = {e.id: derive_event_facts(e, lookup) for e in events}
    follows, list_ids = _follow_facts(lists, lookup.stones)
    wanted.update(follows)
    sources = set(wanted) | list_ids
    deleted_notes = [e for e in events if lookup.is_deleted(e) and e.kind in (1, 1111, 30023)]
    fresh_ids = {e.id for e in stored.events}
    inserted, removed = _write_fact_diff(pg, sources - fresh_ids, wanted, deleted_notes)
    return len(sources), inserted, removed


def _write_fact_diff(pg: psycopg.Connection[Any], stored_sources: set[str], wanted: dict[str, list[FactSpec]],
                     deleted_notes: list[Event]) -> tuple[int, int]:
    """Replace the facts of the re-derived sources by `wanted` (sources first stored now have none yet)."""
    specs = [s for facts in wanted.values() for s in facts]
    deleted_keys = [address_of(e) or e.id for e in deleted_notes]
    pk_keys = _arr(sorted({s.target for s in specs} | {s.actor for s in specs}))
    nk_keys = _arr(sorted({s.note for s in specs if s.note} | set(deleted_keys)))
    with pg.pipeline():
        pg.execute("INSERT INTO pubkeys (pubkey) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING", (pk_keys,))
        pk_cur = pg.execute("SELECT pubkey, id FROM pubkeys WHERE pubkey = ANY(%s::text[])", (pk_keys,))
        pg.execute("INSERT INTO notes (note_key) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING", (nk_keys,))
        nk_cur = pg.execute("SELECT note_key, id FROM notes WHERE note_key = ANY(%s::text[])", (nk_keys,))
        old_cur = pg.execute(f"SELECT {FACT_FIELDS} FROM facts WHERE source_event_id = ANY(%s::text[])",
                             (_arr(sorted(stored_sources)),)) if stored_sources else None
    pk: dict[str, int] = dict(pk_cur.fetchall())
    nk: dict[str, int] = dict(nk_cur.fetchall())
    new: dict[FactKey, FactRow] = {}
    for source, facts in wanted.items():
        for s in facts:
            row = (pk[s.target], source, int(s.fact_type), s.created_at, s.kind, pk[s.actor],
                   nk[s.note] if s.note else None, s.msats, s.sub)
            new[(row[0], source, row[2])] = row
    old: dict[FactKey, FactRow] = {}
    if old_cur is not None:
        for r in old_cur:
            old[(r[0], r[1], r[2])] = tuple(r)  # type: ignore[assignment]
    gone = [row for key, row in old.items() if new.get(key) != row]
    added = [row for key, row in new.items() if old.get(key) != row]
    buckets = sorted({(row[0], row[3] - row[3] % 60) for row in gone + added})
    with pg.pipeline():
        if deleted_notes:
            pg.execute("UPDATE events SET deleted = true WHERE id = ANY(%s::text[])",
                       (_arr(sorted(e.id for e in deleted_notes)),))
            pg.execute("UPDATE notes SET deleted = true WHERE id = ANY(%s::int[])",
                       (_iarr(sorted({nk[k] for k in deleted_keys})),))
        if gone:
            pg.execute("DELETE FROM facts f USING unnest(%s::int[], %s::text[], %s::smallint[]) AS d(t, s, f) "
                       "WHERE f.target_id = d.t AND f.source_event_id = d.s AND f.fact_type = d.f",
                       (_iarr(g[0] for g in gone), _arr(g[1] for g in gone), _iarr(g[2] for g in gone)))
        if buckets:
            pg.execute("INSERT INTO dirty_buckets (target_id, tier, bucket_start, gen, marked_at) "
                       "SELECT t, 1, b, 1, %s FROM unnest(%s::int[], %s::bigint[]) AS x(t, b) ORDER BY t, b "
                       "ON CONFLICT (target_id, tier, bucket_start) DO UPDATE SET gen = dirty_buckets.gen + 1, "
                       "marked_at = EXCLUDED.marked_at",
                       (int(time.time()), _iarr(b[0] for b in buckets), _iarr(b[1] for b in buckets)))
    if added:
        null = "\\N"
        with pg.cursor().copy(f"COPY facts ({FACT_FIELDS}) FROM STDIN") as copy:
            copy.write("".join(f"{r[0]}\t{r[1]}\t{r[2]}\t{r[3]}\t{r[4]}\t{r[5]}\t{null if r[6] is None else r[6]}\t"
                               f"{r[7]}\t{r[8]}\n" for r in added))
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


def _bump_counters(pg: psycopg.Connection[Any], result: BatchResult, now: int) -> None:
    """The last statement of every batch (rows in a fixed order: batches never deadlock on them)."""
    pg.execute(
        "INSERT INTO ingest_state (name, value) VALUES ('admitted', %(a)s), ('duplicates', %(d)s), ('rejected', %(r)s), "
        "('last_commit_at', %(now)s), ('commits', 1) ON CONFLICT (name) DO UPDATE SET value = CASE WHEN ingest_state.name = "
        "'last_commit_at' THEN GREATEST(ingest_state.value, EXCLUDED.value) "
        "ELSE ingest_state.value + EXCLUDED.value END",
        {"a": result.count("admitted"), "d": result.count("duplicate"), "r": result.count("rejected"), "now": now},
    )
