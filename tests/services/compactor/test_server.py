"""CompactorService over real gRPC (in process, port 0), plus health and reflection."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from sqlalchemy import Engine

from canal.common.v1 import types_pb2
from canal.compactor.v1 import compactor_service_pb2 as pb
from canal.compactor.v1 import compactor_service_pb2_grpc as pb_grpc
from libs.config import Settings
from libs.metrics import FactType
from services.compactor.server import SERVICE_NAME, create_server
from tests.services.compactor.helpers import fact, insert_facts

REPO = Path(__file__).resolve().parents[3]
DAY = 86_400
BASE = 19_600 * DAY


@pytest.fixture()
async def channel(engine: Engine) -> AsyncIterator[grpc.aio.Channel]:
    settings = Settings(database_url=None, retain_facts_days=30, retain_minute_days=7, retain_hour_days=400)
    server, port = create_server("127.0.0.1:0", engine, settings)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    await server.stop(None)


async def test_get_watermarks_and_run_now_minute(engine: Engine, channel: grpc.aio.Channel) -> None:
    insert_facts(engine, [fact(1, BASE + 60 * i, FactType.REACTION, n=i, actor_id=4, sub=1) for i in range(3)])
    stub = pb_grpc.CompactorServiceStub(channel)
    before = await stub.GetWatermarks(pb.GetWatermarksRequest())
    assert [(w.tier, w.dirty_buckets) for w in before.watermarks] == [
        ("minute", 3), ("hour", 0), ("day", 0), ("day8", 0), ("day64", 0)]

    ran = await stub.RunNow(pb.RunNowRequest(tier="minute"))
    assert (ran.buckets, ran.facts_read, ran.outcome) == (3, 3, "ok") and ran.duration_seconds > 0

    after = await stub.GetWatermarks(pb.GetWatermarksRequest())
    marks = {w.tier: w for w in after.watermarks}
    assert marks["minute"].dirty_buckets == 0 and marks["hour"].dirty_buckets == 1
    assert marks["minute"].watermark > BASE and marks["hour"].watermark == BASE  # the dirty hour holds it
    assert marks["minute"].updated_at > 0


async def test_run_now_with_an_unknown_tier_is_invalid_argument_with_error_info(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.CompactorServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RunNow(pb.RunNowRequest(tier="bogus"))
    err = caught.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    info = types_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.code, info.field) == ("INVALID_TIER", "tier")
    assert "bogus" in info.message and "minute" in info.hint


async def test_get_retention_shows_configured_days_before_the_first_run(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.CompactorServiceStub(channel)
    got = await stub.GetRetention(pb.GetRetentionRequest())
    assert [(h.tier, h.keep_days, h.horizon) for h in got.horizons] == [
        ("facts", 30, 0), ("minute", 7, 0), ("hour", 400, 0), ("day", 0, 0)
    ]
    await stub.RunNow(pb.RunNowRequest(tier="retention"))
    got = await stub.GetRetention(pb.GetRetentionRequest())
    horizons = {h.tier: h.horizon for h in got.horizons}
    assert horizons["facts"] > 0 and horizons["facts"] % DAY == 0 and horizons["day"] == 0


async def test_health_is_serving_and_reflection_lists_the_service(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for reply in reflection.ServerReflectionInfo(iter([request])):
        names = {s.name for s in reply.list_services_response.service}
        assert SERVICE_NAME in names
        break


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_runs_grpc_and_the_cron_worker_and_stops_on_sigterm(db: str, redis_url: str) -> None:
    port, metrics_port = _free_port(), _free_port()
    env = os.environ | {"DATABASE_URL": db, "REDIS_URL": redis_url, "COMPACTOR_ADDR": f"127.0.0.1:{port}"}
    code = f"import asyncio; from services.compactor.server import serve; asyncio.run(serve(metrics_port={metrics_port}))"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline and status != health_pb2.HealthCheckResponse.SERVING:
            try:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
                    status = health_pb2_grpc.HealthStub(chan).Check(
                        health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1
                    ).status
            except grpc.RpcError:
                time.sleep(0.1)
        assert status == health_pb2.HealthCheckResponse.SERVING
        import urllib.request

        scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert "canal_compaction_runs_total" in scraped
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_compactor_rpcs_are_traced_like_every_other_service(engine: Engine) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from libs.telemetry import instrument_grpc_server, setup_tracing

    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        setup_tracing("canal-compactor-test", Settings(_env_file=None), processor=processor)  # type: ignore[call-arg]
    else:
        provider.add_span_processor(processor)
    server, port = create_server("127.0.0.1:0", engine, Settings(database_url=None),
                                 [instrument_grpc_server()])  # type: ignore[list-item]  # as serve() builds it
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            await pb_grpc.CompactorServiceStub(chan).GetRetention(pb.GetRetentionRequest())
    finally:
        await server.stop(None)
        processor.shutdown()
    names = [s.name for s in exporter.get_finished_spans()]
    assert "/canal.compactor.v1.CompactorService/GetRetention" in names, names
