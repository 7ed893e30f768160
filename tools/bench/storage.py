"""On-disk bytes of every table (heap + TOAST, and indexes), per fact, and the aggregate rows per tier."""

from __future__ import annotations

from typing import Any

import psycopg

from libs.metrics import Tier

_TABLES = """
SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid), c.reltuples
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1
"""
_BY_TIER = ("aggregates", "note_aggregates", "actor_aggregates", "top_lists")


def measure(url: str) -> dict[str, Any]:
    """Sizes after `VACUUM` (so dead rows of the build are not counted), per table and per fact."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM")
        rows = conn.execute(_TABLES).fetchall()
        facts = int((conn.execute("SELECT count(*) FROM facts").fetchone() or (0,))[0])
        tiers: dict[str, dict[str, int]] = {}
        for table in _BY_TIER:
            counted = conn.execute(f"SELECT tier, count(*) FROM {table} GROUP BY tier ORDER BY tier").fetchall()
            tiers[table] = {Tier(int(t)).label: int(n) for t, n in counted}
    tables = {str(name): {"heap_bytes": int(heap), "index_bytes": int(idx), "rows_estimate": max(int(est), 0)}
              for name, heap, idx, est in rows}
    total = sum(t["heap_bytes"] + t["index_bytes"] for t in tables.values())
    facts_bytes = tables.get("facts", {}).get("heap_bytes", 0) + tables.get("facts", {}).get("index_bytes", 0)
    derived = sum(tables.get(t, {}).get("heap_bytes", 0) + tables.get(t, {}).get("index_bytes", 0) for t in _BY_TIER)

    def per(b: int) -> float | None:
        return round(b / facts, 1) if facts else None

    return {
        "facts": facts, "tables": tables, "rows_by_tier": tiers,
        "total_bytes": total, "facts_table_bytes": facts_bytes, "aggregate_bytes": derived,
        "bytes_per_fact": {"all_tables": per(total), "facts_table": per(facts_bytes), "aggregates": per(derived)},
        "total_over_facts_table": round(total / facts_bytes, 3) if facts_bytes else None,
    }
