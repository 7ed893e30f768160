"""Seed facts exactly as ingest does, and compute the truth straight from facts (the oracle)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pyroaring import BitMap
from sqlalchemy import Connection, Engine, text

from libs.db.models import DRILLDOWN_MIN_TIER
from libs.metrics import ENGAGEMENT_COLUMNS, ENGAGEMENT_TYPES, FACT_COLUMNS, FACT_SETS, FactType, Tier
from services.compactor.rollup import compact_tier

FACT_FIELDS = ("target_id", "source_event_id", "fact_type", "created_at", "kind", "actor_id", "note_id", "msats", "sub")
KIND_OF = {
    FactType.ZAP: (9735,),
    FactType.REACTION: (7,),
    FactType.REPOST: (6, 16),
    FactType.REPLY: (1, 1111),
    FactType.QUOTE: (1, 1111),
    FactType.MENTION: (1,),
    FactType.FOLLOW: (3,),
    FactType.UNFOLLOW: (3,),
    FactType.NOTE: (1,),
    FactType.ARTICLE: (30023,),
}
MARK_DIRTY = (
    "INSERT INTO dirty_buckets (target_id, tier, bucket_start, gen, marked_at) "
    "SELECT DISTINCT t, 1, c - c % 60, 1, :now FROM unnest(CAST(:t AS integer[]), CAST(:c AS bigint[])) AS u(t, c) "
    "ORDER BY 1, 3 "
    "ON CONFLICT (target_id, tier, bucket_start) DO UPDATE "
    "SET gen = dirty_buckets.gen + 1, marked_at = EXCLUDED.marked_at"
)


def fact(
    target_id: int,
    created_at: int,
    fact_type: FactType,
    *,
    n: int,
    actor_id: int | None = None,
    note_id: int | None = None,
    msats: int = 0,
    sub: int = 0,
    kind: int | None = None,
) -> dict[str, Any]:
    """One fact row; `n` makes the source event id unique."""
    return {
        "target_id": target_id,
        "source_event_id": f"{n:064x}",
        "fact_type": int(fact_type),
        "created_at": created_at,
        "kind": KIND_OF[fact_type][0] if kind is None else kind,
        "actor_id": actor_id,
        "note_id": note_id,
        "msats": msats,
        "sub": sub,
    }


def _ensure_ids(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    pubkeys = sorted({r["target_id"] for r in rows} | {r["actor_id"] for r in rows if r["actor_id"] is not None})
    notes = sorted({r["note_id"] for r in rows if r["note_id"] is not None})
    conn.execute(
        text(
            "INSERT INTO pubkeys (id, pubkey) SELECT i, lpad(to_hex(i), 64, '0') "
            "FROM unnest(CAST(:ids AS integer[])) AS i ON CONFLICT DO NOTHING"
        ),
        {"ids": pubkeys},
    )
    conn.execute(
        text(
            "INSERT INTO notes (id, note_key) SELECT i, 'note-' || i "
            "FROM unnest(CAST(:ids AS integer[])) AS i ON CONFLICT DO NOTHING"
        ),
        {"ids": notes},
    )


def insert_facts(engine: Engine, rows: Sequence[Mapping[str, Any]], now: int = 0) -> None:
    """Insert facts and mark their minute buckets dirty in the same transaction, as ingest does."""
    if not rows:
        return
    with engine.begin() as conn:
        _ensure_ids(conn, rows)
        cols = ", ".join(FACT_FIELDS)
        types = {"source_event_id": "text", "created_at": "bigint", "msats": "bigint"}
        arrays = ", ".join(f"CAST(:{c} AS {types.get(c, 'integer')}[])" for c in FACT_FIELDS)
        conn.execute(
            text(f"INSERT INTO facts ({cols}) SELECT {cols} FROM unnest({arrays}) AS u({cols})"),
            {c: [r[c] for r in rows] for c in FACT_FIELDS},
        )
        conn.execute(text(MARK_DIRTY), {"t": [r["target_id"] for r in rows], "c": [r["created_at"] for r in rows], "now": now})


def delete_facts(engine: Engine, rows: Iterable[Mapping[str, Any]], now: int = 0) -> None:
    """Delete facts (a NIP-09 retraction) and mark their minute buckets dirty, as ingest does."""
    rows = list(rows)
    with engine.begin() as conn:
        for r in rows:
            conn.execute(
                text("DELETE FROM facts WHERE target_id = :t AND source_event_id = :s AND fact_type = :f"),
                {"t": r["target_id"], "s": r["source_event_id"], "f": r["fact_type"]},
            )
        conn.execute(text(MARK_DIRTY), {"t": [r["target_id"] for r in rows], "c": [r["created_at"] for r in rows], "now": now})


def compact_until_clean(engine: Engine, batch: int = 500, now: int | None = None) -> None:
    """Every tier, finest first, each until nothing is claimable."""
    for tier in Tier:
        while compact_tier(engine, tier, batch, now=now).buckets:
            pass


def dirty_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM dirty_buckets")).scalar_one())


# ---- the oracle: straight from facts -------------------------------------------------------------

def facts_window(engine: Engine, target: int, start: int, end: int) -> tuple[dict[str, int], dict[str, set[int]]]:
    """FACT_COLUMNS and FACT_SETS over the target's facts in [start, end)."""
    cols = ", ".join(f"{e} AS {n}" for n, e in FACT_COLUMNS.items())
    sets = ", ".join(f"{e} AS {n}" for n, e in FACT_SETS.items())
    with engine.connect() as conn:
        row = conn.execute(
            text(f"SELECT {cols}, {sets} FROM facts WHERE target_id = :t AND created_at >= :s AND created_at < :e"),
            {"t": target, "s": start, "e": end},
        ).one()._mapping
    sets = {n: {i for i in row[n] or () if i is not None} for n in FACT_SETS}
    return ({n: int(row[n]) for n in FACT_COLUMNS}, sets)


def aggregates_window(
    engine: Engine, target: int, tier: Tier, start: int, end: int
) -> tuple[dict[str, int], dict[str, set[int]]]:
    """Sum of the tier's aggregate rows in [start, end) and OR of their bitmaps."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT {', '.join([*FACT_COLUMNS, *FACT_SETS])} FROM aggregates "
                "WHERE target_id = :t AND tier = :tier AND bucket_start >= :s AND bucket_start < :e"
            ),
            {"t": target, "tier": int(tier), "s": start, "e": end},
        ).all()
    sums = dict.fromkeys(FACT_COLUMNS, 0)
    sets: dict[str, set[int]] = {n: set() for n in FACT_SETS}
    for row in rows:
        m = row._mapping
        for n in FACT_COLUMNS:
            sums[n] += int(m[n])
        for n in FACT_SETS:
            if m[n]:
                sets[n] |= set(BitMap.deserialize(m[n]))
    return sums, sets


def drilldown_from_facts(engine: Engine, key: str, target: int, start: int, end: int) -> dict[int, dict[str, int]]:
    types = ", ".join(str(int(t)) for t in ENGAGEMENT_TYPES)
    cols = ", ".join(f"{e} AS {n}" for n, e in ENGAGEMENT_COLUMNS.items())
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT {key} AS k, {cols} FROM facts WHERE target_id = :t AND created_at >= :s AND created_at < :e "
                f"AND {key} IS NOT NULL AND fact_type IN ({types}) GROUP BY {key}"
            ),
            {"t": target, "s": start, "e": end},
        ).all()
    return {int(r.k): {n: int(r._mapping[n]) for n in ENGAGEMENT_COLUMNS} for r in rows}


def drilldown_from_aggregates(
    engine: Engine, table: str, key: str, target: int, tier: Tier, start: int, end: int
) -> dict[int, dict[str, int]]:
    cols = ", ".join(f"CAST(sum({n}) AS bigint) AS {n}" for n in ENGAGEMENT_COLUMNS)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT {key} AS k, {cols} FROM {table} WHERE target_id = :t AND tier = :tier "
                f"AND bucket_start >= :s AND bucket_start < :e GROUP BY {key}"
            ),
            {"t": target, "tier": int(tier), "s": start, "e": end},
        ).all()
    return {int(r.k): {n: int(r._mapping[n]) for n in ENGAGEMENT_COLUMNS} for r in rows}


def assert_tier_exact(engine: Engine, tier: Tier) -> None:
    """Every bucket of `tier` equals its facts, and only non-empty buckets have rows (all three tables; the
    drilldown tables have no rows below DRILLDOWN_MIN_TIER)."""
    size = tier.seconds
    cols = ", ".join(f"{e} AS {n}" for n, e in FACT_COLUMNS.items())
    sets = ", ".join(f"{e} AS {n}" for n, e in FACT_SETS.items())
    with engine.connect() as conn:
        expected = {
            (r.target_id, r.b): r._mapping
            for r in conn.execute(
                text(
                    f"SELECT target_id, created_at - created_at % {size} AS b, {cols}, {sets} "
                    "FROM facts GROUP BY 1, 2"
                )
            )
        }
        actual = {
            (r.target_id, r.bucket_start): r._mapping
            for r in conn.execute(text("SELECT * FROM aggregates WHERE tier = :tier"), {"tier": int(tier)})
        }
        assert set(actual) == set(expected), f"{tier.label}: bucket sets differ"
        for key, exp in expected.items():
            got = actual[key]
            for n in FACT_COLUMNS:
                assert int(got[n]) == int(exp[n]), (tier.label, key, n)
            for n in FACT_SETS:
                got_set = set(BitMap.deserialize(got[n])) if got[n] else set()
                assert got_set == {i for i in exp[n] or () if i is not None}, (tier.label, key, n)
        types = ", ".join(str(int(t)) for t in ENGAGEMENT_TYPES)
        ecols = ", ".join(f"{e} AS {n}" for n, e in ENGAGEMENT_COLUMNS.items())
        for table, key in (("note_aggregates", "note_id"), ("actor_aggregates", "actor_id")):
            exp_rows = {
                tuple(r[:3]): tuple(r[3:])
                for r in conn.execute(
                    text(
                        f"SELECT target_id, created_at - created_at % {size}, {key}, {ecols} FROM facts "
                        f"WHERE {key} IS NOT NULL AND fact_type IN ({types}) AND {int(tier)} >= {DRILLDOWN_MIN_TIER} "
                        "GROUP BY 1, 2, 3"
                    )
                )
            }
            got_rows = {
                tuple(r[:3]): tuple(r[3:])
                for r in conn.execute(
                    text(
                        f"SELECT target_id, bucket_start, {key}, {', '.join(ENGAGEMENT_COLUMNS)} FROM {table} "
                        "WHERE tier = :tier"
                    ),
                    {"tier": int(tier)},
                )
            }
            assert got_rows == exp_rows, f"{tier.label}: {table} differs"


RESET_TABLES = (
    "facts, aggregates, note_aggregates, actor_aggregates, dirty_buckets, watermarks, "
    "retention_horizons, jobs, pubkeys, notes"
)


def reset(engine: Engine) -> None:
    """Empty the compactor's tables (for hypothesis examples sharing one `db`)."""
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {RESET_TABLES}"))


def assert_clean_buckets_exact(engine: Engine) -> None:
    """The invariant: a bucket with no dirty row at its tier or any finer tier inside it equals its facts."""
    with engine.connect() as conn:
        dirty = [tuple(r) for r in conn.execute(text("SELECT target_id, tier, bucket_start FROM dirty_buckets"))]
    for tier in Tier:
        size = tier.seconds
        blocked = {(t, b - b % size) for t, tr, b in dirty if tr <= tier}
        cols = ", ".join(f"{e} AS {n}" for n, e in FACT_COLUMNS.items())
        with engine.connect() as conn:
            expected = {
                (r.target_id, r.b): tuple(r[2:])
                for r in conn.execute(
                    text(f"SELECT target_id, created_at - created_at % {size} AS b, {cols} FROM facts GROUP BY 1, 2")
                )
            }
            actual = {
                (r.target_id, r.bucket_start): tuple(r[2:])
                for r in conn.execute(
                    text(f"SELECT target_id, bucket_start, {', '.join(FACT_COLUMNS)} FROM aggregates WHERE tier = :t"),
                    {"t": int(tier)},
                )
            }
        for key in (set(expected) | set(actual)) - blocked:
            assert actual.get(key) == expected.get(key), (tier.label, key)


def assert_watermarks_behind_dirty(engine: Engine) -> None:
    """No tier's watermark is past a dirty bucket of that tier or a finer one."""
    with engine.connect() as conn:
        marks = dict(conn.execute(text("SELECT tier, watermark FROM watermarks")).all())
        oldest = dict(conn.execute(text("SELECT tier, min(bucket_start) FROM dirty_buckets GROUP BY tier")).all())
    for tier in Tier:
        finer = [oldest[t] for t in Tier if t <= tier and t in oldest]
        if tier in marks and finer:
            assert marks[tier] <= min(finer), (tier.label, marks[tier], min(finer))


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every aggregate row of the three tables, bitmaps decoded to sorted id lists."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        out["aggregates"] = sorted(
            tuple(list(r[:-3]) + [sorted(BitMap.deserialize(b)) if b else [] for b in r[-3:]])
            for r in conn.execute(
                text(f"SELECT target_id, tier, bucket_start, {', '.join([*FACT_COLUMNS, *FACT_SETS])} FROM aggregates")
            )
        )
        for table in ("note_aggregates", "actor_aggregates"):
            out[table] = sorted(tuple(r) for r in conn.execute(text(f"SELECT * FROM {table}")))
    return out


def remark_all_minutes(engine: Engine) -> None:
    """Throw the aggregates away and mark every minute with facts dirty (a from-scratch rebuild)."""
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE aggregates, note_aggregates, actor_aggregates, dirty_buckets"))
        conn.execute(
            text(
                "INSERT INTO dirty_buckets (target_id, tier, bucket_start) "
                "SELECT DISTINCT target_id, 1, created_at - created_at % 60 FROM facts"
            )
        )


def random_facts(seed: int, n: int, targets: int, base: int, span_s: int) -> list[dict[str, Any]]:
    """`n` plausible facts over `targets` targets in [base, base + span_s)."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ft = rng.choice(list(FactType))
        rows.append(
            fact(
                rng.randint(1, targets),
                base + rng.randrange(span_s),
                ft,
                n=seed * 10_000_000 + i,
                actor_id=rng.randint(100, 400),
                note_id=rng.choice([None, rng.randint(1, 300)]),
                msats=rng.randint(1, 50_000) if ft == FactType.ZAP else 0,
                sub=rng.choice([0, 1, 2, 4, 5]),
                kind=rng.choice(KIND_OF[ft]),
            )
        )
    return rows


def assert_top_lists_exact(engine: Engine) -> None:
    """Every top list equals the one its bucket's drilldown rows give, and exactly the buckets of a listed tier
    with more facts than their tier's TOP_LIST_SIZES have lists (the query relies on that rule)."""
    from libs.db import models
    from services.compactor.rollup import TOP_LIST_DIMS

    sizes = models.TOP_LIST_SIZES
    with engine.connect() as conn:
        listed = {(t, tier, b) for t, tier, b, n in conn.execute(text(
            "SELECT target_id, tier, bucket_start, facts FROM aggregates WHERE tier >= :m"),
            {"m": models.top_list_min_tier()}) if n > sizes[tier]}
        got = {tuple(r[:5]): (list(r[5]), list(r[6]), int(r[7])) for r in conn.execute(text(
            "SELECT target_id, tier, bucket_start, dim, metric, keys, vals, bound FROM top_lists"))}
        assert {k[:3] for k in got} <= listed
        for dim, table, key in TOP_LIST_DIMS:
            for metric in ENGAGEMENT_COLUMNS:
                ranked: dict[tuple[int, int, int], list[tuple[int, int]]] = {b: [] for b in listed}
                for t, tier, b, k, v in conn.execute(text(
                        f"SELECT target_id, tier, bucket_start, {key}, {metric} FROM {table} "
                        f"WHERE tier >= :m AND {metric} > 0 ORDER BY {metric} DESC, {key}"),
                        {"m": models.top_list_min_tier()}):
                    if (t, tier, b) in ranked:
                        ranked[(t, tier, b)].append((k, v))
                for bucket, entries in ranked.items():
                    size = sizes[bucket[1]]
                    want = ([k for k, _ in entries[:size]], [v for _, v in entries[:size]],
                            entries[size][1] if len(entries) > size else 0)
                    assert got.get((*bucket, dim, metric)) == want, (bucket, dim, metric)
