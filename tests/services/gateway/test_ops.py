"""Operations and the dashboard: /healthz, /readyz, /metrics, /ui/config.json, /, /static, OpenAPI and docs."""

from __future__ import annotations

import httpx
import pytest

from services.gateway.auth import demo_secret
from tests.services.gateway.helpers import ALICE_PK, Stack, gateway_app, seed, serving
from tools.demo.generator import demo_pubkey

pytestmark = pytest.mark.asyncio(loop_scope="session")
ENDPOINTS = {
    "/api/v2/analytics/summary": {"get"}, "/api/v2/analytics/drilldown": {"get"},
    "/api/v2/analytics/estimate": {"get"}, "/api/v2/analytics/jobs": {"post"},
    "/api/v2/analytics/jobs/{job_id}": {"get", "delete"}, "/api/v2/analytics/jobs/{job_id}/result": {"get"},
    "/api/v1/analytics/summary": {"get"}, "/api/v1/analytics/drilldown": {"get"},
    "/api/v2/admin/flag": {"get", "put"}, "/ui/config.json": {"get"}, "/healthz": {"get"}, "/readyz": {"get"},
    "/metrics": {"get"}, "/api/v2/admin/tracked-keys": {"get", "post"},
    "/api/v2/admin/tracked-keys/{key}": {"delete"},
}


async def test_healthz_and_readyz(shared_stack: Stack) -> None:
    async with shared_stack.client(key=None) as http:
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"query": "ok", "postgres": "ok", "redis": "ok"}}


async def test_readyz_is_503_when_the_query_service_is_down(stack: Stack) -> None:
    await stack.stop_query()
    async with stack.client(key=None) as http:
        ready = await http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["query"] == "unavailable" and ready.json()["error"]["code"] == "UNAVAILABLE"


async def test_metrics_count_requests_per_route_status_and_source(shared_stack: Stack) -> None:
    async with shared_stack.client() as http:
        await http.get("/api/v2/analytics/summary", params={"pubkey": ALICE_PK, "window": "7d"})
        await http.get("/api/v1/analytics/summary", params={"pubkey": ALICE_PK, "window": "7d"})
        await http.get("/api/v2/analytics/summary", params={"pubkey": "bad", "window": "7d"})
        text = (await http.get("/metrics")).text
    assert ('canal_http_requests_total{route="/api/v2/analytics/summary",source="canonical",status="200"}'
            in text)
    assert 'canal_http_requests_total{route="/api/v1/analytics/summary",source="legacy",status="200"}' in text
    assert 'canal_http_requests_total{route="/api/v2/analytics/summary",source="none",status="400"}' in text
    assert ('canal_http_request_duration_seconds_bucket{le="0.025",route="/api/v2/analytics/summary",'
            'source="canonical"}' in text)


async def test_ui_config_outside_demo_mode_has_no_key(shared_stack: Stack) -> None:
    async with shared_stack.client(key=None) as http:
        config = (await http.get("/ui/config.json")).json()
    assert config == {"demo": False, "api_key": None, "default_pubkey": None, "admin": False,
                      "version": config["version"]}
    assert config["version"]


async def test_ui_config_in_demo_mode_hands_loopback_clients_a_working_admin_key(stack: Stack) -> None:
    seed(stack.engine)
    # `canal up` runs the demo relay and hands the gateway the generated network's creator
    settings = stack.settings.model_copy(update={"demo": True, "default_pubkey": demo_pubkey(stack.settings.demo_seed)})
    app = gateway_app(settings, stack.engine, stack.query_port)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, verify=False) as http:
        config = (await http.get("/ui/config.json")).json()
        again = (await http.get("/ui/config.json")).json()
        key = {"Authorization": f"Bearer {config['api_key']}"}
        flag = await http.get("/api/v2/admin/flag", headers=key)
        remote = await httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("203.0.113.9", 4000)),
                                         base_url="http://gw").get("/ui/config.json")
    assert config["demo"] is True and config["admin"] is True
    assert config["api_key"] == again["api_key"] == demo_secret(settings.canal_secret)
    assert config["default_pubkey"] == demo_pubkey(settings.demo_seed)  # the generated network's creator
    assert flag.status_code == 200
    assert remote.json()["api_key"] is None and remote.json()["admin"] is False


async def test_dashboard_and_static_files_are_served(shared_stack: Stack) -> None:
    async with shared_stack.client(key=None) as http:
        index = await http.get("/")
        script = await http.get("/static/api.js")
        missing = await http.get("/static/nope.js")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert missing.status_code == 404


async def test_openapi_documents_every_endpoint_parameter_and_response(shared_stack: Stack) -> None:
    async with shared_stack.client(key=None) as http:
        doc = (await http.get("/api/v2/openapi.json")).json()
        docs = await http.get("/api/v2/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert {p: set(ops) for p, ops in doc["paths"].items()} == ENDPOINTS
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "422" not in op["responses"], (path, method)
            for param in op.get("parameters", []):
                assert param.get("description"), (path, method, param["name"])
            if path.startswith("/api/"):
                ok = "202" if (path, method) == ("/api/v2/analytics/jobs", "post") else "200"
                assert {ok, "400", "401", "403", "429", "500", "503"} <= set(op["responses"]), (path, method)
                for code in ("400", "401", "403", "429", "500", "503"):
                    assert op["responses"][code]["content"]["application/json"]["examples"], (path, method, code)
    read = doc["paths"]["/api/v2/analytics/summary"]["get"]
    assert "202" in read["responses"] and read["security"] == [{"ApiKey": []}, {"Nip98": []}]
    assert "404" in doc["paths"]["/api/v2/analytics/jobs/{job_id}"]["get"]["responses"]
    assert set(doc["components"]["securitySchemes"]) == {"ApiKey", "Nip98"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                assert _has_example(doc, response), (path, method, status)


def _has_example(doc: dict, response: dict) -> bool:
    for media in response.get("content", {}).values():
        if media.get("example") is not None or media.get("examples"):
            return True
        schema = media.get("schema", {})
        refs = [schema.get("$ref")] + [s.get("$ref") for s in schema.get("anyOf", [])]
        for ref in filter(None, refs):
            if doc["components"]["schemas"][ref.rsplit("/", 1)[-1]].get("examples"):
                return True
    return False


async def test_estimate_reports_cost_limit_and_plan(shared_stack: Stack) -> None:
    async with shared_stack.client() as http:
        resp = await http.get("/api/v2/analytics/estimate", params={"pubkey": ALICE_PK, "window": "30d"})
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert set(data) == {"cost", "sync_limit", "async", "plan"}
    assert data["sync_limit"] == shared_stack.settings.sync_cost_limit and data["async"] is False
    assert set(data["plan"]["tiers"]) == {"day64", "day8", "day", "hour", "minute"}
    assert resp.json()["meta"]["window"]["label"] == "30d"
