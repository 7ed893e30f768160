"""The partial banner on a window that retention cut into, in its own suite.

Short horizons (raw facts 2 days, minute rollups 1 day, hour rollups 3 days; day rollups are
kept for good) would make other tests' windows partial, so this test runs its own suite.
Retention runs through the compactor's gRPC RunNow("retention"), a real deletion.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from canal.compactor.v1 import compactor_service_pb2 as cpb
from canal.compactor.v1 import compactor_service_pb2_grpc as cgrpc
from tests.e2e.suite import Suite
from tests.e2e.test_dashboard import READ_STATE, wait_loaded

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RETENTION = {"RETAIN_FACTS_DAYS": "2", "RETAIN_MINUTE_DAYS": "1", "RETAIN_HOUR_DAYS": "3"}
PRESTART = ("retention", RETENTION)  # conftest starts this suite when collection ends
DAY = 86_400


@pytest.fixture(scope="module")
def retention_suite(launch_suite: Any) -> Iterator[Suite]:
    running: Suite = launch_suite.get(*PRESTART)
    yield running
    launch_suite.stop(PRESTART[0])


def run_retention(suite: Suite) -> dict[str, int]:
    """RunNow("retention") on the compactor; the published horizons per tier."""
    with grpc.insecure_channel(suite.env["COMPACTOR_ADDR"]) as channel:
        stub = cgrpc.CompactorServiceStub(channel)
        run = stub.RunNow(cpb.RunNowRequest(tier="retention"), timeout=120)
        assert run.outcome in ("ok", "idle"), run
        horizons = stub.GetRetention(cpb.GetRetentionRequest(), timeout=10).horizons
    return {h.tier: h.horizon for h in horizons}


def test_partial_banner_on_a_window_retention_cut_into(retention_suite: Suite, new_page: Any, shot: Any) -> None:
    suite = retention_suite
    horizons = run_retention(suite)
    now = int(time.time())
    assert horizons["facts"] >= now - 3 * DAY and horizons["hour"] >= now - 4 * DAY, horizons
    # Edges inside dropped data: older than every horizon but the day tier's, on no hour or day boundary.
    end = horizons["hour"] - DAY - 23 * 60 - 7
    start = end - 4 * DAY - 17 * 60 - 13
    assert start % 3600 and end % 3600
    r = httpx.get(suite.base_url + "/api/v2/analytics/summary", headers=suite.headers, timeout=30,
                  params={"pubkey": suite.default_pubkey, "start": start, "end": end, "tz": "UTC"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["meta"]["partial"] is True and answer["meta"]["partial_reasons"] == ["retention"], answer["meta"]

    page = new_page()
    page.goto(f"{suite.base_url}/?pubkey={suite.default_pubkey}&start={start}&end={end}&tz=UTC")
    state = wait_loaded(page, "custom")
    banner = page.locator('[data-testid="partial-banner"]')
    banner.wait_for(state="visible")
    text = banner.inner_text()
    assert "retention" in text, text
    assert page.locator('[data-testid="partial-banner"] li[data-reason~="retention"]').count() == 1
    assert (int(state["start"]), int(state["end"])) == (start, end)
    assert state["cards"] == answer["data"]["metrics"], "the approximate numbers are the API's, flagged"
    # The chart does not draw hours that retention removed as zeros: it shows days and says why.
    note = page.locator('[data-testid="chart-note"]')
    assert note.is_visible() and "no longer kept" in note.inner_text()
    assert page.get_attribute('[data-testid="chart"]', "data-granularity") == "day"
    assert not page.is_visible('[data-testid="error-banner"]')
    assert page.evaluate(READ_STATE)["panels"]["panel-summary"]["source"] == answer["meta"]["source"]
