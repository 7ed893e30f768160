"""A compactor killed with SIGKILL inside its transaction leaves the previous state; a rerun is exact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import Engine, text

from libs.metrics import Tier
from tests.services.compactor.helpers import (
    assert_clean_buckets_exact,
    assert_tier_exact,
    assert_watermarks_behind_dirty,
    compact_until_clean,
    dirty_count,
    insert_facts,
    random_facts,
)

REPO = Path(__file__).resolve().parents[3]
DAY = 86_400
BASE = 19_600 * DAY
BATCH = 50
PAUSE_AT_BATCH = 5
APP = "canal-compactor-crash-test"

# Compacts minute/hour/day in a loop; inside its 5th minute transaction, after every write
# and before COMMIT, it says so and sleeps: the test kills it there with SIGKILL.
CRASHING_COMPACTOR = f"""
import sys, time
from sqlalchemy import event
from libs.db.engine import make_engine
from libs.metrics import Tier
from services.compactor.rollup import compact_tier

engine = make_engine(sys.argv[1], pool_size=1, connect_args={{"application_name": "{APP}"}})
seen = []

@event.listens_for(engine, "after_cursor_execute")
def pause(conn, cursor, statement, params, context, many):
    if statement.startswith("UPDATE watermarks") and params.get("tier") == 1:
        seen.append(1)
        if len(seen) == {PAUSE_AT_BATCH}:
            print("IN-TRANSACTION", flush=True)
            time.sleep(120)

while True:
    for tier in Tier:
        compact_tier(engine, tier, {BATCH})
"""


def _backends(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(text("SELECT state FROM pg_stat_activity WHERE application_name = :a"), {"a": APP}).scalars()
        )


def test_a_compactor_killed_mid_transaction_leaves_no_half_written_bucket(db: str, engine: Engine) -> None:
    insert_facts(engine, random_facts(seed=3, n=3000, targets=4, base=BASE, span_s=DAY))
    minutes = dirty_count(engine)
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_COMPACTOR, db], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "IN-TRANSACTION"
        assert _backends(engine) == ["idle in transaction"]  # claimed, written, not committed
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10
    while _backends(engine) and time.monotonic() < deadline:  # the server notices the dead client
        time.sleep(0.05)
    assert not _backends(engine)

    with engine.connect() as conn:
        dirty_minutes = conn.execute(text("SELECT count(*) FROM dirty_buckets WHERE tier = 1")).scalar_one()
        half_written = conn.execute(
            text(
                "SELECT count(*) FROM aggregates a JOIN dirty_buckets d ON d.target_id = a.target_id "
                "AND d.tier = 1 AND a.tier = 1 AND d.bucket_start = a.bucket_start"
            )
        ).scalar_one()
    assert dirty_minutes == minutes - (PAUSE_AT_BATCH - 1) * BATCH  # the killed batch is still dirty
    assert half_written == 0
    assert_clean_buckets_exact(engine)
    assert_watermarks_behind_dirty(engine)

    compact_until_clean(engine)
    assert dirty_count(engine) == 0
    for tier in Tier:
        assert_tier_exact(engine, tier)
