"""Two compactor processes working the same backlog produce exactly what one process produces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine

from libs.metrics import Tier
from tests.services.compactor.helpers import (
    assert_tier_exact,
    compact_until_clean,
    dirty_count,
    insert_facts,
    random_facts,
    remark_all_minutes,
    snapshot,
)

REPO = Path(__file__).resolve().parents[3]
DAY = 86_400
BASE = 19_600 * DAY

# Claims small batches of every tier until no dirty row is left anywhere; prints how many it settled.
COMPACTOR = """
import sys, time
from sqlalchemy import text
from libs.db.engine import make_engine
from libs.metrics import Tier
from services.compactor.rollup import compact_tier

engine = make_engine(sys.argv[1], pool_size=1)
settled = 0
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    n = sum(compact_tier(engine, tier, 25).buckets for tier in Tier)
    settled += n
    if n == 0:
        with engine.connect() as conn:
            if conn.execute(text("SELECT count(*) FROM dirty_buckets")).scalar_one() == 0:
                break
        time.sleep(0.01)
print(settled)
"""


def test_two_compactor_processes_produce_the_same_aggregates_as_one(db: str, engine: Engine) -> None:
    # few targets and a short span: both processes fight over the same hours and days
    insert_facts(engine, random_facts(seed=11, n=1500, targets=3, base=BASE, span_s=DAY))
    procs = [
        subprocess.Popen([sys.executable, "-c", COMPACTOR, db], cwd=REPO, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=90)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs  # no deadlock, no serialization error
    settled = [int(out.strip()) for out in outputs]
    assert all(n > 0 for n in settled), settled  # both really worked
    assert dirty_count(engine) == 0
    for tier in Tier:
        assert_tier_exact(engine, tier)
    concurrent = snapshot(engine)

    remark_all_minutes(engine)
    compact_until_clean(engine)
    assert snapshot(engine) == concurrent
