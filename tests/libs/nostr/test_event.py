"""Shape rules (parse_event) and input lines (parse_line)."""

from __future__ import annotations

from typing import Any

import pytest

from libs.nostr.event import Event, Rejection, parse_event, parse_line

from .factories import signed


def _bad_json_detail(obj: object) -> str:
    with pytest.raises(Rejection) as info:
        parse_event(obj)
    assert info.value.reason == "bad_json"
    assert info.value.message
    return info.value.detail


def test_parse_event_builds_event_with_tuple_tags() -> None:
    raw = signed(tags=[["e", "x", "wss://r"], ["t", "a"]])
    ev = parse_event(raw)
    assert isinstance(ev, Event)
    assert ev.tags == (("e", "x", "wss://r"), ("t", "a"))
    assert ev.to_dict() == raw


def test_parse_event_ignores_extra_keys() -> None:
    raw = signed() | {"seen_on": ["wss://r"], "relay": 1}
    assert parse_event(raw).id == raw["id"]


@pytest.mark.parametrize("obj", [[], "event", 1, None])
def test_non_object_is_bad_json_not_object(obj: object) -> None:
    assert _bad_json_detail(obj) == "not_object"


@pytest.mark.parametrize("field", ["id", "pubkey", "created_at", "kind", "tags", "content", "sig"])
def test_missing_field_is_bad_json(field: str) -> None:
    raw = signed()
    del raw[field]
    assert _bad_json_detail(raw) == f"bad_{field}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "AB" * 32),
        ("id", "ab" * 31),
        ("id", 5),
        ("pubkey", "ab" * 33),
        ("pubkey", "g" * 64),
        ("sig", "ab" * 32),
        ("sig", "AB" * 64),
        ("created_at", -1),
        ("created_at", 1.0),
        ("created_at", True),
        ("created_at", "1700000000"),
        ("kind", -1),
        ("kind", 65536),
        ("kind", 1.0),
        ("kind", False),
        ("content", None),
        ("content", 1),
        ("tags", {}),
        ("tags", [[]]),
        ("tags", [["e", 1]]),
        ("tags", [["e", None]]),
        ("tags", ["e"]),
        ("tags", [[["e"]]]),
    ],
)
def test_field_with_wrong_shape_is_bad_json(field: str, value: Any) -> None:
    raw = signed()
    raw[field] = value
    assert _bad_json_detail(raw) == f"bad_{field}"


def test_shape_limits_that_are_allowed() -> None:
    raw = signed()
    raw["kind"] = 65535
    raw["created_at"] = 0
    raw["tags"] = [["single"]]
    ev = parse_event(raw)
    assert (ev.kind, ev.created_at, ev.tags) == (65535, 0, (("single",),))


def test_bad_json_rejection_carries_claimed_id() -> None:
    raw = signed()
    raw["kind"] = "1"
    with pytest.raises(Rejection) as info:
        parse_event(raw)
    assert info.value.event_id == raw["id"]


def test_tag_helpers_use_tag0_and_value_tag1() -> None:
    ev = parse_event(signed(tags=[["e"], ["e", "1"], ["p", "x"], ["e", "2", "r", "reply"], ["anon"]]))
    assert ev.tag_values("e") == ["1", "2"]
    assert ev.first_tag("e") == ("e", "1")
    assert ev.first_tag("q") is None
    assert ev.first_tag("anon") is None
    assert ev.has_tag("anon")


def test_parse_line_blank_lines_are_skipped() -> None:
    assert parse_line("") is None
    assert parse_line("   \n") is None
    assert parse_line(b"\r\n") is None


def test_parse_line_plain_event_object() -> None:
    assert parse_line('{"a": 1}') == {"a": 1}


def test_parse_line_unwraps_relay_frames() -> None:
    assert parse_line('["EVENT", "sub1", {"a": 1}]') == {"a": 1}
    assert parse_line(b'["EVENT", {"a": 2}]') == {"a": 2}


@pytest.mark.parametrize("line", ['["EVENT"]', '["EVENT", 5, {}]', '["EVENT", "s", {}, {}]'])
def test_parse_line_malformed_event_frame_is_bad_frame(line: str) -> None:
    with pytest.raises(Rejection) as info:
        parse_line(line)
    assert (info.value.reason, info.value.detail) == ("bad_json", "bad_frame")


def test_parse_line_other_json_is_returned_and_then_rejected_by_parse_event() -> None:
    value = parse_line('["EOSE", "sub1"]')
    assert value == ["EOSE", "sub1"]
    assert _bad_json_detail(value) == "not_object"


@pytest.mark.parametrize("line", ["{", "not json", '{"a": NaN}', "[Infinity]", "[" * 100_000])
def test_parse_line_non_json_is_bad_json(line: str) -> None:
    with pytest.raises(Rejection) as info:
        parse_line(line)
    assert (info.value.reason, info.value.detail) == ("bad_json", "not_json")


def test_parse_line_non_utf8_bytes_is_bad_json() -> None:
    with pytest.raises(Rejection) as info:
        parse_line(b'{"content": "\xff"}')
    assert (info.value.reason, info.value.detail) == ("bad_json", "not_utf8")
