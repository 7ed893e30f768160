"""Time-series buckets: local midnights, ISO weeks, months, DST gaps/overlaps, odd offsets, limits."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.windows.errors import TooManyPoints, WindowError
from services.query.planning.timeseries import MAX_POINTS, TimeBucket, time_buckets

UTC_ZONE = ZoneInfo("UTC")
HOUR = 3_600


def utc(text: str) -> int:
    """Unix seconds of a naive ISO string read as UTC."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def local(text: str, zone: str) -> int:
    """Unix seconds of an ISO string with explicit offset, checked to be a real reading of ``zone``."""
    moment = datetime.fromisoformat(text)
    assert datetime.fromtimestamp(moment.timestamp(), ZoneInfo(zone)).utcoffset() == moment.utcoffset()
    return int(moment.timestamp())


def starts(buckets: list[TimeBucket]) -> list[int]:
    return [b.start for b in buckets]


def test_utc_days_are_aligned_and_clipped_to_the_window() -> None:
    start, end = utc("2024-01-01T06:00:00"), utc("2024-01-04T12:00:00")
    assert time_buckets(start, end, "day", UTC_ZONE) == [
        (start, utc("2024-01-02T00:00:00")),
        (utc("2024-01-02T00:00:00"), utc("2024-01-03T00:00:00")),
        (utc("2024-01-03T00:00:00"), utc("2024-01-04T00:00:00")),
        (utc("2024-01-04T00:00:00"), end),
    ]


def test_window_inside_one_bucket_gives_one_clipped_point() -> None:
    start, end = utc("2024-01-01T06:00:00"), utc("2024-01-01T06:00:01")
    assert time_buckets(start, end, "month", UTC_ZONE) == [(start, end)]


def test_weeks_start_on_monday_local_midnight() -> None:
    zone = "Europe/Berlin"
    # 2024-01-03 is a Wednesday.
    buckets = time_buckets(utc("2024-01-03T00:00:00"), utc("2024-01-20T00:00:00"), "week", ZoneInfo(zone))
    assert starts(buckets)[1:] == [
        local("2024-01-08T00:00:00+01:00", zone),
        local("2024-01-15T00:00:00+01:00", zone),
    ]
    for b in buckets[1:]:
        assert datetime.fromtimestamp(b.start, ZoneInfo(zone)).weekday() == 0


def test_months_start_on_the_first_and_have_calendar_lengths() -> None:
    zone = ZoneInfo("America/New_York")
    buckets = time_buckets(utc("2024-01-15T00:00:00"), utc("2024-05-15T00:00:00"), "month", zone)
    assert len(buckets) == 5
    firsts = [datetime.fromtimestamp(b.start, zone) for b in buckets[1:]]
    assert [(d.month, d.day, d.hour, d.minute) for d in firsts] == [(m, 1, 0, 0) for m in (2, 3, 4, 5)]
    # February 2024 has 29 days; March loses an hour to DST.
    assert buckets[1].end - buckets[1].start == 29 * 24 * HOUR
    assert buckets[2].end - buckets[2].start == 31 * 24 * HOUR - HOUR


def test_new_york_spring_forward_day_is_23_hours_and_skips_2am() -> None:
    zone = "America/New_York"
    day = time_buckets(utc("2024-03-10T05:00:00"), utc("2024-03-11T04:00:00"), "day", ZoneInfo(zone))
    assert day == [(local("2024-03-10T00:00:00-05:00", zone), local("2024-03-11T00:00:00-04:00", zone))]
    hours = time_buckets(utc("2024-03-10T05:00:00"), utc("2024-03-10T09:00:00"), "hour", ZoneInfo(zone))
    assert starts(hours) == [
        local("2024-03-10T00:00:00-05:00", zone),
        local("2024-03-10T01:00:00-05:00", zone),
        local("2024-03-10T03:00:00-04:00", zone),
        local("2024-03-10T04:00:00-04:00", zone),
    ]
    assert all(b.end - b.start == HOUR for b in hours)


def test_new_york_fall_back_day_is_25_hours_and_repeats_1am() -> None:
    zone = "America/New_York"
    day = time_buckets(utc("2024-11-03T04:00:00"), utc("2024-11-04T05:00:00"), "day", ZoneInfo(zone))
    assert day == [(local("2024-11-03T00:00:00-04:00", zone), local("2024-11-04T00:00:00-05:00", zone))]
    hours = time_buckets(utc("2024-11-03T04:00:00"), utc("2024-11-03T08:00:00"), "hour", ZoneInfo(zone))
    assert starts(hours) == [
        local("2024-11-03T00:00:00-04:00", zone),
        local("2024-11-03T01:00:00-04:00", zone),
        local("2024-11-03T01:00:00-05:00", zone),
        local("2024-11-03T02:00:00-05:00", zone),
    ]


def test_london_days_around_both_transitions() -> None:
    zone = ZoneInfo("Europe/London")
    spring = time_buckets(utc("2024-03-30T00:00:00"), utc("2024-04-02T00:00:00"), "day", zone)
    assert [b.end - b.start for b in spring] == [24 * HOUR, 23 * HOUR, 24 * HOUR, HOUR]
    fall = time_buckets(utc("2024-10-26T00:00:00"), utc("2024-10-28T00:00:00"), "day", zone)
    assert starts(fall) == [utc("2024-10-26T00:00:00"), utc("2024-10-26T23:00:00")]
    assert fall[1].end - fall[1].start == 25 * HOUR


def test_kolkata_days_start_at_1830_utc_and_hours_at_half_past() -> None:
    zone = ZoneInfo("Asia/Kolkata")
    days = time_buckets(utc("2024-06-01T00:00:00"), utc("2024-06-03T00:00:00"), "day", zone)
    assert starts(days)[1:] == [utc("2024-06-01T18:30:00"), utc("2024-06-02T18:30:00")]
    hours = time_buckets(utc("2024-06-01T00:00:00"), utc("2024-06-01T03:00:00"), "hour", zone)
    assert starts(hours) == [
        utc("2024-06-01T00:00:00"),
        utc("2024-06-01T00:30:00"),
        utc("2024-06-01T01:30:00"),
        utc("2024-06-01T02:30:00"),
    ]


def test_kathmandu_quarter_hour_offset_and_its_1986_change() -> None:
    zone = ZoneInfo("Asia/Kathmandu")
    days = time_buckets(utc("2024-06-01T00:00:00"), utc("2024-06-02T00:00:00"), "day", zone)
    assert starts(days)[1:] == [utc("2024-06-01T18:15:00")]
    # 1986-01-01 00:00 +05:30 became 00:15 +05:45: local midnight never existed that day.
    change = utc("1985-12-31T18:30:00")
    hours = time_buckets(change - HOUR, change + 2 * HOUR, "hour", zone)
    assert starts(hours) == [change - HOUR, change, utc("1985-12-31T19:15:00"), utc("1985-12-31T20:15:00")]
    days = time_buckets(change - HOUR, change + HOUR, "day", zone)
    assert starts(days) == [change - HOUR, change]


def test_lord_howe_half_hour_dst_start_gives_a_30_minute_local_hour() -> None:
    zone = "Australia/Lord_Howe"
    # 2024-10-06 02:00 +10:30 jumps to 02:30 +11:00.
    hours = time_buckets(utc("2024-10-05T14:30:00"), utc("2024-10-05T17:00:00"), "hour", ZoneInfo(zone))
    assert hours == [
        (local("2024-10-06T01:00:00+10:30", zone), local("2024-10-06T02:30:00+11:00", zone)),
        (local("2024-10-06T02:30:00+11:00", zone), local("2024-10-06T03:00:00+11:00", zone)),
        (local("2024-10-06T03:00:00+11:00", zone), local("2024-10-06T04:00:00+11:00", zone)),
    ]
    day = time_buckets(utc("2024-10-05T13:30:00"), utc("2024-10-06T13:00:00"), "day", ZoneInfo(zone))
    assert day == [(utc("2024-10-05T13:30:00"), utc("2024-10-06T13:00:00"))]  # 23.5 hours
    assert day[0].end - day[0].start == 23 * HOUR + HOUR // 2


def test_lord_howe_half_hour_dst_end_gives_a_90_minute_local_hour() -> None:
    zone = "Australia/Lord_Howe"
    # 2024-04-07 02:00 +11:00 falls back to 01:30 +10:30.
    hours = time_buckets(utc("2024-04-06T13:00:00"), utc("2024-04-06T16:30:00"), "hour", ZoneInfo(zone))
    assert hours == [
        (local("2024-04-07T00:00:00+11:00", zone), local("2024-04-07T01:00:00+11:00", zone)),
        (local("2024-04-07T01:00:00+11:00", zone), local("2024-04-07T02:00:00+10:30", zone)),
        (local("2024-04-07T02:00:00+10:30", zone), utc("2024-04-06T16:30:00")),
    ]
    days = time_buckets(utc("2024-04-06T12:00:00"), utc("2024-04-08T00:00:00"), "day", ZoneInfo(zone))
    assert days[1] == (utc("2024-04-06T13:00:00"), utc("2024-04-07T13:30:00"))  # 24.5 hours


def test_nonexistent_local_midnight_starts_the_day_at_the_first_instant_after_it() -> None:
    zone = "America/Santiago"
    # 2024-09-08 00:00 -04:00 does not exist: clocks jump to 01:00 -03:00.
    days = time_buckets(utc("2024-09-07T04:00:00"), utc("2024-09-09T03:00:00"), "day", ZoneInfo(zone))
    assert days == [
        (utc("2024-09-07T04:00:00"), utc("2024-09-08T04:00:00")),
        (local("2024-09-08T01:00:00-03:00", zone), local("2024-09-09T00:00:00-03:00", zone)),
    ]


def test_minute_buckets_are_whole_local_minutes() -> None:
    start = utc("2024-06-01T00:00:30")
    buckets = time_buckets(start, start + 150, "minute", ZoneInfo("Asia/Kathmandu"))
    assert buckets == [(start, start + 30), (start + 30, start + 90), (start + 90, start + 150)]


def test_exactly_max_points_is_allowed() -> None:
    start = utc("2024-01-01T00:00:00")
    assert len(time_buckets(start, start + MAX_POINTS * 60, "minute", UTC_ZONE)) == MAX_POINTS


def test_more_than_max_points_is_invalid_window_suggesting_coarser_granularity() -> None:
    start = utc("2024-01-01T00:00:00")
    with pytest.raises(TooManyPoints) as info:
        time_buckets(start, start + MAX_POINTS * 60 + 1, "minute", UTC_ZONE)
    assert info.value.code == "INVALID_WINDOW"
    assert info.value.field == "granularity"
    assert "granularity=hour" in info.value.hint


def test_series_over_a_decade_of_days_suggests_weeks() -> None:
    with pytest.raises(TooManyPoints) as info:
        time_buckets(0, 315_576_000, "day", UTC_ZONE)
    assert "granularity=week" in info.value.hint


def test_unknown_granularity_is_rejected() -> None:
    with pytest.raises(WindowError) as info:
        time_buckets(0, 100, "year", UTC_ZONE)
    assert info.value.field == "granularity"


ZONES = [
    "UTC",
    "America/New_York",
    "Europe/London",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Pacific/Chatham",
]
LIMITS = {
    "minute": 900 * 60,
    "hour": 900 * HOUR,
    "day": 900 * 86_400,
    "week": 52 * 7 * 86_400,
    "month": 5 * 365 * 86_400,
}


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    granularity=st.sampled_from(list(LIMITS)),
    start=st.integers(utc("1985-06-01T00:00:00"), utc("2030-01-01T00:00:00")),
    fraction=st.floats(0.0, 1.0),
)
def test_buckets_partition_the_window_and_change_label_at_each_boundary(
    zone: str, granularity: str, start: int, fraction: float
) -> None:
    tz = ZoneInfo(zone)
    end = start + 1 + int(fraction * LIMITS[granularity])
    buckets = time_buckets(start, end, granularity, tz)
    assert buckets[0].start == start and buckets[-1].end == end
    for left, right in zip(buckets, buckets[1:], strict=False):
        assert left.start < left.end == right.start
    for b in buckets[1:]:
        before, at = datetime.fromtimestamp(b.start - 1, tz), datetime.fromtimestamp(b.start, tz)
        offset_changed = before.utcoffset() != at.utcoffset()
        if granularity == "minute":
            assert at.second == 0 or offset_changed
        elif granularity == "hour":
            assert (at.minute, at.second) == (0, 0) or offset_changed
        else:
            assert (at.hour, at.minute, at.second) == (0, 0, 0) or (
                offset_changed and at.date() != before.date()
            )
            if granularity == "week":
                assert at.weekday() == 0
            if granularity == "month":
                assert at.day == 1
