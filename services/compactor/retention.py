"""Retention: publish the horizons first, then delete what lies before them in bounded batches.

Order matters: the planner reads `retention_horizons` and stops relying on data before a
horizon, so a horizon is committed before a single row under it is deleted. The publish
takes `SHARE ROW EXCLUSIVE` on `retention_horizons`, which waits for every compaction
transaction in flight (they hold `SHARE` while they choose where a rebuild reads from)
and queues new ones behind it, so no rebuild ever reads a tier that is being deleted.

The raw-facts horizon never passes a dirty bucket that still has its facts: a pending
rebuild (late data) keeps the facts it needs until it has been compacted. Everything
deleted is below its horizon; dirty rows are left to the compactor, which drops expired
ones and marks their parents.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine, text

from libs.config import Settings
from libs.db.models import DRILLDOWN_MIN_TIER, top_list_min_tier
from libs.metrics import Tier
from services.compactor.rollup import CHILD, oldest_dirty

__all__ = ["HORIZON_TIERS", "RetentionStats", "configured_horizons", "read_horizons", "run_retention"]

DAY = 86_400
#: Keys of `retention_horizons.tier`, finest data first.
HORIZON_TIERS = ("facts", "minute", "hour", "day")
#: Tiers whose rebuild may read raw facts: minutes, and tiers whose child tier retention deletes.
#: The 8/64-day blocks are always rebuilt from days (kept forever), so a dirty block (the current
#: one is always dirty) must not hold the facts horizon back by up to 64 days.
FACT_SOURCED = frozenset(t for t in Tier if CHILD.get(t) is None or CHILD[t].label in ("minute", "hour"))


@dataclass
class RetentionStats:
    """What one retention run published and deleted."""

    horizons: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)  # table[:tier] -> rows
    batches: int = 0
    duration_s: float = 0.0

    @property
    def rows_deleted(self) -> int:
        return sum(self.deleted.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rows_deleted": self.rows_deleted}


def _floor_day(ts: int) -> int:
    return max(0, ts - ts % DAY)


def keep_days(settings: Settings) -> dict[str, int]:
    """Configured retention per tier in days; 0 = keep forever (the day tier)."""
    return {
        "facts": settings.retain_facts_days,
        "minute": settings.retain_minute_days,
        "hour": settings.retain_hour_days,
        "day": 0,
    }


def configured_horizons(settings: Settings, now: int) -> dict[str, int]:
    """`now - retain_X_days` floored to the UTC day; the day tier keeps everything (0)."""
    return {tier: _floor_day(now - days * DAY) if days > 0 else 0 for tier, days in keep_days(settings).items()}


def read_horizons(engine: Engine) -> dict[str, tuple[int, int]]:
    """Published horizons: tier -> (keep_days, horizon). Tiers never published are absent."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT tier, keep_days, horizon FROM retention_horizons")).all()
    return {str(t): (int(k), int(h)) for t, k, h in rows}


def _publish(engine: Engine, settings: Settings, now: int) -> dict[str, int]:
    """Commit the new horizons (never moving backwards) before anything is deleted."""
    wanted = configured_horizons(settings, now)
    days = keep_days(settings)
    with engine.begin() as conn:
        conn.execute(text("LOCK TABLE retention_horizons IN SHARE ROW EXCLUSIVE MODE"))
        old = {str(t): int(h) for t, h in conn.execute(text("SELECT tier, horizon FROM retention_horizons"))}
        pending = [b for t, b in oldest_dirty(conn, old.get("facts", 0)).items() if b is not None and t in FACT_SOURCED]
        if pending:  # keep the facts a pending rebuild still needs
            wanted["facts"] = min(wanted["facts"], _floor_day(min(pending)))
        published = {tier: max(old.get(tier, 0), wanted[tier]) for tier in HORIZON_TIERS}
        for tier in HORIZON_TIERS:
            conn.execute(
                text(
                    "INSERT INTO retention_horizons (tier, keep_days, horizon, updated_at) "
                    "VALUES (:tier, :days, :h, :now) ON CONFLICT (tier) DO UPDATE "
                    "SET keep_days = EXCLUDED.keep_days, horizon = EXCLUDED.horizon, updated_at = EXCLUDED.updated_at"
                ),
                {"tier": tier, "days": days[tier], "h": published[tier], "now": now},
            )
    return published


def _rows_where(table: str, where: str) -> str:
    """The ctids of up to :n rows of `table` matching `where` (an index on its leading columns finds them)."""
    return f"SELECT ctid FROM {table} WHERE {where} LIMIT :n"


def _rows_by_target(table: str, tier: int) -> str:
    """The ctids of up to :n rows of `tier` before :h of a table keyed (target_id, tier, bucket_start, ...),
    found per target through its key.

    The drilldown tables and top lists have no (tier, bucket_start) index (for the drilldown tables a
    fifth of their size, written by every rollup): the targets with expired buckets come from
    `aggregates`, whose rows of those buckets are deleted after these."""
    return (f"SELECT l.row_id FROM (SELECT DISTINCT target_id FROM aggregates WHERE tier = {tier} AND bucket_start < :h) t "
            f"CROSS JOIN LATERAL (SELECT ctid AS row_id FROM {table} WHERE target_id = t.target_id AND tier = {tier} "
            "AND bucket_start < :h OFFSET 0) l LIMIT :n")


def _delete_in_batches(engine: Engine, table: str, rows: str, params: dict[str, Any], batch: int) -> tuple[int, int]:
    """Delete the rows `rows` selects (ctids), `batch` at a time, each batch its own short transaction."""
    total = batches = 0
    while True:
        with engine.begin() as conn:
            n = conn.execute(
                text(f"DELETE FROM {table} WHERE ctid IN ({rows})"),
                params | {"n": batch},
            ).rowcount
        total += n
        batches += 1
        if n < batch:
            return total, batches


def run_retention(
    engine: Engine, settings: Settings, now: int | None = None, batch: int | None = None
) -> RetentionStats:
    """Publish horizons, then delete facts, minute and hour aggregates before them (day rows stay),
    and compactor run records older than `retain_runs_days`."""
    began = time.perf_counter()
    now = int(time.time()) if now is None else now
    batch = batch or settings.retention_batch
    stats = RetentionStats(horizons=_publish(engine, settings, now))
    targets = [("facts", "facts", _rows_where("facts", "created_at < :h"), stats.horizons["facts"])]
    for tier_name, tier in (("minute", 1), ("hour", 2)):
        # A bucket's drilldown rows and top lists go before its aggregates row: they are found through it
        drilldowns = ("note_aggregates", "actor_aggregates") if tier >= DRILLDOWN_MIN_TIER else ()
        lists = ("top_lists",) if tier >= top_list_min_tier() else ()
        for table in (*drilldowns, *lists):
            targets.append((f"{table}:{tier_name}", table, _rows_by_target(table, tier), stats.horizons[tier_name]))
        targets.append((f"aggregates:{tier_name}", "aggregates",
                        _rows_where("aggregates", f"tier = {tier} AND bucket_start < :h"), stats.horizons[tier_name]))
    # Run records (one per compactor cron run, ~10k a day) are history, not data: keep a week.
    runs_before = now - settings.retain_runs_days * DAY if settings.retain_runs_days > 0 else 0
    targets.append(("jobs:runs", "jobs", _rows_where("jobs", "kind IN ('compaction', 'retention') AND created_at < :h"),
                    runs_before))
    for label, table, rows, horizon in targets:
        if horizon <= 0:
            continue
        stats.deleted[label], n_batches = _delete_in_batches(engine, table, rows, {"h": horizon}, batch)
        stats.batches += n_batches
    stats.duration_s = time.perf_counter() - began
    return stats
