"""run_retention: horizons are published first, then old facts, minutes and hours go in batches."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event, text

from libs.config import Settings
from libs.metrics import FactType, Tier
from services.compactor.retention import configured_horizons, run_retention
from services.compactor.rollup import compact_tier
from tests.services.compactor.helpers import (
    aggregates_window,
    compact_until_clean,
    dirty_count,
    fact,
    facts_window,
    insert_facts,
    random_facts,
)

DAY = 86_400
NOW = 19_610 * DAY + 13 * 3600 + 17  # mid-afternoon
SETTINGS = Settings(
    database_url=None, retain_facts_days=2, retain_minute_days=1, retain_hour_days=3, retention_batch=100
)
FACTS_H = 19_608 * DAY  # NOW - 2 days, floored to the day
MINUTE_H = 19_609 * DAY
HOUR_H = 19_607 * DAY


def _count(engine: Engine, sql: str, **params: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def _seed_six_days(engine: Engine) -> None:
    insert_facts(engine, random_facts(seed=5, n=1500, targets=2, base=NOW - 6 * DAY, span_s=6 * DAY))
    compact_until_clean(engine, now=NOW)


def test_configured_horizons_are_floored_to_the_day_and_the_day_tier_keeps_everything() -> None:
    assert configured_horizons(SETTINGS, NOW) == {"facts": FACTS_H, "minute": MINUTE_H, "hour": HOUR_H, "day": 0}


def test_retention_publishes_horizons_then_deletes_old_rows_in_batches_and_keeps_days(engine: Engine) -> None:
    _seed_six_days(engine)
    days_before = _count(engine, "SELECT count(*) FROM aggregates WHERE tier = 3")
    old_facts = _count(engine, "SELECT count(*) FROM facts WHERE created_at < :h", h=FACTS_H)
    assert old_facts > SETTINGS.retention_batch  # so more than one batch is needed

    stats = run_retention(engine, SETTINGS, now=NOW)

    assert stats.horizons == {"facts": FACTS_H, "minute": MINUTE_H, "hour": HOUR_H, "day": 0}
    with engine.connect() as conn:
        published = {t: (k, h) for t, k, h in conn.execute(text("SELECT tier, keep_days, horizon FROM retention_horizons"))}
    assert published == {"facts": (2, FACTS_H), "minute": (1, MINUTE_H), "hour": (3, HOUR_H), "day": (0, 0)}
    assert stats.deleted["facts"] == old_facts
    assert stats.batches >= old_facts // SETTINGS.retention_batch
    assert _count(engine, "SELECT count(*) FROM facts WHERE created_at < :h", h=FACTS_H) == 0
    assert _count(engine, "SELECT count(*) FROM facts") > 0
    assert _count(engine, "SELECT count(*) FROM aggregates WHERE tier = 1 AND bucket_start < :h", h=MINUTE_H) == 0
    assert _count(engine, "SELECT count(*) FROM aggregates WHERE tier = 1") > 0
    for table in ("aggregates", "note_aggregates", "actor_aggregates"):
        assert _count(engine, f"SELECT count(*) FROM {table} WHERE tier = 2 AND bucket_start < :h", h=HOUR_H) == 0
        assert _count(engine, f"SELECT count(*) FROM {table} WHERE tier = 2") > 0
    for table in ("note_aggregates", "actor_aggregates"):  # drilldowns start at the hour tier
        assert _count(engine, f"SELECT count(*) FROM {table} WHERE tier = 1") == 0
    assert _count(engine, "SELECT count(*) FROM aggregates WHERE tier = 3") == days_before


def test_horizons_are_committed_before_the_first_delete(engine: Engine) -> None:
    _seed_six_days(engine)
    log: list[str] = []

    def on_exec(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        log.append(statement.split()[0] + (" horizons" if "retention_horizons" in statement else ""))

    event.listen(engine, "before_cursor_execute", on_exec)
    event.listen(engine, "commit", lambda conn: log.append("COMMIT"))
    try:
        run_retention(engine, SETTINGS, now=NOW)
    finally:
        event.remove(engine, "before_cursor_execute", on_exec)
    first_delete = log.index("DELETE")
    last_publish = max(i for i, entry in enumerate(log) if entry == "INSERT horizons")
    assert "COMMIT" in log[last_publish:first_delete]


def test_a_pending_late_bucket_keeps_its_facts_until_it_is_compacted(engine: Engine) -> None:
    _seed_six_days(engine)
    run_retention(engine, SETTINGS, now=NOW)
    late_at = NOW - 2 * DAY - 3600  # older than tomorrow's facts horizon, not yet compacted
    insert_facts(engine, [fact(1, late_at, FactType.ZAP, n=10**9, actor_id=7, msats=1)])
    tomorrow = NOW + DAY
    stats = run_retention(engine, SETTINGS, now=tomorrow)
    assert stats.horizons["facts"] == late_at - late_at % DAY  # held back, not FACTS_H + DAY
    compact_until_clean(engine, now=tomorrow)
    assert dirty_count(engine) == 0
    day = late_at - late_at % DAY
    assert aggregates_window(engine, 1, Tier.DAY, day, day + DAY) == facts_window(engine, 1, day, day + DAY)
    assert run_retention(engine, SETTINGS, now=tomorrow).horizons["facts"] == FACTS_H + DAY


def test_late_data_below_the_minute_horizon_rebuilds_its_hour_from_facts(engine: Engine) -> None:
    _seed_six_days(engine)
    run_retention(engine, SETTINGS, now=NOW)
    late_at = MINUTE_H - 5 * 3600 + 61  # minutes are gone there, facts are not
    insert_facts(engine, [fact(2, late_at, FactType.REPLY, n=10**9, actor_id=9, note_id=4)])
    compact_until_clean(engine, now=NOW)
    assert dirty_count(engine) == 0
    hour = late_at - late_at % 3600
    assert aggregates_window(engine, 2, Tier.HOUR, hour, hour + 3600) == facts_window(engine, 2, hour, hour + 3600)
    assert _count(engine, "SELECT count(*) FROM aggregates WHERE tier = 1 AND bucket_start < :h", h=MINUTE_H) == 0


def test_late_data_older_than_every_source_stays_dirty_without_freezing_the_watermark(engine: Engine) -> None:
    _seed_six_days(engine)
    run_retention(engine, SETTINGS, now=NOW)
    late_at = FACTS_H - 3 * 3600  # its siblings' facts and minutes are gone: no exact rebuild exists
    insert_facts(engine, [fact(1, late_at, FactType.ZAP, n=10**9, actor_id=7, msats=1)])
    hour_before = aggregates_window(engine, 1, Tier.HOUR, late_at - late_at % 3600, late_at - late_at % 3600 + 3600)
    compact_until_clean(engine, now=NOW)
    with engine.connect() as conn:
        left = conn.execute(text("SELECT tier, bucket_start FROM dirty_buckets")).all()
        marks = dict(conn.execute(text("SELECT tier, watermark FROM watermarks")).all())
    assert [(t, b) for t, b in left] == [(2, late_at - late_at % 3600)]  # the planner routes around it
    hour = late_at - late_at % 3600
    assert aggregates_window(engine, 1, Tier.HOUR, hour, hour + 3600) == hour_before  # not overwritten
    assert marks[2] == NOW - NOW % 3600  # a stuck bucket does not hold the hour tier back
    assert compact_tier(engine, Tier.HOUR, 10, now=NOW).buckets == 0


def test_aggregates_stay_exact_after_retention_for_data_still_kept(engine: Engine) -> None:
    _seed_six_days(engine)
    run_retention(engine, SETTINGS, now=NOW)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM facts WHERE created_at < :h"), {"h": FACTS_H}).scalar_one() == 0
    for target in (1, 2):
        assert aggregates_window(engine, target, Tier.MINUTE, MINUTE_H, NOW) == facts_window(engine, target, MINUTE_H, NOW)


def test_retention_prunes_run_records_older_than_a_week_and_keeps_async_query_jobs(engine: Engine) -> None:
    with engine.begin() as conn:
        for i, (kind, age_days) in enumerate([("compaction", 8), ("compaction", 6), ("retention", 30),
                                              ("summary", 30)]):
            conn.execute(text("INSERT INTO jobs (id, kind, state, created_at, updated_at) "
                              "VALUES (:i, :k, 'succeeded', :t, :t)"),
                         {"i": f"j{i}", "k": kind, "t": NOW - age_days * DAY})
    stats = run_retention(engine, SETTINGS, now=NOW)
    assert stats.deleted["jobs:runs"] == 2
    with engine.connect() as conn:
        left = sorted(conn.execute(text("SELECT id FROM jobs")).scalars())
    assert left == ["j1", "j3"]  # the 6-day-old run, and the query job (its own TTL purge owns it)


def test_a_dirty_day_block_does_not_hold_the_facts_horizon_back(engine: Engine) -> None:
    """Blocks are rebuilt from days (kept forever): the current 64-day block, always dirty, needs no facts."""
    _seed_six_days(engine)
    compact_until_clean(engine, now=NOW)
    block = FACTS_H - FACTS_H % (64 * DAY) - 64 * DAY  # long before the facts horizon
    with engine.begin() as conn:
        for tier in (Tier.DAY8, Tier.DAY64):
            conn.execute(text("INSERT INTO dirty_buckets (target_id, tier, bucket_start, gen, marked_at) "
                              "VALUES (1, :tier, :b, 1, 0)"), {"tier": int(tier), "b": block})
    assert run_retention(engine, SETTINGS, now=NOW).horizons["facts"] == FACTS_H


def test_hour_top_lists_and_drilldown_rows_go_with_their_hour_buckets(engine: Engine, monkeypatch: Any) -> None:
    """Hour lists and drilldown rows have no (tier, bucket_start) index: retention finds them per target
    through `aggregates`, before it deletes the aggregates rows of the same hours."""
    monkeypatch.setattr("libs.db.models.TOP_LIST_SIZES", {2: 1, 3: 3, 4: 5, 5: 8})
    _seed_six_days(engine)
    old = "SELECT count(*) FROM {t} WHERE tier = 2 AND bucket_start < :h"
    assert _count(engine, old.format(t="top_lists"), h=HOUR_H) > 0
    kept_lists = _count(engine, "SELECT count(*) FROM top_lists WHERE tier = 2 AND bucket_start >= :h", h=HOUR_H)
    assert kept_lists > 0
    stats = run_retention(engine, SETTINGS, now=NOW)
    for table in ("top_lists", "note_aggregates", "actor_aggregates", "aggregates"):
        assert _count(engine, old.format(t=table), h=HOUR_H) == 0, table
    assert stats.deleted["top_lists:hour"] > 0
    assert _count(engine, "SELECT count(*) FROM top_lists WHERE tier = 2 AND bucket_start >= :h", h=HOUR_H) == kept_lists
