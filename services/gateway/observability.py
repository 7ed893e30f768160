"""Prometheus metrics of the gateway: request counts and latency per route and source.

Each app has its own registry (several apps can live in one test process); `/metrics`
serves it together with the process collectors.
"""

from __future__ import annotations

import re
import uuid

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


class HttpMetrics:
    """canal_http_requests_total{route,status,source} and canal_http_request_duration_seconds{route,source}."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.requests = Counter("canal_http_requests", "HTTP requests answered, by route template, status and "
                                "the path (canonical, legacy, none) that served them",
                                ["route", "status", "source"], registry=self.registry)
        self.duration = Histogram("canal_http_request_duration_seconds", "HTTP request latency",
                                  ["route", "source"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def observe(self, route: str, status: int, source: str, seconds: float) -> None:
        self.requests.labels(route, str(status), source).inc()
        self.duration.labels(route, source).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def request_id(incoming: str | None) -> str:
    """The caller's X-Request-ID when it is a sane token, else a fresh one."""
    if incoming and _REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex
