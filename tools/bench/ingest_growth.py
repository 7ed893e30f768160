"""Ingest cost as the store grows: the same kind of events into databases of 0, ~1M and ~6M facts.

Each measured run starts from a checkpointed, warmed store (a small unmeasured ingest first, then
`CHECKPOINT`), so what differs between sizes is the size of the tables and their indexes, not a cold
cache or a checkpoint that a bulk load left pending. Besides events/s, every run reports what the
server did per event: WAL bytes and full-page images (`pg_stat_wal`), shared blocks read from outside
the buffer cache and found in it (`pg_stat_database`), and per facts index the blocks it read and hit
(`pg_statio_user_indexes`): where an event's cost grows with the table, these say which structure it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

_WAL = "SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal"
_DB = "SELECT blks_read, blks_hit, xact_commit FROM pg_stat_database WHERE datname = current_database()"
_INDEXES = ("SELECT indexrelname, idx_blks_read, idx_blks_hit FROM pg_statio_user_indexes "
            "WHERE relname IN ('facts', 'events', 'dirty_buckets', 'notes', 'pubkeys')")
_HEAP = ("SELECT relname, heap_blks_read, heap_blks_hit FROM pg_statio_user_tables "
         "WHERE relname IN ('facts', 'events', 'dirty_buckets', 'notes', 'pubkeys')")


def snapshot(url: str) -> dict[str, Any]:
    """Cumulative server counters of the database at `url` (statistics flushed first)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        wal = conn.execute(_WAL).fetchone() or (0, 0, 0)
        db = conn.execute(_DB).fetchone() or (0, 0, 0)
        idx = {str(r[0]): (int(r[1] or 0), int(r[2] or 0)) for r in conn.execute(_INDEXES).fetchall()}
        heap = {str(r[0]): (int(r[1] or 0), int(r[2] or 0)) for r in conn.execute(_HEAP).fetchall()}
        size = conn.execute("SELECT pg_total_relation_size('facts')").fetchone()
    return {"wal_records": int(wal[0]), "wal_fpi": int(wal[1]), "wal_bytes": int(wal[2]),
            "blks_read": int(db[0]), "blks_hit": int(db[1]), "commits": int(db[2]),
            "indexes": idx, "heap": heap, "facts_bytes": int(size[0]) if size else 0}


def checkpoint(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def per_event(before: dict[str, Any], after: dict[str, Any], events: int) -> dict[str, Any]:
    """What the server did per admitted event between two snapshots."""
    n = max(events, 1)

    def rel(key: str) -> dict[str, dict[str, float]]:
        out = {}
        for name, (read, hit) in after[key].items():
            r0, h0 = before[key].get(name, (0, 0))
            if read - r0 or hit - h0:
                out[name] = {"read": round((read - r0) / n, 3), "hit": round((hit - h0) / n, 2)}
        return out

    return {
        "wal_bytes": round((after["wal_bytes"] - before["wal_bytes"]) / n, 1),
        "wal_fpi": round((after["wal_fpi"] - before["wal_fpi"]) / n, 3),
        "wal_records": round((after["wal_records"] - before["wal_records"]) / n, 2),
        "blks_read": round((after["blks_read"] - before["blks_read"]) / n, 3),
        "blks_hit": round((after["blks_hit"] - before["blks_hit"]) / n, 1),
        "indexes": rel("indexes"), "heap": rel("heap"),
    }


def measured(url: str, warm: Callable[[], Any], run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`warm()` (unmeasured), CHECKPOINT, then `run()` with the server's counters around it."""
    warm()
    checkpoint(url)
    before = snapshot(url)
    out = run()
    after = snapshot(url)
    out["facts_bytes"] = after["facts_bytes"]
    out["server_per_event"] = per_event(before, after, int(out.get("admitted") or out.get("items") or 0))
    return out
