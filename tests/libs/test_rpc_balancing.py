"""Per-call balancing: a channel from `libs.rpc.balanced_channel` spreads the calls of one long-lived
channel over every address its target resolves to (what a headless Service gives the gateway and the
worker), where gRPC's default pick_first sends them all to one server; and the query server recycles
connections so clients re-resolve."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.rpc import RECYCLED_CONNECTIONS, balanced_channel, create_server

on_session_loop = pytest.mark.asyncio(loop_scope="session")
CALLS = 40


class CountCalls(grpc.aio.ServerInterceptor):
    """Counts the calls one server receives under its name."""

    def __init__(self, name: str, seen: Counter[str]) -> None:
        self.name, self.seen = name, seen

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        self.seen[self.name] += 1
        return await continuation(details)


@pytest_asyncio.fixture(loop_scope="session")
async def two_servers() -> AsyncIterator[tuple[str, Counter[str]]]:
    """Two servers on 127.0.0.1 and a target that resolves to both (as DNS does for a headless Service)."""
    seen: Counter[str] = Counter()
    servers, ports = [], []
    for name in ("pod-a", "pod-b"):
        server, port, _ = create_server("127.0.0.1:0", lambda _s: [], [CountCalls(name, seen)])
        await server.start()
        servers.append(server)
        ports.append(port)
    yield "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports), seen
    for server in servers:
        await server.stop(grace=None)


async def _check_many(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for _ in range(CALLS):
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)


@on_session_loop
async def test_balanced_channel_spreads_calls_over_every_address(two_servers: tuple[str, Counter[str]]) -> None:
    target, seen = two_servers
    channel = balanced_channel(target)
    try:
        await _check_many(channel)
    finally:
        await channel.close()
    assert set(seen) == {"pod-a", "pod-b"}
    assert abs(seen["pod-a"] - seen["pod-b"]) <= 2, seen


@on_session_loop
async def test_a_default_channel_would_send_every_call_to_one_server(two_servers: tuple[str, Counter[str]]) -> None:
    target, seen = two_servers
    async with grpc.aio.insecure_channel(target) as channel:
        await _check_many(channel)
    assert len(seen) == 1 and sum(seen.values()) == CALLS, seen


def test_query_server_recycles_connections_so_clients_re_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    from libs.config import Settings
    from services.query import server as query_server

    passed: dict[str, Any] = {}

    def fake_rpc_server(address: str, register: Any, interceptors: Any, options: Any = ()) -> tuple[Any, int, Any]:
        passed.update(options)
        return None, 0, None

    monkeypatch.setattr(query_server, "rpc_server", fake_rpc_server)
    query_server.create_server("127.0.0.1:0", None, Settings(_env_file=None))  # type: ignore[arg-type, call-arg]
    assert passed == dict(RECYCLED_CONNECTIONS)
    options = dict(RECYCLED_CONNECTIONS)
    # Short enough that a scaled-up pod gets calls within minutes, with a grace longer than the
    # longest call (an async job's summary: QUERY_DEADLINE_S * 6 + 5 = 35 s by default).
    assert options["grpc.max_connection_age_ms"] <= 10 * 60_000
    assert options["grpc.max_connection_age_grace_ms"] >= 35_000
