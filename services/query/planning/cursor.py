"""Opaque, tamper-evident page cursors for keyset paging (AIP-158 page tokens).

A token is ``urlsafe_b64(version || json || mac)`` without padding, where
``json`` is the payload as canonical JSON (sorted keys, no spaces) and ``mac``
is HMAC-SHA256 over a domain tag, the version byte and the JSON, truncated to
16 bytes. Decoding accepts only the canonical encoding of a well-formed token
whose MAC verifies, so changing, adding or removing any character is
``INVALID_CURSOR``.

A cursor is bound to the request that made it: the payload carries a
fingerprint of the normalized request (:func:`request_fingerprint`) and
:func:`decode_cursor` checks every ``expect`` entry, so a cursor replayed on
another request (other pubkey, window, dimension, metric, ...) is rejected too.
:func:`encode_page_cursor` / :func:`decode_page_cursor` wrap the common case:
the payload is the request fingerprint plus the last sort key ``(value, key)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from libs.windows.errors import CursorError

__all__ = [
    "MAC_BYTES",
    "MAX_CURSOR_CHARS",
    "CursorError",
    "decode_cursor",
    "decode_page_cursor",
    "encode_cursor",
    "encode_page_cursor",
    "request_fingerprint",
]

#: Truncated HMAC length (128 bits).
MAC_BYTES: Final = 16
#: Longest token accepted; real cursors are far shorter.
MAX_CURSOR_CHARS: Final = 2_048
#: Smallest secret accepted.
MIN_SECRET_BYTES: Final = 16

_VERSION: Final = b"\x01"
_DOMAIN: Final = b"canal/page-cursor\x00"
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]+")
_HINT: Final = "request the first page again without a cursor and follow next_cursor from that answer"
_REQUEST_KEY: Final = "req"
_AFTER_KEY: Final = "after"


def encode_cursor(payload: Mapping[str, Any], secret: bytes) -> str:
    """Encode a JSON-serializable ``payload`` as an opaque, MAC-protected token."""
    _check_secret(secret)
    body = _canonical_json(payload).encode("ascii")
    raw = _VERSION + body + _mac(secret, body)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(token: str, secret: bytes, expect: Mapping[str, Any]) -> dict[str, Any]:
    """Verify ``token`` and return its payload.

    Raises :class:`CursorError` (``INVALID_CURSOR``) when the token is
    malformed or not canonical, its MAC does not verify, or any ``expect``
    entry differs from the payload (the cursor was made for another request).
    Values are compared as canonical JSON, so ``1`` never equals ``True``.
    """
    _check_secret(secret)
    if (
        not isinstance(token, str)
        or not 0 < len(token) <= MAX_CURSOR_CHARS
        or not _TOKEN_CHARS.fullmatch(token)
    ):
        raise CursorError("the cursor is malformed", _HINT, "cursor")
    raw = _b64decode_canonical(token)
    if raw is None or len(raw) < 1 + 2 + MAC_BYTES or raw[:1] != _VERSION:
        raise CursorError("the cursor is malformed", _HINT, "cursor")
    body, mac = raw[1:-MAC_BYTES], raw[-MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(secret, body)):
        raise CursorError("the cursor was altered or was not issued by this service", _HINT, "cursor")
    payload = _parse_json_object(body)
    for key, want in expect.items():
        if key not in payload or _canonical_json(payload[key]) != _canonical_json(want):
            raise CursorError(
                "the cursor belongs to a different request",
                "a cursor only continues the request that returned it: repeat the same parameters "
                "with it, or drop the cursor to start from the first page",
                "cursor",
            )
    return payload


def request_fingerprint(params: Mapping[str, Any]) -> str:
    """Hash of the normalized request a cursor is bound to (hex, 128 bits).

    Pass the resolved parameters that define the result set (pubkey as hex,
    resolved window start/end, dimension, metric, granularity, tz, principal),
    never the cursor itself; ``limit`` may be left out so page size can change between pages.
    """
    return hashlib.sha256(_canonical_json(params).encode("ascii")).hexdigest()[:32]


def encode_page_cursor(after: tuple[int, int | str], request_hash: str, secret: bytes) -> str:
    """Encode the last sort key of a page ``(metric value, row key)`` for request ``request_hash``."""
    value, key = after
    return encode_cursor({_REQUEST_KEY: request_hash, _AFTER_KEY: [value, key]}, secret)


def decode_page_cursor(token: str, secret: bytes, request_hash: str) -> tuple[int, int | str]:
    """Decode a cursor made by :func:`encode_page_cursor` for the same request; return its sort key."""
    payload = decode_cursor(token, secret, {_REQUEST_KEY: request_hash})
    after = payload.get(_AFTER_KEY)
    if (
        isinstance(after, list)
        and len(after) == 2
        and type(after[0]) is int
        and (type(after[1]) is int or isinstance(after[1], str))
    ):
        return after[0], after[1]
    raise CursorError("the cursor is malformed", _HINT, "cursor")


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _mac(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + _VERSION + body, hashlib.sha256).digest()[:MAC_BYTES]


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes | bytearray) or len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the cursor secret must be at least {MIN_SECRET_BYTES} bytes")


def _b64decode_canonical(token: str) -> bytes | None:
    """Decode unpadded urlsafe base64, or ``None`` unless ``token`` is the canonical encoding."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    # Unused low bits of the last character would otherwise give several tokens for one value.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        return None
    return raw


def _parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse the (authenticated) body; anything but a JSON object is malformed."""

    def reject_constant(name: str) -> Any:
        raise ValueError(name)

    try:
        payload = json.loads(body.decode("ascii"), parse_constant=reject_constant)
    except (UnicodeDecodeError, ValueError):
        payload = None
    if not isinstance(payload, dict):
        raise CursorError("the cursor is malformed", _HINT, "cursor")
    return payload
