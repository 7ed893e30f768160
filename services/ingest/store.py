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

Modules: `storage` (phase 2), `derivation` (phase 3), `sql_values` (array literals, COPY rows),
`outcomes` (inputs and results), `gc_tuning`; this one runs a batch through them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from libs.nostr.admission import admit_checked
from libs.nostr.event import Event, Rejection
from libs.nostr.zaps import Zap
from services.ingest.derivation import derive_locked, mark_dirty_buckets
from services.ingest.gc_tuning import tune_gc
from services.ingest.outcomes import BatchResult, Outcome, RawItem
from services.ingest.storage import store_batch

__all__ = ["INGEST_LOCK", "BatchResult", "IngestStore", "Outcome", "RawItem", "admit_items", "mark_dirty"]

INGEST_LOCK = 0x63616E616C  # "canal"


def admit_items(items: Sequence[RawItem], receive_time: int,
                zaps: dict[str, Zap] | None = None) -> list[Event | Rejection]:
    """Admission (CPU only, no database): an Event or the Rejection for each item.

    `libs.nostr.admission.admit_checked` (the one admission path) plus the storability check; the
    valid zaps of admitted receipts are kept in `zaps` (by receipt id), so storage does not validate
    them a second time.
    """
    out: list[Event | Rejection] = []
    for item in items:
        if isinstance(item.value, Rejection):
            out.append(item.value)
            continue
        try:
            ev, zap = admit_checked(item.value, receive_time)
            if zap is not None and zaps is not None:
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
            result, stored = store_batch(conn, pg, items, admitted, now, zaps)
            if stored.events:
                pg.execute("SELECT pg_advisory_xact_lock(%s)", (INGEST_LOCK,))
                derive_locked(pg, stored, result)
            _bump_counters(pg, result, now)
            return result


def mark_dirty(conn: Connection, buckets: set[tuple[int, int]]) -> None:
    """Mark minute buckets dirty on a SQLAlchemy connection (tests and tools; ingest marks its own)."""
    pg: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    mark_dirty_buckets(pg, buckets)


def _bump_counters(pg: psycopg.Connection[Any], result: BatchResult, now: int) -> None:
    """The last statement of every batch (rows in a fixed order: batches never deadlock on them)."""
    pg.execute(
        "INSERT INTO ingest_state (name, value) VALUES ('admitted', %(a)s), ('duplicates', %(d)s), ('rejected', %(r)s), "
        "('last_commit_at', %(now)s), ('commits', 1) ON CONFLICT (name) DO UPDATE SET value = CASE WHEN ingest_state.name = "
        "'last_commit_at' THEN GREATEST(ingest_state.value, EXCLUDED.value) "
        "ELSE ingest_state.value + EXCLUDED.value END",
        {"a": result.count("admitted"), "d": result.count("duplicate"), "r": result.count("rejected"), "now": now},
    )
