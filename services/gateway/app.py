"""The gateway's FastAPI app: REST /api/v2 (+ legacy /api/v1) over the query service's gRPC API."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from libs.config import Settings
from libs.db.engine import make_engine
from services.gateway.context import Gateway
from services.gateway.conventions import install_cors
from services.gateway.docs import SECURITY_SCHEMES
from services.gateway.errors import INTERNAL_HINT, ApiError, unavailable, validation_error
from services.gateway.observability import (
    metric_attributes,
    request_attributes,
    request_id,
    response_attributes,
    route_template,
    span_name,
)
from services.gateway.routes import admin, analytics, jobs, ops, tracking

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
ChannelFactory = Callable[[], grpc.aio.Channel]
DESCRIPTION = """Analytics of Nostr pubkeys over windows (spec: API.md, METRICS.md).

Every 200/202 answer is the envelope `{data, meta}`; every error is
`{"error": {code, message, hint, request_id}}`. Reads need `Authorization: Bearer <api key>`
or NIP-98 (`Authorization: Nostr <base64 event>`)."""


def default_channel_factory(settings: Settings) -> ChannelFactory:
    """An instrumented channel to QUERY_ADDR (OpenTelemetry context on every call), each call balanced
    over every query pod the address resolves to (a headless Service in Kubernetes)."""
    from libs.rpc import balanced_channel
    from libs.telemetry import instrument_grpc_client

    def factory() -> grpc.aio.Channel:
        return balanced_channel(settings.query_addr, interceptors=instrument_grpc_client())  # type: ignore[arg-type]

    return factory


def create_app(settings: Settings, query_channel_factory: ChannelFactory | None = None,
               engine: Engine | None = None) -> FastAPI:
    """The app; `query_channel_factory` makes the gRPC channel (tests pass their own)."""
    if engine is None:
        if not settings.database_url:
            raise ValueError("DATABASE_URL is required by the gateway (API keys, feature flag)")
        engine = make_engine(settings.database_url)
    gw = Gateway.build(settings, engine, query_channel_factory or default_channel_factory(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await gw.close()

    app = FastAPI(title="canal analytics API", version="2.0.0", description=DESCRIPTION,
                  openapi_url="/api/v2/openapi.json", docs_url="/api/v2/docs", redoc_url=None, lifespan=lifespan,
                  telemetry={"tracing": False})  # `observe` opens the one server span
    app.state.gw = gw
    for module in (analytics, jobs, admin, tracking, ops):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=ops.STATIC_DIR, check_dir=False), name="static")
    _install_error_handlers(app)
    _install_observer(app, gw)
    install_cors(app)  # outermost, so every answer (a 500 from `observe` too) carries the CORS headers
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(request, exc)

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(request, validation_error(exc.errors()))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "INVALID_REQUEST")
        hint = "See /api/v2/docs for the routes and methods." if exc.status_code in (404, 405) else ""
        err = ApiError(exc.status_code, code, str(exc.detail)[:200], hint, dict(exc.headers or {}))
        return error_response(request, err)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)


def error_response(request: Request, err: ApiError) -> JSONResponse:
    rid = getattr(request.state, "request_id", "") or request_id(None)
    return JSONResponse(err.body(rid), status_code=err.status, headers=err.headers)


def _install_observer(app: FastAPI, gw: Gateway) -> None:
    """Request id, one server span and metrics per request (OpenTelemetry HTTP semantic conventions, plus
    canal's route/status/source counts), and 500s that never leak internals."""

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        rid = request_id(request.headers.get("x-request-id"))
        request.state.request_id = rid
        request.state.source = "none"
        started = time.perf_counter()
        # One server span per request: gRPC calls below are its children, and logs carry its trace id.
        with tracer.start_as_current_span(span_name(request, None), context=extract(dict(request.headers)),
                                          kind=SpanKind.SERVER, attributes=request_attributes(request)) as span:
            span.set_attribute("canal.request_id", rid)
            try:
                response = await call_next(request)
            except OperationalError:  # PostgreSQL unreachable (API keys, flag): a retry will do
                log.warning("request_id=%s database unavailable", rid, exc_info=True)
                down = unavailable("the database is unavailable", "Retry in a few seconds.")
                response = JSONResponse(down.body(rid), status_code=503, headers=down.headers)
            except Exception:
                log.exception("request_id=%s unhandled error on %s %s", rid, request.method, request.url.path)
                response = JSONResponse(ApiError(500, "INTERNAL", "the request failed unexpectedly",
                                                 INTERNAL_HINT).body(rid), status_code=500)
            route = route_template(request)
            source = getattr(request.state, "source", "none")
            span.update_name(span_name(request, route))
            span.set_attributes(response_attributes(route, response.status_code))
            span.set_attribute("canal.source", source)
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
        gw.metrics.observe(route or "unmatched", response.status_code, source, time.perf_counter() - started,
                           metric_attributes(request, route, response.status_code))
        response.headers["X-Request-ID"] = rid
        return response


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated document, with our 400 instead of FastAPI's 422 and the two auth schemes."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes,
                      tags=[{"name": "analytics", "description": "Summaries, drilldowns and cost estimates."},
                            {"name": "jobs", "description": "Async jobs for heavy requests."},
                            {"name": "admin", "description": "Feature flag (admin scope)."},
                            {"name": "operations", "description": "Health, readiness, metrics, dashboard."}])
    for path in doc.get("paths", {}).values():
        for op in path.values():
            op.get("responses", {}).pop("422", None)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    doc["components"]["securitySchemes"] = SECURITY_SCHEMES
    app.openapi_schema = doc
    return doc
