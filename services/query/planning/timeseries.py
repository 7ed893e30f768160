"""Time-series buckets in IANA local time, clipped to the window.

Boundaries follow the wall clock of the request's zone (spec/METRICS.md
"Drilldowns" and "Windows, pubkeys, drilldowns"):

- ``day``: local midnight; ``week``: local midnight of ISO Monday; ``month``:
  local midnight of the 1st. When a local midnight does not exist (a DST gap
  at midnight), the boundary is the first existing instant after it; when it
  occurs twice, the first occurrence;
- ``hour`` / ``minute``: every instant whose local wall-clock reading is a
  whole hour / minute (so in Asia/Kolkata, +05:30, hours start at :30 UTC).
  A reading repeated by a fall-back counts each time (New York gets two
  one-hour buckets labelled 01:00 in November). A transition that jumps the
  clock forward over (or onto) a whole hour starts a bucket at the transition
  (the first existing instant after the skipped reading); a fall-back that
  lands between whole hours (Australia/Lord_Howe's 30-minute DST) does not,
  so that local hour lasts 90 minutes.

Each bucket is clipped to ``[start, end)``: the first starts at ``start``, the
last ends at ``end``, and together they partition the window.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo

from libs.query_contract import GRANULARITIES, Granularity
from libs.windows.errors import TooManyPoints, WindowError

__all__ = ["GRANULARITIES", "MAX_POINTS", "Granularity", "TimeBucket", "time_buckets"]

#: Granularities from finest to coarsest.
#: Most points a time series may have.
MAX_POINTS: Final = 1_000

_CLOCK_STEP: Final[dict[str, int]] = {"minute": 60, "hour": 3_600}
# Typical bucket length, only used to suggest a coarser granularity in errors.
_NOMINAL_SECONDS: Final[dict[str, int]] = {
    "minute": 60,
    "hour": 3_600,
    "day": 86_400,
    "week": 604_800,
    "month": 2_629_746,
}


class TimeBucket(NamedTuple):
    """One point of a time series: ``[start, end)`` in unix seconds, clipped to the window."""

    start: int
    end: int


def time_buckets(start: int, end: int, granularity: str, tz: ZoneInfo) -> list[TimeBucket]:
    """Cut ``[start, end)`` into local-time buckets of ``granularity`` in zone ``tz``.

    Raises :class:`WindowError` for an unknown granularity and
    :class:`TooManyPoints` (code ``INVALID_WINDOW``) when there would be more
    than :data:`MAX_POINTS` buckets.
    """
    if granularity not in GRANULARITIES:
        raise WindowError(
            f"granularity={granularity!r} is not known",
            f"granularity must be one of {'|'.join(GRANULARITIES)}",
            "granularity",
        )
    if start >= end:
        raise ValueError(f"start ({start}) must be before end ({end})")
    next_boundary = _boundary_function(granularity, tz)
    buckets: list[TimeBucket] = []
    cursor = start
    while cursor < end:
        if len(buckets) == MAX_POINTS:
            raise _too_many_points(start, end, granularity)
        bucket_end = min(next_boundary(cursor), end)
        buckets.append(TimeBucket(cursor, bucket_end))
        cursor = bucket_end
    return buckets


def _boundary_function(granularity: str, tz: ZoneInfo) -> Callable[[int], int]:
    """Return ``f(t)``: the first bucket boundary strictly after instant ``t``."""
    if granularity in _CLOCK_STEP:
        step = _CLOCK_STEP[granularity]
        return lambda t: _next_clock_boundary(t, step, tz)
    next_label = {"day": _next_day, "week": _next_week, "month": _next_month}[granularity]
    return lambda t: _next_calendar_boundary(t, next_label, tz)


def _next_clock_boundary(t: int, step: int, tz: ZoneInfo) -> int:
    """First instant after ``t`` whose local reading is a whole ``step`` (see module docstring)."""
    while True:
        offset = _offset(t, tz)
        candidate = ((t + offset) // step + 1) * step - offset
        if _offset(candidate, tz) == offset:
            # Zones never change offset twice within an hour, so the offset held throughout.
            return candidate
        transition = _first_offset_change(t, candidate, offset, tz)
        new_offset = _offset(transition, tz)
        reading_before = transition + offset  # what the clock would have shown without the change
        reading_after = transition + new_offset
        if new_offset > offset:
            # Clock jumps forward: a whole step in [before, after] is skipped or hit exactly here.
            if -(-reading_before // step) * step <= reading_after:
                return transition
        elif reading_after % step == 0:
            return transition
        t = transition


def _first_offset_change(lo: int, hi: int, offset: int, tz: ZoneInfo) -> int:
    """Smallest instant in ``(lo, hi]`` whose offset differs from ``offset`` (given ``hi``'s does)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(mid, tz) == offset:
            lo = mid
        else:
            hi = mid
    return hi


def _next_calendar_boundary(t: int, next_label: Callable[[date], date], tz: ZoneInfo) -> int:
    """First local midnight (of the next day, Monday or 1st) strictly after ``t``."""
    label = next_label(_wall(t, tz).date())
    boundary = _first_instant_at_or_after(datetime.combine(label, datetime.min.time()), tz)
    while boundary <= t:  # only when a fall-back crosses midnight backwards
        label = next_label(label)
        boundary = _first_instant_at_or_after(datetime.combine(label, datetime.min.time()), tz)
    return boundary


def _next_day(d: date) -> date:
    return d + timedelta(days=1)


def _next_week(d: date) -> date:
    return d + timedelta(days=7 - d.weekday())


def _next_month(d: date) -> date:
    return date(d.year + 1, 1, 1) if d.month == 12 else date(d.year, d.month + 1, 1)


def _first_instant_at_or_after(local: datetime, tz: ZoneInfo) -> int:
    """Earliest instant whose local reading is ``local``, or the first existing one after it."""
    early = int(local.replace(tzinfo=tz, fold=0).timestamp())
    late = int(local.replace(tzinfo=tz, fold=1).timestamp())
    lo, hi = min(early, late), max(early, late)
    if _wall(lo, tz) == local:
        return lo
    if _wall(hi, tz) == local:
        return hi
    # ``local`` falls in a gap: the transition lies in (lo, hi]; find the first reading >= local.
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(mid, tz) >= local:
            hi = mid
        else:
            lo = mid
    return hi


def _wall(t: int, tz: ZoneInfo) -> datetime:
    """Naive local wall-clock reading of instant ``t``."""
    return datetime.fromtimestamp(t, tz).replace(tzinfo=None)


def _offset(t: int, tz: ZoneInfo) -> int:
    """UTC offset of ``tz`` at instant ``t``, in seconds."""
    delta = datetime.fromtimestamp(t, tz).utcoffset()
    return 0 if delta is None else int(delta.total_seconds())


def _too_many_points(start: int, end: int, granularity: str) -> TooManyPoints:
    """Build the error for an over-long series, suggesting a granularity that fits."""
    span = end - start
    coarser = GRANULARITIES[GRANULARITIES.index(granularity) + 1 :]
    fitting = next((g for g in coarser if span // _NOMINAL_SECONDS[g] + 2 <= MAX_POINTS), None)
    if fitting is not None:
        hint = f"use a coarser granularity (granularity={fitting}) or a shorter window"
    else:
        hint = "use a coarser granularity or a shorter window"
    return TooManyPoints(
        f"granularity={granularity} over {span} s gives more than {MAX_POINTS} points",
        f"{hint}; a time series has at most {MAX_POINTS} points",
        "granularity",
    )
