"""The window-query contract, in one place: dimensions, granularities, page sizes, sortable metrics,
and the checks every edge runs (the gateway for REST, the query service for gRPC callers).

A failed check raises a `PlanningError` subclass carrying the API code, a message, a hint and the
field, which each edge maps to its own error shape (REST 400, gRPC INVALID_ARGUMENT).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal, get_args

from libs.metrics import ENGAGEMENT_METRICS, METRIC_NAMES
from libs.windows.errors import PlanningError

Dimension = Literal["note", "counterparty", "kind", "time"]
Granularity = Literal["minute", "hour", "day", "week", "month"]
DIMENSIONS: Final[tuple[str, ...]] = get_args(Dimension)
GRANULARITIES: Final[tuple[str, ...]] = get_args(Granularity)
DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 500
DEFAULT_SORT: Final = "zaps.msats"
#: note/counterparty drilldowns sort by one of these metrics (API name -> aggregate column).
SORT_COLUMNS: Final = {name: column for column, name in ENGAGEMENT_METRICS.items()}


class InvalidDimension(PlanningError):
    code = "INVALID_DIMENSION"


class InvalidGranularity(PlanningError):
    code = "INVALID_GRANULARITY"


class InvalidLimit(PlanningError):
    code = "INVALID_LIMIT"


class UnknownMetric(PlanningError):
    code = "UNKNOWN_METRIC"


def _shown(value: str) -> str:
    return value if len(value) <= 40 else value[:37] + "..."


def dimension(value: str) -> str:
    """A drilldown dimension, else INVALID_DIMENSION."""
    if value not in DIMENSIONS:
        raise InvalidDimension(f"unknown dimension {_shown(value)!r}", "Use dimension=" + "|".join(DIMENSIONS) + ".",
                               "dimension")
    return value


def granularity(value: str) -> str:
    """A time-series granularity ("" means the default), else INVALID_GRANULARITY."""
    if value and value not in GRANULARITIES:
        raise InvalidGranularity(f"unknown granularity {_shown(value)!r}",
                                 "Use granularity=" + "|".join(GRANULARITIES) + ".", "granularity")
    return value


def page_size(value: int | None) -> int:
    """Rows per page (None or 0: the default), else INVALID_LIMIT."""
    size = value or DEFAULT_PAGE
    if not 1 <= size <= MAX_PAGE:
        raise InvalidLimit(f"limit {size} is out of range", f"Use a limit between 1 and {MAX_PAGE}.", "limit")
    return size


def metrics(names: Iterable[str]) -> tuple[str, ...]:
    """Requested metric names in order without repeats (empty: none asked), else UNKNOWN_METRIC."""
    wanted = [n.strip() for n in names if n.strip()]
    for name in wanted:
        if name not in METRIC_NAMES:
            raise UnknownMetric(f"unknown metric {_shown(name)!r}", "Known metrics: " + ", ".join(METRIC_NAMES) + ".",
                                "metrics")
    return tuple(dict.fromkeys(wanted))


def sort_metric(dim: str, metric: str) -> str:
    """The metric a note/counterparty drilldown sorts by (zaps.msats unless given), else UNKNOWN_METRIC."""
    chosen = metric or DEFAULT_SORT
    if chosen not in SORT_COLUMNS:
        raise UnknownMetric(f"{dim} drilldowns cannot sort by {_shown(chosen)!r}",
                            "Sort by one of: " + ", ".join(SORT_COLUMNS) + ".", "metric")
    return chosen
