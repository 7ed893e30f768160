"""Window resolution: rolling windows, custom bounds, RFC 3339 parsing and every validation error."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from libs.windows.errors import InvalidTimezone, WindowError
from libs.windows.windows import (
    MAX_SPAN_SECONDS,
    Window,
    parse_time,
    parse_tz,
    resolve_window,
)

NOW = 1_700_000_000  # 2023-11-14T22:13:20Z


def _error(window: str | None, start: str | None, end: str | None, now: int | float = NOW) -> WindowError:
    with pytest.raises(WindowError) as info:
        resolve_window(window, start, end, now)
    assert info.value.code == "INVALID_WINDOW"
    assert info.value.message and info.value.hint
    return info.value


@pytest.mark.parametrize(
    ("name", "length"),
    [("1h", 3600), ("24h", 86400), ("7d", 604800), ("30d", 2592000), ("90d", 7776000), ("365d", 31536000)],
)
def test_rolling_window_ends_at_now_and_spans_its_length(name: str, length: int) -> None:
    assert resolve_window(name, None, None, NOW) == Window(NOW - length, NOW, name)


def test_window_all_starts_at_epoch() -> None:
    assert resolve_window("all", None, None, NOW) == Window(0, NOW, "all")


def test_rolling_window_truncates_now_to_the_second() -> None:
    assert resolve_window("1h", None, None, NOW + 0.999) == Window(NOW - 3600, NOW, "1h")


def test_rolling_window_longer_than_time_since_epoch_starts_at_zero() -> None:
    assert resolve_window("365d", None, None, 1000) == Window(0, 1000, "365d")


def test_unknown_window_name_lists_allowed_names() -> None:
    err = _error("2d", None, None)
    assert err.field == "window"
    assert "1h|24h|7d|30d|90d|365d|all" in err.hint


def test_empty_window_is_invalid_not_absent() -> None:
    assert _error("", None, None).field == "window"


@pytest.mark.parametrize(("start", "end"), [("1", None), (None, "2"), ("1", "2")])
def test_window_together_with_start_or_end_is_rejected(start: str | None, end: str | None) -> None:
    err = _error("7d", start, end)
    assert err.field == "window"
    assert "not both" in err.hint


def test_no_window_at_all_is_rejected() -> None:
    assert _error(None, None, None).field == "window"


def test_start_without_end_names_end() -> None:
    assert _error(None, "1000", None).field == "end"


def test_end_without_start_names_start() -> None:
    assert _error(None, None, "1000").field == "start"


def test_custom_window_in_unix_seconds() -> None:
    assert resolve_window(None, "1000", "2000", NOW) == Window(1000, 2000, "custom")


def test_start_equal_to_end_is_rejected() -> None:
    err = _error(None, "1000", "1000")
    assert err.field == "end"
    assert "after start" in err.message


def test_start_after_end_is_rejected() -> None:
    assert _error(None, "2000", "1000").field == "end"


def test_end_up_to_sixty_seconds_after_now_is_allowed() -> None:
    assert resolve_window(None, str(NOW - 10), str(NOW + 60), NOW).end == NOW + 60


def test_end_more_than_sixty_seconds_after_now_is_rejected() -> None:
    err = _error(None, str(NOW - 10), str(NOW + 61))
    assert err.field == "end"
    assert "future" in err.message


def test_span_of_exactly_ten_years_is_allowed() -> None:
    window = resolve_window(None, str(NOW - MAX_SPAN_SECONDS), str(NOW), NOW)
    assert window.span == MAX_SPAN_SECONDS


def test_span_over_ten_years_is_rejected_and_suggests_window_all() -> None:
    err = _error(None, str(NOW - MAX_SPAN_SECONDS - 1), str(NOW))
    assert err.field == "start"
    assert "window=all" in err.hint


def test_window_all_is_exempt_from_the_span_limit() -> None:
    assert resolve_window("all", None, None, NOW).span > MAX_SPAN_SECONDS


@pytest.mark.parametrize("field", ["start", "end"])
def test_negative_unix_seconds_are_rejected(field: str) -> None:
    start, end = ("-5", "100") if field == "start" else ("0", "-5")
    err = _error(None, start, end)
    assert err.field == field
    assert "negative" in err.message


def test_rfc3339_before_epoch_is_rejected() -> None:
    err = _error(None, "1969-12-31T23:59:59Z", "100")
    assert err.field == "start"
    assert "1970" in err.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-14T22:13:20Z", NOW),
        ("2023-11-14t22:13:20z", NOW),
        ("2023-11-14T22:13:20+00:00", NOW),
        ("2023-11-14T22:13:20-00:00", NOW),
        ("2023-11-15T03:43:20+05:30", NOW),
        ("2023-11-15T03:58:20+05:45", NOW),
        ("2023-11-14T17:13:20-05:00", NOW),
        ("2023-11-14T22:13:20.999999999Z", NOW),
        ("2023-11-14T22:13:20.5+01:00", NOW - 3600),
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T01:00:00.75+01:00", 0),
        ("2016-12-31T23:59:60Z", 1483228800),
    ],
)
def test_rfc3339_offsets_are_applied_and_fractions_floored(text: str, expected: int) -> None:
    assert parse_time(text, "start") == expected


def test_rfc3339_custom_window_resolves() -> None:
    window = resolve_window(None, "2023-11-14T00:00:00+01:00", "2023-11-14T22:13:20.4Z", NOW)
    assert window == Window(1699916400, NOW, "custom")


def test_rfc3339_without_offset_is_rejected_with_offset_hint() -> None:
    err = _error(None, "2023-11-14T00:00:00", "1000")
    assert err.field == "start"
    assert "offset" in err.hint


def test_plus_offset_decoded_as_space_gets_url_encoding_hint() -> None:
    err = _error(None, "1000", "2023-11-14T00:00:00 05:30")
    assert err.field == "end"
    assert "%2B" in err.hint


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-30T00:00:00Z",
        "2023-13-01T00:00:00Z",
        "2023-11-14T24:00:00Z",
        "2023-11-14T00:60:00Z",
        "2023-11-14T00:00:00+24:00",
        "2023-11-14T00:00:00+05:60",
        "2023-11-14",
        "yesterday",
        "",
        "1.5",
        "+100",
        " 100",
        "١٢٣",  # non-ASCII digits
        "1" * 13,
        "2023-11-14T00:00:00Z" + "0" * 60,
    ],
)
def test_malformed_times_name_their_field(text: str) -> None:
    with pytest.raises(WindowError) as info:
        parse_time(text, "end")
    assert info.value.field == "end"
    assert info.value.code == "INVALID_WINDOW"


def test_decimal_unix_seconds_are_rejected_as_not_whole() -> None:
    err = _error(None, "1000.5", "2000")
    assert "whole" in err.message


def test_error_serializes_to_api_shape() -> None:
    err = _error(None, None, None)
    assert set(err.to_dict()) == {"code", "message", "hint", "field"}


def test_window_rejects_nonpositive_now_as_programming_error() -> None:
    with pytest.raises(ValueError):
        resolve_window("1h", None, None, 0)


@pytest.mark.parametrize("name", [None, ""])
def test_missing_tz_is_utc(name: str | None) -> None:
    assert parse_tz(name) == ZoneInfo("UTC")


@pytest.mark.parametrize("name", ["Asia/Kolkata", "America/New_York", "Australia/Lord_Howe", "Etc/GMT+5"])
def test_known_tz_is_returned(name: str) -> None:
    assert parse_tz(name) == ZoneInfo(name)


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "../../etc/passwd", "/etc/localtime", "America", "Europe/Berlin\x00", "x" * 100]
)
def test_unknown_or_malformed_tz_is_invalid_window_on_field_tz(name: str) -> None:
    with pytest.raises(InvalidTimezone) as info:
        parse_tz(name)
    assert info.value.code == "INVALID_WINDOW"
    assert info.value.field == "tz"
