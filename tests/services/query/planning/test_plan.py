"""Window planner: tier choice, dirty buckets, watermarks, horizons, missing ranges and cost."""

from __future__ import annotations

import pytest

from services.query.planning.plan import (
    DEFAULT_RAW_FACTS_PER_SECOND,
    Plan,
    TierRange,
    estimate_cost,
    plan_window,
)

MIN, HOUR, DAY = 60, 3_600, 86_400
T0 = 19_000 * DAY  # an aligned day, 2022-01-08T00:00:00Z
FAR = T0 + 10_000 * DAY
ALL_COMPLETE = {"day": FAR, "hour": FAR, "minute": FAR}
NO_RETENTION: dict[str, int] = {}
NO_DIRTY: dict[str, frozenset[int]] = {}
NO_BLOCKS = {"day64": 0, "day8": 0}  # these tests leave the block tiers out of the watermarks: never read
WITH_BLOCKS = ALL_COMPLETE | {"day8": FAR, "day64": FAR}


def _covered(plan: Plan) -> list[tuple[int, int, str]]:
    pieces = [(s.start, s.end, s.tier) for s in plan.segments]
    pieces += [(a, b, "raw") for a, b in plan.raw] + [(a, b, "missing") for a, b in plan.missing]
    return sorted(pieces)


def _assert_partition(plan: Plan) -> None:
    pieces = _covered(plan)
    assert pieces[0][0] == plan.start
    assert pieces[-1][1] == plan.end
    for (_, end, _), (start, _, _) in zip(pieces, pieces[1:], strict=False):
        assert end == start


def test_same_inputs_give_identical_plans() -> None:
    args = (T0 + 123, T0 + 40 * DAY + 4567, {"hour": frozenset({T0 + 5 * DAY})}, ALL_COMPLETE, {"facts": T0})
    assert plan_window(*args) == plan_window(*args)
    assert repr(plan_window(*args)) == repr(plan_window(*args))


def test_aligned_thirty_day_window_reads_exactly_thirty_day_buckets() -> None:
    plan = plan_window(T0, T0 + 30 * DAY, NO_DIRTY, ALL_COMPLETE, NO_RETENTION)
    assert plan.segments == (TierRange("day", T0, T0 + 30 * DAY),)
    assert plan.buckets == NO_BLOCKS | {"day": 30, "hour": 0, "minute": 0}
    assert plan.raw == () and plan.missing == ()


def test_unaligned_thirty_day_window_uses_days_hours_minutes_and_raw_edges() -> None:
    start = T0 + 5 * HOUR + 7 * MIN + 13
    plan = plan_window(start, start + 30 * DAY, NO_DIRTY, ALL_COMPLETE, NO_RETENTION)
    assert plan.buckets == NO_BLOCKS | {"day": 29, "hour": 18 + 5, "minute": 52 + 7}
    assert plan.raw == ((start, start + 47), (start + 30 * DAY - 13, start + 30 * DAY))
    assert [s.tier for s in plan.segments] == ["minute", "hour", "day", "hour", "minute"]
    assert sum(plan.buckets.values()) < 200  # not 43,200 minutes
    _assert_partition(plan)


def test_window_inside_one_minute_is_all_raw() -> None:
    plan = plan_window(T0 + 10, T0 + 50, NO_DIRTY, ALL_COMPLETE, NO_RETENTION)
    assert plan.segments == () and plan.raw == ((T0 + 10, T0 + 50),)


def test_empty_window_gives_empty_plan_and_reversed_window_is_an_error() -> None:
    assert plan_window(T0, T0, NO_DIRTY, ALL_COMPLETE, NO_RETENTION).segments == ()
    with pytest.raises(ValueError):
        plan_window(T0 + 1, T0, NO_DIRTY, ALL_COMPLETE, NO_RETENTION)


def test_dirty_day_is_covered_by_its_hours_and_never_read() -> None:
    dirty_day = T0 + 3 * DAY
    plan = plan_window(T0, T0 + 7 * DAY, {"day": frozenset({dirty_day})}, ALL_COMPLETE, NO_RETENTION)
    assert plan.segments == (
        TierRange("day", T0, dirty_day),
        TierRange("hour", dirty_day, dirty_day + DAY),
        TierRange("day", dirty_day + DAY, T0 + 7 * DAY),
    )
    assert plan.buckets == NO_BLOCKS | {"day": 6, "hour": 24, "minute": 0}


def test_dirty_day_and_dirty_hour_fall_to_minutes_and_dirty_minute_to_raw() -> None:
    dirty_day, dirty_hour = T0 + DAY, T0 + DAY + 5 * HOUR
    dirty_minute = dirty_hour + 10 * MIN
    dirty = {
        "day": frozenset({dirty_day}),
        "hour": frozenset({dirty_hour}),
        "minute": frozenset({dirty_minute}),
    }
    plan = plan_window(T0, T0 + 3 * DAY, dirty, ALL_COMPLETE, NO_RETENTION)
    assert plan.buckets == NO_BLOCKS | {"day": 2, "hour": 23, "minute": 59}
    assert plan.raw == ((dirty_minute, dirty_minute + MIN),)
    for seg in plan.segments:
        bad = dirty.get(seg.tier, frozenset())
        assert not any(seg.start <= b < seg.end for b in bad)
    _assert_partition(plan)


def test_runs_are_split_around_dirty_buckets_into_few_ranges() -> None:
    dirty = {"hour": frozenset({T0 + 2 * HOUR, T0 + 3 * HOUR, T0 + 9 * HOUR})}
    watermarks = {"hour": FAR}
    plan = plan_window(T0, T0 + 12 * HOUR, dirty, watermarks, NO_RETENTION)
    assert [s for s in plan.segments] == [
        TierRange("hour", T0, T0 + 2 * HOUR),
        TierRange("hour", T0 + 4 * HOUR, T0 + 9 * HOUR),
        TierRange("hour", T0 + 10 * HOUR, T0 + 12 * HOUR),
    ]
    assert plan.raw == ((T0 + 2 * HOUR, T0 + 4 * HOUR), (T0 + 9 * HOUR, T0 + 10 * HOUR))


def test_unaligned_dirty_start_marks_the_bucket_containing_it() -> None:
    plan = plan_window(T0, T0 + 2 * DAY, {"day": frozenset({T0 + 5})}, {"day": FAR}, NO_RETENTION)
    assert plan.segments == (TierRange("day", T0 + DAY, T0 + 2 * DAY),)


def test_time_past_each_watermark_falls_to_finer_tiers_then_raw() -> None:
    end = T0 + 3 * DAY
    watermarks = {
        "day": T0 + DAY,
        "hour": T0 + 2 * DAY + 5 * HOUR,
        "minute": T0 + 2 * DAY + 5 * HOUR + 30 * MIN,
    }
    plan = plan_window(T0, end, NO_DIRTY, watermarks, NO_RETENTION)
    assert plan.segments == (
        TierRange("day", T0, T0 + DAY),
        TierRange("hour", T0 + DAY, T0 + 2 * DAY + 5 * HOUR),
        TierRange("minute", T0 + 2 * DAY + 5 * HOUR, T0 + 2 * DAY + 5 * HOUR + 30 * MIN),
    )
    assert plan.raw == ((T0 + 2 * DAY + 5 * HOUR + 30 * MIN, end),)


def test_unaligned_watermark_only_admits_buckets_ending_at_or_before_it() -> None:
    plan = plan_window(T0, T0 + 2 * HOUR, NO_DIRTY, {"hour": T0 + HOUR + 59 * MIN}, NO_RETENTION)
    assert plan.segments == (TierRange("hour", T0, T0 + HOUR),)


def test_tier_without_watermark_is_never_read() -> None:
    plan = plan_window(T0, T0 + DAY, NO_DIRTY, {"minute": FAR}, NO_RETENTION)
    assert plan.buckets == NO_BLOCKS | {"day": 0, "hour": 0, "minute": 1440}


def test_minutes_before_their_horizon_are_replaced_by_raw_facts() -> None:
    start = T0 + 10 * HOUR + 15 * MIN
    horizons = {"minute": T0 + 20 * DAY, "hour": T0, "facts": T0}
    plan = plan_window(start, T0 + 2 * DAY, NO_DIRTY, ALL_COMPLETE, horizons)
    assert plan.buckets == NO_BLOCKS | {"day": 1, "hour": 13, "minute": 0}
    assert plan.raw == ((start, T0 + 11 * HOUR),)
    assert plan.missing == ()


def test_edges_before_facts_horizon_are_missing_with_retention_reason() -> None:
    start = T0 + 10 * HOUR + 15 * MIN + 7
    horizons = {"minute": T0 + 100 * DAY, "hour": T0, "facts": T0 + 90 * DAY}
    plan = plan_window(start, T0 + 2 * DAY, NO_DIRTY, ALL_COMPLETE, horizons)
    assert plan.missing == ((start, T0 + 11 * HOUR),)
    assert plan.raw == ()
    assert plan.partial and plan.partial_reasons == ("retention",)
    assert plan.missing_seconds == 45 * MIN - 7


def test_old_dirty_hour_with_no_finer_data_is_missing() -> None:
    dirty_hour = T0 + 4 * HOUR
    dirty = {"day": frozenset({T0}), "hour": frozenset({dirty_hour})}
    horizons = {"minute": FAR, "facts": FAR}
    plan = plan_window(T0, T0 + DAY, dirty, ALL_COMPLETE, horizons)
    assert plan.missing == ((dirty_hour, dirty_hour + HOUR),)
    assert plan.buckets == NO_BLOCKS | {"day": 0, "hour": 23, "minute": 0}


def test_before_facts_horizon_finest_inside_bucket_answers_and_only_edges_are_missing() -> None:
    # Hours are gone too (past their 400-day horizon); days remain: the whole
    # days inside the window answer, the partial-day edges are missing.
    start, end = T0 + 6 * HOUR, T0 + 3 * DAY + 6 * HOUR
    horizons = {"minute": FAR, "hour": FAR, "facts": FAR}
    plan = plan_window(start, end, NO_DIRTY, ALL_COMPLETE, horizons)
    assert plan.segments == (TierRange("day", T0 + DAY, T0 + 3 * DAY),)
    assert plan.missing == ((start, T0 + DAY), (T0 + 3 * DAY, end))


def test_window_straddling_facts_horizon_splits_raw_and_missing() -> None:
    plan = plan_window(T0 + 10, T0 + 50, NO_DIRTY, ALL_COMPLETE, {"facts": T0 + 30})
    assert plan.missing == ((T0 + 10, T0 + 30),)
    assert plan.raw == ((T0 + 30, T0 + 50),)


def test_unaligned_tier_horizon_admits_buckets_starting_at_or_after_it() -> None:
    plan = plan_window(T0, T0 + 3 * HOUR, NO_DIRTY, {"hour": FAR}, {"hour": T0 + 1})
    assert plan.segments == (TierRange("hour", T0 + HOUR, T0 + 3 * HOUR),)
    assert plan.raw == ((T0, T0 + HOUR),)


def test_cost_counts_range_scans_buckets_and_estimated_raw_rows() -> None:
    start = T0 + 5 * HOUR + 7 * MIN + 13
    plan = plan_window(start, start + 30 * DAY, NO_DIRTY, ALL_COMPLETE, NO_RETENTION)
    cost = estimate_cost(plan, 2.0)
    assert cost.range_scans == 5 + 2
    assert cost.buckets == 29 + 23 + 59
    assert cost.raw_seconds == 60
    assert cost.raw_rows == 120.0
    assert cost.units == 10.0 * 7 + 111 + 120
    assert estimate_cost(plan, None).raw_rows == pytest.approx(60 * DEFAULT_RAW_FACTS_PER_SECOND)


def test_cost_of_raw_heavy_plan_exceeds_cost_of_rolled_up_plan() -> None:
    rolled = plan_window(T0, T0 + 30 * DAY, NO_DIRTY, ALL_COMPLETE, NO_RETENTION)
    raw = plan_window(T0, T0 + 30 * DAY, NO_DIRTY, {}, NO_RETENTION)
    assert estimate_cost(raw, None).units > 100 * estimate_cost(rolled, None).units


@pytest.mark.parametrize("rate", [-1.0, float("nan")])
def test_cost_rejects_negative_or_nan_rate(rate: float) -> None:
    plan = plan_window(T0, T0 + DAY, NO_DIRTY, ALL_COMPLETE, NO_RETENTION)
    with pytest.raises(ValueError):
        estimate_cost(plan, rate)


def test_year_window_reads_day_blocks_not_three_hundred_sixty_five_days() -> None:
    start = T0 + 5 * HOUR + 7 * MIN + 13  # unaligned, like a rolling window ending at a live `now`
    plan = plan_window(start, start + 365 * DAY, NO_DIRTY, WITH_BLOCKS, NO_RETENTION)
    _assert_partition(plan)
    assert plan.buckets["day64"] >= 4
    assert plan.buckets["day"] <= 2 * 7 and plan.buckets["day8"] <= 2 * 7
    day_rows = sum(plan.buckets[t] for t in ("day64", "day8", "day"))
    assert day_rows <= 4 + 2 * 7 + 2 * 7 + 1  # at most ~33 rows of day-sized sets, against 364 without blocks
    for seg in plan.segments:
        size = {"day64": 64 * DAY, "day8": 8 * DAY}.get(seg.tier)
        if size:
            assert seg.start % size == 0 and seg.end % size == 0  # blocks are aligned to the epoch


def test_dirty_day_inside_a_block_sends_the_planner_down_to_days_around_it() -> None:
    block = T0 - T0 % (64 * DAY) + 64 * DAY
    dirty_day = block + 20 * DAY
    # A dirty day makes its 8-day block and its 64-day block unreadable (context.dirty_sets marks every tier up).
    dirty = {"day": frozenset({dirty_day}), "day8": frozenset({dirty_day}), "day64": frozenset({dirty_day})}
    plan = plan_window(block, block + 64 * DAY, dirty, WITH_BLOCKS, NO_RETENTION)
    _assert_partition(plan)
    assert plan.buckets == {"day64": 0, "day8": 7, "day": 7, "hour": 24, "minute": 0}
    assert TierRange("hour", dirty_day, dirty_day + DAY) in plan.segments
