"""Relay outage against a real suite (`canal up`, DEMO=false) subscribed to a LocalRelay run by this test.

Also checks the supervisor's by-design behaviour when one of its children dies (kill -9): the
whole suite stops, with no process left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
import pytest

from libs.metrics import FactType
from libs.nostr.keys import privkey_from_seed, pubkey_of, sign_event
from services.gateway.auth import create_key
from tests.chaos.helpers import (
    Db,
    LoopThread,
    free_port,
    short_tmp,
    start_suite_or_explain,
    suite_db_url,
    wait_until,
)
from tests.e2e.suite import Suite, stop_suite, suite_env
from tools.demo.relay import DemoRelay, start_local_relay

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]
LAG_LIMIT_S = 3
SUMMARY = "/api/v2/analytics/summary"
AUTHOR = privkey_from_seed("chaos-relay-author")
AUTHOR_PK = pubkey_of(AUTHOR)
FANS = [privkey_from_seed(f"chaos-relay-fan-{i}") for i in range(40)]
PARTIAL_PATCH = ("API.md: an answer depending on a relay known to be behind must say partial: true and name the "
                 "relay in partial_reasons; services/query/service.py Answer.meta adds no relay reason")
CACHE_PATCH = ("a window answered before the outage is served from the cache with the old freshness "
               "(stale: false) during it: services/query/service.py data_version ignores relay health")


def reaction(fan: bytes, note: dict[str, Any], created_at: int) -> dict[str, Any]:
    return sign_event(fan, 7, "+", [["e", note["id"]], ["p", AUTHOR_PK]], created_at)


@dataclass
class RelaySuite:
    suite: Suite
    loop: LoopThread
    port: int
    url: str
    db: Db
    key: str
    t0: int
    note: dict[str, Any]
    before: list[dict[str, Any]]
    relays: list[DemoRelay] = field(default_factory=list)

    def summary(self, start: int, end: int) -> dict[str, Any]:
        resp = httpx.get(self.suite.base_url + SUMMARY, headers={"Authorization": f"Bearer {self.key}"},
                         params={"pubkey": AUTHOR_PK, "start": str(start), "end": str(end)}, timeout=15)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def stop_relay(self) -> None:
        relay = self.relays[-1]
        self.loop.call(relay.stop)


@pytest.fixture(scope="module")
def relay_suite() -> Iterator[RelaySuite]:
    loop = LoopThread()
    relays: list[DemoRelay] = []
    port = free_port()
    t0 = int(time.time())
    note = sign_event(AUTHOR, 1, "chaos: relay outage", [], t0 - 600)
    # 30 reactions; the newest 20 fall within the 60 s overlap before the cursor, so the reconnect re-sends them
    before = [note] + [reaction(FANS[i], note, t0 - 100 + 3 * i) for i in range(30)]
    try:
        relay, url = loop.run(start_local_relay(before, port=port))
        relays.append(relay)
        with short_tmp("cro-") as data_dir:
            env = suite_env(data_dir, RELAYS=url, DEMO="false", INGEST_LAG_LIMIT_S=str(LAG_LIMIT_S))
            suite = start_suite_or_explain(env, data_dir / "canal-up.log", timeout=120)
            db = Db(suite_db_url(data_dir))
            try:
                key = create_key(db.engine, "chaos-relay", ["read:any"])[1]
                yield RelaySuite(suite, loop, port, url, db, key, t0, note, before, relays)
            finally:
                stop_suite(suite)
                db.close()
    finally:
        for r in relays:
            with contextlib.suppress(Exception):  # already stopped
                loop.call(r.stop)
        loop.close()


def test_relay_outage_shows_lag_and_stale_then_the_gap_is_backfilled_from_the_cursor(
        relay_suite: RelaySuite, facts: dict[str, Any]) -> None:
    """Stop the only relay: freshness shows the relay's lag and `stale: true` past INGEST_LAG_LIMIT_S; a relay
    back on the same port holding events published during the outage (created_at inside the gap) is
    read again from the stored cursor, and events, facts and the summary count every event exactly once."""
    rs = relay_suite
    db = rs.db
    wait_until(lambda: db.scalar("SELECT count(*) FROM events") == len(rs.before), 60, "the first events")
    wait_until(lambda: int(db.scalar("SELECT max(since) FROM relay_cursors") or 0) > 0, 30, "the cursor")
    cursor = int(db.scalar("SELECT max(since) FROM relay_cursors"))
    start, end = rs.t0 - 3600, int(time.time()) + 30
    live = rs.summary(start, end)
    assert live["data"]["metrics"]["reactions.count"] == 30
    assert live["meta"]["freshness"]["stale"] is False
    assert [r["healthy"] for r in live["meta"]["freshness"]["relays"]] == [True]

    rs.stop_relay()
    down_at = time.time()
    probe = {"n": 0}

    def stale_answer() -> dict[str, Any] | None:
        probe["n"] += 1  # a new window each time: a fresh computation, never the cached answer
        body = rs.summary(start - probe["n"], int(time.time()) + 30)
        return body if body["meta"]["freshness"]["stale"] else None

    stale = wait_until(stale_answer, 30, "freshness.stale during the outage", every=0.5)
    stale_after = time.time() - down_at
    relay_meta = stale["meta"]["freshness"]["relays"][0]
    assert relay_meta["url"] == rs.url and relay_meta["healthy"] is False
    assert relay_meta["lag_seconds"] > LAG_LIMIT_S
    assert stale["meta"]["freshness"]["lag_seconds"] > LAG_LIMIT_S
    assert stale["data"] == live["data"]
    time.sleep(1.5)  # past the gateway's data-version cache (1 s): what a cached answer says now is on purpose
    cached = rs.summary(start, end)  # the window answered before the outage
    deviations = []
    if not stale["meta"]["partial"] or not any(rs.url in r for r in stale["meta"]["partial_reasons"]):
        deviations.append(PARTIAL_PATCH)
    if cached["meta"]["freshness"]["stale"] is not True:
        deviations.append(CACHE_PATCH)
    facts.update({
        "INGEST_LAG_LIMIT_S": LAG_LIMIT_S,
        "stale: true seen after (s)": round(stale_after, 1),
        "relay lag_seconds / freshness lag_seconds when stale": f"{relay_meta['lag_seconds']} / "
                                                                f"{stale['meta']['freshness']['lag_seconds']}",
        "meta.partial / partial_reasons while the only relay is down": f"{stale['meta']['partial']} / "
                                                                       f"{stale['meta']['partial_reasons']}",
        "same window answered before the outage, asked during it": (
            f"cache={cached['meta']['cache']}, freshness.stale={cached['meta']['freshness']['stale']}"),
    })

    # events published while the relay was down, with created_at inside the gap
    time.sleep(2)
    now = int(time.time())
    gap = [reaction(FANS[30 + i], rs.note, int(down_at) + 1 + i % max(1, now - int(down_at) - 1))
           for i in range(10)]
    assert all(int(down_at) < e["created_at"] <= now for e in gap)
    admitted_before = int(db.scalar("SELECT value FROM ingest_state WHERE name = 'admitted'"))
    dup_before = int(db.scalar("SELECT value FROM ingest_state WHERE name = 'duplicates'") or 0)
    relay, url = rs.loop.run(start_local_relay(rs.before + gap, port=rs.port))
    rs.relays.append(relay)
    back_at = time.time()
    assert url == rs.url
    total = len(rs.before) + len(gap)
    wait_until(lambda: db.scalar("SELECT count(*) FROM events") == total, 90, "the gap's events")
    backfilled_after = time.time() - back_at
    fresh = wait_until(lambda: (b := rs.summary(start, int(time.time()) + 30))["meta"]["freshness"]["stale"] is False
                       and b,
                       30, "freshness back to normal")
    time.sleep(1.0)  # let the overlap's duplicates be counted

    assert fresh["data"]["metrics"]["reactions.count"] == 30 + len(gap)
    assert db.scalar("SELECT count(DISTINCT id) FROM events") == total
    assert db.scalar("SELECT count(*) FROM facts f JOIN pubkeys p ON p.id = f.target_id "
                     "WHERE p.pubkey = :pk AND f.fact_type = :ft", pk=AUTHOR_PK, ft=int(FactType.REACTION)) == 30 + len(gap)
    assert db.scalar("SELECT count(*) FROM (SELECT source_event_id, fact_type, target_id FROM facts "
                     "GROUP BY 1, 2, 3 HAVING count(*) > 1) d") == 0
    admitted = int(db.scalar("SELECT value FROM ingest_state WHERE name = 'admitted'"))
    duplicates = int(db.scalar("SELECT value FROM ingest_state WHERE name = 'duplicates'") or 0)
    assert admitted - admitted_before == len(gap)
    reqs = [q for q in relay.database.queries if "since" in q]
    first_since = min(int(q["since"]) for q in reqs) if reqs else None
    assert first_since is not None and first_since >= cursor - 60, (first_since, cursor)
    facts.update({
        "gap events (published while down)": len(gap),
        "backfilled within (s) of the relay's return": round(backfilled_after, 1),
        "cursor before the outage / first `since` asked after it": f"{cursor} / {first_since} (overlap 60 s)",
        "admitted during the backfill / duplicates re-sent by the overlap": f"{admitted - admitted_before} / "
                                                                            f"{duplicates - dup_before}",
        "reactions.count before / after": f"30 / {fresh['data']['metrics']['reactions.count']}",
        "events stored / distinct published": f"{db.scalar('SELECT count(*) FROM events')} / {total}",
    })
    if deviations:  # everything else held; these are API.md deviations of the services (patches in the report)
        pytest.xfail("; ".join(deviations))


def test_a_child_killed_stops_the_whole_suite_by_design(relay_suite: RelaySuite, facts: dict[str, Any]) -> None:
    """kill -9 the suite's compactor: `canal up` notices, stops every other child and exits 1, leaving
    no process behind (by design: supervision is the orchestrator's job; in Kubernetes each service restarts
    on its own). Compactor crash-and-retry is tested with compactor processes of its own."""
    suite = relay_suite.suite
    compactor = suite.child("compactor")
    everyone = psutil.Process(suite.proc.pid).children(recursive=True)
    killed_at = time.time()
    os.kill(compactor.pid, signal.SIGKILL)
    code = suite.proc.wait(60)
    stopped_after = time.time() - killed_at
    gone, alive = psutil.wait_procs(everyone, timeout=15)
    assert code == 1
    assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert "compactor exited with code -9; stopping the suite" in suite.log.read_text()
    facts.update({"canal up exit code": code, "suite stopped within (s)": round(stopped_after, 1),
                  "processes left": len(alive)})
