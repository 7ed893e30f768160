"""Operations and the dashboard: /healthz, /readyz, /metrics, /ui/config.json, / and /static."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable
from importlib import metadata
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import Engine, text

from services.gateway.context import gateway
from services.gateway.docs import error_response
from services.gateway.models import Health, Readiness, UiConfig

router = APIRouter(tags=["operations"])
STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
CHECK_TIMEOUT_S = 2.0


def version() -> str:
    try:
        return metadata.version("canal")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@router.get("/healthz", response_model=Health, summary="Liveness", description="The process is up.")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _select_one(engine: Engine) -> bool:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return True


async def _check(coro: Awaitable[bool]) -> str:
    try:
        ok = await asyncio.wait_for(coro, CHECK_TIMEOUT_S)
    except Exception:
        ok = False
    return "ok" if ok else "unavailable"


@router.get("/readyz", response_model=Readiness, summary="Readiness",
            description="Checks the query service (gRPC health), PostgreSQL and Redis. 503 when the query "
                        "service or PostgreSQL is down; Redis down is `degraded` (still 200): sync reads work "
                        "without it, async jobs and the cache do not.",
            responses={503: {"model": Readiness, "description": "A required dependency is down."}})
async def readyz(request: Request) -> JSONResponse:
    gw = gateway(request)
    query, postgres, redis = await asyncio.gather(
        _check(gw.client.healthy()), _check(asyncio.to_thread(_select_one, gw.engine)), _check(gw.redis.ping()))
    checks = {"query": query, "postgres": postgres, "redis": redis}
    if query == "ok" and postgres == "ok":
        return JSONResponse({"status": "ok" if redis == "ok" else "degraded", "checks": checks})
    down = ", ".join(k for k, v in checks.items() if v != "ok")
    error = {"code": "UNAVAILABLE", "message": f"not ready: {down} unavailable",
             "hint": "Check that the listed dependencies are running and reachable from the gateway.",
             "request_id": request.state.request_id}
    return JSONResponse({"status": "unavailable", "checks": checks, "error": error}, status_code=503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}, "example": (
                "# TYPE canal_http_requests_total counter\n"
                'canal_http_requests_total{route="/api/v2/analytics/summary",source="canonical",status="200"} 42.0\n')}},
                             "description": "canal_http_requests_total{route,status,source}, "
                                            "canal_http_request_duration_seconds{route,source}, the OpenTelemetry "
                                            "http_server_request_duration_seconds{http_request_method,http_route,"
                                            "http_response_status_code} and process metrics."}})
async def metrics(request: Request) -> Response:
    return Response(gateway(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/ui/config.json", response_model=UiConfig, summary="Dashboard configuration",
            description="What the dashboard needs at start. In demo mode, loopback clients also get a local API "
                        "key (read:any + admin).", responses={500: error_response(500)})
async def ui_config(request: Request) -> JSONResponse:
    gw = gateway(request)
    demo = gw.settings.demo_mode()
    host = request.client.host if request.client else None
    key = await gw.demo_key() if demo and is_loopback(host) else None
    return JSONResponse({"demo": demo, "api_key": key, "default_pubkey": await gw.default_pubkey(),
                         "admin": key is not None, "version": version()},
                        headers={"Cache-Control": "no-store"})


@router.get("/", include_in_schema=False)
async def dashboard() -> Response:
    index = STATIC_DIR / "index.html"
    if index.exists():
        return FileResponse(index, headers={"Cache-Control": "no-cache"})
    return HTMLResponse("<!doctype html><title>canal</title><p>The dashboard is not installed.</p>")
