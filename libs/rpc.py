"""gRPC plumbing shared by every service: server factory with health and reflection, rich errors, clients."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from opentelemetry import trace
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from sqlalchemy.exc import OperationalError

from canal.common.v1 import types_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
T = TypeVar("T")

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


class Servicer:
    """The base of every gRPC servicer: `handle` owns the span, the deadline, the thread hand-off and the
    error mapping, so a handler writes only its work.

    A handler raises `CanalError` for anything a caller can act on; `translate` maps a service's own
    exceptions to one (the query service's planning errors); a database outage ends UNAVAILABLE and
    anything else INTERNAL, logged, with no internals in the answer.
    """

    #: Span names are `<span_prefix>.<method>`.
    span_prefix = "Service"

    def translate(self, exc: Exception) -> CanalError | None:
        """A service's own exception as a CanalError (None: not one of ours)."""
        return None

    @staticmethod
    def deadline(context: grpc.aio.ServicerContext, cap: float | None = None) -> float | None:
        """Seconds left for the call (the client's deadline), at most `cap`; None when neither bounds it."""
        remaining = context.time_remaining()
        if remaining is None:
            return cap
        return remaining if cap is None else min(remaining, cap)

    async def handle(self, context: grpc.aio.ServicerContext, name: str, work: Callable[[], T] | Awaitable[T]) -> T:
        """Run `work` (a blocking callable, in a worker thread; or an awaitable) inside the method's span,
        ending the call with the mapped error status when it fails."""
        with tracer.start_as_current_span(f"{self.span_prefix}.{name}"):
            try:
                if inspect.isawaitable(work):
                    return await work
                return await asyncio.to_thread(work)  # type: ignore[arg-type]
            except grpc.aio.AbortError:
                raise
            except CanalError as err:
                await abort(context, err)
            except OperationalError:
                log.warning("%s.%s: database unavailable", self.span_prefix, name, exc_info=True)
                await abort(context, CanalError("UNAVAILABLE", "the service's database is unavailable",
                                                "Retry in a few seconds.", status=grpc.StatusCode.UNAVAILABLE))
            except Exception as exc:
                mapped = self.translate(exc)
                if mapped is not None:
                    await abort(context, mapped)
                log.exception("%s.%s failed", self.span_prefix, name)
                await abort(context, CanalError("INTERNAL", "the request failed unexpectedly",
                                                "Retry; if it persists, report the request id.",
                                                status=grpc.StatusCode.INTERNAL))
        raise AssertionError("unreachable: abort raises")


# Server latency buckets: the query service answers in milliseconds; jobs and bad days take seconds.
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics(grpc.aio.ServerInterceptor):
    """Prometheus RPC metrics of a server, named as go-grpc-prometheus names them (what gRPC dashboards and
    alerts expect): `grpc_server_handled_total` and `grpc_server_handling_seconds` by service, method and
    status code, and `grpc_server_started_total` by service and method.

    Unary calls are timed from the handler's start to its status (an abort included); streaming calls
    are counted as started only. Put it first in the interceptor list, so the time of the others counts.
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter("grpc_server_started", "RPCs started on the server", labels, registry=registry)
        self.handled = Counter("grpc_server_handled", "RPCs completed on the server, by status code",
                               [*labels, "grpc_code"], registry=registry)
        self.seconds = Histogram("grpc_server_handling_seconds", "Time from an RPC's start to its status",
                                 [*labels, "grpc_code"], buckets=RPC_BUCKETS, registry=registry)

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        service, _, method = details.method.lstrip("/").rpartition("/")  # type: ignore[attr-defined]
        if handler.unary_unary is None:
            kind = "bidi_stream" if handler.request_streaming and handler.response_streaming else (
                "client_stream" if handler.request_streaming else "server_stream")
            self.started.labels(kind, service, method).inc()
            return handler
        inner = handler.unary_unary

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.started.labels("unary", service, method).inc()
            began = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await inner(request, context)
                code = _status_code(context.code()) or grpc.StatusCode.OK
                return response
            except grpc.aio.AbortError:
                code = _status_code(context.code()) or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                values = ("unary", service, method, code.name)
                self.handled.labels(*values).inc()
                self.seconds.labels(*values).observe(time.perf_counter() - began)

        return grpc.unary_unary_rpc_method_handler(timed, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


def _status_code(value: Any) -> grpc.StatusCode | None:
    """The context's code as a StatusCode (grpc.aio reports it as an int or an enum, or None when unset)."""
    if value is None or isinstance(value, grpc.StatusCode):
        return value
    return next((c for c in grpc.StatusCode if c.value[0] == value), None)


@functools.cache
def server_metrics() -> ServerMetrics:
    """The process's ServerMetrics on the default Prometheus registry (what `start_http_server` serves)."""
    return ServerMetrics()


def create_server(
    address: str,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
    options: Sequence[tuple[str, Any]] = (),
) -> tuple[grpc.aio.Server, int, health_aio.HealthServicer]:
    """A grpc.aio server with our services (named by `register`), standard health checking and reflection.

    `options` are extra gRPC channel arguments (e.g. `RECYCLED_CONNECTIONS`).
    Returns (server, bound port, health servicer); bind port 0 in tests.
    """
    server = grpc.aio.server(interceptors=list(interceptors), options=[("grpc.so_reuseport", 0), *options])
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


# Per-call balancing across the pods behind one DNS name. A client resolves the name to every
# address (a headless Kubernetes Service returns one A record per ready pod) and round_robin spreads
# calls over a connection to each; pick_first, gRPC's default, would send every call of a long-lived
# channel to one pod. Keepalive notices a pod that vanished without closing its connections.
BALANCED_CLIENT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
    ("grpc.keepalive_time_ms", 30_000),
)
# Server side of the same: a connection is closed (GOAWAY, in-flight calls get the grace to finish)
# after 5 minutes, so clients re-resolve the name and find pods an autoscaler added since.
RECYCLED_CONNECTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.max_connection_age_grace_ms", 60_000),
)


def balanced_channel(address: str, interceptors: Sequence[Any] = (),
                     options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """An insecure grpc.aio channel that balances each call across every address `address` resolves to."""
    return grpc.aio.insecure_channel(address, options=[*BALANCED_CLIENT_OPTIONS, *options],
                                     interceptors=list(interceptors) or None)


def check_health(address: str, service: str = "", timeout: float = 2.0) -> bool:
    """True when the server at `address` answers SERVING to the standard health check."""
    with grpc.insecure_channel(address) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
