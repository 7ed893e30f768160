"""HTTP conventions of the gateway: CORS (NIP-98 from a browser), ETag / If-None-Match -> 304 from the
data version, Cache-Control, Location on every 202, and the OpenTelemetry request-duration metric."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from services.gateway.observability import HttpMetrics
from services.ingest.store import IngestStore, RawItem
from tests.services.gateway.helpers import ALICE, ALICE_PK, BOB, Stack, _event, nip98, seed, wait_for
from tests.services.gateway.test_jobs import JOBS, run_worker_burst

pytestmark = pytest.mark.asyncio(loop_scope="session")
SUMMARY = "/api/v2/analytics/summary"
ORIGIN = "https://client.example"


def custom_window(stack: Stack) -> dict[str, str]:
    t = seed(stack.engine)["t"]
    return {"pubkey": ALICE_PK, "start": str(t - 60), "end": str(t + 3600)}


def react(stack: Stack, note_author: str, created_at: int) -> None:
    """One more reaction to Alice inside the window (a new ingest commit: a new data version)."""
    ev = _event(BOB, 7, "+", [["p", note_author]], created_at)
    IngestStore(stack.engine).ingest([RawItem(ev, "conventions-test", json.dumps(ev))])


async def test_a_browser_preflight_for_a_nip98_read_is_allowed(shared_stack: Stack) -> None:
    async with shared_stack.client(key=None) as http:
        pre = await http.options(SUMMARY, headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization,if-none-match,x-request-id"})
    assert pre.status_code == 200, pre.text
    assert pre.headers["access-control-allow-origin"] == "*"
    allowed = {h.strip().lower() for h in pre.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "if-none-match", "x-request-id", "content-type"} <= allowed
    assert "GET" in pre.headers["access-control-allow-methods"]
    assert int(pre.headers["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in pre.headers  # Authorization header, never cookies


async def test_cross_origin_answers_expose_the_headers_clients_read(shared_stack: Stack) -> None:
    url = shared_stack.base_url + SUMMARY + f"?pubkey={ALICE_PK}&window=7d"
    async with shared_stack.client(key=None) as http:
        ok = await http.get(url, headers={"Origin": ORIGIN, "Authorization": nip98(ALICE, url)})
        denied = await http.get(SUMMARY, params={"pubkey": ALICE_PK, "window": "7d"}, headers={"Origin": ORIGIN})
    assert ok.status_code == 200, ok.text
    for resp in (ok, denied):
        assert resp.headers["access-control-allow-origin"] == "*"
        exposed = {h.strip().lower() for h in resp.headers["access-control-expose-headers"].split(",")}
        assert {"etag", "location", "retry-after", "x-request-id", "content-disposition"} <= exposed
    assert denied.status_code == 401


async def test_a_custom_window_revalidates_to_304_without_computing_until_the_data_changes(stack: Stack) -> None:
    params = custom_window(stack)
    async with stack.client() as http:
        first = await http.get(SUMMARY, params=params)
        assert first.status_code == 200, first.text
        etag = first.headers["etag"]
        assert etag.startswith('W/"') and first.headers["cache-control"] == "private, no-cache"
        calls = stack.counter.calls["GetSummary"]
        again = await http.get(SUMMARY, params=params, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag and again.headers["cache-control"] == "private, no-cache"
        assert again.headers["x-request-id"]
        assert stack.counter.calls["GetSummary"] == calls  # answered from the data version alone
        listed = await http.get(SUMMARY, params=params, headers={"If-None-Match": f'"other", {etag[2:]}'})
        assert listed.status_code == 304  # a list of tags, compared weakly
        other = await http.get(SUMMARY, params={**params, "metrics": "reactions.count"},
                               headers={"If-None-Match": etag})
        assert other.status_code == 200 and other.headers["etag"] != etag  # another request, another tag

        react(stack, ALICE_PK, int(params["start"]) + 120)

        async def changed() -> Any:
            resp = await http.get(SUMMARY, params=params, headers={"If-None-Match": etag})
            return resp if resp.status_code == 200 else None

        fresh = await wait_for(changed, timeout=10)
    assert fresh.headers["etag"] != etag
    assert fresh.json()["data"]["metrics"]["reactions.count"] == first.json()["data"]["metrics"][
        "reactions.count"] + 1


async def test_a_rolling_window_answers_304_while_its_numbers_are_unchanged(stack: Stack) -> None:
    seed(stack.engine)
    params = {"pubkey": ALICE_PK, "window": "7d"}
    async with stack.client() as http:
        first = await http.get(SUMMARY, params=params)
        etag = first.headers["etag"]
        time.sleep(1.1)  # another second: another instant, the same numbers
        again = await http.get(SUMMARY, params=params, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.headers["etag"] == etag
        drill = await http.get("/api/v2/analytics/drilldown", params={**params, "dimension": "kind"})
        assert drill.status_code == 200 and drill.headers["etag"] not in (etag, "")
        assert (await http.get("/api/v2/analytics/drilldown", params={**params, "dimension": "kind"},
                               headers={"If-None-Match": drill.headers["etag"]})).status_code == 304
        react(stack, ALICE_PK, int(time.time()) - 60)

        async def changed() -> Any:
            resp = await http.get(SUMMARY, params=params, headers={"If-None-Match": etag})
            return resp if resp.status_code == 200 else None

        fresh = await wait_for(changed, timeout=10)
    assert fresh.headers["etag"] != etag


async def test_every_202_names_the_job_in_location_and_results_are_validated(stack: Stack) -> None:
    seed(stack.engine)
    async with stack.client() as http:
        created = await http.post(JOBS, json={"kind": "summary", "pubkey": ALICE_PK, "window": "7d"})
        assert created.status_code == 202, created.text
        job = created.json()["data"]["job"]
        assert created.headers["location"] == job["status_url"] == f"{JOBS}/{job['id']}"
        assert created.headers["cache-control"] == "no-store"
        pending = await http.get(f"{JOBS}/{job['id']}/result")
        assert pending.status_code == 202
        assert pending.headers["location"] == job["status_url"] and pending.headers["retry-after"] == "1"
        assert (await http.get(job["status_url"])).headers["cache-control"] == "no-store"
        await run_worker_burst(stack)
        result = await http.get(f"{JOBS}/{job['id']}/result")
        assert result.status_code == 200, result.text
        assert "immutable" in result.headers["cache-control"]
        same = await http.get(f"{JOBS}/{job['id']}/result", headers={"If-None-Match": result.headers["etag"]})
        assert same.status_code == 304 and same.content == b""
        csv = await http.get(f"{JOBS}/{job['id']}/result", params={"format": "csv"},
                             headers={"If-None-Match": result.headers["etag"]})
        assert csv.status_code == 200 and csv.headers["etag"] != result.headers["etag"]


async def test_request_duration_follows_the_http_semantic_conventions(stack: Stack) -> None:
    reader = InMemoryMetricReader()
    stack.app.state.gw.metrics = HttpMetrics(meter=MeterProvider(metric_readers=[reader]).get_meter("test"))
    async with stack.client() as http:
        await http.get(SUMMARY, params={"pubkey": ALICE_PK, "window": "7d"})
        await http.get(SUMMARY, params={"pubkey": "bad", "window": "7d"})
        await http.get(f"{JOBS}/{'0' * 32}")
        text = (await http.get("/metrics")).text
    assert ('http_server_request_duration_seconds_count{http_request_method="GET",'
            'http_response_status_code="200",http_route="/api/v2/analytics/summary"} 1.0') in text
    assert ('http_server_request_duration_seconds_count{http_request_method="GET",'
            'http_response_status_code="400",http_route="/api/v2/analytics/summary"} 1.0') in text
    assert 'http_route="/api/v2/analytics/jobs/{job_id}"' in text  # the template, never the id
    data = reader.get_metrics_data()
    assert data is not None
    found = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
             if m.name == "http.server.request.duration"]
    assert len(found) == 1 and found[0].unit == "s"
    points = {(p.attributes["http.route"], p.attributes["http.response.status_code"]): p
              for p in found[0].data.data_points}
    ok = points[("/api/v2/analytics/summary", 200)]
    assert ok.count == 1 and ok.attributes["http.request.method"] == "GET"
    assert ok.attributes["url.scheme"] == "http" and ok.attributes["network.protocol.version"] == "1.1"
    assert list(ok.explicit_bounds)[:3] == [0.005, 0.01, 0.025]
    assert ("/api/v2/analytics/summary", 400) in points and ("/api/v2/analytics/jobs/{job_id}", 404) in points
