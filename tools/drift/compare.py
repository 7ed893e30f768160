"""Ask both paths the same question through gRPC and compare every metric of every row.

A *probe* is one (target, window, dimension) question. Both answers are flattened to
``row key -> metric -> value`` (the summary is one row with key ``""``); a row missing on
one side counts as zeros there, so extra or missing rows show up as deltas.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain
from typing import Any, Final

import grpc

from canal.common.v1 import types_pb2
from canal.query.v1 import query_service_pb2 as pb
from libs.query_contract import MAX_PAGE
from libs.rpc import error_info_from
from tools.drift.sampling import Target
from tools.drift.windows import WindowCase

DIMENSIONS: Final = ("summary", "note", "counterparty", "kind", "time")
METRIC_CLASSES: Final = ("zaps", "reactions", "reposts", "replies", "quotes", "mentions", "followers", "notes",
                         "articles")
# The `kind` drilldown counts facts per source kind; kind 1 mixes notes, replies, quotes and
# mentions and is filed under notes (the summary checks each of those on its own).
KIND_CLASS: Final = {9735: "zaps", 7: "reactions", 6: "reposts", 16: "reposts", 1: "notes", 1111: "replies",
                     3: "followers", 30023: "articles"}
PAGE_SIZE: Final = MAX_PAGE
MAX_PAGES: Final = 200

SOURCES: Final = {"legacy": types_pb2.SOURCE_LEGACY, "canonical": types_pb2.SOURCE_CANONICAL}


class DriftError(Exception):
    """The harness cannot produce an answer (one line, printed as the reason for exit 2)."""


@dataclass(frozen=True)
class Probe:
    """One question asked of both paths."""

    target: Target
    window: WindowCase
    dimension: str
    granularity: str = ""

    @property
    def tz(self) -> str:
        return self.window.tz if self.dimension == "time" else ""


@dataclass(frozen=True)
class Answer:
    """One path's answer, flattened: row key -> metric -> value, plus its partial flag and window."""

    rows: dict[str, dict[str, int]]
    partial: bool
    reasons: tuple[str, ...]
    window: tuple[int, int]
    pages: int


@dataclass(frozen=True)
class Mismatch:
    """A metric where the paths disagree (delta = canonical - legacy)."""

    probe: Probe
    metric: str
    metric_class: str
    key: str
    legacy: int
    canonical: int
    partial: bool
    window: tuple[int, int]

    @property
    def delta(self) -> int:
        return self.canonical - self.legacy


@dataclass
class ProbeResult:
    """What one probe found: comparisons per metric class, mismatches, partial flags or an error."""

    probe: Probe
    counts: Counter[str] = field(default_factory=Counter)
    mismatches: list[Mismatch] = field(default_factory=list)
    partial: bool = False
    reasons: tuple[str, ...] = ()
    window: tuple[int, int] = (0, 0)
    requests: int = 0
    error: str = ""
    retried: bool = False
    transient: bool = False

    @property
    def failing(self) -> list[Mismatch]:
        """Mismatches that fail the run (those outside partial answers)."""
        return [m for m in self.mismatches if not m.partial]


def metric_class(metric: str, key: str, dimension: str) -> str:
    """The report's metric class of one compared value."""
    if dimension == "kind":
        return KIND_CLASS.get(int(key), "other") if key.isdigit() else "other"
    return _named_class(metric)


@lru_cache(maxsize=256)
def _named_class(metric: str) -> str:
    if metric == "deleted":
        return "notes"
    head = metric.split(".", 1)[0]
    return head if head in METRIC_CLASSES else "other"


def class_counts(rows: dict[str, dict[str, int]], dimension: str) -> Counter[str]:
    """How many values of each metric class `rows` hold (C-speed counting of metric names)."""
    if dimension == "kind":
        return Counter(metric_class(m, key, dimension) for key, row in rows.items() for m in row)
    out: Counter[str] = Counter()
    for name, n in Counter(chain.from_iterable(rows.values())).items():
        out[_named_class(name)] += n
    return out


def summary_request(probe: Probe, source: int, now: int) -> pb.GetSummaryRequest:
    return pb.GetSummaryRequest(pubkey=probe.target.pubkey, window=probe.window.spec(now), source=source)  # type: ignore[arg-type]


def drilldown_request(probe: Probe, source: int, now: int, token: str = "") -> pb.GetDrilldownRequest:
    return pb.GetDrilldownRequest(
        pubkey=probe.target.pubkey, window=probe.window.spec(now), dimension=probe.dimension,
        granularity=probe.granularity, tz=probe.tz, page_size=PAGE_SIZE, page_token=token,
        source=source)  # type: ignore[arg-type]


def _row_values(dimension: str, row: pb.DrilldownRow) -> tuple[str, dict[str, int]]:
    values = dict(row.metrics)
    if dimension == "note":
        values["deleted"] = int(row.deleted)
    key = str(row.kind) if dimension == "kind" else str(row.start) if dimension == "time" else row.key
    return key, values


def fetch(stub: Any, probe: Probe, source: int, now: int, timeout_s: float) -> Answer:
    """One path's full answer (every page of a note/counterparty drilldown)."""
    if probe.dimension == "summary":
        resp = stub.GetSummary(summary_request(probe, source, now), timeout=timeout_s)
        return Answer({"": {m.name: int(m.value) for m in resp.metrics}}, resp.meta.partial,
                      tuple(resp.meta.partial_reasons), (resp.meta.window.start, resp.meta.window.end), 1)
    rows: dict[str, dict[str, int]] = {}
    token, pages, partial, reasons = "", 0, False, set()
    while True:
        resp = stub.GetDrilldown(drilldown_request(probe, source, now, token), timeout=timeout_s)
        pages += 1
        partial = partial or resp.meta.partial
        reasons.update(resp.meta.partial_reasons)
        for row in resp.rows:
            key, values = _row_values(probe.dimension, row)
            if key in rows:
                raise DriftError(f"{probe.dimension} row {key!r} returned twice (page {pages}): paging is broken")
            rows[key] = values
        token = resp.next_page_token
        if not token:
            return Answer(rows, partial, tuple(sorted(reasons)), (resp.meta.window.start, resp.meta.window.end),
                          pages)
        if pages >= MAX_PAGES:
            raise DriftError(f"{probe.dimension} drilldown has more than {MAX_PAGES * PAGE_SIZE} rows")


def compare(probe: Probe, legacy: Answer, canonical: Answer) -> ProbeResult:
    """Every metric of every row (by key) of the two answers."""
    result = ProbeResult(probe, partial=legacy.partial or canonical.partial,
                         reasons=tuple(sorted({*legacy.reasons, *canonical.reasons})), window=canonical.window,
                         requests=legacy.pages + canonical.pages)
    if legacy.window != canonical.window:
        result.error = f"the paths resolved different windows: legacy {legacy.window}, canonical {canonical.window}"
        return result
    if legacy.rows == canonical.rows:  # the common case, compared at C speed
        result.counts = class_counts(legacy.rows, probe.dimension)
        return result
    for key in sorted(legacy.rows.keys() | canonical.rows.keys()):
        left, right = legacy.rows.get(key, {}), canonical.rows.get(key, {})
        for metric in sorted(left.keys() | right.keys()):
            cls = metric_class(metric, key, probe.dimension)
            result.counts[cls] += 1
            a, b = left.get(metric, 0), right.get(metric, 0)
            if a != b:
                result.mismatches.append(Mismatch(probe, metric, cls, key, a, b, result.partial, result.window))
    return result


def _attempt(stub: Any, probe: Probe, now: int, timeout_s: float) -> ProbeResult:
    try:
        legacy = fetch(stub, probe, SOURCES["legacy"], now, timeout_s)
        canonical = fetch(stub, probe, SOURCES["canonical"], now, timeout_s)
    except grpc.RpcError as exc:
        return ProbeResult(probe, requests=1, error=describe_rpc_error(exc))
    except DriftError as exc:
        return ProbeResult(probe, requests=1, error=str(exc))
    return compare(probe, legacy, canonical)


def run_probe(stub: Any, probe: Probe, now: int, timeout_s: float) -> ProbeResult:
    """Compare one probe; a failing mismatch is asked again once, so data that was still
    arriving between the two calls is reported as transient rather than as drift."""
    first = _attempt(stub, probe, now, timeout_s)
    if first.error or not first.failing:
        return first
    second = _attempt(stub, probe, now, timeout_s)
    second.retried = True
    second.requests += first.requests
    second.transient = not second.error and not second.failing
    return second


def describe_rpc_error(exc: grpc.RpcError) -> str:
    """`CODE (ERROR_INFO_CODE): message` of a failed call."""
    code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"  # type: ignore[attr-defined]
    details = exc.details() if hasattr(exc, "details") else str(exc)  # type: ignore[attr-defined]
    info = None
    try:
        info = error_info_from(exc)
    except Exception:  # noqa: BLE001 - a malformed status detail must not hide the original error
        info = None
    return f"{code} ({info.code}): {details}" if info is not None and info.code else f"{code}: {details}"
