"""The gateway's gRPC client of the query process (QueryService and JobsService), with deadlines.

Every call carries a deadline and every failure comes out as an `UpstreamError` holding only
the status and the server's ErrorInfo, so no transport text (hosts, ports) can reach a client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from canal.jobs.v1 import jobs_service_pb2_grpc as jpb_grpc
from canal.query.v1 import query_service_pb2 as qpb
from canal.query.v1 import query_service_pb2_grpc as qpb_grpc
from services.gateway.errors import UpstreamError

T = TypeVar("T")
ChannelFactory = Callable[[], grpc.aio.Channel]
QUERY_SERVICE = "canal.query.v1.QueryService"


class QueryClient:
    """Stubs on one lazily created channel (created inside the running event loop)."""

    def __init__(self, channel_factory: ChannelFactory, deadline_s: float) -> None:
        self._factory = channel_factory
        self.deadline_s = deadline_s
        self._channel: grpc.aio.Channel | None = None
        self._query: qpb_grpc.QueryServiceStub | None = None
        self._jobs: jpb_grpc.JobsServiceStub | None = None

    def _ensure(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = self._factory()
            self._query = qpb_grpc.QueryServiceStub(self._channel)
            self._jobs = jpb_grpc.JobsServiceStub(self._channel)
        return self._channel

    @property
    def query(self) -> qpb_grpc.QueryServiceStub:
        self._ensure()
        assert self._query is not None
        return self._query

    @property
    def jobs(self) -> jpb_grpc.JobsServiceStub:
        self._ensure()
        assert self._jobs is not None
        return self._jobs

    async def call(self, method: Callable[..., Awaitable[T]], request: Any, timeout: float | None = None) -> T:
        """One unary call with a deadline; UpstreamError on any failure."""
        try:
            return await method(request, timeout=timeout or self.deadline_s)
        except grpc.RpcError as exc:
            raise UpstreamError.from_rpc(exc) from None

    async def data_version(self) -> str:
        resp = await self.call(self.query.GetDataVersion, qpb.GetDataVersionRequest())
        return resp.version

    async def healthy(self, timeout: float = 1.5) -> bool:
        """The standard gRPC health check of the QueryService."""
        stub = health_pb2_grpc.HealthStub(self._ensure())
        try:
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=QUERY_SERVICE), timeout=timeout)
        except grpc.RpcError:
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None


class DataVersions:
    """The data version, fetched at most once per `ttl` seconds however many requests ask at once."""

    def __init__(self, fetch: Callable[[], Awaitable[str]], ttl: float = 1.0) -> None:
        self._fetch = fetch
        self.ttl = ttl
        self._value: str | None = None
        self._at = 0.0
        self._task: asyncio.Task[str] | None = None

    async def get(self) -> str:
        if self._value is not None and time.monotonic() - self._at < self.ttl:
            return self._value
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._refresh())
            self._task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(self._task)

    def invalidate(self) -> None:
        """Forget the version (this gateway just changed something answers depend on)."""
        self._value = None

    async def _refresh(self) -> str:
        value = await self._fetch()
        self._value, self._at = value, time.monotonic()
        return value
