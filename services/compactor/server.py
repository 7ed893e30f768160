"""The compactor process: gRPC `CompactorService` and the arq cron worker in one asyncio loop.

`create_server` builds the gRPC server (tests bind port 0 in process); `serve` runs it
together with the cron worker and the Prometheus exporter until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence

import grpc
from arq.worker import Worker
from prometheus_client import start_http_server
from sqlalchemy import Engine

from canal.compactor.v1 import compactor_service_pb2 as pb
from canal.compactor.v1 import compactor_service_pb2_grpc as pb_grpc
from libs.config import Settings, get_settings
from libs.db.engine import make_engine
from libs.rpc import CanalError, Servicer
from libs.rpc import create_server as rpc_server
from libs.telemetry import instrument_grpc_server, instrument_sqlalchemy, setup_logging, setup_tracing
from services.compactor.retention import HORIZON_TIERS, keep_days, read_horizons
from services.compactor.runs import RUN_TARGETS, read_watermarks, run_named
from services.compactor.worker import worker_options

__all__ = ["SERVICE_NAME", "CompactorService", "create_server", "main", "serve"]

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CompactorService"].full_name
GRACE_S = 10.0


class CompactorService(Servicer, pb_grpc.CompactorServiceServicer):
    """Watermarks, on-demand runs and retention horizons over the compactor's tables."""

    span_prefix = "CompactorService"

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings

    async def GetWatermarks(
        self, request: pb.GetWatermarksRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetWatermarksResponse:
        marks = await self.handle(context, "GetWatermarks", lambda: read_watermarks(self._engine))
        return pb.GetWatermarksResponse(
            watermarks=[
                pb.Watermark(
                    tier=str(m["tier"]),
                    watermark=int(m["watermark"]),
                    dirty_buckets=int(m["dirty_buckets"]),
                    updated_at=int(m["updated_at"]),
                )
                for m in marks
            ]
        )

    async def RunNow(self, request: pb.RunNowRequest, context: grpc.aio.ServicerContext) -> pb.RunNowResponse:
        target = request.tier.strip().lower()

        def run() -> pb.RunNowResponse:
            if target not in RUN_TARGETS:
                raise CanalError("INVALID_TIER", f"unknown tier {request.tier!r}",
                                 f"use one of: {', '.join(RUN_TARGETS)}", "tier")
            try:
                stats = run_named(self._engine, self._settings, target)
            except Exception as exc:
                log.exception("RunNow(%s) failed", target)
                raise CanalError("COMPACTION_FAILED", f"{target} run failed: {exc}",
                                 "the run rolled back and left a failed jobs row; retry, or check the database",
                                 status=grpc.StatusCode.INTERNAL) from None
            return pb.RunNowResponse(buckets=stats.buckets, facts_read=stats.facts_read,
                                     duration_seconds=stats.duration_s, outcome=stats.outcome)

        return await self.handle(context, "RunNow", run)

    async def GetRetention(
        self, request: pb.GetRetentionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRetentionResponse:
        published = await self.handle(context, "GetRetention", lambda: read_horizons(self._engine))
        days = keep_days(self._settings)
        return pb.GetRetentionResponse(
            horizons=[
                pb.Horizon(tier=t, keep_days=published.get(t, (days[t], 0))[0], horizon=published.get(t, (0, 0))[1])
                for t in HORIZON_TIERS
            ]
        )


def create_server(address: str, engine: Engine, settings: Settings,
                  interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> tuple[grpc.aio.Server, int]:
    """A not-yet-started grpc.aio server with CompactorService, health (SERVING) and reflection."""

    def register(server: grpc.aio.Server) -> list[str]:
        pb_grpc.add_CompactorServiceServicer_to_server(CompactorService(engine, settings), server)
        return [SERVICE_NAME]

    server, port, _ = rpc_server(address, register, interceptors)
    return server, port


async def serve(settings: Settings | None = None, metrics_port: int | None = None) -> None:
    """Run gRPC + the arq cron worker (+ Prometheus on `metrics_port`) until SIGTERM/SIGINT."""
    settings = settings or get_settings()
    if not settings.database_url or not settings.redis_url:
        raise RuntimeError("DATABASE_URL and REDIS_URL must be set (`canal up` starts embedded servers and sets them)")
    setup_tracing("canal-compactor", settings)
    engine = make_engine(settings.database_url)
    instrument_sqlalchemy(engine)
    if metrics_port is None:
        metrics_port = settings.metrics_port(2)
    if metrics_port:
        start_http_server(metrics_port, addr=settings.metrics_host)
    server, port = create_server(settings.compactor_addr, engine, settings, [instrument_grpc_server()])  # type: ignore[list-item]
    await server.start()
    worker = Worker(**worker_options(settings), ctx={"settings": settings, "engine": engine}, handle_signals=False)
    worker_task = asyncio.create_task(worker.async_run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("compactor serving gRPC on port %d, cron worker on queue %s", port, worker.queue_name)
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({stop_task, worker_task}, return_when=asyncio.FIRST_COMPLETED)
    try:
        await _shutdown(server, worker, worker_task)
    finally:
        stop_task.cancel()
        engine.dispose()


async def _shutdown(server: grpc.aio.Server, worker: Worker, worker_task: asyncio.Task[None]) -> None:
    """Stop taking work, let running jobs and RPCs finish within the grace period, then close."""
    worker.allow_pick_jobs = False
    running = [t for t in worker.tasks.values() if not t.done()]
    await asyncio.gather(server.stop(GRACE_S), asyncio.wait(running, timeout=GRACE_S) if running else asyncio.sleep(0))
    await worker.close()
    worker_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker_task


def main() -> None:
    """Entry point: `python -m services.compactor.server`."""
    setup_logging("compactor", get_settings().log_level)
    asyncio.run(serve())


if __name__ == "__main__":
    main()
