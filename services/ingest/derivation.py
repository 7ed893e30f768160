"""The derivation phase of a batch, under the ingest lock: contact lists, then every event the new ones
can affect is derived again and the difference of facts is written, marking minute buckets dirty.

Dictionary ids (pubkeys, notes), facts, dirty buckets and notes are written here only, under the
lock (see `services.ingest.store` for why that makes facts independent of order and concurrency).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import psycopg

from libs.nostr.deletions import is_deleted
from libs.nostr.event import Event
from libs.nostr.tags import address_of, contact_set, deletion_targets
from services.ingest.mapper import (
    FactSpec,
    ListVersion,
    StoredRef,
    ZapRow,
    derive_event_facts,
    derive_follow_history,
)
from services.ingest.outcomes import BatchResult
from services.ingest.sql_values import arr, copy_rows, iarr
from services.ingest.storage import Stored

FactRow = tuple[int, str, int, int, int, int | None, int | None, int, int]
FactKey = tuple[int, str, int]
FACT_NAMES = ("target_id", "source_event_id", "fact_type", "created_at", "kind", "actor_id", "note_id", "msats", "sub")
FACT_FIELDS = ", ".join(FACT_NAMES)
#: The stored facts of sources given as (created_at[], id[]): one probe of the facts key per source.
OLD_FACTS = (f"SELECT {', '.join('f.' + n for n in FACT_NAMES)} FROM unnest(%s::bigint[], %s::text[]) AS s(c, id) "
             "CROSS JOIN LATERAL (SELECT * FROM facts WHERE created_at = s.c AND source_event_id = s.id OFFSET 0) f")
#: The one statement that marks minute buckets dirty: (target ids, bucket starts) as two arrays, key order.
MARK_DIRTY = ("INSERT INTO dirty_buckets (target_id, tier, bucket_start, gen, marked_at) "
              "SELECT t, 1, b, 1, %s FROM unnest(%s::int[], %s::bigint[]) AS x(t, b) ORDER BY t, b "
              "ON CONFLICT (target_id, tier, bucket_start) DO UPDATE SET gen = dirty_buckets.gen + 1, "
              "marked_at = EXCLUDED.marked_at")


def queue_dictionary_ids(pg: psycopg.Connection[Any], table: str, column: str,
                         keys: list[str]) -> psycopg.Cursor[Any]:
    """The one dictionary-id statement pair: create the missing ids of sorted `keys`, then read them all.

    Inside a pipeline the two statements share one round trip; the returned cursor yields (key, id).
    """
    k = arr(keys)
    pg.execute(f"INSERT INTO {table} ({column}) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING", (k,))
    return pg.execute(f"SELECT {column}, id FROM {table} WHERE {column} = ANY(%s::text[])", (k,))


def mark_dirty_buckets(pg: psycopg.Connection[Any], buckets: Iterable[tuple[int, int]]) -> None:
    """Mark (target id, minute start) buckets dirty (the compactor recomputes them and cascades up)."""
    rows = sorted(set(buckets))
    if rows:
        pg.execute(MARK_DIRTY, (int(time.time()), iarr(b[0] for b in rows), iarr(b[1] for b in rows)))


def derive_locked(pg: psycopg.Connection[Any], stored: Stored, result: BatchResult) -> None:
    """Under the ingest lock: contact lists of the new events, then re-derive everything they affect."""
    lists = [e for e in stored.events if e.kind == 3]
    if lists:
        author_ids = dictionary_ids(pg, "pubkeys", "pubkey", {e.pubkey for e in lists})
        copy_rows(pg, "contact_lists", "author_id, created_at, event_id, follows",
                   ((author_ids[e.pubkey], e.created_at, e.id, arr(sorted(contact_set(e)))) for e in lists))
    result.rederived, result.facts_inserted, result.facts_deleted = _rederive(pg, stored)


def dictionary_ids(pg: psycopg.Connection[Any], table: str, column: str, values: Iterable[str]) -> dict[str, int]:
    """Dense ids for pubkeys or note keys, creating the missing ones (only ever under the ingest lock)."""
    keys = sorted(set(values))
    if not keys:
        return {}
    with pg.pipeline():
        cur = queue_dictionary_ids(pg, table, column, keys)
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


def _affected(pg: psycopg.Connection[Any], stored: Stored) -> tuple[list[Event], set[str]]:
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
        {"fresh": arr(e.id for e in fresh), "refs": arr(p[0] for p in pairs), "who": arr(p[1] for p in pairs),
         "hashes": arr(sorted(set(stored.hashes.values())))},
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
    a = arr(sorted(authors))
    with pg.pipeline():
        ref_cur = pg.execute("SELECT id, pubkey, kind, address FROM events WHERE id = ANY(%s::text[])",
                             (arr(sorted(wanted)),)) if wanted else None
        stone_cur = pg.execute(
            "SELECT ref, deleter, created_at FROM tombstones WHERE ref = ANY(%s::text[]) UNION ALL "
            "SELECT t.ref, t.deleter, t.created_at FROM tombstones t JOIN contact_lists c ON t.ref = c.event_id "
            "JOIN pubkeys p ON p.id = c.author_id WHERE p.pubkey = ANY(%s::text[])",
            (arr(sorted(keys)), a))
        zap_cur = pg.execute(
            "SELECT z.event_id, z.recipient, z.sender, z.msats, z.anon, z.note_key, "
            "z.event_id = (SELECT y.event_id FROM zap_receipts y WHERE y.payment_hash = z.payment_hash "
            "ORDER BY y.created_at, y.event_id LIMIT 1) FROM zap_receipts z WHERE z.event_id = ANY(%s::text[])",
            (arr(zap_ids),)) if zap_ids else None
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
                  stones: dict[str, list[tuple[str, int]]]) -> tuple[dict[str, list[FactSpec]], dict[str, int]]:
    """Facts of every list of each author, and the ids of all those lists (deleted ones included) with
    their created_at."""
    by_author: dict[str, list[ListVersion]] = {}
    all_ids: dict[str, int] = {}
    for author, eid, created_at, follows in lists:
        all_ids[eid] = created_at
        if not is_deleted(Event(eid, author, created_at, 3, (), "", ""), stones):
            by_author.setdefault(author, []).append(ListVersion(eid, created_at, frozenset(follows)))
    out: dict[str, list[FactSpec]] = {}
    for author, versions in by_author.items():
        out.update(derive_follow_history(author, versions))
    return out, all_ids


def _rederive(pg: psycopg.Connection[Any], stored: Stored) -> tuple[int, int, int]:
    others, authors = _affected(pg, stored)
    events = [e for e in stored.events if e.kind not in (0, 3, 5)] + others
    lookup, lists = _load_context(pg, events, stored.events, authors)
    wanted: dict[str, list[FactSpec]] = {e.id: derive_event_facts(e, lookup) for e in events}
    follows, list_times = _follow_facts(lists, lookup.stones)
    wanted.update(follows)
    # every fact of a source is timed by it: (created_at, id) finds them through the facts key
    times = {e.id: e.created_at for e in events} | list_times
    sources = set(wanted) | set(list_times)
    deleted_notes = [e for e in events if lookup.is_deleted(e) and e.kind in (1, 1111, 30023)]
    fresh_ids = {e.id for e in stored.events}
    inserted, removed = _write_fact_diff(pg, {s: times[s] for s in sources - fresh_ids}, wanted, deleted_notes)
    return len(sources), inserted, removed


def _write_fact_diff(pg: psycopg.Connection[Any], stored_sources: dict[str, int], wanted: dict[str, list[FactSpec]],
                     deleted_notes: list[Event]) -> tuple[int, int]:
    """Replace the facts of the re-derived sources (id -> created_at) by `wanted` (sources first stored
    now have none yet)."""
    specs = [s for facts in wanted.values() for s in facts]
    deleted_keys = [address_of(e) or e.id for e in deleted_notes]
    pk_keys = sorted({s.target for s in specs} | {s.actor for s in specs})
    nk_keys = sorted({s.note for s in specs if s.note} | set(deleted_keys))
    with pg.pipeline():
        pk_cur = queue_dictionary_ids(pg, "pubkeys", "pubkey", pk_keys)
        nk_cur = queue_dictionary_ids(pg, "notes", "note_key", nk_keys)
        ids = sorted(stored_sources)
        old_cur = pg.execute(OLD_FACTS, (iarr(stored_sources[k] for k in ids), arr(ids))) if ids else None
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
                       (arr(sorted(e.id for e in deleted_notes)),))
            pg.execute("UPDATE notes SET deleted = true WHERE id = ANY(%s::int[])",
                       (iarr(sorted({nk[k] for k in deleted_keys})),))
        if gone:
            pg.execute("DELETE FROM facts f USING unnest(%s::bigint[], %s::text[], %s::int[], %s::smallint[]) "
                       "AS d(c, s, t, f) WHERE f.created_at = d.c AND f.source_event_id = d.s AND f.target_id = d.t "
                       "AND f.fact_type = d.f",
                       (iarr(g[3] for g in gone), arr(g[1] for g in gone), iarr(g[0] for g in gone),
                        iarr(g[2] for g in gone)))
        mark_dirty_buckets(pg, buckets)
    if added:
        null = "\\N"
        with pg.cursor().copy(f"COPY facts ({FACT_FIELDS}) FROM STDIN") as copy:
            copy.write("".join(f"{r[0]}\t{r[1]}\t{r[2]}\t{r[3]}\t{r[4]}\t{r[5]}\t{null if r[6] is None else r[6]}\t"
                               f"{r[7]}\t{r[8]}\n" for r in added))
    return len(added), len(gone)
