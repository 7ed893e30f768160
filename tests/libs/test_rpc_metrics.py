"""RPC metrics of gRPC servers: `libs.rpc.ServerMetrics` counts and times every unary call by service,
method and status code (OK, an abort's code, UNKNOWN for a crash), and the query server always has it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY, CollectorRegistry

from canal.query.v1 import query_service_pb2 as qpb
from canal.query.v1 import query_service_pb2_grpc as qpb_grpc
from libs.config import Settings
from libs.db.engine import make_engine
from libs.rpc import ServerMetrics, create_server

pytestmark = pytest.mark.asyncio(loop_scope="session")
HEALTH = "grpc.health.v1.Health"


async def _crash(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RuntimeError("boom")


def _register(server: grpc.aio.Server) -> list[str]:
    handler = grpc.unary_unary_rpc_method_handler(_crash)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.v1.Crash", {"Now": handler}),))
    return []


@pytest_asyncio.fixture(loop_scope="session")
async def measured() -> AsyncIterator[tuple[str, CollectorRegistry]]:
    registry = CollectorRegistry()
    server, port, _ = create_server("127.0.0.1:0", _register, [ServerMetrics(registry)])
    await server.start()
    try:
        yield f"127.0.0.1:{port}", registry
    finally:
        await server.stop(0)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"grpc_type": "unary", **labels}) or 0.0


async def test_calls_are_counted_and_timed_by_method_and_status_code(
        measured: tuple[str, CollectorRegistry]) -> None:
    address, registry = measured
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(2):
            await health.Check(health_pb2.HealthCheckRequest(service=""))
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        crash = channel.unary_unary("/test.v1.Crash/Now")
        with pytest.raises(grpc.aio.AioRpcError) as crashed:
            await crash(b"")
        assert crashed.value.code() == grpc.StatusCode.UNKNOWN
    check = {"grpc_service": HEALTH, "grpc_method": "Check"}
    assert _value(registry, "grpc_server_started_total", **check) == 3
    assert _value(registry, "grpc_server_handled_total", **check, grpc_code="OK") == 2
    assert _value(registry, "grpc_server_handled_total", **check, grpc_code="NOT_FOUND") == 1
    assert _value(registry, "grpc_server_handling_seconds_count", **check, grpc_code="OK") == 2
    assert _value(registry, "grpc_server_handling_seconds_sum", **check, grpc_code="OK") > 0
    assert _value(registry, "grpc_server_handled_total", grpc_service="test.v1.Crash", grpc_method="Now",
                  grpc_code="UNKNOWN") == 1


async def test_the_query_server_measures_its_rpcs_on_the_default_registry() -> None:
    """The query server registers the metrics itself (its metrics port serves the default registry): a
    GetDataVersion against an unreachable database ends UNAVAILABLE and is counted so."""
    from services.query.server import create_server as query_server

    engine = make_engine("postgresql+psycopg://canal@127.0.0.1:9/nowhere", pool_size=1)
    settings: Any = Settings(_env_file=None, database_url="postgresql+psycopg://canal@127.0.0.1:9/nowhere")  # type: ignore[call-arg]
    labels = {"grpc_type": "unary", "grpc_service": "canal.query.v1.QueryService", "grpc_method": "GetDataVersion",
              "grpc_code": "UNAVAILABLE"}
    before = REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0
    server, port = query_server("127.0.0.1:0", engine, settings)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as down:
                await qpb_grpc.QueryServiceStub(channel).GetDataVersion(qpb.GetDataVersionRequest(), timeout=10)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)
        engine.dispose()
    assert (REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0) == before + 1
    assert (REGISTRY.get_sample_value("grpc_server_handling_seconds_count", labels) or 0.0) >= 1
