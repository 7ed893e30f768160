"""What a request reads before its data: the snapshot's freshness and planner inputs."""

from __future__ import annotations

from sqlalchemy import text

from libs.db.engine import make_engine
from libs.metrics import Tier
from services.query import context

NOW = 1_790_000_000
DAY = 86_400


def test_freshness_watermark_is_the_day_tier_not_the_trailing_day_blocks(db: str) -> None:
    """The current 8/64-day block is never complete: its watermark trails by weeks and must not be reported."""
    engine = make_engine(db, pool_size=1)
    marks = {Tier.MINUTE: NOW - 60, Tier.HOUR: NOW - 3600, Tier.DAY: NOW - DAY,
             Tier.DAY8: NOW - 6 * DAY, Tier.DAY64: NOW - 50 * DAY}
    with engine.begin() as conn:
        for tier, mark in marks.items():
            conn.execute(text("INSERT INTO watermarks (tier, watermark, updated_at) VALUES (:t, :w, :w)"),
                         {"t": int(tier), "w": mark})
    with engine.connect() as conn:
        assert context.freshness(conn, 300, now=NOW).watermark == NOW - DAY
        snap = context.snapshot(conn, "ab" * 32, NOW, 300, now=NOW)
        assert snap.freshness.watermark == NOW - DAY and snap.target is None
    engine.dispose()
