"""arq cron worker of the compactor: minute/hour/day (+ day blocks) compaction and hourly retention.

How arq cron behaves (arq/cron.py, arq/worker.py, 0.28): every poll (0.5 s) each worker
enqueues the cron jobs whose next time falls within the next second, with job id
`name:<unix ms of the slot>` when `unique` (the default), so N workers run each slot once.
Fields left `None` match anything, except `second` which defaults to 0 and
`microsecond` to 123456; so "every 10 s" is `second={0, 10, ..., 50}` (minute=None),
"every 600 s" is `minute={0, 10, ..., 50}, second=0`. A slot still running when the
next one comes is not skipped: the two overlap, which SKIP LOCKED claims make harmless.
"""

from __future__ import annotations

import asyncio
from typing import Any

from arq.connections import RedisSettings
from arq.cron import CronJob, cron

from libs.config import Settings, get_settings
from libs.db.engine import make_engine
from libs.metrics import Tier
from services.compactor.runs import run_compaction, run_retention_job

__all__ = [
    "QUEUE_NAME",
    "WorkerSettings",
    "compact_day",
    "compact_hour",
    "compact_minute",
    "cron_jobs",
    "cron_schedule",
    "retention",
    "shutdown",
    "startup",
    "worker_options",
]

QUEUE_NAME = "canal:compactor"
BUDGET_SHARE = 0.8  # a run stops claiming after this share of its period, so runs rarely overlap


def cron_schedule(every_s: int) -> dict[str, Any]:
    """arq cron fields that fire every `every_s` seconds, aligned to the clock.

    `every_s` must divide a minute, an hour or a day evenly (10, 60, 600, 3600, ...).
    """
    if 0 < every_s < 60 and 60 % every_s == 0:
        return {"second": set(range(0, 60, every_s))}
    if every_s % 60 == 0 and 0 < every_s < 3600 and 3600 % every_s == 0:
        return {"minute": set(range(0, 60, every_s // 60)), "second": 0}
    if every_s % 3600 == 0 and 0 < every_s <= 86400 and 86400 % every_s == 0:
        return {"hour": set(range(0, 24, every_s // 3600)), "minute": 0, "second": 0}
    raise ValueError(f"{every_s} s does not divide a minute, an hour or a day evenly")


def _budget(every_s: int) -> float:
    return max(1.0, every_s * BUDGET_SHARE)


async def _compact(ctx: dict[str, Any], tier: Tier, every_s: int) -> dict[str, Any]:
    settings: Settings = ctx["settings"]
    stats = await asyncio.to_thread(
        run_compaction, ctx["engine"], tier, batch=settings.compact_batch, budget_s=_budget(every_s)
    )
    return stats.as_dict()


async def compact_minute(ctx: dict[str, Any]) -> dict[str, Any]:
    """Cron: roll dirty minute buckets from facts."""
    return await _compact(ctx, Tier.MINUTE, ctx["settings"].compact_minute_every_s)


async def compact_hour(ctx: dict[str, Any]) -> dict[str, Any]:
    """Cron: roll dirty hour buckets from their minutes."""
    return await _compact(ctx, Tier.HOUR, ctx["settings"].compact_hour_every_s)


async def compact_day(ctx: dict[str, Any]) -> dict[str, Any]:
    """Cron: roll dirty day buckets from their hours, then the 8-day and 64-day blocks above them."""
    every = ctx["settings"].compact_day_every_s
    return {tier.label: await _compact(ctx, tier, every) for tier in (Tier.DAY, Tier.DAY8, Tier.DAY64)}


async def retention(ctx: dict[str, Any]) -> dict[str, Any]:
    """Cron (hourly): publish horizons, then delete expired facts and minute/hour aggregates."""
    stats = await asyncio.to_thread(run_retention_job, ctx["engine"], ctx["settings"])
    return stats.as_dict()


def cron_jobs(settings: Settings, run_at_startup: bool = False) -> list[CronJob]:
    """The compactor's schedule; `run_at_startup` fires every job once when a worker starts."""
    periods = (
        (compact_minute, settings.compact_minute_every_s),
        (compact_hour, settings.compact_hour_every_s),
        (compact_day, settings.compact_day_every_s),
    )
    jobs = [
        cron(fn, run_at_startup=run_at_startup, timeout=_budget(every) + 120, **cron_schedule(every))
        for fn, every in periods
    ]
    jobs.append(cron(retention, minute={7}, second=0, run_at_startup=run_at_startup, timeout=3600))
    return jobs


async def startup(ctx: dict[str, Any]) -> None:
    """Put settings and a database engine in ctx (kept when the caller already provided them)."""
    settings = ctx.setdefault("settings", get_settings())
    if "engine" not in ctx:
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is not set: start the compactor through `canal up` or set it")
        ctx["engine"] = make_engine(settings.database_url)
        ctx["owns_engine"] = True


async def shutdown(ctx: dict[str, Any]) -> None:
    """Dispose of the engine startup created."""
    if ctx.get("owns_engine"):
        ctx["engine"].dispose()


def worker_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `arq.worker.Worker` (also what `WorkerSettings` holds)."""
    return {
        "queue_name": QUEUE_NAME,
        "cron_jobs": cron_jobs(settings),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url or "redis://localhost:6379"),
        "keep_result": 3600,
        "max_tries": 1,
    }


class WorkerSettings:
    """`arq services.compactor.worker.WorkerSettings` runs the cron worker alone (no gRPC)."""

    _options = worker_options(get_settings())
    queue_name = _options["queue_name"]
    cron_jobs = _options["cron_jobs"]
    on_startup = _options["on_startup"]
    on_shutdown = _options["on_shutdown"]
    redis_settings = _options["redis_settings"]
    keep_result = _options["keep_result"]
    max_tries = _options["max_tries"]
