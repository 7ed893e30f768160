"""One OpenTelemetry trace from the gateway through gRPC into the query service and SQL, and into arq jobs.

The gateway app (uvicorn), the query gRPC server and an arq worker run in this process with real
sockets, a real PostgreSQL and a real Redis, wired exactly as their `serve` functions wire them
(`default_channel_factory`, `instrument_grpc_server`, `instrument_sqlalchemy`, the worker's
instrumented channel). Spans are collected with the SDK's in-memory exporter.

A tracer provider can be set once per process: the module fixture installs one through
`libs.telemetry.setup_tracing`, or, when an SDK provider is already installed, adds its processor to it.

Where a link of the chain is missing in the services, the test reports it as an expected failure
naming the patch (see docs/reports/tracing.md); once the patch lands the full chain is asserted.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from arq import Worker
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from libs.config import Settings
from libs.db.engine import make_engine
from libs.telemetry import instrument_grpc_server, instrument_sqlalchemy, setup_tracing
from services.gateway.app import create_app, default_channel_factory
from services.gateway.auth import create_key
from services.query.server import create_server
from services.query.worker import worker_options
from tests.services.gateway.helpers import ALICE_PK, seed, serving
from tests.services.gateway.helpers import test_settings as gateway_settings

pytestmark = pytest.mark.asyncio(loop_scope="session")
SUMMARY_RPC = "/canal.query.v1.QueryService/GetSummary"
GATEWAY_PATCH = ("the gateway opens no HTTP server span, so its gRPC calls start new traces: open one per request "
                 "in services/gateway/app.py `observe` (propagate.extract(request.headers), SpanKind.SERVER, "
                 "attributes http.route, http.response.status_code, canal.request_id)")
TWO_TRACES_PATCH = ("each request makes two SERVER spans in two traces: FastAPI's native telemetry span (the ASGI "
                    "entry) and the `observe` span, which starts a new root from extract(headers); create_app must "
                    "pass FastAPI(telemetry={'tracing': False}) (or `observe` must annotate the current span)")
SQL_PATCH = ("no SQL spans: SQLAlchemyInstrumentor refuses SQLAlchemy 2.1 (its instruments range is < 2.1.0); "
             "libs/telemetry.instrument_sqlalchemy must call instrument(engine=engine, skip_dep_check=True)")
JOB_PATCH = ("the job's spans start a new trace: JobsService.CreateJob must store the W3C traceparent "
             "(propagate.inject) in the job's params and run_query_job must extract and attach it")


class _Switch(SimpleSpanProcessor):
    """Exports only while this module runs (an SDK provider cannot drop a processor)."""

    enabled = True

    def on_end(self, span: ReadableSpan) -> None:
        if self.enabled:
            super().on_end(span)


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    processor = _Switch(exporter)
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        current.add_span_processor(processor)
    else:
        provider = setup_tracing("canal-e2e", Settings(_env_file=None), processor=processor)  # type: ignore[call-arg]
        current = trace.get_tracer_provider()
        if not isinstance(current, TracerProvider):
            pytest.fail("no SDK tracer provider could be installed in this process")
        if current is not provider:  # setup_tracing had already installed another one
            current.add_span_processor(processor)
    yield exporter
    processor.enabled = False
    exporter.clear()


@dataclass
class Traced:
    settings: Settings
    base_url: str
    key: str
    engine: Any


@pytest_asyncio.fixture(loop_scope="session")
async def traced(db: str, redis_url: str, spans: InMemorySpanExporter) -> AsyncIterator[Traced]:
    """Query server + gateway wired as in production (instrumented channel, server interceptor, SQL spans)."""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    settings = gateway_settings(db, redis_url)
    query_engine = make_engine(db, pool_size=4)
    gateway_engine = make_engine(db, pool_size=2)
    instrumentor = SQLAlchemyInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:  # a singleton: instrumented earlier in this process
        instrumentor.uninstrument()
    instrument_sqlalchemy(query_engine)
    server, port = create_server("127.0.0.1:0", query_engine, settings, [instrument_grpc_server()])  # type: ignore[list-item]
    await server.start()
    settings.query_addr = f"127.0.0.1:{port}"
    app = create_app(settings, query_channel_factory=default_channel_factory(settings), engine=gateway_engine)
    try:
        async with serving(app) as base_url:
            seed(query_engine)
            key = create_key(query_engine, "tracing", ["read:any"])[1]
            spans.clear()
            yield Traced(settings, base_url, key, query_engine)
    finally:
        await server.stop(0)
        with contextlib.suppress(Exception):
            instrumentor.uninstrument()
        query_engine.dispose()
        gateway_engine.dispose()


def _by_id(found: list[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in found}


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _is_sql(span: ReadableSpan) -> bool:
    attrs = span.attributes or {}
    return any(k in attrs for k in ("db.statement", "db.query.text", "db.system", "db.system.name"))


def _statement(span: ReadableSpan) -> str:
    attrs = span.attributes or {}
    return str(attrs.get("db.statement") or attrs.get("db.query.text") or "")


async def test_one_trace_from_the_gateway_through_grpc_into_sql(traced: Traced, spans: InMemorySpanExporter) -> None:
    request_id = "trace-e2e-0000000000000001"
    async with httpx.AsyncClient(base_url=traced.base_url, timeout=30) as http:
        resp = await http.get("/api/v2/analytics/summary", params={"pubkey": ALICE_PK, "window": "24h"},
                              headers={"Authorization": f"Bearer {traced.key}", "X-Request-ID": request_id})
    assert resp.status_code == 200, resp.text
    assert resp.json()["meta"]["request_id"] == request_id
    found = list(spans.get_finished_spans())
    ids = _by_id(found)

    # gRPC client span (gateway) -> gRPC server span (query) -> the handler's span -> SQL
    clients = [s for s in found if s.name == SUMMARY_RPC and s.kind == SpanKind.CLIENT]
    servers = [s for s in found if s.name == SUMMARY_RPC and s.kind == SpanKind.SERVER]
    assert len(clients) == 1 and len(servers) == 1, [(s.name, s.kind) for s in found]
    client, server = clients[0], servers[0]
    assert _parent(server) == client.context.span_id
    assert server.context.trace_id == client.context.trace_id
    handler = [s for s in found if s.name == "QueryService.GetSummary" and _parent(s) == server.context.span_id]
    assert len(handler) == 1
    sql = [s for s in found if _is_sql(s) and _parent(s) == handler[0].context.span_id]

    missing = []
    if not sql:
        missing.append(SQL_PATCH)
    gateway = ids.get(_parent(client) or -1)
    if gateway is None:
        missing.append(GATEWAY_PATCH)
    http_servers = [s for s in found if s.kind == SpanKind.SERVER
                    and (s.attributes or {}).get("http.route") == "/api/v2/analytics/summary"]
    if len({s.context.trace_id for s in http_servers}) > 1:
        missing.append(TWO_TRACES_PATCH)
    if missing:
        pytest.xfail("; ".join(missing))
    assert gateway is not None
    assert gateway.kind == SpanKind.SERVER and gateway.parent is None
    assert (gateway.attributes or {}).get("canal.request_id") == request_id
    assert any("facts" in _statement(s) or "aggregates" in _statement(s) for s in sql), [_statement(s) for s in sql]
    chain = [gateway, client, server, handler[0], sql[0]]
    assert {s.context.trace_id for s in chain} == {gateway.context.trace_id}
    # every span of the request (data version, summary, SQL) is in the gateway's trace
    assert {s.context.trace_id for s in found if s.name.startswith("/canal.")} == {gateway.context.trace_id}


async def test_the_async_job_runs_in_the_trace_of_the_request_that_created_it(
        traced: Traced, spans: InMemorySpanExporter) -> None:
    async with httpx.AsyncClient(base_url=traced.base_url, timeout=30,
                                 headers={"Authorization": f"Bearer {traced.key}"}) as http:
        created = await http.post("/api/v2/analytics/jobs", json={"kind": "summary", "pubkey": ALICE_PK,
                                                                   "window": "7d"})
        assert created.status_code == 202, created.text
        job_id = created.json()["data"]["job"]["id"]
        request_spans = list(spans.get_finished_spans())
        spans.clear()
        worker = Worker(**{**worker_options(traced.settings), "burst": True, "handle_signals": False,
                           "poll_delay": 0.05})
        try:
            await worker.async_run()
        finally:
            await worker.close()
        done = await http.get(f"/api/v2/analytics/jobs/{job_id}")
    assert done.json()["data"]["state"] == "succeeded", done.text
    create = [s for s in request_spans if s.name == "/canal.jobs.v1.JobsService/CreateJob" and s.kind == SpanKind.CLIENT]
    assert len(create) == 1
    request_trace = create[0].context.trace_id
    job_spans = list(spans.get_finished_spans())
    job_calls = [s for s in job_spans if s.kind == SpanKind.CLIENT and s.name in (
        "/canal.query.v1.QueryService/ExplainPlan", SUMMARY_RPC)]
    assert {s.name for s in job_calls} == {"/canal.query.v1.QueryService/ExplainPlan", SUMMARY_RPC}
    if {s.context.trace_id for s in job_calls} != {request_trace}:
        pytest.xfail(JOB_PATCH)
    served = [s for s in job_spans if s.name == SUMMARY_RPC and s.kind == SpanKind.SERVER]
    assert served and all(s.context.trace_id == request_trace for s in served)


async def test_the_gateway_span_follows_the_http_semantic_conventions(
        traced: Traced, spans: InMemorySpanExporter) -> None:
    port = int(traced.base_url.rsplit(":", 1)[1])
    async with httpx.AsyncClient(base_url=traced.base_url, timeout=30,
                                 headers={"Authorization": f"Bearer {traced.key}", "User-Agent": "semconv-test"}) as http:
        assert (await http.get("/api/v2/analytics/summary", params={"pubkey": ALICE_PK, "window": "7d"})).status_code == 200
        assert (await http.get(f"/api/v2/analytics/jobs/{'0' * 32}")).status_code == 404
        assert (await http.get("/no/such/route")).status_code == 404
    servers = {s.name: s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER and s.parent is None}
    summary = servers["GET /api/v2/analytics/summary"]
    attrs = dict(summary.attributes or {})
    assert attrs["http.request.method"] == "GET" and attrs["http.route"] == "/api/v2/analytics/summary"
    assert attrs["url.path"] == "/api/v2/analytics/summary" and attrs["url.scheme"] == "http"
    assert attrs["url.query"].startswith("pubkey=") and attrs["http.response.status_code"] == 200
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == port
    assert attrs["client.address"] == "127.0.0.1" and attrs["network.protocol.version"] == "1.1"
    assert attrs["user_agent.original"] == "semconv-test" and "error.type" not in attrs
    job = servers["GET /api/v2/analytics/jobs/{job_id}"]  # the template, never the id
    assert (job.attributes or {})["http.response.status_code"] == 404
    assert job.status.status_code == trace.StatusCode.UNSET  # a 4xx is the client's, not a server error
    unmatched = servers["GET"]  # no route: the method alone, and no http.route
    assert "http.route" not in (unmatched.attributes or {})
