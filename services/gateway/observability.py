"""Metrics and span attributes of the gateway's HTTP server.

Prometheus: canal's own request counts and latency per route and source, and the OpenTelemetry
HTTP server metric `http.server.request.duration` as Prometheus names it
(`http_server_request_duration_seconds{http_request_method,http_route,http_response_status_code}`).
Each app has its own registry (several apps can live in one test process); `/metrics` serves it
together with the process collectors. The same histogram goes to the OpenTelemetry meter (exported
over OTLP when `libs.telemetry.setup_metrics` installed a provider; a no-op otherwise).

Spans follow the OpenTelemetry HTTP semantic conventions: named `{method} {route template}`, with
`http.request.method`, `url.path`, `url.scheme`, `server.address`, `http.route`,
`http.response.status_code`, and `error.type` plus an error status on 5xx.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import Request
from opentelemetry import metrics
from opentelemetry.semconv.attributes import (
    client_attributes,
    error_attributes,
    http_attributes,
    network_attributes,
    server_attributes,
    url_attributes,
    user_agent_attributes,
)
from opentelemetry.semconv.metrics import http_metrics
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The buckets the HTTP semantic conventions advise for http.server.request.duration.
SEMCONV_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
STATIC_ROUTE = "/static/{path}"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


class HttpMetrics:
    """canal_http_requests_total{route,status,source}, canal_http_request_duration_seconds{route,source} and
    http.server.request.duration (see the module docstring); `meter` defaults to the global provider's."""

    def __init__(self, meter: metrics.Meter | None = None) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.requests = Counter("canal_http_requests", "HTTP requests answered, by route template, status and "
                                "the path (canonical, legacy, none) that served them",
                                ["route", "status", "source"], registry=self.registry)
        self.duration = Histogram("canal_http_request_duration_seconds", "HTTP request latency",
                                  ["route", "source"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.server_duration = Histogram(
            "http_server_request_duration_seconds", "Duration of HTTP server requests (OpenTelemetry "
            "http.server.request.duration)", ["http_request_method", "http_route", "http_response_status_code"],
            buckets=SEMCONV_BUCKETS, registry=self.registry)
        self.otel_duration = (meter or metrics.get_meter(__name__)).create_histogram(
            http_metrics.HTTP_SERVER_REQUEST_DURATION, unit="s", description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=list(SEMCONV_BUCKETS))

    def observe(self, route: str, status: int, source: str, seconds: float,
                semconv: dict[str, Any] | None = None) -> None:
        """Count one answered request; `semconv` are its metric attributes (`metric_attributes`)."""
        self.requests.labels(route, str(status), source).inc()
        self.duration.labels(route, source).observe(seconds)
        if semconv is not None:
            self.server_duration.labels(semconv[http_attributes.HTTP_REQUEST_METHOD],
                                        semconv.get(http_attributes.HTTP_ROUTE, ""),
                                        str(status)).observe(seconds)
            self.otel_duration.record(seconds, semconv)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def request_id(incoming: str | None) -> str:
    """The caller's X-Request-ID when it is a sane token, else a fresh one."""
    if incoming and _REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def request_method(request: Request) -> str:
    """The method as the conventions name it: a known method, else `_OTHER`."""
    return request.method if request.method in KNOWN_METHODS else "_OTHER"


def route_template(request: Request) -> str | None:
    """The matched route's template (`/api/v2/analytics/jobs/{job_id}`), the static mount's, or None."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return str(path)
    return STATIC_ROUTE if request.url.path.startswith("/static/") else None


def span_name(request: Request, route: str | None) -> str:
    """`{method} {route}`; the method alone without a route; `HTTP` for a method outside the known set."""
    method = request_method(request)
    if method == "_OTHER":
        return f"HTTP {route}" if route else "HTTP"
    return f"{method} {route}" if route else method


def request_attributes(request: Request) -> dict[str, Any]:
    """The span attributes known when a request arrives (semantic conventions of HTTP servers)."""
    attrs: dict[str, Any] = {
        http_attributes.HTTP_REQUEST_METHOD: request_method(request),
        url_attributes.URL_PATH: request.url.path,
        url_attributes.URL_SCHEME: request.url.scheme,
    }
    if request_method(request) == "_OTHER":
        attrs[http_attributes.HTTP_REQUEST_METHOD_ORIGINAL] = request.method
    if request.url.query:
        attrs[url_attributes.URL_QUERY] = request.url.query
    if request.url.hostname:
        attrs[server_attributes.SERVER_ADDRESS] = request.url.hostname
    port = request.url.port or {"http": 80, "https": 443}.get(request.url.scheme)
    if port:
        attrs[server_attributes.SERVER_PORT] = port
    if request.client is not None:
        attrs[client_attributes.CLIENT_ADDRESS] = request.client.host
    version = request.scope.get("http_version")
    if version:
        attrs[network_attributes.NETWORK_PROTOCOL_VERSION] = version
    agent = request.headers.get("user-agent")
    if agent:
        attrs[user_agent_attributes.USER_AGENT_ORIGINAL] = agent
    return attrs


def response_attributes(route: str | None, status: int) -> dict[str, Any]:
    """The span attributes known once the answer is made: the route template, the status, error.type on 5xx."""
    attrs: dict[str, Any] = {http_attributes.HTTP_RESPONSE_STATUS_CODE: status}
    if route:
        attrs[http_attributes.HTTP_ROUTE] = route
    if status >= 500:
        attrs[error_attributes.ERROR_TYPE] = str(status)
    return attrs


def metric_attributes(request: Request, route: str | None, status: int) -> dict[str, Any]:
    """The attributes of http.server.request.duration (the conventions' required and recommended set)."""
    attrs: dict[str, Any] = {http_attributes.HTTP_REQUEST_METHOD: request_method(request),
                             url_attributes.URL_SCHEME: request.url.scheme,
                             **response_attributes(route, status)}
    version = request.scope.get("http_version")
    if version:
        attrs[network_attributes.NETWORK_PROTOCOL_VERSION] = version
    return attrs
