"""The window planner: which aggregate buckets and raw-fact ranges answer ``[start, end)`` exactly.

Inputs are plain data (no database): per-tier dirty bucket starts, per-tier
watermarks and per-tier retention horizons, plus the raw-facts horizon. The
output :class:`Plan` partitions the window into three kinds of pieces:

- ``segments``: runs of clean, available, complete buckets of one tier, each
  answerable by one ``SUM ... WHERE bucket_start >= a AND bucket_start < b`` range scan;
- ``raw``: ranges scanned from raw facts (``created_at >= a AND created_at < b``);
- ``missing``: ranges nothing can answer exactly any more (before the retention
  horizons): the answer is ``partial`` with reason ``retention``.

Algorithm (greedy, coarsest first): cover the window with usable 64-day blocks,
then the remaining gaps with usable 8-day blocks, then days, hours and minutes. A bucket of tier T starting at b is *usable* when it lies inside the
window, ``b >= horizons[T]``, ``b + size(T) <= watermarks[T]`` and b is not in
``dirty[T]``. What is left goes to raw facts where ``>= horizons["facts"]``,
and to ``missing`` before it. Because every usable bucket inside the window is
taken by some pass, time before the facts horizon is always answered by the
finest tier that can still answer it exactly; only edges that lie inside no
usable bucket (partial buckets at the window's edges, dirty buckets with no
finer data left) become ``missing``.

Conventions where the inputs are silent:

- a tier absent from ``watermarks`` has no complete bucket and is never read;
- a tier (or ``"facts"``) absent from ``horizons`` has lost no data (horizon 0 would mean the same);
- a dirty start that is not aligned to its tier marks the bucket containing it;
- the plan is a pure function of its inputs: same inputs, identical ``Plan``.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from libs.metrics import TIER_LABELS, Tier

__all__ = [
    "DEFAULT_RAW_FACTS_PER_SECOND",
    "FACTS",
    "RETENTION_REASON",
    "TIERS",
    "TIER_SECONDS",
    "Cost",
    "Plan",
    "TierRange",
    "estimate_cost",
    "plan_window",
]

#: Bucket length of each aggregate tier, in seconds.
TIER_SECONDS: Final[Mapping[str, int]] = {t.label: t.seconds for t in Tier}
#: Tiers in the order the planner tries them (coarsest first).
TIERS: Final[tuple[str, ...]] = TIER_LABELS
#: Key of the raw-facts horizon in the ``horizons`` mapping.
FACTS: Final = "facts"
#: ``partial_reasons`` entry for a plan with ``missing`` ranges.
RETENTION_REASON: Final = "retention"

Span = tuple[int, int]


@dataclass(frozen=True)
class TierRange:
    """A run of consecutive clean buckets of one tier: bucket starts in ``[start, end)``.

    ``start`` is the first bucket's start and ``end`` the last bucket's end, so
    the range also covers exactly the seconds ``[start, end)``.
    """

    tier: str
    start: int
    end: int

    @property
    def bucket_seconds(self) -> int:
        """Length of one bucket of this tier."""
        return TIER_SECONDS[self.tier]

    @property
    def bucket_count(self) -> int:
        """Number of buckets in the run."""
        return (self.end - self.start) // TIER_SECONDS[self.tier]


@dataclass(frozen=True)
class Plan:
    """How to answer ``[start, end)``: tier segments, raw ranges and unanswerable ranges.

    All three tuples are sorted by time and together partition the window
    exactly. ``buckets`` counts the buckets read per tier (every tier present).
    """

    start: int
    end: int
    segments: tuple[TierRange, ...]
    raw: tuple[Span, ...]
    missing: tuple[Span, ...]
    buckets: dict[str, int] = field(default_factory=dict)

    @property
    def raw_seconds(self) -> int:
        """Total seconds answered by scanning raw facts."""
        return sum(b - a for a, b in self.raw)

    @property
    def missing_seconds(self) -> int:
        """Total seconds no source can answer exactly."""
        return sum(b - a for a, b in self.missing)

    @property
    def partial(self) -> bool:
        """True when part of the window cannot be answered exactly."""
        return bool(self.missing)

    @property
    def partial_reasons(self) -> tuple[str, ...]:
        """Machine-readable reasons for ``partial`` (``("retention",)`` or empty)."""
        return (RETENTION_REASON,) if self.missing else ()


def plan_window(
    start: int,
    end: int,
    dirty: Mapping[str, Collection[int]],
    watermarks: Mapping[str, int],
    horizons: Mapping[str, int],
) -> Plan:
    """Plan the exact answer of ``[start, end)`` from tiers, raw facts and what is lost.

    ``dirty`` maps a tier to the starts of its dirty buckets; ``watermarks``
    maps a tier to the time up to which its buckets are complete (a bucket is
    complete when its end is ``<=`` the watermark); ``horizons`` maps a tier to
    its earliest available bucket start and ``"facts"`` to the earliest
    ``created_at`` still kept in raw facts. See the module docstring.
    """
    if start > end:
        raise ValueError(f"start ({start}) must not be after end ({end})")
    gaps: list[Span] = [(start, end)] if start < end else []
    segments: list[TierRange] = []
    for tier in TIERS:
        if tier not in watermarks or not gaps:
            continue
        size = TIER_SECONDS[tier]
        dirty_starts = sorted({_align_down(b, size) for b in dirty.get(tier, ())})
        gaps = _cover_gaps(
            gaps, tier, size, watermarks[tier], horizons.get(tier, start), dirty_starts, segments
        )
    facts_horizon = horizons.get(FACTS, start)
    raw = [(max(a, facts_horizon), b) for a, b in gaps if b > facts_horizon]
    missing = [(a, min(b, facts_horizon)) for a, b in gaps if a < facts_horizon]
    segments.sort(key=lambda s: s.start)
    merged = tuple(_merge_segments(segments))
    counts = dict.fromkeys(TIERS, 0)
    for seg in merged:
        counts[seg.tier] += seg.bucket_count
    return Plan(start, end, merged, tuple(_merge_spans(raw)), tuple(_merge_spans(missing)), counts)


def _cover_gaps(
    gaps: Iterable[Span],
    tier: str,
    size: int,
    watermark: int,
    horizon: int,
    dirty_starts: list[int],
    segments: list[TierRange],
) -> list[Span]:
    """Cover each gap with usable buckets of ``tier`` (appended to ``segments``); return what is left."""
    left: list[Span] = []
    for a, b in gaps:
        lo = _align_up(max(a, horizon), size)
        hi = _align_down(min(b, watermark), size)
        cursor = a
        for run_start, run_end in _clean_runs(lo, hi, size, dirty_starts):
            if run_start > cursor:
                left.append((cursor, run_start))
            segments.append(TierRange(tier, run_start, run_end))
            cursor = run_end
        if cursor < b:
            left.append((cursor, b))
    return left


def _clean_runs(lo: int, hi: int, size: int, dirty_starts: list[int]) -> Iterable[Span]:
    """Yield maximal runs of aligned buckets in ``[lo, hi)`` that avoid ``dirty_starts`` (sorted)."""
    if lo >= hi:
        return
    run_start = lo
    first = bisect.bisect_left(dirty_starts, lo)
    last = bisect.bisect_left(dirty_starts, hi)
    for bad in dirty_starts[first:last]:
        if bad > run_start:
            yield run_start, bad
        run_start = bad + size
    if run_start < hi:
        yield run_start, hi


def _merge_segments(segments: Iterable[TierRange]) -> Iterable[TierRange]:
    """Merge time-sorted segments of the same tier that touch."""
    current: TierRange | None = None
    for seg in segments:
        if current is not None and current.tier == seg.tier and current.end == seg.start:
            current = TierRange(seg.tier, current.start, seg.end)
            continue
        if current is not None:
            yield current
        current = seg
    if current is not None:
        yield current


def _merge_spans(spans: Iterable[Span]) -> Iterable[Span]:
    """Merge time-sorted, non-overlapping spans that touch; drop empty ones."""
    current: Span | None = None
    for a, b in spans:
        if a >= b:
            continue
        if current is not None and current[1] == a:
            current = (current[0], b)
            continue
        if current is not None:
            yield current
        current = (a, b)
    if current is not None:
        yield current


def _align_down(t: int, size: int) -> int:
    return t - t % size


def _align_up(t: int, size: int) -> int:
    return -(-t // size) * size


# --- cost ---------------------------------------------------------------------------------------

#: Raw facts per second assumed for one target when the caller has no better hint.
DEFAULT_RAW_FACTS_PER_SECOND: Final = 0.1
#: Cost units of one range scan (index seek + round trip), of one aggregate bucket row, and of one raw fact row.
RANGE_SCAN_UNITS: Final = 10.0
BUCKET_UNITS: Final = 1.0
RAW_ROW_UNITS: Final = 1.0


@dataclass(frozen=True)
class Cost:
    """Estimated work of executing a :class:`Plan`.

    ``units = RANGE_SCAN_UNITS * range_scans + BUCKET_UNITS * buckets + RAW_ROW_UNITS * raw_rows``;
    the gateway compares ``units`` with its sync threshold to pick sync or async.
    """

    range_scans: int
    buckets: int
    raw_seconds: int
    raw_rows: float
    units: float


def estimate_cost(plan: Plan, raw_rate_hint: float | None = None) -> Cost:
    """Estimate the cost of ``plan``.

    ``raw_rate_hint`` is the expected number of raw facts per second for the
    target (e.g. from its recent activity); ``None`` uses
    :data:`DEFAULT_RAW_FACTS_PER_SECOND`. Aggregate rows are counted one per
    bucket, an upper bound (buckets with no activity may have no row).
    """
    rate = DEFAULT_RAW_FACTS_PER_SECOND if raw_rate_hint is None else raw_rate_hint
    if not rate >= 0:  # also rejects NaN
        raise ValueError(f"raw_rate_hint must be >= 0, got {raw_rate_hint!r}")
    range_scans = len(plan.segments) + len(plan.raw)
    buckets = sum(plan.buckets.values())
    raw_seconds = plan.raw_seconds
    raw_rows = raw_seconds * rate
    units = RANGE_SCAN_UNITS * range_scans + BUCKET_UNITS * buckets + RAW_ROW_UNITS * raw_rows
    return Cost(range_scans, buckets, raw_seconds, raw_rows, units)
