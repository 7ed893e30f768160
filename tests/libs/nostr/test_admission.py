"""Admission checks, their order, and the limits at their exact boundaries."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from libs.nostr.admission import MAX_EVENT_BYTES, admit, admit_many, compute_id
from libs.nostr.event import Event, Rejection
from libs.nostr.integrity import _event_size
from libs.nostr.keys import sign_event

from .factories import ALICE, BOB_PK, T0, signed, zap_receipt

RT = T0 + 10


def _reason(obj: object, receive_time: int = RT) -> str:
    with pytest.raises(Rejection) as info:
        admit(obj, receive_time)
    assert info.value.message
    return info.value.reason


def _compact_size(obj: dict[str, Any]) -> int:
    return len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def test_valid_signed_event_is_admitted() -> None:
    raw = signed(tags=[["p", BOB_PK]], content='héllo ☕ \U0001f600 "q" \\ \n')
    ev = admit(raw, RT)
    assert isinstance(ev, Event)
    assert ev.id == raw["id"]


def test_compute_id_is_nip01_sha256_without_ascii_escaping() -> None:
    tags = [["t", "ü"]]
    expected_text = json.dumps([0, "ab" * 32, 5, 1, tags, "é\n"], separators=(",", ":"), ensure_ascii=False)
    assert compute_id("ab" * 32, 5, 1, tags, "é\n") == hashlib.sha256(expected_text.encode()).hexdigest()
    assert '"é\\n"' in expected_text


def test_bad_id_when_content_changed_after_signing() -> None:
    raw = signed()
    raw["content"] = "edited"
    assert _reason(raw) == "bad_id"


def test_bad_sig_when_signature_is_for_another_key() -> None:
    raw = signed()
    other = signed(priv=bytes([3] * 32))
    raw["sig"] = other["sig"]
    assert _reason(raw) == "bad_sig"


def test_bad_sig_when_pubkey_is_not_on_the_curve() -> None:
    raw = signed()
    raw["pubkey"] = "0" * 64
    raw["id"] = compute_id(raw["pubkey"], raw["created_at"], raw["kind"], raw["tags"], raw["content"])
    assert _reason(raw) == "bad_sig"


def test_future_is_strictly_more_than_900_seconds_ahead() -> None:
    raw = signed(created_at=T0 + 900)
    assert admit(raw, T0).id == raw["id"]
    late = signed(created_at=T0 + 901)
    assert _reason(late, T0) == "future"


def test_backdated_events_are_admitted() -> None:
    assert admit(signed(created_at=1), RT).created_at == 1


def test_too_many_tags_above_2000() -> None:
    at_limit = signed(tags=[["t", str(i)] for i in range(2000)])
    assert len(admit(at_limit, RT).tags) == 2000
    over = signed(tags=[["t", str(i)] for i in range(2001)])
    assert _reason(over) == "too_many_tags"


def _event_of_size(size: int) -> dict[str, Any]:
    base = signed(content="")
    pad = size - _compact_size(base)
    return signed(content="x" * pad)


def test_too_large_is_over_262144_utf8_bytes() -> None:
    at_limit = _event_of_size(MAX_EVENT_BYTES)
    assert _compact_size(at_limit) == MAX_EVENT_BYTES
    assert admit(at_limit, RT).id == at_limit["id"]
    over = _event_of_size(MAX_EVENT_BYTES + 1)
    assert _reason(over) == "too_large"


def test_too_large_counts_utf8_bytes_not_characters() -> None:
    raw = signed(content="é" * (MAX_EVENT_BYTES // 2))
    assert len(raw["content"]) < MAX_EVENT_BYTES
    assert _reason(raw) == "too_large"


def test_too_large_counts_extra_keys_of_the_event_object() -> None:
    raw = _event_of_size(MAX_EVENT_BYTES - 100)
    assert admit(raw, RT)
    raw["relay_hint"] = "y" * 200
    assert _reason(raw) == "too_large"


@pytest.mark.parametrize(
    "obj",
    [
        signed(),
        signed(tags=[["e", "a" * 64, "wss://r", "reply"]], content='ä"\\\u2028\x00'),
        signed() | {"extra": [1, {"k": "ü"}]},
    ],
)
def test_size_shortcut_equals_full_compact_json(obj: dict[str, Any]) -> None:
    text = json.dumps(
        [0, obj["pubkey"], obj["created_at"], obj["kind"], obj["tags"], obj["content"]],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert _event_size(obj, len(text.encode())) == _compact_size(obj)


def test_lone_surrogate_in_content_is_bad_json() -> None:
    raw = signed()
    raw["content"] = "\ud800"
    with pytest.raises(Rejection) as info:
        admit(raw, RT)
    assert (info.value.reason, info.value.detail) == ("bad_json", "not_utf8")


# --- order of checks: the first failing check names the reason -------------


def test_order_bad_json_before_everything() -> None:
    raw = signed(created_at=RT + 5000, content="x" * 300_000)
    raw["kind"] = "1"
    assert _reason(raw) == "bad_json"


def test_order_too_large_before_too_many_tags_and_bad_id() -> None:
    raw = signed(tags=[["t", "x" * 200] for _ in range(2001)])
    raw["content"] = "tampered"
    assert _reason(raw) == "too_large"


def test_order_too_many_tags_before_bad_id() -> None:
    raw = signed(tags=[["t"] for _ in range(2001)])
    raw["content"] = "tampered"
    assert _reason(raw) == "too_many_tags"


def test_order_bad_id_before_bad_sig() -> None:
    raw = signed()
    raw["content"] = "tampered"
    raw["sig"] = "00" * 64
    assert _reason(raw) == "bad_id"


def test_order_bad_sig_before_future() -> None:
    raw = signed(created_at=RT + 5000)
    raw["sig"] = "00" * 64
    assert _reason(raw) == "bad_sig"


def test_order_future_before_invalid_zap() -> None:
    receipt = zap_receipt(bolt11=[], created_at=RT + 5000)
    assert _reason(receipt) == "future"
    assert _reason(receipt, RT + 5000) == "invalid_zap"


def test_valid_zap_receipt_is_admitted() -> None:
    receipt = zap_receipt()
    assert admit(receipt, RT).kind == 9735


def test_admit_many_returns_one_result_per_input_in_order() -> None:
    good = signed()
    bad = dict(good, content="x")
    dup = dict(good)
    results = admit_many([good, bad, "nope", dup, zap_receipt(bolt11=[])], RT)
    assert [r.id if isinstance(r, Event) else r.reason for r in results] == [
        good["id"],
        "bad_id",
        "bad_json",
        good["id"],
        "invalid_zap",
    ]


def test_admit_many_agrees_with_admit() -> None:
    objs: list[object] = [signed(created_at=T0 + i) for i in range(5)] + [{"id": 1}, zap_receipt()]
    expected: list[object] = []
    for obj in objs:
        try:
            expected.append(admit(obj, RT))
        except Rejection as rej:
            expected.append(rej)
    assert admit_many(objs, RT) == expected


def test_sign_event_with_explicit_aux_still_verifies() -> None:
    raw = sign_event(ALICE, 1, "x", [], T0, aux=b"\x01" * 32)
    assert admit(raw, RT).id == raw["id"]
