"""Roll facts up into minute, hour, day and 8/64-day block aggregates, one batch of dirty buckets per transaction.

The contract with ingest and the planner:

- ingest marks the minute bucket of every fact it inserts or deletes dirty, in the
  same transaction (``gen`` bumped on re-mark);
- :func:`compact_tier` claims dirty buckets of one tier, rebuilds each one completely
  (delete-then-insert of its rows in ``aggregates``, ``note_aggregates`` and
  ``actor_aggregates``), deletes the claimed dirty rows and marks the parent bucket
  of the next tier dirty, all in ONE transaction: a crash leaves the previous state;
- invariant: a bucket's rows equal its facts whenever neither the bucket nor any
  finer-tier bucket inside it has a dirty row (a coarse bucket is only re-marked when
  a finer one inside it is compacted, so the planner must treat a dirty minute as
  dirtying every coarser bucket that contains it).

Where a rebuild reads from (:func:`rebuild_mode`), with the retention horizons locked
``SHARE`` for the whole transaction so retention cannot move them under us:

- below the tier's own horizon: ``expired``: nothing is written (retention deletes
  such rows), the dirty row is dropped and the parent is marked;
- hour and coarser at or after the child tier's horizon: from the child aggregates (sum the
  columns, OR the bitmaps, sum drilldown rows by key), and only when no child bucket
  inside is dirty (otherwise the bucket is not claimed this round);
- else, at or after the raw-facts horizon: from facts (minutes always come from facts);
- else ``stuck``: no complete source is left (late data older than every retention
  horizon that could rebuild it). It is never claimed and stays dirty, so the planner
  routes around it and reports ``partial`` rather than a wrong number.

Drilldown rows (``note_aggregates``, ``actor_aggregates``) start at the hour tier
(``models.DRILLDOWN_MIN_TIER``): a minute's drilldown rows would be the raw facts again.
The hour tier therefore rolls its drilldown rows up from facts, whatever the mode of its
``aggregates`` row, and an hour bucket is only claimed while its facts are kept (the
settings keep facts at least as long as minutes, so in practice always).

Race freedom (PostgreSQL, READ COMMITTED):

- claims are ``SELECT ... FOR UPDATE SKIP LOCKED``: a bucket is rebuilt by at most one
  transaction at a time, and only while that transaction holds its dirty row;
- ingest's ``INSERT ... ON CONFLICT DO UPDATE`` on a claimed row blocks on our row lock
  until we commit; it then finds the row deleted and inserts it afresh, so a fact
  committed after our read always leaves its bucket dirty. A fact committed before the
  claim is visible to our reads (each statement takes a newer snapshot). The gen check
  on delete is defence in depth: while we hold the lock the gen cannot move;
- child aggregates only change in a transaction that also upserts the parent's dirty
  row before committing; that upsert waits for our lock on the parent, so the children
  we sum cannot change while we hold the parent;
- locks are taken in one global order (horizons table, claimed rows, parent rows in key
  order, watermark rows in tier order), so compactors cannot deadlock each other.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from pyroaring import BitMap
from sqlalchemy import Connection, Engine, text

from libs.db import models
from libs.metrics import ENGAGEMENT_COLUMNS, ENGAGEMENT_TYPES, FACT_COLUMNS, FACT_SETS, Tier

__all__ = [
    "CHILD",
    "PARENT",
    "Horizons",
    "RunStats",
    "compact_tier",
    "lock_horizons",
    "oldest_dirty",
    "rebuild_mode",
    "update_watermarks",
    "watermark_for",
]

_CHAIN = sorted(Tier)  # minute -> hour -> day -> 8-day block -> 64-day block
CHILD: Mapping[Tier, Tier] = dict(zip(_CHAIN[1:], _CHAIN[:-1], strict=True))
PARENT: Mapping[Tier, Tier] = dict(zip(_CHAIN[:-1], _CHAIN[1:], strict=True))
EXPIRED, FROM_CHILDREN, FROM_FACTS, STUCK = "expired", "children", "facts", "stuck"
_NEVER = 2**62  # a horizon no bucket reaches: "this tier has no child tier"
_DRILLDOWNS = (("note_aggregates", "note_id"), ("actor_aggregates", "actor_id"))
#: Top lists per drilldown (services.query.topn): dimension name, table, key column.
TOP_LIST_DIMS = (("note", "note_aggregates", "note_id"), ("counterparty", "actor_aggregates", "actor_id"))
_UNNEST_CLAIMED = "unnest(CAST(:t AS integer[]), CAST(:b AS bigint[])) AS c(t, b)"
# LATERAL + OFFSET 0 (no pull-up) pins the plan to one index range scan per claimed bucket,
# whatever the statistics say (a hash/merge join over all facts is the failure mode).
_FACTS_OF_BUCKET = (
    "SELECT * FROM facts WHERE target_id = c.t AND created_at >= c.b AND created_at < c.b + :size OFFSET 0"
)
_CHILDREN_OF_BUCKET = (
    "SELECT * FROM {table} "
    "WHERE target_id = c.t AND tier = :child AND bucket_start >= c.b AND bucket_start < c.b + :size OFFSET 0"
)
_ENGAGEMENT_IN = ", ".join(str(int(t)) for t in ENGAGEMENT_TYPES)


@dataclass(frozen=True)
class Horizons:
    """Retention horizons (unix seconds): data before them may be gone. 0 = nothing deleted."""

    facts: int = 0
    minute: int = 0
    hour: int = 0
    day: int = 0
    day8: int = 0
    day64: int = 0

    def of(self, tier: Tier) -> int:
        return int(getattr(self, tier.label))


@dataclass
class RunStats:
    """What one compaction batch (or a run of batches) did."""

    tier: str
    buckets: int = 0  # dirty buckets claimed and settled
    facts_read: int = 0  # fact rows read by rebuilds from facts
    rows_read: int = 0  # finer-tier aggregate rows read by rebuilds from children
    rows_written: int = 0  # rows inserted into aggregates + note/actor aggregates
    emptied: int = 0  # rebuilt buckets that had no facts left (rows deleted, none inserted)
    expired: int = 0  # buckets below the tier's retention horizon (dropped, parent marked)
    parents_marked: int = 0
    batches: int = 0
    duration_s: float = 0.0
    watermark: int | None = None
    outcome: str = "idle"  # idle | ok | error

    def add(self, other: RunStats) -> None:
        """Accumulate another batch of the same tier."""
        for name in ("buckets", "facts_read", "rows_read", "rows_written", "emptied", "expired",
                     "parents_marked", "batches"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.duration_s += other.duration_s
        self.watermark = other.watermark if other.watermark is not None else self.watermark
        if self.buckets:
            self.outcome = "ok"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Claim(NamedTuple):
    target_id: int
    bucket_start: int
    gen: int


def rebuild_mode(tier: Tier, bucket_start: int, horizons: Horizons) -> str:
    """Which complete source rebuilds this bucket (see the module docstring)."""
    if bucket_start < horizons.of(tier):
        return EXPIRED
    child = CHILD.get(tier)
    if child is not None and bucket_start >= horizons.of(child):
        return FROM_CHILDREN
    if bucket_start >= horizons.facts:
        return FROM_FACTS
    return STUCK


def watermark_for(tier: Tier, now: int, oldest_dirty: Mapping[Tier, int | None]) -> int:
    """The time up to which `tier` is complete.

    ``min(now floored to the tier, oldest dirty bucket_start of this tier or any finer
    tier floored to the tier)``, where ``oldest_dirty`` only counts dirty rows at or after
    the raw-facts horizon (older ones are expired or stuck; they stay visible to the
    planner in the dirty set but must not freeze the watermark).
    """
    size = tier.seconds
    mark = now - now % size
    for finer in Tier:
        start = oldest_dirty.get(finer)
        if finer <= tier and start is not None:
            mark = min(mark, start - start % size)
    return mark


def lock_horizons(conn: Connection) -> Horizons:
    """Read the retention horizons and hold them (SHARE: compactors share, retention waits)."""
    conn.execute(text("LOCK TABLE retention_horizons IN SHARE MODE"))
    rows = conn.execute(text("SELECT tier, horizon FROM retention_horizons")).all()
    known = {"facts", *(t.label for t in Tier)}
    return Horizons(**{str(tier): int(h) for tier, h in rows if tier in known})


def compact_tier(engine: Engine, tier: Tier | int, batch: int, now: int | None = None) -> RunStats:
    """Claim up to `batch` dirty buckets of `tier` (oldest first), rebuild them, and commit once."""
    tier = Tier(tier)
    now = int(time.time()) if now is None else now
    began = time.perf_counter()
    stats = RunStats(tier=tier.label, batches=1)
    with engine.begin() as conn:
        _pin_plans(conn)
        horizons = lock_horizons(conn)
        claimed = _claim(conn, tier, batch, horizons)
        settled = _rebuild_claimed(conn, tier, claimed, horizons, stats)
        _settle_claimed(conn, tier, settled, now, stats)
        stats.watermark = update_watermarks(conn, tier, now, horizons)[tier]
    stats.buckets = len(settled)
    stats.outcome = "ok" if settled else "idle"
    stats.duration_s = time.perf_counter() - began
    return stats


def _pin_plans(conn: Connection) -> None:
    """Every statement here is driven by a small claimed batch probing indexes: forbid whole-table joins.

    With stale statistics PostgreSQL may hash the whole facts or dirty_buckets table per
    batch, which turns a backlog into quadratic work; nested loops over the batch never do.
    """
    conn.execute(text("SET LOCAL enable_hashjoin = off"))
    conn.execute(text("SET LOCAL enable_mergejoin = off"))


def _claim(conn: Connection, tier: Tier, batch: int, horizons: Horizons) -> list[_Claim]:
    child = CHILD.get(tier)
    rows = conn.execute(
        text(
            """
            SELECT d.target_id, d.bucket_start, d.gen FROM dirty_buckets d
            WHERE d.tier = :tier AND (
                d.bucket_start < :own_h
                OR (d.bucket_start >= :child_h AND d.bucket_start >= :drill_facts_h AND NOT EXISTS (
                    SELECT 1 FROM dirty_buckets k
                    WHERE k.target_id = d.target_id AND k.tier = :child
                      AND k.bucket_start >= d.bucket_start AND k.bucket_start < d.bucket_start + :size))
                OR (d.bucket_start < :child_h AND d.bucket_start >= :facts_h))
            ORDER BY d.bucket_start
            LIMIT :n
            FOR UPDATE OF d SKIP LOCKED
            """
        ),
        {
            "tier": int(tier),
            "own_h": horizons.of(tier),
            "child": int(child) if child else 0,
            "child_h": horizons.of(child) if child else _NEVER,
            "facts_h": horizons.facts,
            # the tier whose drilldown rows come from facts needs them, even where the child tier is kept
            "drill_facts_h": horizons.facts if tier == models.DRILLDOWN_MIN_TIER else 0,
            "size": tier.seconds,
            "n": batch,
        },
    ).all()
    return [_Claim(int(t), int(b), int(g)) for t, b, g in rows]


def _rebuild_claimed(
    conn: Connection, tier: Tier, claimed: Sequence[_Claim], horizons: Horizons, stats: RunStats
) -> list[_Claim]:
    """Rebuild each claimed bucket from its source; returns the claims that may be settled."""
    by_mode: dict[str, list[_Claim]] = {FROM_FACTS: [], FROM_CHILDREN: [], EXPIRED: [], STUCK: []}
    for claim in claimed:
        by_mode[rebuild_mode(tier, claim.bucket_start, horizons)].append(claim)
    stats.expired += len(by_mode[EXPIRED])
    for mode in (FROM_FACTS, FROM_CHILDREN):
        if by_mode[mode]:
            _rebuild(conn, tier, mode, by_mode[mode], stats)
    # The claim query never returns a stuck bucket; if it ever did, it must stay dirty.
    return [*by_mode[FROM_FACTS], *by_mode[FROM_CHILDREN], *by_mode[EXPIRED]]


def _rebuild(conn: Connection, tier: Tier, mode: str, claims: Sequence[_Claim], stats: RunStats) -> None:
    """Recompute every bucket in `claims` from one source and replace its rows."""
    keys = {"t": [c.target_id for c in claims], "b": [c.bucket_start for c in claims]}
    child = CHILD.get(tier)
    params: dict[str, Any] = {**keys, "tier": int(tier), "size": tier.seconds, "child": int(child or 0)}
    if mode == FROM_FACTS:
        rows = _aggregate_rows_from_facts(conn, params, stats)
    else:
        rows = _aggregate_rows_from_children(conn, params, stats)
    drilldowns = _DRILLDOWNS if tier >= models.DRILLDOWN_MIN_TIER else ()
    for table in ("aggregates", *(t for t, _ in drilldowns)):
        conn.execute(
            text(
                _delete_by_lateral(
                    table, _UNNEST_CLAIMED, "target_id = c.t AND tier = :tier AND bucket_start = c.b"
                )
            ),
            keys | {"tier": int(tier)},
        )
    stats.rows_written += _insert_aggregates(conn, tier, rows)
    stats.emptied += len(claims) - len(rows)
    from_facts = mode == FROM_FACTS or tier == models.DRILLDOWN_MIN_TIER
    for table, key in drilldowns:
        sql = _drilldown_from_facts(table, key) if from_facts else _drilldown_from_children(table, key)
        stats.rows_written += conn.execute(text(sql), params).rowcount
    if tier >= models.top_list_min_tier():
        _rebuild_top_lists(conn, tier, keys)


def _rebuild_top_lists(conn: Connection, tier: Tier, keys: dict[str, list[int]]) -> None:
    """Replace the top lists of the claimed buckets (read back from the rows just written).

    A bucket gets lists when its aggregates row counts more than TOP_LIST_SIZES[tier] facts: the query
    finds listed buckets by that same rule (and falls back to the full aggregation if one is missing).
    """
    conn.execute(text(_delete_by_lateral("top_lists", _UNNEST_CLAIMED,
                                         "target_id = c.t AND tier = :tier AND bucket_start = c.b")),
                 keys | {"tier": int(tier)})
    for dim, table, key in TOP_LIST_DIMS:
        for metric in ENGAGEMENT_COLUMNS:
            conn.execute(text(_top_list_sql(dim, table, key, metric, models.TOP_LIST_SIZES[tier])),
                         keys | {"tier": int(tier)})


def _top_list_sql(dim: str, table: str, key: str, metric: str, n: int) -> str:
    return (
        "INSERT INTO top_lists (target_id, tier, bucket_start, dim, metric, keys, vals, bound) "
        f"SELECT c.t, :tier, c.b, '{dim}', '{metric}', coalesce(l.keys[1:{n}], '{{}}'), "
        f"coalesce(l.vals[1:{n}], '{{}}'), coalesce(l.vals[{n + 1}], 0) "
        f"FROM {_UNNEST_CLAIMED} JOIN aggregates a ON a.target_id = c.t AND a.tier = :tier AND a.bucket_start = c.b "
        "CROSS JOIN LATERAL (SELECT array_agg(x.k ORDER BY x.v DESC, x.k) AS keys, "
        "array_agg(x.v ORDER BY x.v DESC, x.k) AS vals FROM ("
        f"SELECT g.{key} AS k, g.{metric} AS v FROM {table} g WHERE g.target_id = c.t AND g.tier = :tier "
        f"AND g.bucket_start = c.b AND g.{metric} > 0 ORDER BY g.{metric} DESC, g.{key} LIMIT {n + 1}) x) l "
        f"WHERE a.facts > {n}"
    )


def _aggregate_rows_from_facts(conn: Connection, params: dict[str, Any], stats: RunStats) -> list[dict[str, Any]]:
    columns = ", ".join(f"{expr} AS {name}" for name, expr in FACT_COLUMNS.items())
    sets = ", ".join(f"{expr} AS {name}" for name, expr in FACT_SETS.items())
    result = conn.execute(
        text(
            f"SELECT c.t, c.b, {columns}, {sets} FROM {_UNNEST_CLAIMED} "
            f"CROSS JOIN LATERAL ({_FACTS_OF_BUCKET}) f "
            "GROUP BY c.t, c.b"
        ),
        params,
    )
    rows = [dict(r._mapping) for r in result]
    for row in rows:
        stats.facts_read += int(row["facts"])
        for name in FACT_SETS:
            row[name] = _bitmap_of_ids(row[name])
    return rows


def _aggregate_rows_from_children(
    conn: Connection, params: dict[str, Any], stats: RunStats
) -> list[dict[str, Any]]:
    columns = ", ".join(f"CAST(sum(a.{name}) AS bigint) AS {name}" for name in FACT_COLUMNS)
    sets = ", ".join(f"array_agg(a.{name}) FILTER (WHERE a.{name} IS NOT NULL) AS {name}" for name in FACT_SETS)
    result = conn.execute(
        text(
            f"SELECT c.t, c.b, {columns}, {sets}, count(*) AS child_rows FROM {_UNNEST_CLAIMED} "
            f"CROSS JOIN LATERAL ({_CHILDREN_OF_BUCKET.format(table='aggregates')}) a "
            "GROUP BY c.t, c.b"
        ),
        params,
    )
    rows = [dict(r._mapping) for r in result]
    for row in rows:
        stats.rows_read += int(row.pop("child_rows"))
        for name in FACT_SETS:
            row[name] = _bitmap_union(row[name])
    return rows


def _insert_aggregates(conn: Connection, tier: Tier, rows: Sequence[Mapping[str, Any]]) -> int:
    if not rows:
        return 0
    names = [*FACT_COLUMNS, *FACT_SETS]
    arrays = ", ".join(
        [f"CAST(:{n} AS bigint[])" for n in FACT_COLUMNS] + [f"CAST(:{n} AS bytea[])" for n in FACT_SETS]
    )
    params: dict[str, Any] = {"tier": int(tier), "t": [r["t"] for r in rows], "b": [r["b"] for r in rows]}
    params.update({n: [r[n] for r in rows] for n in names})
    conn.execute(
        text(
            f"INSERT INTO aggregates (target_id, tier, bucket_start, {', '.join(names)}) "
            f"SELECT u.t, :tier, u.b, {', '.join('u.' + n for n in names)} "
            f"FROM unnest(CAST(:t AS integer[]), CAST(:b AS bigint[]), {arrays}) AS u(t, b, {', '.join(names)})"
        ),
        params,
    )
    return len(rows)


def _drilldown_from_facts(table: str, key: str) -> str:
    columns = ", ".join(f"{expr}" for expr in ENGAGEMENT_COLUMNS.values())
    return (
        f"INSERT INTO {table} (target_id, tier, bucket_start, {key}, {', '.join(ENGAGEMENT_COLUMNS)}) "
        f"SELECT c.t, :tier, c.b, f.{key}, {columns} FROM {_UNNEST_CLAIMED} "
        f"CROSS JOIN LATERAL ({_FACTS_OF_BUCKET}) f "
        f"WHERE f.{key} IS NOT NULL AND f.fact_type IN ({_ENGAGEMENT_IN}) "
        f"GROUP BY c.t, c.b, f.{key}"
    )


def _drilldown_from_children(table: str, key: str) -> str:
    columns = ", ".join(f"CAST(sum(a.{name}) AS bigint)" for name in ENGAGEMENT_COLUMNS)
    return (
        f"INSERT INTO {table} (target_id, tier, bucket_start, {key}, {', '.join(ENGAGEMENT_COLUMNS)}) "
        f"SELECT c.t, :tier, c.b, a.{key}, {columns} FROM {_UNNEST_CLAIMED} "
        f"CROSS JOIN LATERAL ({_CHILDREN_OF_BUCKET.format(table=table)}) a "
        f"GROUP BY c.t, c.b, a.{key}"
    )


def _bitmap_of_ids(ids: Iterable[int | None] | None) -> bytes | None:
    members = BitMap(i for i in ids or () if i is not None)
    return members.serialize() if members else None


def _bitmap_union(blobs: Iterable[bytes] | None) -> bytes | None:
    members = BitMap()
    for blob in blobs or ():
        members |= BitMap.deserialize(bytes(blob))
    return members.serialize() if members else None


def _delete_by_lateral(table: str, keys: str, match: str) -> str:
    """DELETE the rows of `table` matching each key row, by ctid.

    The ctids are collected by one index probe per key (LATERAL + OFFSET 0), then deleted
    by a TID scan: no join order for the planner to get wrong when statistics of these
    volatile tables are stale (it once chose 2,400 x 500 nested comparisons).
    """
    return (
        f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
        f"SELECT l.row_id FROM {keys} CROSS JOIN LATERAL (SELECT ctid AS row_id FROM {table} WHERE {match} OFFSET 0) l"
        "))"
    )


def _settle_claimed(conn: Connection, tier: Tier, claimed: Sequence[_Claim], now: int, stats: RunStats) -> None:
    """Delete the claimed dirty rows (only at the gen we read) and mark each parent bucket dirty."""
    if not claimed:
        return
    conn.execute(
        text(
            _delete_by_lateral(
                "dirty_buckets",
                "unnest(CAST(:t AS integer[]), CAST(:b AS bigint[]), CAST(:g AS bigint[])) AS c(t, b, g)",
                "target_id = c.t AND tier = :tier AND bucket_start = c.b AND gen = c.g",
            )
        ),
        {
            "t": [c.target_id for c in claimed],
            "b": [c.bucket_start for c in claimed],
            "g": [c.gen for c in claimed],
            "tier": int(tier),
        },
    )
    parent = PARENT.get(tier)
    if parent is None:
        return
    # ORDER BY: parent rows are locked in key order, so concurrent compactors never deadlock.
    stats.parents_marked += conn.execute(
        text(
            "INSERT INTO dirty_buckets (target_id, tier, bucket_start, gen, marked_at) "
            "SELECT DISTINCT c.t, CAST(:ptier AS smallint), c.b - c.b % :psize, CAST(1 AS bigint), "
            "CAST(:now AS bigint) "
            f"FROM {_UNNEST_CLAIMED} ORDER BY 1, 3 "
            "ON CONFLICT (target_id, tier, bucket_start) DO UPDATE "
            "SET gen = dirty_buckets.gen + 1, marked_at = EXCLUDED.marked_at"
        ),
        {
            "t": [c.target_id for c in claimed],
            "b": [c.bucket_start for c in claimed],
            "ptier": int(parent),
            "psize": parent.seconds,
            "now": now,
        },
    ).rowcount


def update_watermarks(conn: Connection, tier: Tier, now: int, horizons: Horizons) -> dict[Tier, int]:
    """Set the watermark of `tier` and every coarser tier (their definitions involve this tier's rows).

    Runs last in the compaction transaction: the new value commits together with the
    rows it covers. Rows are locked in tier order (no deadlock between tiers); the dirty
    rows are read after the lock, so a value written last was computed last.
    """
    conn.execute(
        text(
            "INSERT INTO watermarks (tier, watermark, updated_at) VALUES "
            + ", ".join(f"({int(t)}, 0, 0)" for t in Tier)
            + " ON CONFLICT (tier) DO NOTHING"
        )
    )
    conn.execute(
        text("SELECT tier FROM watermarks WHERE tier >= :tier ORDER BY tier FOR UPDATE"), {"tier": int(tier)}
    )
    oldest = oldest_dirty(conn, horizons.facts)
    marks = {t: watermark_for(t, now, oldest) for t in Tier if t >= tier}
    for t, mark in marks.items():
        conn.execute(
            text("UPDATE watermarks SET watermark = :w, updated_at = :now WHERE tier = :tier"),
            {"w": mark, "now": now, "tier": int(t)},
        )
    return marks


def oldest_dirty(conn: Connection, since: int) -> dict[Tier, int | None]:
    """Per tier, the oldest dirty bucket_start at or after `since` (index scans on (tier, bucket_start))."""
    row = conn.execute(
        text(
            "SELECT "
            + ", ".join(
                f"(SELECT min(bucket_start) FROM dirty_buckets WHERE tier = {int(t)} AND bucket_start >= :since)"
                for t in Tier
            )
        ),
        {"since": since},
    ).one()
    return {t: (None if v is None else int(v)) for t, v in zip(Tier, row, strict=True)}
