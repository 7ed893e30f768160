"""Tracing, logging and metrics setup shared by every process.

Tracing exports over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set and is otherwise a
no-op provider (spans still propagate context, so trace ids appear in logs). OpenTelemetry
metrics (the gateway's `http.server.request.duration`) go to the same endpoint when it is set;
Prometheus scrapes the same figures from each process's metrics port either way.
"""

from __future__ import annotations

import logging
import sys

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanProcessor

from libs.config import Settings

_configured = False
_metrics_configured = False
METRICS_EXPORT_INTERVAL_MS = 15_000


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


def setup_metrics(service: str, settings: Settings, reader: MetricReader | None = None) -> MeterProvider | None:
    """Install a meter provider exporting over OTLP (or to `reader`); None when neither is configured
    (instruments then stay no-ops)."""
    global _metrics_configured
    if reader is None and not settings.otel_exporter_otlp_endpoint:
        return None
    if reader is None:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=settings.otel_exporter_otlp_endpoint),
                                               export_interval_millis=METRICS_EXPORT_INTERVAL_MS)
    provider = MeterProvider(resource=Resource.create({"service.name": settings.otel_service_name or service}),
                             metric_readers=[reader])
    if not _metrics_configured:
        metrics.set_meter_provider(provider)
        _metrics_configured = True
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
