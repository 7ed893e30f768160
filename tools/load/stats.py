"""Samples of one load run and what the report computes from them (percentiles, rates, histogram deltas)."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

FAILURE_STATUSES = range(500, 600)


@dataclass(frozen=True)
class Sample:
    """One request as the client saw it."""

    scenario: str
    route: str  # the gateway's route template, e.g. /api/v2/analytics/summary
    status: int  # HTTP status; 0 when no answer came (timeout, connection error)
    ms: float  # client-side latency, request sent to answer read
    at: float  # seconds since the load phase began
    cache: str = ""  # meta.cache: hit | miss | bypass | stale ("" when no envelope)
    source: str = ""  # meta.source
    lag_s: int | None = None  # meta.freshness.lag_seconds
    error: str = ""  # the exception type when status == 0

    @property
    def failed(self) -> bool:
        """A failure as docs/slo.md counts it: a 5xx answer or no answer (client-side timeout or error)."""
        return self.status == 0 or self.status in FAILURE_STATUSES

    @property
    def label(self) -> str:
        """The SLO row this sample is measured against: `route [cached]` for cache hits, else the route."""
        return f"{self.route} [cached]" if self.cache == "hit" else self.route


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in ms, rounded."""
    out: dict[str, float | None] = {}
    for name, q in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99), ("max_ms", 100)):
        v = percentile(values, q)
        out[name] = None if v is None else round(v, 1)
    return out


def by_label(samples: Iterable[Sample]) -> dict[str, dict[str, Any]]:
    """Per SLO label (route, route [cached]): count, statuses, latency percentiles of answered requests."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.label].append(s)
    out = {}
    for label, group in sorted(groups.items()):
        answered = [s.ms for s in group if s.status]
        statuses: dict[str, int] = defaultdict(int)
        for s in group:
            statuses[str(s.status) if s.status else f"no answer ({s.error or 'error'})"] += 1
        out[label] = {"requests": len(group), "statuses": dict(sorted(statuses.items())), **latency(answered)}
    return out


def by_route(samples: Iterable[Sample], seconds: float) -> dict[str, dict[str, Any]]:
    """Per route (all cache states): requests, throughput, failures, error rate (percent), cache shares."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.route].append(s)
    out = {}
    for route, group in sorted(groups.items()):
        failures = sum(s.failed for s in group)
        caches: dict[str, int] = defaultdict(int)
        for s in group:
            if s.cache:
                caches[s.cache] += 1
        with_cache = sum(caches.values())
        out[route] = {
            "requests": len(group),
            "throughput_rps": round(len(group) / seconds, 1) if seconds > 0 else None,
            "failures": failures,
            "error_rate_percent": round(100 * failures / len(group), 3) if group else 0.0,
            "rate_limited": sum(s.status == 429 for s in group),
            "cache": dict(sorted(caches.items())),
            "cache_hit_rate_percent": round(100 * caches.get("hit", 0) / with_cache, 1) if with_cache else None,
        }
    return out


# ---------------------------------------------------------------- server-side latency from /metrics

_BUCKET = re.compile(r'^canal_http_request_duration_seconds_bucket\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_histograms(exposition: str) -> dict[tuple[str, str], dict[float, float]]:
    """{(route, source): {le: cumulative count}} of canal_http_request_duration_seconds."""
    out: dict[tuple[str, str], dict[float, float]] = defaultdict(dict)
    for line in exposition.splitlines():
        m = _BUCKET.match(line.strip())
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group("labels")))
        le = math.inf if labels.get("le") == "+Inf" else float(labels.get("le", "nan"))
        out[(labels.get("route", ""), labels.get("source", ""))][le] = float(m.group("value"))
    return dict(out)


def histogram_delta(before: dict[tuple[str, str], dict[float, float]],
                    after: dict[tuple[str, str], dict[float, float]]) -> dict[tuple[str, str], dict[float, float]]:
    """after - before, per series and bucket."""
    out = {}
    for key, buckets in after.items():
        prev = before.get(key, {})
        out[key] = {le: n - prev.get(le, 0.0) for le, n in buckets.items()}
    return out


def histogram_quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus-style quantile (q in 0..1) in ms by linear interpolation within the bucket; None if empty."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower * 1000  # above the last finite bound: report that bound (a lower limit)
            width = count - below
            frac = (rank - below) / width if width > 0 else 1.0
            return (lower + (le - lower) * frac) * 1000
        lower, below = le, count
    return lower * 1000
