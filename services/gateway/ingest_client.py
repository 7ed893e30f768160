"""The gateway's gRPC client of the ingest process (tracked keys), created lazily inside the event loop."""

from __future__ import annotations

import grpc

from canal.ingest.v1 import ingest_service_pb2 as ipb
from canal.ingest.v1 import ingest_service_pb2_grpc as ipb_grpc
from services.gateway.errors import UpstreamError


class IngestClient:
    """TrackKey / UntrackKey / ListTrackedKeys with a deadline; UpstreamError on any failure."""

    def __init__(self, address: str, deadline_s: float) -> None:
        self.address, self.deadline_s = address, deadline_s
        self._channel: grpc.aio.Channel | None = None
        self._stub: ipb_grpc.IngestServiceStub | None = None

    @property
    def stub(self) -> ipb_grpc.IngestServiceStub:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.address)
            self._stub = ipb_grpc.IngestServiceStub(self._channel)
        return self._stub

    async def track(self, key: str, source: str) -> ipb.TrackKeyResponse:
        return await self._call(self.stub.TrackKey, ipb.TrackKeyRequest(key=key, source=source))

    async def untrack(self, key: str) -> ipb.UntrackKeyResponse:
        return await self._call(self.stub.UntrackKey, ipb.UntrackKeyRequest(key=key))

    async def tracked(self) -> ipb.ListTrackedKeysResponse:
        return await self._call(self.stub.ListTrackedKeys, ipb.ListTrackedKeysRequest())

    async def _call(self, method, request):  # type: ignore[no-untyped-def]
        try:
            # NIP-05 keys are resolved by ingest over HTTP: allow it a few seconds more
            return await method(request, timeout=self.deadline_s + 5)
        except grpc.RpcError as exc:
            raise UpstreamError.from_rpc(exc) from None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel, self._stub = None, None
