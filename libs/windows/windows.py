"""Window resolution: turn ``window=`` or ``start=``/``end=`` request parameters into ``[start, end)``.

Rules (spec/METRICS.md "Time and windows" and "Windows, pubkeys, drilldowns"):

- rolling windows ``1h|24h|7d|30d|90d|365d|all`` end at ``now`` truncated to
  the second; ``all`` starts at 0 (a rolling window longer than the time since
  the epoch is clipped to start at 0);
- custom windows give both ``start`` and ``end``, each as unix seconds (a
  string of ASCII digits) or RFC 3339 with a required offset (``Z`` or
  ``±HH:MM``; fractional seconds are floored);
- ``start < end``, ``end <= now + 60``, ``end - start <= 315,576,000`` (10 x
  365.25 days) and no negative time;
- giving both ``window`` and ``start``/``end``, or neither, or only one bound is an error.

Every failure is a :class:`WindowError` (code ``INVALID_WINDOW``) naming the
offending ``field`` (``window``, ``start``, ``end`` or ``tz``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from libs.windows.errors import InvalidTimezone, WindowError

__all__ = [
    "CUSTOM_LABEL",
    "MAX_END_SKEW_SECONDS",
    "MAX_SPAN_SECONDS",
    "ROLLING_WINDOWS",
    "InvalidTimezone",
    "Window",
    "WindowError",
    "parse_time",
    "parse_tz",
    "resolve_window",
]

#: Rolling window names and their length in seconds (``None``: since the epoch).
ROLLING_WINDOWS: Final[dict[str, int | None]] = {
    "1h": 3_600,
    "24h": 86_400,
    "7d": 7 * 86_400,
    "30d": 30 * 86_400,
    "90d": 90 * 86_400,
    "365d": 365 * 86_400,
    "all": None,
}
#: Longest custom window: 10 x 365.25 days.
MAX_SPAN_SECONDS: Final = 315_576_000
#: How far past ``now`` a custom ``end`` may lie (clock skew allowance).
MAX_END_SKEW_SECONDS: Final = 60
#: Label of a window given by ``start``/``end``.
CUSTOM_LABEL: Final = "custom"

# Inputs longer than this are rejected before any parsing (no valid value is this long).
_MAX_INPUT_CHARS: Final = 64
_ALLOWED_WINDOWS: Final = "|".join(ROLLING_WINDOWS)
_UNIX_SECONDS = re.compile(r"[0-9]+")
_MAX_UNIX_DIGITS: Final = 12
_NEGATIVE_SECONDS = re.compile(r"-[0-9]+(?:\.[0-9]+)?")
_DECIMAL_SECONDS = re.compile(r"[0-9]+\.[0-9]+")
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]"
    r"(?P<h>[0-9]{2}):(?P<m>[0-9]{2}):(?P<s>[0-9]{2})(?P<frac>\.[0-9]+)?"
    r"(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
# An offset whose "+" was decoded as a space by URL form decoding ("...T10:00:00 05:30").
_RFC3339_PLUS_AS_SPACE = re.compile(r".*[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)? [0-9]{2}:[0-9]{2}")
_RFC3339_NO_OFFSET = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?"
)
_TZ_NAME = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")
_FORMAT_HINT: Final = (
    "give unix seconds (e.g. 1700000000) or RFC 3339 with an offset "
    "(e.g. 2024-01-31T18:00:00Z or 2024-01-31T18:00:00+02:00)"
)


@dataclass(frozen=True)
class Window:
    """A resolved half-open window ``[start, end)`` in unix seconds.

    ``label`` is the rolling window name (``"7d"``, ``"all"``, ...) or ``"custom"``.
    """

    start: int
    end: int
    label: str

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"a window needs 0 <= start < end, got [{self.start}, {self.end})")

    @property
    def span(self) -> int:
        """Length of the window in seconds."""
        return self.end - self.start


def resolve_window(window: str | None, start: str | None, end: str | None, now: int | float) -> Window:
    """Resolve request parameters into a :class:`Window`.

    ``None`` means "parameter absent"; an empty string is a present but invalid
    value. ``now`` is the request time in unix seconds (floats are truncated to
    the second); it must be positive.
    """
    now_s = math.floor(now)
    if now_s < 1:
        raise ValueError(f"now must be a positive unix time, got {now!r}")
    if window is not None:
        if start is not None or end is not None:
            given = " and ".join(name for name, v in (("start", start), ("end", end)) if v is not None)
            raise WindowError(
                f"window={_echo(window)} was given together with {given}",
                f"give either window={_ALLOWED_WINDOWS}, or start and end, not both",
                "window",
            )
        return _rolling_window(window, now_s)
    if start is None and end is None:
        raise WindowError(
            "no window was given",
            f"give window={_ALLOWED_WINDOWS}, or both start and end",
            "window",
        )
    if start is None:
        raise WindowError("end was given without start", "a custom window needs both start and end", "start")
    if end is None:
        raise WindowError("start was given without end", "a custom window needs both start and end", "end")
    return _custom_window(parse_time(start, "start"), parse_time(end, "end"), now_s)


def _rolling_window(name: str, now: int) -> Window:
    """Resolve a rolling window name ending at ``now``."""
    if name not in ROLLING_WINDOWS:
        raise WindowError(
            f"window={_echo(name)} is not a known window",
            f"window must be one of {_ALLOWED_WINDOWS}, or give start and end instead",
            "window",
        )
    length = ROLLING_WINDOWS[name]
    start = 0 if length is None else max(0, now - length)
    return Window(start, now, name)


def _custom_window(start: int, end: int, now: int) -> Window:
    """Check the cross-field rules of a custom window."""
    if start >= end:
        raise WindowError(
            f"end ({end}) is not after start ({start})",
            "the window is [start, end): end must be strictly later than start",
            "end",
        )
    if end > now + MAX_END_SKEW_SECONDS:
        raise WindowError(
            f"end ({end}) is {end - now} s in the future",
            f"end may be at most {MAX_END_SKEW_SECONDS} s after the current time ({now})",
            "end",
        )
    if end - start > MAX_SPAN_SECONDS:
        raise WindowError(
            f"the window spans {end - start} s, more than 10 years",
            f"end - start may be at most {MAX_SPAN_SECONDS} s (10 x 365.25 days): "
            f"move start to {end - MAX_SPAN_SECONDS} or later, or use window=all",
            "start",
        )
    return Window(start, end, CUSTOM_LABEL)


def parse_time(value: str, field: str) -> int:
    """Parse one window bound (unix seconds or RFC 3339 with offset) into unix seconds.

    ``field`` names the bound in errors. RFC 3339 fractions are floored; a
    leap second (``:60``) is read as the first second of the next minute.
    """
    if len(value) > _MAX_INPUT_CHARS:
        raise WindowError(f"{field} is {len(value)} characters long", _FORMAT_HINT, field)
    if _UNIX_SECONDS.fullmatch(value):
        if len(value.lstrip("0")) > _MAX_UNIX_DIGITS:
            raise WindowError(
                f"{field}={_echo(value)} is out of range",
                "unix seconds have at most 12 digits (and end may not lie in the future)",
                field,
            )
        return int(value)
    if _NEGATIVE_SECONDS.fullmatch(value):
        raise WindowError(f"{field}={_echo(value)} is negative", "times are unix seconds >= 0", field)
    if _DECIMAL_SECONDS.fullmatch(value):
        raise WindowError(
            f"{field}={_echo(value)} is not a whole number of seconds",
            "unix seconds must be an integer; RFC 3339 times may carry fractions (they are floored)",
            field,
        )
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise WindowError(f"{field}={_echo(value)} is not a valid time", _rfc3339_hint(value), field)
    seconds = _rfc3339_seconds(match, value, field)
    if seconds < 0:
        raise WindowError(
            f"{field}={_echo(value)} is before 1970-01-01T00:00:00Z",
            "times must not be before the unix epoch",
            field,
        )
    return seconds


def _rfc3339_hint(value: str) -> str:
    """Pick the most helpful hint for a string that is not a valid time."""
    if _RFC3339_PLUS_AS_SPACE.fullmatch(value):
        return "the offset's '+' was read as a space: encode it as %2B in the URL (e.g. ...T10:00:00%2B05:30)"
    if _RFC3339_NO_OFFSET.fullmatch(value):
        return "RFC 3339 times need an offset: append Z for UTC or ±HH:MM (e.g. 2024-01-31T18:00:00Z)"
    return _FORMAT_HINT


def _rfc3339_seconds(match: re.Match[str], value: str, field: str) -> int:
    """Convert a regex-matched RFC 3339 string to floored unix seconds."""
    offset = match["offset"]
    if offset in ("Z", "z"):
        offset_seconds = 0
    else:
        oh, om = int(offset[1:3]), int(offset[4:6])
        if oh > 23 or om > 59:
            raise WindowError(
                f"{field}={_echo(value)} has an invalid offset {offset}",
                "an offset is Z or ±HH:MM with HH <= 23 and MM <= 59",
                field,
            )
        offset_seconds = (oh * 3600 + om * 60) * (-1 if offset[0] == "-" else 1)
    second = int(match["s"])
    leap = second == 60
    try:
        local = datetime.fromisoformat(
            f"{match['date']}T{match['h']}:{match['m']}:{59 if leap else second:02d}"
        )
    except ValueError as exc:
        raise WindowError(
            f"{field}={_echo(value)} is not a real calendar time ({exc})",
            "check the month, day, hour (00-23), minute and second (00-59)",
            field,
        ) from None
    # datetime's own range check rejects out-of-range fields; the offset is applied by hand
    # so that instants before the epoch compute (and are then rejected) without overflow.
    aware = local.replace(tzinfo=timezone(timedelta(seconds=offset_seconds)))
    # Whole-minute offsets keep the fraction intact, so flooring is dropping it.
    return int(aware.timestamp()) + (1 if leap else 0)


def parse_tz(name: str | None) -> ZoneInfo:
    """Return the IANA zone ``name`` (``None`` or empty: UTC).

    Raises :class:`InvalidTimezone` (code ``INVALID_WINDOW``, field ``tz``) for
    unknown or malformed names; paths and traversal are never accepted.
    """
    if name is None or name == "":
        return ZoneInfo("UTC")
    hint = "give an IANA time zone name such as UTC, Europe/Berlin or America/New_York"
    if len(name) > _MAX_INPUT_CHARS or not _TZ_NAME.fullmatch(name) or ".." in name:
        raise InvalidTimezone(f"tz={_echo(name)} is not a time zone name", hint, "tz")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):
        raise InvalidTimezone(f"tz={_echo(name)} is not a known time zone", hint, "tz") from None


def _echo(value: str) -> str:
    """Quote user input for a message, shortened so errors stay readable."""
    return repr(value if len(value) <= 40 else value[:37] + "...")
