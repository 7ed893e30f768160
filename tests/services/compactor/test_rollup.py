"""compact_tier: every clean bucket of every tier equals its facts, whatever the order of arrival."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event, text

from libs.db.models import DRILLDOWN_MIN_TIER
from libs.metrics import FactType, Tier
from services.compactor.rollup import (
    EXPIRED,
    FROM_CHILDREN,
    FROM_FACTS,
    STUCK,
    Horizons,
    compact_tier,
    rebuild_mode,
    watermark_for,
)
from tests.services.compactor.helpers import (
    KIND_OF,
    aggregates_window,
    assert_clean_buckets_exact,
    assert_tier_exact,
    assert_top_lists_exact,
    compact_until_clean,
    delete_facts,
    dirty_count,
    drilldown_from_aggregates,
    drilldown_from_facts,
    fact,
    facts_window,
    insert_facts,
    random_facts,
    reset,
)

DAY = 86_400
BASE = 19_600 * DAY  # a UTC midnight in 2023
SPAN = 3 * DAY
NOW = BASE + 10 * DAY


def test_rebuild_mode_picks_the_finest_complete_source() -> None:
    h = Horizons(facts=10 * DAY, minute=20 * DAY, hour=5 * DAY, day=0)
    assert rebuild_mode(Tier.MINUTE, 20 * DAY, h) == FROM_FACTS
    assert rebuild_mode(Tier.MINUTE, 19 * DAY, h) == EXPIRED
    assert rebuild_mode(Tier.HOUR, 20 * DAY, h) == FROM_CHILDREN
    assert rebuild_mode(Tier.HOUR, 15 * DAY, h) == FROM_FACTS  # minutes gone, facts still there
    assert rebuild_mode(Tier.HOUR, 7 * DAY, h) == STUCK  # late data older than every source
    assert rebuild_mode(Tier.HOUR, 4 * DAY, h) == EXPIRED
    assert rebuild_mode(Tier.DAY, 5 * DAY, h) == FROM_CHILDREN
    assert rebuild_mode(Tier.DAY, 4 * DAY, h) == STUCK
    assert rebuild_mode(Tier.DAY, 0, Horizons()) == FROM_CHILDREN


def test_watermark_is_now_or_the_oldest_dirty_bucket_of_this_or_a_finer_tier_floored() -> None:
    now = BASE + 5 * 3600 + 125
    assert watermark_for(Tier.MINUTE, now, {}) == now - 5
    assert watermark_for(Tier.HOUR, now, {}) == BASE + 5 * 3600
    assert watermark_for(Tier.DAY, now, {}) == BASE
    oldest = {Tier.MINUTE: BASE + 3600 + 120, Tier.HOUR: None, Tier.DAY: None}
    assert watermark_for(Tier.MINUTE, now, oldest) == BASE + 3600 + 120
    assert watermark_for(Tier.HOUR, now, oldest) == BASE + 3600
    assert watermark_for(Tier.DAY, now, {Tier.HOUR: BASE - 3600}) == BASE - DAY


fact_rows = st.lists(
    st.tuples(
        st.integers(1, 3),  # target
        st.one_of(st.integers(0, SPAN - 1), st.sampled_from([0, 59, 60, 3599, 3600, DAY - 1, DAY])),
        st.sampled_from(list(FactType)),
        st.integers(100, 108),  # actor
        st.one_of(st.none(), st.integers(1, 5)),  # note
        st.integers(1, 10_000),  # msats
        st.sampled_from([0, 1, 2, 4, 5]),  # sub
        st.integers(0, 1),  # kind choice
    ),
    min_size=1,
    max_size=40,
)


def _rows(draw_rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    out = []
    for i, (target, offset, ft, actor, note, msats, sub, k) in enumerate(draw_rows):
        kinds = KIND_OF[ft]
        out.append(
            fact(target, BASE + offset, ft, n=i, actor_id=actor, note_id=note, msats=msats if ft == FactType.ZAP else 0,
                 sub=sub, kind=kinds[k % len(kinds)])
        )
    return out


def _assert_windows_match(engine: Engine, data: st.DataObject) -> None:
    for tier in Tier:
        size = tier.seconds
        origin = BASE - BASE % size  # BASE is a midnight, not a 64-day block start
        first = data.draw(st.integers(-1, (BASE - origin + SPAN) // size + 1), label=f"{tier.label} start")
        length = data.draw(st.integers(0, (BASE - origin + SPAN) // size + 2), label=f"{tier.label} length")
        start, end = origin + first * size, origin + (first + length) * size
        for target in (1, 2, 3):
            assert aggregates_window(engine, target, tier, start, end) == facts_window(engine, target, start, end)
            if tier < DRILLDOWN_MIN_TIER:  # no minute drilldown rows (raw facts serve those edges)
                continue
            for table, key in (("note_aggregates", "note_id"), ("actor_aggregates", "actor_id")):
                assert drilldown_from_aggregates(engine, table, key, target, tier, start, end) == (
                    drilldown_from_facts(engine, key, target, start, end)
                )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=fact_rows, batch=st.integers(1, 40), drop=st.sets(st.integers(0, 59), max_size=10), data=st.data())
def test_aggregates_over_any_aligned_window_equal_the_facts(
    engine: Engine, rows: list[tuple[Any, ...]], batch: int, drop: set[int], data: st.DataObject
) -> None:
    reset(engine)
    facts = _rows(rows)
    insert_facts(engine, facts)
    compact_until_clean(engine, batch=batch, now=NOW)
    assert dirty_count(engine) == 0
    _assert_windows_match(engine, data)
    # retractions after the fact: the affected minutes, hours and days are rebuilt
    delete_facts(engine, [f for i, f in enumerate(facts) if i in drop])
    compact_until_clean(engine, batch=batch, now=NOW)
    for tier in Tier:
        assert_tier_exact(engine, tier)
    _assert_windows_match(engine, data)


def test_late_and_deleted_facts_are_rolled_up_again_minute_then_hour_then_day_then_blocks(engine: Engine) -> None:
    early = [fact(1, BASE + 3600 * h + 30, FactType.ZAP, n=h, actor_id=10 + h, note_id=1, msats=1000) for h in range(5)]
    insert_facts(engine, early)
    compact_until_clean(engine, now=NOW)
    late = fact(1, BASE + 2 * 3600 + 45, FactType.REACTION, n=99, actor_id=50, note_id=1, sub=1)
    insert_facts(engine, [late])
    delete_facts(engine, [early[4]])
    assert compact_tier(engine, Tier.DAY, 100, now=NOW).buckets == 0  # nothing dirty at day level yet
    assert compact_tier(engine, Tier.HOUR, 100, now=NOW).buckets == 0  # its minutes are still dirty
    assert compact_tier(engine, Tier.MINUTE, 100, now=NOW).buckets == 2
    assert compact_tier(engine, Tier.DAY, 100, now=NOW).buckets == 0  # waits for its hours
    assert compact_tier(engine, Tier.HOUR, 100, now=NOW).buckets == 2
    assert compact_tier(engine, Tier.DAY, 100, now=NOW).buckets == 1
    assert compact_tier(engine, Tier.DAY64, 100, now=NOW).buckets == 0  # waits for its 8-day block
    assert compact_tier(engine, Tier.DAY8, 100, now=NOW).buckets == 1
    assert compact_tier(engine, Tier.DAY64, 100, now=NOW).buckets == 1
    assert dirty_count(engine) == 0
    for tier in Tier:
        assert_tier_exact(engine, tier)
    sums, sets = aggregates_window(engine, 1, Tier.DAY, BASE, BASE + DAY)
    assert (sums["zaps_count"], sums["reactions_likes"], sets["reactors"]) == (4, 1, {50})


def test_top_lists_follow_their_buckets_through_late_and_deleted_facts(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("libs.db.models.TOP_LIST_SIZES", {2: 1, 3: 3, 4: 5, 5: 8})
    rows = random_facts(7, 400, 2, BASE, 20 * DAY)
    insert_facts(engine, rows)
    compact_until_clean(engine, now=BASE + 40 * DAY)
    assert_top_lists_exact(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(DISTINCT tier) FROM top_lists")).scalar_one() == 4
    insert_facts(engine, random_facts(8, 60, 2, BASE, 20 * DAY))  # late arrivals into rolled-up buckets
    delete_facts(engine, rows[:150])
    compact_until_clean(engine, now=BASE + 40 * DAY)
    assert_top_lists_exact(engine)


def test_a_bucket_whose_facts_were_all_deleted_loses_its_rows_at_every_tier(engine: Engine) -> None:
    only = fact(2, BASE + 7, FactType.REPOST, n=1, actor_id=5, note_id=3)
    insert_facts(engine, [only])
    compact_until_clean(engine, now=NOW)
    delete_facts(engine, [only])
    compact_until_clean(engine, now=NOW)
    with engine.connect() as conn:
        for table in ("aggregates", "note_aggregates", "actor_aggregates"):
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0, table


def test_bitmaps_are_roaring_over_dense_ids_and_null_without_members(engine: Engine) -> None:
    insert_facts(engine, [
        fact(1, BASE, FactType.ZAP, n=1, actor_id=7, msats=5, sub=4),  # anonymous: not a unique sender
        fact(1, BASE + 1, FactType.ARTICLE, n=2, actor_id=1, note_id=42),
    ])
    compact_until_clean(engine, now=NOW)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT zap_senders, reactors, articles FROM aggregates WHERE tier = 1")).one()
    assert row.zap_senders is None and row.reactors is None
    from pyroaring import BitMap

    assert set(BitMap.deserialize(row.articles)) == {42}


def test_an_ingest_re_mark_during_compaction_leaves_the_bucket_dirty(engine: Engine) -> None:
    """The race the gen/row-lock design exists for: a fact committed while its minute is being rebuilt."""
    first = fact(1, BASE + 10, FactType.ZAP, n=1, actor_id=9, msats=100)
    insert_facts(engine, [first])
    racer = fact(1, BASE + 20, FactType.ZAP, n=2, actor_id=8, msats=200)
    blocked: dict[str, bool] = {}

    def ingest_while_claimed(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FOR UPDATE OF d SKIP LOCKED" in statement and "thread" not in blocked:
            thread = threading.Thread(target=insert_facts, args=(engine, [racer]))
            blocked["thread"] = True
            thread.start()
            time.sleep(0.5)
            blocked["waiting"] = thread.is_alive()  # its dirty upsert waits on our row lock
            blocked_threads.append(thread)

    blocked_threads: list[threading.Thread] = []
    event.listen(engine, "after_cursor_execute", ingest_while_claimed)
    try:
        compact_tier(engine, Tier.MINUTE, 10, now=NOW)
    finally:
        event.remove(engine, "after_cursor_execute", ingest_while_claimed)
    blocked_threads[0].join(10)
    assert blocked["waiting"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM dirty_buckets WHERE tier = 1")).scalar_one() == 1
    assert_clean_buckets_exact(engine)
    compact_until_clean(engine, now=NOW)
    assert_tier_exact(engine, Tier.MINUTE)
    sums, _ = aggregates_window(engine, 1, Tier.DAY, BASE, BASE + DAY)
    assert sums["zaps_msats"] == 300


def test_watermarks_are_created_and_never_pass_a_dirty_bucket(engine: Engine) -> None:
    insert_facts(engine, [fact(1, BASE + 3 * 3600 + 5, FactType.MENTION, n=1, actor_id=2)])
    compact_tier(engine, Tier.HOUR, 10, now=NOW)  # nothing to do, but the rows appear
    with engine.connect() as conn:
        marks = dict(conn.execute(text("SELECT tier, watermark FROM watermarks")).all())
    assert marks == {1: 0, 2: BASE + 3 * 3600, 3: BASE, 4: BASE, 5: BASE - BASE % (64 * DAY)}  # minute runs set 1
    compact_tier(engine, Tier.MINUTE, 10, now=NOW)
    with engine.connect() as conn:
        marks = dict(conn.execute(text("SELECT tier, watermark FROM watermarks")).all())
    assert marks == {1: NOW - NOW % 60, 2: BASE + 3 * 3600, 3: BASE, 4: BASE, 5: BASE - BASE % (64 * DAY)}
    compact_until_clean(engine, now=NOW)
    with engine.connect() as conn:
        marks = dict(conn.execute(text("SELECT tier, watermark FROM watermarks")).all())
    assert marks == {int(t): NOW - NOW % t.seconds for t in Tier}


@pytest.mark.parametrize("tier", list(Tier))
def test_an_idle_run_claims_nothing_and_reports_idle(engine: Engine, tier: Tier) -> None:
    stats = compact_tier(engine, tier, 10, now=NOW)
    assert (stats.buckets, stats.outcome, stats.tier) == (0, "idle", tier.label)
