"""OpenTelemetry metrics setup: nothing without an endpoint or reader (instruments stay no-ops); with a
reader, the gateway's HTTP histogram records into it under the service's resource."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from libs.config import Settings
from libs.telemetry import setup_metrics
from services.gateway.observability import HttpMetrics


def test_no_meter_provider_without_an_endpoint() -> None:
    assert setup_metrics("canal-test", Settings(_env_file=None)) is None  # type: ignore[call-arg]


def test_a_reader_receives_the_http_histogram_with_the_service_name() -> None:
    reader = InMemoryMetricReader()
    provider = setup_metrics("canal-test", Settings(_env_file=None), reader=reader)  # type: ignore[call-arg]
    assert provider is not None
    HttpMetrics(meter=provider.get_meter("test")).observe(
        "/x", 200, "none", 0.01, {"http.request.method": "GET", "http.route": "/x", "http.response.status_code": 200})
    data = reader.get_metrics_data()
    assert data is not None
    (resource,) = data.resource_metrics
    assert resource.resource.attributes["service.name"] == "canal-test"
    names = [m.name for sm in resource.scope_metrics for m in sm.metrics]
    assert names == ["http.server.request.duration"]
