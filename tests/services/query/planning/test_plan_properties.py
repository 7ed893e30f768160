"""Property: every plan partitions its window and reads only clean, available, complete buckets."""

from __future__ import annotations

import functools

from hypothesis import given, settings
from hypothesis import strategies as st

from services.query.planning.plan import TIER_SECONDS, TIERS, plan_window

DAY = 86_400
BASE = 20_000 * DAY  # aligned day
SPAN = 6 * DAY  # inputs range over a few days so windows cross day/hour/minute boundaries


def _align(t: int, size: int) -> int:
    return t - t % size


@st.composite
def planner_inputs(
    draw: st.DrawFn,
) -> tuple[int, int, dict[str, frozenset[int]], dict[str, int], dict[str, int]]:
    start = BASE + draw(st.integers(0, SPAN))
    end = start + draw(
        st.one_of(
            st.integers(0, 120),
            st.integers(0, 3 * 3_600),
            st.integers(0, SPAN),
            st.sampled_from([DAY, 2 * DAY, 3_600, 60]),
        )
    )
    times = st.integers(BASE - DAY, BASE + 2 * SPAN)
    dirty: dict[str, frozenset[int]] = {}
    watermarks: dict[str, int] = {}
    horizons: dict[str, int] = {}
    for tier in TIERS:
        size = TIER_SECONDS[tier]
        aligned = times.map(functools.partial(_align, size=size))
        dirty[tier] = draw(st.frozensets(st.one_of(aligned, times), max_size=12))
        if draw(st.booleans()):
            watermarks[tier] = draw(st.one_of(times, aligned))
        if draw(st.booleans()):
            horizons[tier] = draw(st.one_of(times, aligned))
    if draw(st.booleans()):
        horizons["facts"] = draw(times)
    return start, end, dirty, watermarks, horizons


@settings(max_examples=400, deadline=None)
@given(planner_inputs())
def test_segments_raw_and_missing_partition_the_window(
    inputs: tuple[int, int, dict[str, frozenset[int]], dict[str, int], dict[str, int]],
) -> None:
    start, end, dirty, watermarks, horizons = inputs
    plan = plan_window(start, end, dirty, watermarks, horizons)
    pieces = sorted(
        [(s.start, s.end) for s in plan.segments] + list(plan.raw) + list(plan.missing),
    )
    assert all(a < b for a, b in pieces)
    position = start
    for a, b in pieces:
        assert a == position, "gap or overlap"
        position = b
    assert position == end


@settings(max_examples=400, deadline=None)
@given(planner_inputs())
def test_no_segment_reads_a_dirty_unavailable_or_incomplete_bucket(
    inputs: tuple[int, int, dict[str, frozenset[int]], dict[str, int], dict[str, int]],
) -> None:
    start, end, dirty, watermarks, horizons = inputs
    plan = plan_window(start, end, dirty, watermarks, horizons)
    read = {tier: 0 for tier in TIERS}
    for seg in plan.segments:
        size = TIER_SECONDS[seg.tier]
        assert seg.start % size == 0 and seg.end % size == 0
        assert start <= seg.start < seg.end <= end
        assert seg.tier in watermarks and seg.end <= watermarks[seg.tier]
        assert seg.start >= horizons.get(seg.tier, seg.start)
        dirty_buckets = {b - b % size for b in dirty[seg.tier]}
        assert not any(seg.start <= b < seg.end for b in dirty_buckets)
        read[seg.tier] += (seg.end - seg.start) // size
    assert plan.buckets == read


@settings(max_examples=400, deadline=None)
@given(planner_inputs())
def test_raw_is_never_below_the_facts_horizon_and_missing_only_below_it(
    inputs: tuple[int, int, dict[str, frozenset[int]], dict[str, int], dict[str, int]],
) -> None:
    start, end, dirty, watermarks, horizons = inputs
    plan = plan_window(start, end, dirty, watermarks, horizons)
    facts_horizon = horizons.get("facts", start)
    assert all(a >= facts_horizon for a, _ in plan.raw)
    assert all(b <= facts_horizon for _, b in plan.missing)


@settings(max_examples=200, deadline=None)
@given(planner_inputs())
def test_segments_are_time_ordered_and_maximally_merged(
    inputs: tuple[int, int, dict[str, frozenset[int]], dict[str, int], dict[str, int]],
) -> None:
    plan = plan_window(*inputs)
    for left, right in zip(plan.segments, plan.segments[1:], strict=False):
        assert left.end <= right.start
        assert not (left.tier == right.tier and left.end == right.start)
    for ranges in (plan.raw, plan.missing):
        for (_, b), (c, _) in zip(ranges, ranges[1:], strict=False):
            assert b < c


@settings(max_examples=200, deadline=None)
@given(planner_inputs())
def test_no_usable_coarser_bucket_is_left_unread(
    inputs: tuple[int, int, dict[str, frozenset[int]], dict[str, int], dict[str, int]],
) -> None:
    """Raw and missing time never lies inside a usable bucket of any tier (greedy completeness)."""
    start, end, dirty, watermarks, horizons = inputs
    plan = plan_window(start, end, dirty, watermarks, horizons)
    for a, b in plan.raw + plan.missing:
        for tier in TIERS:
            if tier not in watermarks:
                continue
            size = TIER_SECONDS[tier]
            dirty_buckets = {d - d % size for d in dirty[tier]}
            bucket = a - a % size
            while bucket < b:
                usable = (
                    start <= bucket
                    and bucket + size <= end
                    and bucket >= horizons.get(tier, start)
                    and bucket + size <= watermarks[tier]
                    and bucket not in dirty_buckets
                )
                assert not usable, (tier, bucket)
                bucket += size
