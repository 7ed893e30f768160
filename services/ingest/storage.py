"""The storage phase of a batch, without any lock: new events (COPY), their side rows and reject rows.

Storage writes only rows keyed by its own new event ids (events, event_refs, zap_receipts,
tombstones) plus profiles, each table once and in key order, so storage phases never deadlock
with each other or with a derivation holding the ingest lock (see `services.ingest.store`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from sqlalchemy import Connection, text

from libs.nostr.event import Event, Rejection
from libs.nostr.tags import address_of, deletion_targets, profile_name
from libs.nostr.zaps import Zap, validate_zap
from services.ingest.outcomes import BatchResult, Outcome, RawItem
from services.ingest.sql_values import arr, copy_rows, copy_text, ids, insert_rows

RAW_LIMIT = 4096
REF_KINDS = (1, 1111, 6, 7, 16, 9735)
EVENT_FIELDS = "id, pubkey, kind, created_at, tags, content, sig, address, received_at, origin"


@dataclass(slots=True)
class Stored:
    """What the unlocked storage phase wrote: the new events (id order) and what derivation needs of them."""

    events: list[Event] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)  # new receipt id -> payment hash


def store_batch(conn: Connection, pg: psycopg.Connection[Any], items: Sequence[RawItem],
           admitted: list[Event | Rejection], now: int,
           zaps: dict[str, Zap] | None = None) -> tuple[BatchResult, Stored]:
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
    stored = Stored()
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
                                      (arr(e.id for e in candidates),))}
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
            f"{e.id}\t{e.pubkey}\t{e.kind}\t{e.created_at}\t{copy_text(tags)}\t{copy_text(e.content)}\t"
            f"{e.sig}\t{copy_text(addr) if addr is not None else chr(92) + 'N'}\t{now}\t"
            f"{copy_text(origin_of.get(e.id, ''))}\n"
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
        known = {row[0] for row in conn.execute(text("SELECT id FROM events WHERE id = ANY(" + ids("ids") + ")"), {"ids": arr(claimed)})}
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


RECEIPT_FIELDS = "payment_hash, event_id, created_at, recipient, sender, msats, anon, note_key, description_hash_mismatch"


def _copy_side_rows(pg: psycopg.Connection[Any], side: _SideRows) -> None:
    copy_rows(pg, "event_refs", "ref, event_id", side.refs)
    copy_rows(pg, "zap_receipts", RECEIPT_FIELDS, side.receipts)
    copy_rows(pg, "tombstones", "ref, deletion_id, deleter, created_at", side.stones)


def _insert_side_rows(pg: psycopg.Connection[Any], side: _SideRows) -> None:
    """The slow path of `_copy_side_rows`: ON CONFLICT DO NOTHING."""
    for table, columns, rows in (("event_refs", "ref, event_id", side.refs),
                                 ("zap_receipts", RECEIPT_FIELDS, side.receipts),
                                 ("tombstones", "ref, deletion_id, deleter, created_at", side.stones)):
        names = columns.split(", ")
        insert_rows(pg, table, [dict(zip(names, r, strict=True)) for r in rows])


def _upsert_profiles(pg: psycopg.Connection[Any], profiles: list[dict[str, Any]]) -> None:
    newest: dict[str, dict[str, Any]] = {}
    for row in profiles:  # one row per pubkey: newest created_at, then lowest id
        best = newest.get(row["pubkey"])
        if best is None or (row["created_at"], best["event_id"]) > (best["created_at"], row["event_id"]):
            newest[row["pubkey"]] = row
    insert_rows(pg, "profiles", [newest[k] for k in sorted(newest)],  # key order: no deadlock between batches
                 "ON CONFLICT (pubkey) DO UPDATE SET display_name = EXCLUDED.display_name, "
                 "created_at = EXCLUDED.created_at, event_id = EXCLUDED.event_id "
                 "WHERE (profiles.created_at, EXCLUDED.event_id) < (EXCLUDED.created_at, profiles.event_id)")
