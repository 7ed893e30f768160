"""Rollback (story D3): flip the feature flag to off under load on a real suite (`canal up`).

Every answer after the flip (plus the flag cache's 2 s) says `meta.source: legacy`, with no error and
no schema change; flipping back to on returns to canonical. Off is set with the operator command
(`canal flag set off`, on the suite's embedded database), on with PUT /api/v2/admin/flag (demo admin key).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.nostr.keys import privkey_from_seed, pubkey_of
from tests.chaos.helpers import Db, RequestLoop, short_tmp, start_suite_or_explain, suite_db_url, wait_until
from tests.e2e.suite import stop_suite, suite_env
from tools.demo.generator import demo_pubkey

pytestmark = pytest.mark.timeout(150)
REPO = Path(__file__).resolve().parents[2]
FLAG_CACHE_S = 2.0  # services/gateway/flags.py CACHE_SECONDS
SETTLE_S = FLAG_CACHE_S + 1.0
SUMMARY = "/api/v2/analytics/summary"


def _schema(db: Db) -> tuple[Any, ...]:
    return (db.scalar("SELECT version_num FROM alembic_version"),
            tuple(tuple(r) for r in db.rows("SELECT table_name, column_name, data_type FROM information_schema.columns "
                                            "WHERE table_schema = 'public' ORDER BY 1, 2")),
            tuple(r[0] for r in db.rows("SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1")))


def test_flag_off_under_load_serves_legacy_with_no_error_and_no_schema_change(tmp_path: Path) -> None:
    pubkeys = [demo_pubkey(7)] + [pubkey_of(privkey_from_seed(f"canal-demo-fan-{i}")) for i in range(3)]

    def next_request(rng: random.Random) -> tuple[str, dict[str, str]]:
        return SUMMARY, {"pubkey": rng.choice(pubkeys), "window": rng.choice(["24h", "7d"])}

    with short_tmp("crb-") as data_dir:
        env = suite_env(data_dir, RATE_LIMIT_PER_MINUTE="100000000")  # the loop shares the demo key with the PUT
        suite = start_suite_or_explain(env, tmp_path / "canal-up.log", timeout=120)
        db = Db(suite_db_url(data_dir))
        try:
            schema_before = _schema(db)
            with RequestLoop(suite.base_url, suite.headers, next_request, workers=4) as load:
                wait_until(lambda: sum(a.status == 200 for a in load.answers) >= 20, 30, "answers before the flip")
                off_started = time.monotonic()
                off = subprocess.run([sys.executable, "-m", "tools.cli.main", "flag", "set", "off"], cwd=REPO,
                                     env={**os.environ, "DATABASE_URL": suite_db_url(data_dir)},
                                     capture_output=True, text=True, timeout=60)
                off_at = time.monotonic()
                assert off.returncode == 0, off.stderr
                time.sleep(SETTLE_S + 3.0)
                on = httpx.put(suite.base_url + "/api/v2/admin/flag", json={"mode": "on"}, headers=suite.headers,
                               timeout=15)
                on_at = time.monotonic()
                assert on.status_code == 200, on.text
                time.sleep(SETTLE_S + 2.0)
            flag_rows = db.rows("SELECT mode, updated_by FROM feature_flags")
            schema_after = _schema(db)
        finally:
            db.close()
            assert stop_suite(suite) == 0

    answers = load.answers
    errors = [a for a in answers if a.status not in (200, 202)]
    assert not errors, errors[:5]
    before = [a for a in answers if a.ended < off_started]
    legacy_window = [a for a in answers if off_at + SETTLE_S < a.began and a.ended < on_at]
    canonical_again = [a for a in answers if a.began > on_at + SETTLE_S]
    assert before and {a.source for a in before} == {"canonical"}
    assert len(legacy_window) >= 10 and {a.source for a in legacy_window} == {"legacy"}
    assert len(canonical_again) >= 10 and {a.source for a in canonical_again} == {"canonical"}
    late = [a.began - off_at for a in answers if a.began > off_at and a.source == "canonical" and a.ended < on_at]
    assert max(late, default=0.0) <= SETTLE_S  # no canonical answer began once the flag cache had expired
    assert schema_after == schema_before
    assert [r[0] for r in flag_rows] == ["on"]
