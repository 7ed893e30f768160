"""Compactor crash and retry: `canal serve compactor` processes of this test, kill -9 mid-run, restart."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, text

from libs.db.engine import make_engine
from libs.metrics import Tier
from services.query import engine as q
from tests.chaos.helpers import free_port, serve_env, wait_until
from tests.services.compactor.helpers import (
    assert_clean_buckets_exact,
    assert_tier_exact,
    assert_watermarks_behind_dirty,
    insert_facts,
    random_facts,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]
REPO = Path(__file__).resolve().parents[2]
APP = "canal-chaos-compactor"
DAY = 86_400
TARGETS = 6


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def _busy(engine: Engine) -> list[str]:
    """States of the compactor's database sessions (PGAPPNAME tags them)."""
    with engine.connect() as conn:
        return [str(s) for s in conn.execute(text(
            "SELECT state FROM pg_stat_activity WHERE application_name = :a AND state <> 'idle'"), {"a": APP}).scalars()]


def _start(db: str, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = serve_env(DATABASE_URL=db, REDIS_URL=redis_url, COMPACTOR_ADDR=f"127.0.0.1:{free_port()}",
                    COMPACT_MINUTE_EVERY_S="1", COMPACT_HOUR_EVERY_S="2", COMPACT_DAY_EVERY_S="2",
                    COMPACT_BATCH="100", PGAPPNAME=APP)
    out = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "tools.cli.main", "serve", "compactor"], env=env, cwd=REPO,
                            stdout=out, stderr=out, start_new_session=True)


def _answers(conn: Any, target: int, start: int, end: int, legacy: bool) -> dict[str, Any]:
    ex = q.Execution()
    out = {"summary": q.summary(conn, target, start, end, legacy, ex),
           "kinds": q.kinds(conn, target, start, end, legacy, ex),
           "series": q.series(conn, target, start, end, "hour", ZoneInfo("UTC"), legacy, ex)}
    for dim in ("note", "counterparty"):
        out[dim] = q.engagement(conn, target, start, end, dim, "reactions_count", 500, None, legacy, ex)
    return out


def test_compactor_killed_mid_run_then_restarted_leaves_exact_aggregates(
        db: str, redis_url: str, tmp_path: Path, facts: dict[str, Any]) -> None:
    """kill -9 a compactor process while its cron runs are claiming batches of a large dirty backlog; the
    killed transaction leaves the previous state (no half-written bucket, watermarks behind every dirty
    bucket); a new compactor process finishes the backlog and every tier equals its facts, and canonical
    answers equal the legacy raw scan (services.query.engine) on random windows to the second."""
    engine = make_engine(db, pool_size=2)
    now = int(time.time())
    base = now - now % DAY - 2 * DAY
    insert_facts(engine, random_facts(seed=11, n=12_000, targets=TARGETS, base=base, span_s=2 * DAY))
    dirty0 = _count(engine, "SELECT count(*) FROM dirty_buckets")
    log = tmp_path / "compactor.log"
    first = _start(db, redis_url, log)
    try:
        # mid-run: some batches committed, the backlog not done, a compaction transaction open right now
        wait_until(lambda: 0 < _count(engine, "SELECT count(*) FROM dirty_buckets WHERE tier = 1") < dirty0 * 0.8
                   and _busy(engine), 90, "a compactor mid-run", every=0.02)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    killed_at = time.time()
    wait_until(lambda: not _busy(engine), 15, "PostgreSQL to drop the killed sessions", every=0.05)
    left = _count(engine, "SELECT count(*) FROM dirty_buckets")
    half = _count(engine, "SELECT count(*) FROM aggregates a JOIN dirty_buckets d ON d.target_id = a.target_id "
                          "AND d.tier = 1 AND a.tier = 1 AND d.bucket_start = a.bucket_start")
    assert left > 0 and half == 0
    assert_clean_buckets_exact(engine)
    assert_watermarks_behind_dirty(engine)

    second = _start(db, redis_url, log)
    try:
        wait_until(lambda: _count(engine, "SELECT count(*) FROM dirty_buckets") == 0, 150,
                   "the restarted compactor to finish the backlog", every=0.5)
        caught_up = time.time() - killed_at
        second.send_signal(signal.SIGTERM)
        code = second.wait(30)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    assert code == 0, log.read_text()[-3000:]
    for tier in Tier:
        assert_tier_exact(engine, tier)

    rng = random.Random(5)
    windows = 0
    with engine.connect() as conn:
        targets = [int(r[0]) for r in conn.execute(text("SELECT DISTINCT target_id FROM facts"))]
        for _ in range(30):
            a, b = sorted(rng.sample(range(base - 3600, now + 60), 2))
            target = rng.choice(targets)
            assert _answers(conn, target, a, b, False) == _answers(conn, target, a, b, True), (target, a, b)
            windows += 1
    runs = _count(engine, "SELECT count(*) FROM jobs WHERE kind = 'compaction' AND outcome <> 'error'")
    engine.dispose()
    facts.update({"facts / dirty minute buckets at the start": f"12000 / {dirty0}",
                  "dirty buckets left by the kill": left, "half-written buckets": half,
                  "backlog finished by the restarted compactor within (s)": round(caught_up, 1),
                  "restarted compactor SIGTERM exit code": code, "compaction runs recorded": runs,
                  "random windows canonical == legacy (summary, kinds, hourly series, note and counterparty "
                  "drilldowns)": windows})
