"""gRPC plumbing shared by every service: server factory with health and reflection, rich errors, clients."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from canal.common.v1 import types_pb2

GRPC_TO_RPC_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: code_pb2.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: code_pb2.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL: code_pb2.INTERNAL,
}


class CanalError(Exception):
    """An error a caller can act on: a machine-readable code, a message and a hint."""

    status = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, code: str, message: str, hint: str = "", field: str = "",
                 status: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.hint, self.field = code, message, hint, field
        if status is not None:
            self.status = status

    def to_status(self) -> grpc.Status:
        """The google.rpc.Status carrying an ErrorInfo detail."""
        detail = any_pb2.Any()
        detail.Pack(types_pb2.ErrorInfo(code=self.code, message=self.message, hint=self.hint, field=self.field))
        return rpc_status.to_status(status_pb2.Status(
            code=GRPC_TO_RPC_CODE.get(self.status, code_pb2.UNKNOWN), message=self.message, details=[detail]))


def error_info_from(exc: grpc.RpcError) -> types_pb2.ErrorInfo | None:
    """The ErrorInfo detail of a failed call, if the server attached one."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(types_pb2.ErrorInfo.DESCRIPTOR):
            info = types_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


async def abort(context: grpc.aio.ServicerContext, err: CanalError) -> None:
    """End the call with the error's status and ErrorInfo detail."""
    await context.abort_with_status(err.to_status())  # type: ignore[attr-defined]


def create_server(
    address: str,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
) -> tuple[grpc.aio.Server, int, health_aio.HealthServicer]:
    """A grpc.aio server with our services (named by `register`), standard health checking and reflection.

    Returns (server, bound port, health servicer); bind port 0 in tests.
    """
    server = grpc.aio.server(interceptors=list(interceptors), options=[("grpc.so_reuseport", 0)])
    names = list(register(server))
    # The asyncio servicer: the sync one breaks under grpc.aio interceptors (OpenTelemetry's among them).
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *names]:
        # `set` is a coroutine that also wakes watchers; before start there are none, so fill the map directly.
        health_servicer._server_status[name] = health_pb2.HealthCheckResponse.SERVING
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME, health.SERVICE_NAME], server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind gRPC server to {address}")
    return server, port, health_servicer


def check_health(address: str, service: str = "", timeout: float = 2.0) -> bool:
    """True when the server at `address` answers SERVING to the standard health check."""
    with grpc.insecure_channel(address) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
