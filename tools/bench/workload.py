"""The workload: facts generated set-based in SQL, exactly as ingest stores them, then compacted.

One large target (the dashboard's worst case), a few targets of growing size for the cost-growth
series, and a long tail of small targets, all sharing tens of thousands of actors. Facts follow a
realistic mix of types and kinds, a diurnal cycle and growing activity towards the end (day index
``days * sqrt(u)``); actors are power-law distributed. Rows are inserted in `created_at` order, as
live ingest would append them. Pubkeys and notes get the dense dictionary rows ingest would create.
Every touched minute is then marked dirty (tier 1, as ingest does) and the real compactor rolls
everything up; that doubles as the first compaction measurement.
"""

from __future__ import annotations

import hashlib
import math
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from libs.db.engine import make_engine
from libs.db.migrate import upgrade
from tools.bench.compact import compact_to_clean
from tools.bench.pg import BenchPostgres, Manifest, head_revision
from tools.bench.profile import DAY, Profile

TAIL_SEED = 20251009
FACTS_SQL = """
INSERT INTO facts (target_id, source_event_id, fact_type, created_at, kind, actor_id, note_id, msats, sub)
SELECT tid, encode(sha256(convert_to(%(prefix)s || tid || ':' || g, 'UTF8')), 'hex'), ft, created_at,
  CASE ft WHEN 1 THEN 9735 WHEN 2 THEN 7 WHEN 3 THEN CASE WHEN ux < 0.9 THEN 6 ELSE 16 END
    WHEN 4 THEN CASE WHEN ux < 0.9 THEN 1 ELSE 1111 END WHEN 5 THEN CASE WHEN ux < 0.85 THEN 1 ELSE 1111 END
    WHEN 7 THEN 3 WHEN 8 THEN 3 WHEN 10 THEN 30023 ELSE 1 END,
  CASE WHEN ft IN (9, 10) THEN tid
    ELSE %(abase)s + (floor(%(actors)s * power(ua, 2.5))::int + tid * 7919) %% %(actors)s END,
  CASE WHEN ft IN (6, 7, 8) THEN NULL ELSE nbase + floor(ncount * power(un, 2))::int END,
  CASE WHEN ft = 1 THEN (ARRAY[21, 69, 100, 210, 500, 1000, 2100, 5000, 10000, 21000, 100000])
    [1 + floor(ux * 11)::int] * 1000 ELSE 0 END,
  CASE WHEN ft = 1 AND uy < 0.08 THEN 4 WHEN ft = 2 AND uy < 0.65 THEN 1 WHEN ft = 2 AND uy < 0.70 THEN 2
    ELSE 0 END
FROM (
  SELECT tid, g, nbase, ncount, ux, uy, ua, un,
    CASE WHEN u < 0.58 THEN 2 WHEN u < 0.70 THEN 1 WHEN u < 0.78 THEN 3 WHEN u < 0.88 THEN 4
      WHEN u < 0.90 THEN 5 WHEN u < 0.93 THEN 6 WHEN u < 0.975 THEN 7 WHEN u < 0.99 THEN 8
      WHEN u < 0.9995 THEN 9 ELSE 10 END AS ft,
    %(t0)s::bigint + floor(%(days)s * sqrt(ud))::bigint * 86400
      + floor(86400 * (us - 0.8 * sin(2 * pi() * us) / (2 * pi())))::bigint AS created_at
  FROM (
    SELECT s.tid, s.nbase, s.ncount, g, random() AS u, random() AS ud, random() AS us, random() AS ua,
      random() AS un, random() AS ux, random() AS uy
    FROM unnest(%(tid)s::int[], %(n)s::int[], %(nbase)s::int[], %(ncount)s::int[]) AS s(tid, n, nbase, ncount)
    CROSS JOIN LATERAL generate_series(1, s.n) AS g
  ) r
) q
ORDER BY created_at
"""
MARK_DIRTY_SQL = """
INSERT INTO dirty_buckets (target_id, tier, bucket_start, gen, marked_at)
SELECT DISTINCT target_id, 1, created_at - created_at %% 60, 1, %(now)s FROM facts
WHERE target_id = ANY(%(tid)s::int[]) AND created_at >= %(lo)s AND created_at < %(hi)s
ON CONFLICT (target_id, tier, bucket_start) DO UPDATE SET gen = dirty_buckets.gen + 1,
  marked_at = EXCLUDED.marked_at
"""
SIZE_TABLES = ("facts", "aggregates", "note_aggregates", "actor_aggregates", "pubkeys", "notes")


def pubkey_hex(pid: int) -> str:
    """The pubkey string of dictionary id `pid` (same formula as the SQL that writes them)."""
    return hashlib.sha256(f"canal-bench-pk:{pid}".encode()).hexdigest()


@dataclass(frozen=True)
class Target:
    id: int
    role: str  # big | growth | tail
    facts: int
    note_base: int
    note_count: int

    @property
    def pubkey(self) -> str:
        return pubkey_hex(self.id)


@dataclass(frozen=True)
class Layout:
    targets: tuple[Target, ...]
    actor_base: int
    actors: int
    notes: int

    @property
    def pubkeys(self) -> int:
        return self.actor_base + self.actors - 1

    @property
    def big(self) -> Target:
        return self.targets[0]

    def growth(self) -> list[Target]:
        """The cost-growth series, smallest first, ending with the big target."""
        return sorted([t for t in self.targets if t.role == "growth"] + [self.big], key=lambda t: t.facts)

    def facts(self) -> int:
        return sum(t.facts for t in self.targets)


def layout(profile: Profile) -> Layout:
    """Target ids 1.. (big, growth, tail), then actors; each target owns a contiguous run of note ids."""
    rng = random.Random(TAIL_SEED)
    sizes = [("big", profile.big_facts)] + [("growth", n) for n in profile.growth]
    lo, hi = math.log(profile.tail_min), math.log(profile.tail_max)
    sizes += [("tail", int(round(math.exp(rng.uniform(lo, hi))))) for _ in range(profile.tail_targets)]
    targets, note_base = [], 1
    for i, (role, n) in enumerate(sizes, start=1):
        count = max(3, n // profile.facts_per_note)
        targets.append(Target(i, role, n, note_base, count))
        note_base += count
    return Layout(tuple(targets), len(targets) + 1, profile.actors, note_base - 1)


def insert_facts(conn: Any, targets: list[Target], layout_: Layout, t0: int, days: int, prefix: str,
                 counts: list[int] | None = None) -> int:
    """Insert facts for `targets` over [t0, t0 + days) (psycopg connection, caller's transaction)."""
    cur = conn.execute(FACTS_SQL, {
        "prefix": prefix, "abase": layout_.actor_base, "actors": layout_.actors, "t0": t0, "days": days,
        "tid": [t.id for t in targets], "n": counts if counts is not None else [t.facts for t in targets],
        "nbase": [t.note_base for t in targets], "ncount": [t.note_count for t in targets],
    })
    return int(cur.rowcount)


def mark_dirty(conn: Any, target_ids: list[int], lo: int, hi: int) -> int:
    """Mark every minute holding facts of these targets in [lo, hi) dirty, as ingest does."""
    return int(conn.execute(MARK_DIRTY_SQL, {"tid": target_ids, "lo": lo, "hi": hi, "now": int(time.time())}).rowcount)


def insert_dictionaries(conn: Any, layout_: Layout, t0: int) -> None:
    conn.execute("INSERT INTO pubkeys (id, pubkey) SELECT g, encode(sha256(convert_to('canal-bench-pk:' || g, "
                 "'UTF8')), 'hex') FROM generate_series(1, %s) g ON CONFLICT DO NOTHING", (layout_.pubkeys,))
    conn.execute("SELECT setval(pg_get_serial_sequence('pubkeys', 'id'), (SELECT max(id) FROM pubkeys))")
    conn.execute("INSERT INTO notes (id, note_key, deleted) SELECT g, encode(sha256(convert_to('canal-bench-note:' "
                 "|| g, 'UTF8')), 'hex'), g %% 97 = 0 FROM generate_series(1, %s) g ON CONFLICT DO NOTHING",
                 (layout_.notes,))
    conn.execute("SELECT setval(pg_get_serial_sequence('notes', 'id'), (SELECT max(id) FROM notes))")
    conn.execute("INSERT INTO profiles (pubkey, display_name, created_at, event_id) SELECT pubkey, "
                 "'bench user ' || id, %s, encode(sha256(convert_to('canal-bench-profile:' || id, 'UTF8')), 'hex') "
                 "FROM pubkeys WHERE id %% 5 = 0 ON CONFLICT DO NOTHING", (t0,))


def table_sizes(pg: BenchPostgres, database: str) -> dict[str, Any]:
    with pg.connect(database) as conn:
        out: dict[str, Any] = {}
        for table in SIZE_TABLES:
            row = conn.execute("SELECT pg_total_relation_size(%s::regclass), "
                               "(SELECT reltuples FROM pg_class WHERE oid = %s::regclass)", (table, table)).fetchone()
            if row is not None:
                out[table] = {"bytes": int(row[0]), "rows_estimate": int(row[1])}
        return out


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def ensure_workload(pg: BenchPostgres, profile: Profile, manifest: Manifest,
                    rebuild: bool = False) -> tuple[str, Layout, dict[str, Any]]:
    """The workload database (reused when the manifest matches), its layout, and how it was built."""
    db = profile.db_name
    lay = layout(profile)
    url = pg.url(db)
    key = profile.workload_key()
    head = head_revision(url)
    entry = manifest.get(db)
    if (not rebuild and entry is not None and entry.get("key") == key and entry.get("revision") == head
            and entry.get("state") == "ready" and pg.exists(db)):
        with pg.connect(db) as conn:
            row = conn.execute("SELECT count(*) FROM facts").fetchone()
            dirty = conn.execute("SELECT count(*) FROM dirty_buckets").fetchone()
        if row is not None and int(row[0]) == entry.get("facts") and dirty is not None and int(dirty[0]) == 0:
            _log(f"reusing the cached workload {db} ({entry['facts']:,} facts, built {entry.get('built_at')})")
            build = dict(entry.get("build", {}))
            build["cached"] = True
            return url, lay, build
    _log(f"building the workload {db}: {lay.facts():,} facts, {len(lay.targets):,} targets, "
         f"{lay.actors:,} actors")
    manifest.put(db, {"key": key, "revision": head, "state": "building"})
    build = _build(pg, profile, lay)
    manifest.put(db, {"key": key, "revision": head, "state": "ready", "facts": build["facts"],
                      "built_at": datetime.now(UTC).isoformat(timespec="seconds"), "build": build})
    build["cached"] = False
    return url, lay, build


def _build(pg: BenchPostgres, profile: Profile, lay: Layout) -> dict[str, Any]:
    db = profile.db_name
    url = pg.recreate(db)
    began = time.perf_counter()
    upgrade(url)
    phases: dict[str, float] = {"migrate": time.perf_counter() - began}
    with pg.connect(db) as conn:
        t = time.perf_counter()
        with conn.transaction():
            insert_dictionaries(conn, lay, profile.start)
        phases["dictionaries"] = time.perf_counter() - t
        # Bulk load: the secondary indexes and the primary key are rebuilt afterwards from their own
        # definitions (identical result, several times faster than maintaining them row by row).
        indexes = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'facts' AND indexname "
                               "NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'facts'::regclass)").fetchall()
        pk = conn.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = "
                          "'facts'::regclass AND contype = 'p'").fetchone()
        t = time.perf_counter()
        with conn.transaction():
            for name, _ in indexes:
                conn.execute(f'DROP INDEX "{name}"')
            if pk is not None:
                conn.execute(f'ALTER TABLE facts DROP CONSTRAINT "{pk[0]}"')
            conn.execute("SET LOCAL work_mem = '1GB'")
            conn.execute("SET LOCAL synchronous_commit = off")
            conn.execute("SELECT setseed(0.42)")
            facts = insert_facts(conn, list(lay.targets), lay, profile.start, profile.days, "canal-bench-ev:")
        phases["facts_insert"] = time.perf_counter() - t
        _log(f"inserted {facts:,} facts in {phases['facts_insert']:.0f} s; rebuilding indexes")
        t = time.perf_counter()
        if pk is not None:
            conn.execute(f'ALTER TABLE facts ADD CONSTRAINT "{pk[0]}" {pk[1]}')
        for _, definition in indexes:
            conn.execute(definition)
        phases["facts_indexes"] = time.perf_counter() - t
        t = time.perf_counter()
        with conn.transaction():
            dirty = mark_dirty(conn, [x.id for x in lay.targets], 0, profile.end)
        conn.execute("VACUUM ANALYZE facts")
        conn.execute("VACUUM ANALYZE dirty_buckets")
        phases["mark_dirty"] = time.perf_counter() - t
    _log(f"{dirty:,} dirty minutes; compacting with {profile.compact_workers} workers")
    engine = make_engine(url, pool_size=profile.compact_workers + 1)
    try:
        compaction = compact_to_clean(engine, profile.compact_workers, profile.compact_batch,
                                      profile.end + DAY, label=" (build)")
    finally:
        engine.dispose()
    with pg.connect(db) as conn:
        t = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        phases["vacuum"] = time.perf_counter() - t
    compaction["facts"] = facts
    compaction["facts_per_s"] = round(facts / compaction["seconds"], 1) if compaction["seconds"] else None
    _log(f"compaction done in {compaction['seconds']:.0f} s")
    return {
        "facts": facts, "dirty_minutes": dirty, "phases_s": {k: round(v, 2) for k, v in phases.items()},
        "seconds": round(time.perf_counter() - began, 2), "compaction": compaction,
        "sizes": table_sizes(pg, db),
    }
