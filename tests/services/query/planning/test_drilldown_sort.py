"""Drilldown ordering and keyset paging."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.query.planning.drilldown_sort import Row, SortKey, page_rows


def row(key: int | str, **values: int) -> Row:
    return Row(key, {name.replace("_", "."): v for name, v in values.items()})


ROWS = [
    row("c", zaps_msats=5000, reactions_count=1),
    row("a", zaps_msats=5000, reactions_count=0),
    row("b", zaps_msats=9000),
    row("d", zaps_msats=0, reactions_count=3),
    row("e", zaps_msats=0, reactions_count=0),
]


def test_rows_sort_by_metric_descending_then_key_ascending() -> None:
    page, after = page_rows(ROWS, "zaps.msats", 10, None)
    assert [r.key for r in page] == ["b", "a", "c", "d"]
    assert after is None


def test_all_zero_rows_are_omitted_but_zero_metric_rows_with_other_columns_stay() -> None:
    page, _ = page_rows(ROWS, "reactions.count", 10, None)
    assert [r.key for r in page] == ["d", "c", "a", "b"]


def test_pages_continue_strictly_after_the_cursor_key() -> None:
    first, after = page_rows(ROWS, "zaps.msats", 2, None)
    assert [r.key for r in first] == ["b", "a"]
    assert after == (5000, "a")
    second, after2 = page_rows(ROWS, "zaps.msats", 2, after)
    assert [r.key for r in second] == ["c", "d"]
    assert after2 is None


def test_exactly_full_last_page_has_no_next_cursor() -> None:
    page, after = page_rows(ROWS, "zaps.msats", 4, None)
    assert len(page) == 4 and after is None


def test_integer_keys_sort_numerically() -> None:
    rows = [row(9735, count=1), row(7, count=1), row(16, count=1)]
    page, _ = page_rows(rows, "count", 10, None)
    assert [r.key for r in page] == [7, 16, 9735]


def test_rows_added_before_the_cursor_do_not_shift_later_pages() -> None:
    _, after = page_rows(ROWS, "zaps.msats", 2, None)
    grown = [*ROWS, row("zz", zaps_msats=99_999)]
    second, _ = page_rows(grown, "zaps.msats", 2, after)
    assert [r.key for r in second] == ["c", "d"]


@pytest.mark.parametrize("limit", [0, 501])
def test_limit_outside_1_to_500_is_rejected(limit: int) -> None:
    with pytest.raises(ValueError):
        page_rows(ROWS, "zaps.msats", limit, None)


def test_duplicate_keys_are_rejected() -> None:
    with pytest.raises(ValueError):
        page_rows([row("a", x=1), row("a", x=2)], "x", 10, None)


@settings(max_examples=200, deadline=None)
@given(
    values=st.dictionaries(st.text(max_size=3), st.tuples(st.integers(0, 5), st.integers(0, 2)), max_size=30),
    limit=st.integers(1, 7),
)
def test_following_cursors_visits_every_nonzero_row_once_in_order(
    values: dict[str, tuple[int, int]], limit: int
) -> None:
    rows = [row(k, m=v, other=o) for k, (v, o) in values.items()]
    expected = sorted(
        (r for r in rows if r.values["m"] or r.values["other"]), key=lambda r: (-r.values["m"], r.key)
    )
    seen: list[Row] = []
    after: SortKey | None = None
    while True:
        page, after = page_rows(rows, "m", limit, after)
        assert len(page) <= limit
        seen.extend(page)
        if after is None:
            break
        assert len(page) == limit
    assert seen == expected
