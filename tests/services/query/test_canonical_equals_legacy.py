"""Story B1: for random fact sets, compaction states and windows, canonical == legacy for every metric."""

from __future__ import annotations

import random
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from libs.db.engine import make_engine
from libs.metrics import Tier
from services.compactor.rollup import compact_tier
from services.query import context
from services.query import engine as q
from tests.services.query.factgen import delete_facts, insert_facts, random_facts, seed_dictionaries

T0 = 1772900000  # 2026-03-07 16:13 UTC: the window set crosses the US DST change of 2026-03-08
SPAN = 3 * 86400
ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu"]


def _compact(engine, rounds: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(rounds):
        for tier in Tier:
            compact_tier(engine, tier, 10_000)


def _answers(conn, target: int, start: int, end: int, legacy: bool, tz: str, gran: str,  # type: ignore[no-untyped-def]
             snapshot: bool = False) -> dict:
    """Every answer; with `snapshot`, the planner's inputs come from one `context.snapshot` (the server's path)."""
    inputs = None
    if snapshot:
        pubkey = conn.execute(text("SELECT pubkey FROM pubkeys WHERE id = :i"), {"i": target}).scalar_one()
        inputs = context.snapshot(conn, pubkey, end, 300)
        assert inputs.target == target
    ex = q.Execution(inputs=inputs)
    out = {
        "summary": q.summary(conn, target, start, end, legacy, ex),
        "kinds": q.kinds(conn, target, start, end, legacy, ex),
        "series": q.series(conn, target, start, end, gran, ZoneInfo(tz), legacy, ex),
    }
    for dim in ("note", "counterparty"):
        for column in ("zaps_msats", "reactions_count"):
            out[f"{dim}.{column}"] = q.engagement(conn, target, start, end, dim, column, 500, None, legacy, ex)
    return out


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), rounds=st.integers(0, 2), late=st.booleans())
def test_canonical_equals_legacy_for_random_facts_windows_and_compaction_states(
        db: str, seed: int, rounds: int, late: bool) -> None:
    engine = make_engine(db, pool_size=2)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE facts, aggregates, note_aggregates, actor_aggregates, top_lists, dirty_buckets, watermarks"))
    rng = random.Random(seed)
    seed_dictionaries(engine)
    facts = random_facts(rng, 400, T0, SPAN)
    insert_facts(engine, facts)
    _compact(engine, rounds)
    if late:  # backdated arrivals and retractions into already-rolled buckets
        insert_facts(engine, [dict(f, source_event_id=f"late{i:060x}") for i, f in
                              enumerate(random_facts(rng, 30, T0, SPAN))])
        delete_facts(engine, rng.sample(facts, 20))
        if rng.random() < 0.5:
            compact_tier(engine, Tier.MINUTE, 10_000)
    with engine.connect() as conn:
        for _ in range(6):
            a, b = sorted(rng.sample(range(T0 - 3600, T0 + SPAN + 3600), 2))
            target = rng.randint(1, 3)
            tz, gran = rng.choice(ZONES), rng.choice(["hour", "day"])
            canonical = _answers(conn, target, a, b, False, tz, gran)
            legacy = _answers(conn, target, a, b, True, tz, gran)
            assert canonical == legacy, (target, a, b, tz, gran)
            assert _answers(conn, target, a, b, False, tz, gran, snapshot=True) == legacy, (target, a, b, tz, gran)
    engine.dispose()


def test_fully_compacted_day_window_reads_day_buckets_not_facts(db: str) -> None:
    engine = make_engine(db, pool_size=2)
    seed_dictionaries(engine)
    insert_facts(engine, random_facts(random.Random(3), 300, T0, SPAN))
    _compact(engine, 2)
    day0 = T0 - T0 % 86400 + 86400
    with engine.connect() as conn:
        ex = q.Execution()
        canonical = q.summary(conn, 1, day0, day0 + 2 * 86400, False, ex)
        assert ex.tiers["day"] == 2 and ex.tiers["hour"] == 0 and ex.raw_facts == 0
        assert canonical == q.summary(conn, 1, day0, day0 + 2 * 86400, True, q.Execution())
    engine.dispose()


def test_dirty_minute_is_read_from_raw_facts_until_compacted(db: str) -> None:
    engine = make_engine(db, pool_size=2)
    seed_dictionaries(engine)
    insert_facts(engine, random_facts(random.Random(4), 200, T0, SPAN))
    _compact(engine, 2)
    day0 = T0 - T0 % 86400 + 86400
    late = random_facts(random.Random(5), 1, day0 + 5000, 1)
    late[0]["source_event_id"] = "f" * 64
    insert_facts(engine, late)
    target = int(late[0]["target_id"])  # type: ignore[arg-type]
    with engine.connect() as conn:
        ex = q.Execution()
        got = q.summary(conn, target, day0, day0 + 86400, False, ex)
        assert ex.tiers["day"] == 0 and ex.raw_facts == 1  # day and hour are unreadable, 1 fact read raw
        assert got == q.summary(conn, target, day0, day0 + 86400, True, q.Execution())
    engine.dispose()


def test_all_time_monthly_series_skips_the_empty_decades_before_the_first_fact(db: str) -> None:
    """`window=all` starts at 0: months from 1970 until the target's first data are zeros, neither planned nor read."""
    engine = make_engine(db, pool_size=2)
    seed_dictionaries(engine)
    rng = random.Random(6)
    insert_facts(engine, random_facts(rng, 300, T0, SPAN))
    _compact(engine, 1)
    insert_facts(engine, [dict(f, source_event_id=f"late{i:060x}") for i, f in
                          enumerate(random_facts(rng, 10, T0 - 86400, SPAN))])  # dirty, older than every row
    end = T0 + SPAN + 7200
    with engine.connect() as conn:
        for target in (1, 2, 3):
            pubkey = conn.execute(text("SELECT pubkey FROM pubkeys WHERE id = :i"), {"i": target}).scalar_one()
            snap = context.snapshot(conn, pubkey, end, 300)
            assert snap.earliest is not None and snap.earliest <= T0
            ex = q.Execution(inputs=snap)
            canonical = q.series(conn, target, 0, end, "month", ZoneInfo("UTC"), False, ex)
            legacy = q.series(conn, target, 0, end, "month", ZoneInfo("UTC"), True, q.Execution())
            assert canonical == legacy
            assert len(canonical) > 600 and canonical[0][2]["zaps.count"] == 0  # every month since 1970, clipped
            unclipped = q.Execution()  # no snapshot: every month since 1970 planned (same answer)
            assert q.series(conn, target, 0, end, "month", ZoneInfo("UTC"), False, unclipped) == legacy
            assert sum(ex.tiers.values()) * 10 < sum(unclipped.tiers.values())
        nobody = context.snapshot(conn, "ab" * 32, end, 300)
        assert nobody.target is None and nobody.earliest is None
    engine.dispose()
