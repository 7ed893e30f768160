"""The one exception hierarchy of the planning package.

Every error carries the API error ``code`` (spec/API.md), a ``message`` saying
what is wrong, a ``hint`` saying what is allowed, and the request ``field`` it
is about, so the gateway maps it to ``{"error": {code, message, hint}}``
without inspecting it further.
"""

from __future__ import annotations


class PlanningError(ValueError):
    """Base class: a request the planner cannot accept, with an actionable explanation."""

    code: str = "INVALID_REQUEST"

    def __init__(self, message: str, hint: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.field = field

    def to_dict(self) -> dict[str, str]:
        """Return the error as the API's ``{code, message, hint, field}`` object."""
        return {"code": self.code, "message": self.message, "hint": self.hint, "field": self.field}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, field={self.field!r}, message={self.message!r})"


class WindowError(PlanningError):
    """A window, time zone or time-series request that cannot be answered (``INVALID_WINDOW``)."""

    code = "INVALID_WINDOW"


class InvalidTimezone(WindowError):
    """An unknown or malformed IANA time zone name (``INVALID_WINDOW`` with field ``tz``).

    API.md lists no dedicated time-zone code, and the zone is part of how the
    window is cut into buckets, so it is reported as an invalid window.
    """


class TooManyPoints(WindowError):
    """A time series would have more than the allowed number of points."""


class CursorError(PlanningError):
    """A page cursor that is forged, damaged or made for another request (``INVALID_CURSOR``)."""

    code = "INVALID_CURSOR"
