"""Tracing, logging and metrics setup shared by every process.

Tracing exports over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set and is otherwise a
no-op provider (spans still propagate context, so trace ids appear in logs).
"""

from __future__ import annotations

import logging
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanProcessor

from libs.config import Settings

_configured = False


class TraceIdFilter(logging.Filter):
    """Adds the current trace and span ids to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        record.trace_id = f"{ctx.trace_id:032x}" if ctx.is_valid else "-"
        record.span_id = f"{ctx.span_id:016x}" if ctx.is_valid else "-"
        return True


def setup_logging(service: str, level: str = "INFO") -> None:
    """Structured one-line logs with service name and trace id, to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TraceIdFilter())
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s level=%(levelname)s service={service} trace_id=%(trace_id)s span_id=%(span_id)s "
        "logger=%(name)s msg=%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def setup_tracing(service: str, settings: Settings, exporter: SpanExporter | None = None,
                  processor: SpanProcessor | None = None) -> TracerProvider:
    """Install a tracer provider for this process (OTLP when configured, or the given exporter)."""
    global _configured
    provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name or service}))
    if processor is not None:
        provider.add_span_processor(processor)
    elif exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    elif settings.otel_exporter_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_exporter_otlp_endpoint)))
    if not _configured:
        trace.set_tracer_provider(provider)
        _configured = True
    return provider


def instrument_grpc_server() -> object:
    """A server interceptor that continues the caller's trace (W3C traceparent in gRPC metadata)."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return aio_server_interceptor()


def instrument_grpc_client() -> list[object]:
    """Client interceptors that send the current trace context with every call."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def instrument_sqlalchemy(engine: object) -> None:
    """SQL statements as child spans of the request that ran them."""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # skip_dep_check: the instrumentor declares sqlalchemy < 2.1 but works with 2.1 (tests/e2e/test_tracing.py)
    SQLAlchemyInstrumentor().instrument(engine=engine, skip_dep_check=True)
