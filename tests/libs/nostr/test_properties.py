"""Property tests: ids, parsing and admission round-trip on generated events."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from libs.nostr.admission import admit
from libs.nostr.event import parse_event, parse_line
from libs.nostr.integrity import _event_size, compute_id, serialize_for_id
from libs.nostr.keys import sign_event

from .factories import ALICE

hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
text = st.text(max_size=40)
tags = st.lists(st.lists(text, min_size=1, max_size=5), max_size=6)
kinds = st.integers(min_value=0, max_value=65535)
times = st.integers(min_value=0, max_value=2**53)


@st.composite
def unsigned_events(draw: st.DrawFn) -> dict[str, Any]:
    pubkey, created_at, kind, tag_lists, content = (
        draw(hex64),
        draw(times),
        draw(kinds),
        draw(tags),
        draw(text),
    )
    return {
        "id": compute_id(pubkey, created_at, kind, tag_lists, content),
        "pubkey": pubkey,
        "created_at": created_at,
        "kind": kind,
        "tags": tag_lists,
        "content": content,
        "sig": draw(st.binary(min_size=64, max_size=64)).hex(),
    }


@given(unsigned_events(), st.booleans())
def test_compute_id_survives_json_text_round_trip(raw: dict[str, Any], ascii_escaped: bool) -> None:
    line = json.dumps(raw, ensure_ascii=ascii_escaped)
    parsed = parse_line(line)
    ev = parse_event(parsed)
    assert ev.to_dict() == raw
    assert compute_id(ev.pubkey, ev.created_at, ev.kind, [list(t) for t in ev.tags], ev.content) == raw["id"]
    expected = json.dumps(
        [0, raw["pubkey"], raw["created_at"], raw["kind"], raw["tags"], raw["content"]],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert hashlib.sha256(expected.encode("utf-8")).hexdigest() == raw["id"]


@given(unsigned_events())
def test_parse_event_round_trips_through_relay_frames(raw: dict[str, Any]) -> None:
    ev = parse_event(raw)
    assert parse_event(parse_line(json.dumps(["EVENT", "sub", raw]))) == ev
    assert parse_event(parse_line(json.dumps(["EVENT", raw]).encode())) == ev
    assert parse_event(ev.to_dict()) == ev


@given(unsigned_events(), st.dictionaries(st.text(max_size=5), text, max_size=2))
def test_size_shortcut_matches_full_serialization(raw: dict[str, Any], extra: dict[str, str]) -> None:
    obj = {**extra, **raw}
    ser = serialize_for_id(obj["pubkey"], obj["created_at"], obj["kind"], obj["tags"], obj["content"])
    full = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert _event_size(obj, len(ser.encode("utf-8"))) == len(full)


@settings(max_examples=40, deadline=None)
@given(kinds.filter(lambda k: k != 9735), tags, text, st.integers(min_value=0, max_value=2**40))
def test_signed_events_are_admitted(
    kind: int, tag_lists: list[list[str]], content: str, created_at: int
) -> None:
    raw = sign_event(ALICE, kind, content, tag_lists, created_at)
    assert admit(raw, created_at).to_dict() == raw


@settings(max_examples=60, deadline=None)
@given(kinds.filter(lambda k: k != 9735), tags, text, st.integers(min_value=0, max_value=2**40))
def test_admission_keeps_the_tags_json_it_hashed(
    kind: int, tag_lists: list[list[str]], content: str, created_at: int
) -> None:
    raw = sign_event(ALICE, kind, content, tag_lists, created_at)
    ev = admit(raw, created_at)
    assert ev.tags_json is not None
    assert json.loads(ev.tags_json) == tag_lists
    assert serialize_for_id(ev.pubkey, ev.created_at, ev.kind, tag_lists, ev.content) == (
        f'[0,"{ev.pubkey}",{ev.created_at},{ev.kind},{ev.tags_json},'
        f"{json.dumps(content, ensure_ascii=False)}]"
    )


def test_id_serialization_escapes_exactly_like_nip01_json() -> None:
    awkward = "\x00\x01\x08\t\n\x0b\x0c\r\x1f \x7f\"\\/ é \u2028\u2029 \ud7ff \U0001f389"
    raw = sign_event(ALICE, 1, awkward, [["t", awkward], ["e", "ab" * 32, "", "reply"], [awkward]], 1_700_000_000)
    ev = admit(raw, 1_700_000_000)
    assert ev.to_dict() == raw
    assert ev.tags_json == json.dumps(raw["tags"], separators=(",", ":"), ensure_ascii=False)


def test_tags_json_is_not_part_of_the_event_value() -> None:
    raw = sign_event(ALICE, 1, "hi", [["t", "x"]], 1_700_000_000)
    admitted = admit(raw, 1_700_000_000)
    parsed = parse_event(raw)
    assert parsed.tags_json is None
    assert admitted == parsed and hash(admitted) == hash(parsed) and repr(admitted) == repr(parsed)
