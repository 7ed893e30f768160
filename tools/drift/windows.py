"""The windows the drift harness asks about, as plain data (no database, no network).

Every case resolves to the same ``[start, end)`` on both paths because the harness
sends the same explicit ``now`` in each ``WindowSpec``. Kinds (the report groups by them):

- ``rolling``: every rolling window of METRICS.md (1h 24h 7d 30d 90d 365d all);
- ``custom``: random windows to the second around the target's data;
- ``day_boundary``: windows crossing a UTC midnight at odd seconds;
- ``dst``: windows around a daylight-saving transition of America/New_York or
  Europe/London, with the time drilldown bucketed in that zone;
- ``retention``: windows starting just before, at and just after a retention horizon;
- ``tz_offset``: time drilldowns in zones with :30 and :45 offsets (Asia/Kolkata, Asia/Kathmandu).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

from canal.common.v1 import types_pb2

ROLLING: Final[dict[str, int | None]] = {
    "1h": 3_600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400, "90d": 90 * 86_400,
    "365d": 365 * 86_400, "all": None,
}
WINDOW_KINDS: Final = ("rolling", "custom", "day_boundary", "dst", "retention", "tz_offset")
DST_ZONES: Final = ("America/New_York", "Europe/London")
OFFSET_ZONES: Final = ("Asia/Kolkata", "Asia/Kathmandu")
MAX_POINTS: Final = 1_000
DAY: Final = 86_400
# Shortest possible bucket of each granularity (DST days are 23 h, February has 28 days), so
# that the point count never exceeds MAX_POINTS whatever the zone; +3 covers clipped edges
# and the extra bucket a spring-forward transition starts.
_SHORTEST: Final = (("minute", 60), ("hour", 3_600), ("day", 23 * 3_600), ("week", 7 * DAY - 3_600),
                    ("month", 28 * DAY - 3_600))
_EDGE_POINTS: Final = 3


@dataclass(frozen=True)
class WindowCase:
    """One window to compare: a rolling label, or a custom [start, end), plus how to bucket its series."""

    kind: str
    label: str = ""
    start: int = 0
    end: int = 0
    tz: str = "UTC"
    granularity: str = ""
    note: str = ""

    def bounds(self, now: int) -> tuple[int, int]:
        """The [start, end) the query service resolves for this case at `now`."""
        if not self.label:
            return self.start, self.end
        length = ROLLING[self.label]
        return (0 if length is None else max(0, now - length)), now

    def spec(self, now: int) -> types_pb2.WindowSpec:
        """The WindowSpec sent on both paths (with the harness's explicit clock)."""
        if self.label:
            return types_pb2.WindowSpec(window=self.label, now=now)
        return types_pb2.WindowSpec(start=str(self.start), end=str(self.end), now=now)

    def series_granularity(self, now: int) -> str:
        """The requested granularity, else the finest one giving at most MAX_POINTS points."""
        if self.granularity:
            return self.granularity
        start, end = self.bounds(now)
        return finest_granularity(end - start)

    def describe(self) -> str:
        """Short human label: `7d`, or `[start, end)` with the zone when not UTC."""
        text = self.label or f"[{self.start}, {self.end})"
        return text if self.tz == "UTC" else f"{text} tz={self.tz}"


def finest_granularity(span: int) -> str:
    """The finest granularity whose series over `span` seconds has at most MAX_POINTS points."""
    for name, shortest in _SHORTEST:
        if math.ceil(span / shortest) + _EDGE_POINTS <= MAX_POINTS:
            return name
    return "month"


def rolling_cases() -> list[WindowCase]:
    """Every rolling window."""
    return [WindowCase("rolling", label=name) for name in ROLLING]


def _clip(kind: str, start: int, end: int, now: int, **extra: str) -> WindowCase | None:
    """A custom case clipped to [0, now]; None when nothing is left."""
    start, end = max(0, start), min(end, now)
    return WindowCase(kind, start=start, end=end, **extra) if start < end else None


def custom_cases(rng: random.Random, first: int, last: int, now: int, count: int) -> list[WindowCase]:
    """`count` random windows to the second: start near the target's data, log-uniform length."""
    lo = max(0, first - DAY)
    out: list[WindowCase] = []
    while len(out) < count:
        start = rng.randint(lo, max(lo, min(last, now - 1)))
        length = int(math.exp(rng.uniform(0.0, math.log(max(2, now - start)))))
        case = _clip("custom", start, start + max(1, length), now)
        if case is not None:
            out.append(case)
    return out


def day_boundary_cases(rng: random.Random, first: int, last: int, now: int) -> list[WindowCase]:
    """Two windows crossing a UTC midnight inside the target's data: a short one and one over a day long."""
    midnight = rng.randint(first, max(first, min(last, now - 1)))
    midnight = midnight - midnight % DAY + DAY
    out = [
        _clip("day_boundary", midnight - rng.randint(1, DAY // 2), midnight + rng.randint(1, DAY // 2), now),
        _clip("day_boundary", midnight - DAY - rng.randint(1, 3_599), midnight + DAY + rng.randint(1, 3_599), now),
    ]
    return [c for c in out if c is not None]


def transitions(zone: str, lo: int, hi: int) -> list[int]:
    """Instants in (lo, hi] where `zone` changes its UTC offset (to the second)."""
    tz = ZoneInfo(zone)
    out: list[int] = []
    step = DAY // 4
    t = lo
    while t < hi:
        nxt = min(t + step, hi)
        if _offset(nxt, tz) != _offset(t, tz):
            a, b = t, nxt
            while b - a > 1:
                mid = (a + b) // 2
                a, b = (mid, b) if _offset(mid, tz) == _offset(t, tz) else (a, mid)
            out.append(b)
        t = nxt
    return out


def _offset(t: int, tz: ZoneInfo) -> int:
    delta = datetime.fromtimestamp(t, tz).utcoffset()
    return 0 if delta is None else int(delta.total_seconds())


def dst_cases(rng: random.Random, data_first: int, now: int, per_zone: int = 1) -> list[WindowCase]:
    """Around the latest `per_zone` transitions before `now` in each DST zone: an hourly and a daily series."""
    out: list[WindowCase] = []
    lo = min(data_first, now - 400 * DAY)
    for zone in DST_ZONES:
        for moment in transitions(zone, max(0, lo), now)[-per_zone:]:
            iso = datetime.fromtimestamp(moment, ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")
            note = f"{zone} offset change at {iso}"
            pad = rng.randint(1, 3_599)
            hourly = _clip("dst", moment - 6 * 3_600 - pad, moment + 6 * 3_600 + pad, now, tz=zone,
                           granularity="hour", note=note)
            daily = _clip("dst", moment - 3 * DAY - pad, moment + 3 * DAY + pad, now, tz=zone,
                          granularity="day", note=note)
            out.extend(c for c in (hourly, daily) if c is not None)
    return out


def retention_cases(horizons: Mapping[str, int], now: int) -> list[WindowCase]:
    """Per distinct retention horizon: a window across it, one starting exactly at it, one ending exactly at it."""
    out: list[WindowCase] = []
    for h in sorted(set(horizons.values())):
        if not 0 < h < now:
            continue
        tiers = ",".join(sorted(t for t, v in horizons.items() if v == h))
        note = f"horizon of {tiers} at {h}"
        for start, end in ((h - 3_600 - 17, h + 3_600 + 17), (h, h + DAY), (h - DAY, h)):
            case = _clip("retention", start, end, now, note=note)
            if case is not None:
                out.append(case)
    return out


def tz_offset_cases(rng: random.Random, first: int, last: int, now: int) -> list[WindowCase]:
    """Per :30/:45 zone: a two-day hourly series and a ~30-day daily series inside the target's data."""
    out: list[WindowCase] = []
    for zone in OFFSET_ZONES:
        start = rng.randint(max(0, first - DAY), max(first, min(last, now - 1)))
        note = f"{zone} local buckets"
        short = _clip("tz_offset", start, start + 2 * DAY + rng.randint(1, 3_599), now, tz=zone,
                      granularity="hour", note=note)
        long = _clip("tz_offset", start - 15 * DAY, start + 15 * DAY + rng.randint(1, 3_599), now, tz=zone,
                     granularity="day", note=note)
        out.extend(c for c in (short, long) if c is not None)
    return out


def dedupe(cases: Iterable[WindowCase]) -> list[WindowCase]:
    """Drop repeated cases, keeping the first (order is part of determinism)."""
    return list(dict.fromkeys(cases))
