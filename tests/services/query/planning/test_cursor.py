"""Page cursors: round trip, tamper evidence and binding to the request that made them."""

from __future__ import annotations

import base64
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.windows.errors import CursorError
from services.query.planning.cursor import (
    MAX_CURSOR_CHARS,
    decode_cursor,
    decode_page_cursor,
    encode_cursor,
    encode_page_cursor,
    request_fingerprint,
)

SECRET = b"0123456789abcdef-test-secret"
REQUEST = {"pubkey": "ab" * 32, "start": 1000, "end": 2000, "dimension": "note", "metric": "zaps.msats"}
REQ = request_fingerprint(REQUEST)
ALPHABET = string.ascii_letters + string.digits + "-_"


def _assert_invalid(
    token: str, expect: dict[str, object] | None = None, secret: bytes = SECRET
) -> CursorError:
    with pytest.raises(CursorError) as info:
        decode_cursor(token, secret, {"req": REQ} if expect is None else expect)
    assert info.value.code == "INVALID_CURSOR"
    assert info.value.field == "cursor"
    assert info.value.hint
    return info.value


def test_page_cursor_round_trips_its_sort_key() -> None:
    token = encode_page_cursor((21_000, "note1"), REQ, SECRET)
    assert decode_page_cursor(token, SECRET, REQ) == (21_000, "note1")


def test_page_cursor_keeps_integer_keys_integers() -> None:
    token = encode_page_cursor((5, 9735), REQ, SECRET)
    assert decode_page_cursor(token, SECRET, REQ) == (5, 9735)


def test_cursor_is_url_safe_and_unpadded() -> None:
    token = encode_page_cursor((1, "k" * 64), REQ, SECRET)
    assert set(token) <= set(ALPHABET)


def test_encoding_is_deterministic_regardless_of_key_order() -> None:
    assert encode_cursor({"a": 1, "b": 2}, SECRET) == encode_cursor({"b": 2, "a": 1}, SECRET)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=5,
    )
)
def test_any_json_payload_round_trips(payload: dict[str, object]) -> None:
    assert decode_cursor(encode_cursor(payload, SECRET), SECRET, {}) == payload


def test_every_single_character_change_is_invalid_cursor() -> None:
    token = encode_page_cursor((123, "note1xyz"), REQ, SECRET)
    for i, original in enumerate(token):
        for replacement in ALPHABET:
            if replacement != original:
                _assert_invalid(token[:i] + replacement + token[i + 1 :])


def test_every_flipped_bit_of_the_decoded_bytes_is_invalid_cursor() -> None:
    token = encode_page_cursor((123, "note1xyz"), REQ, SECRET)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for i in range(len(raw)):
        for bit in range(8):
            tampered = bytearray(raw)
            tampered[i] ^= 1 << bit
            _assert_invalid(base64.urlsafe_b64encode(bytes(tampered)).rstrip(b"=").decode())


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],
        lambda t: t + "A",
        lambda t: t + "=",
        lambda t: t + "==",
        lambda t: "A" + t,
        lambda t: t[1:],
        lambda t: t.replace(t[3], "+" if t[3] != "+" else "/", 1),
        lambda t: t[:5] + " " + t[5:],
        lambda t: "",
        lambda t: "x" * (MAX_CURSOR_CHARS + 1),
        lambda t: "AAAA",
    ],
)
def test_truncated_extended_or_foreign_characters_are_invalid_cursor(mangle: object) -> None:
    token = encode_page_cursor((123, "note1xyz"), REQ, SECRET)
    assert callable(mangle)
    _assert_invalid(mangle(token))


def test_cursor_signed_with_another_secret_is_invalid() -> None:
    token = encode_page_cursor((1, "a"), REQ, b"another-secret-of-16+bytes")
    err = _assert_invalid(token)
    assert "altered" in err.message


def test_cursor_reused_for_another_request_is_invalid() -> None:
    token = encode_page_cursor((1, "a"), REQ, SECRET)
    other = request_fingerprint({**REQUEST, "pubkey": "cd" * 32})
    with pytest.raises(CursorError) as info:
        decode_page_cursor(token, SECRET, other)
    assert info.value.code == "INVALID_CURSOR"
    assert "different request" in info.value.message


@pytest.mark.parametrize(
    "change", [{"metric": "reactions.count"}, {"end": 2001}, {"dimension": "counterparty"}]
)
def test_any_change_of_the_normalized_request_changes_the_fingerprint(change: dict[str, object]) -> None:
    assert request_fingerprint({**REQUEST, **change}) != REQ


def test_fingerprint_ignores_parameter_order() -> None:
    assert request_fingerprint(dict(reversed(list(REQUEST.items())))) == REQ


def test_expect_compares_json_values_strictly() -> None:
    token = encode_cursor({"flag": 1}, SECRET)
    _assert_invalid(token, {"flag": True})
    _assert_invalid(token, {"missing": None})
    assert decode_cursor(token, SECRET, {"flag": 1}) == {"flag": 1}


@pytest.mark.parametrize(
    "payload",
    [
        {"req": REQ},
        {"req": REQ, "after": [1]},
        {"req": REQ, "after": [1.5, "a"]},
        {"req": REQ, "after": [True, "a"]},
        {"req": REQ, "after": [1, None]},
    ],
)
def test_authentic_cursor_with_wrong_shape_is_invalid(payload: dict[str, object]) -> None:
    with pytest.raises(CursorError):
        decode_page_cursor(encode_cursor(payload, SECRET), SECRET, REQ)


def test_short_secret_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        encode_cursor({}, b"short")
