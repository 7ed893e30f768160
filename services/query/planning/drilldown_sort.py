"""Ordering and keyset paging of drilldown rows (``note``, ``counterparty``, ``kind``).

Rows sort by the requested metric descending, then by key ascending
(spec/METRICS.md "Drilldowns"); rows whose columns are all zero are omitted.
A page is the first ``limit`` rows strictly after the previous page's last
sort key ``(value, key)``, so paging stays stable while new rows appear.

Keys are strings (note ids, addresses, pubkeys) or integers (event kinds,
ordered numerically). Should one list mix both, integers sort before strings,
so the order is still total and deterministic.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar

__all__ = ["MAX_PAGE_LIMIT", "DrilldownRow", "Row", "SortKey", "page_rows", "sort_key_of"]

#: Largest page the API allows (``limit`` <= 500).
MAX_PAGE_LIMIT: Final = 500

#: ``(metric value, row key)`` of a row: what a cursor stores.
SortKey = tuple[int, int | str]


class DrilldownRow(Protocol):
    """What :func:`page_rows` needs of a row: a unique key and its metric columns."""

    @property
    def key(self) -> int | str: ...

    @property
    def values(self) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class Row:
    """A drilldown row: its key, its metric columns, and extra display attributes (e.g. ``deleted``)."""

    key: int | str
    values: Mapping[str, int]
    attrs: Mapping[str, object] = field(default_factory=dict)


RowT = TypeVar("RowT", bound=DrilldownRow)


def sort_key_of(row: DrilldownRow, metric: str) -> SortKey:
    """The row's ``(metric value, key)``; a missing column counts as 0."""
    return row.values.get(metric, 0), row.key


def page_rows(
    rows: Iterable[RowT], metric: str, limit: int, after: SortKey | None
) -> tuple[list[RowT], SortKey | None]:
    """Return the page of ``rows`` after ``after`` and the sort key to continue from.

    Sorts by ``metric`` descending then key ascending, drops all-zero rows,
    keeps rows strictly after ``after`` (``None``: from the start) and returns
    at most ``limit`` of them. The second value is the last returned row's sort
    key when more rows follow, else ``None`` (last page). Keys must be unique.
    """
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_LIMIT}, got {limit}")
    boundary = None if after is None else _order(after)
    seen: set[int | str] = set()
    candidates: list[tuple[tuple[int, tuple[int, int | str]], int, RowT]] = []
    for index, row in enumerate(rows):
        if row.key in seen:
            raise ValueError(f"duplicate drilldown key {row.key!r}")
        seen.add(row.key)
        if not any(row.values.values()):
            continue
        order = _order(sort_key_of(row, metric))
        if boundary is None or order > boundary:
            candidates.append((order, index, row))
    # The index never decides (keys are unique); it keeps rows themselves out of comparisons.
    chosen = heapq.nsmallest(limit + 1, candidates)
    page = [row for _, _, row in chosen[:limit]]
    next_after = sort_key_of(page[-1], metric) if len(chosen) > limit else None
    return page, next_after


def _order(sort_key: SortKey) -> tuple[int, tuple[int, int | str]]:
    """Ascending comparison key: value descending, then ints (numerically) before strings."""
    value, key = sort_key
    return -value, ((0, key) if isinstance(key, int) else (1, key))
