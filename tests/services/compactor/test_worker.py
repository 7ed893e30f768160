"""The arq cron worker: schedules that match the settings, and a real burst run against Redis."""

from __future__ import annotations

import pytest
from arq.connections import RedisSettings
from arq.cron import cron, next_cron
from arq.worker import Worker
from sqlalchemy import Engine, text

from libs.config import Settings
from libs.metrics import FactType, Tier
from services.compactor.worker import (
    QUEUE_NAME,
    WorkerSettings,
    compact_minute,
    cron_jobs,
    cron_schedule,
    shutdown,
    startup,
)
from tests.services.compactor.helpers import assert_tier_exact, fact, insert_facts

DAY = 86_400
BASE = 19_600 * DAY


@pytest.mark.parametrize(
    ("every_s", "fields"),
    [
        (10, {"second": {0, 10, 20, 30, 40, 50}}),
        (60, {"minute": set(range(60)), "second": 0}),
        (600, {"minute": {0, 10, 20, 30, 40, 50}, "second": 0}),
        (3600, {"hour": set(range(24)), "minute": 0, "second": 0}),
    ],
)
def test_cron_schedule_fires_every_period_aligned_to_the_clock(every_s: int, fields: dict[str, object]) -> None:
    assert cron_schedule(every_s) == fields
    from datetime import UTC, datetime

    t = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    firsts = []
    for _ in range(3):
        t = next_cron(t, **cron_schedule(every_s))  # type: ignore[arg-type]
        firsts.append(t)
    assert {round((b - a).total_seconds()) for a, b in zip(firsts, firsts[1:], strict=False)} == {every_s}


def test_cron_schedule_rejects_periods_that_do_not_divide_the_clock() -> None:
    with pytest.raises(ValueError):
        cron_schedule(7)


def test_worker_settings_schedule_minute_hour_day_and_hourly_retention() -> None:
    names = [job.name for job in WorkerSettings.cron_jobs]
    assert names == ["cron:compact_minute", "cron:compact_hour", "cron:compact_day", "cron:retention"]
    assert WorkerSettings.queue_name == QUEUE_NAME == "canal:compactor"
    jobs = cron_jobs(Settings(database_url=None, compact_minute_every_s=10, compact_hour_every_s=60))
    assert jobs[0].second == {0, 10, 20, 30, 40, 50} and jobs[0].minute is None
    assert jobs[3].minute == {7} and jobs[3].hour is None


async def test_a_burst_worker_runs_the_cron_scheduled_minute_compaction(
    db: str, redis_url: str, engine: Engine
) -> None:
    insert_facts(engine, [fact(1, BASE + 60 * i, FactType.QUOTE, n=i, actor_id=5, note_id=2) for i in range(4)])
    settings = Settings(database_url=db, redis_url=redis_url)
    worker = Worker(
        cron_jobs=[cron(compact_minute, run_at_startup=True)],
        queue_name=QUEUE_NAME,
        redis_settings=RedisSettings.from_dsn(redis_url),
        on_startup=startup,
        on_shutdown=shutdown,
        ctx={"settings": settings},
        burst=True,
        poll_delay=0.05,
        handle_signals=False,
    )
    try:
        # the startup run, plus one more when the burst happens to cross a scheduled second
        assert await worker.run_check() >= 1
    finally:
        await worker.close()
    assert_tier_exact(engine, Tier.MINUTE)
    with engine.connect() as conn:
        jobs = conn.execute(text("SELECT kind, tier, buckets, state FROM jobs ORDER BY buckets DESC")).all()
    assert tuple(jobs[0]) == ("compaction", "minute", 4, "succeeded")
    assert all(tuple(j) == ("compaction", "minute", 0, "succeeded") for j in jobs[1:])
