"""Event integrity checks shared by admission and zap validation.

Runs, in the order of METRICS.md, every admission check except `invalid_zap`:
`bad_json`, `too_large`, `too_many_tags`, `bad_id`, `bad_sig`, `future`.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any, cast

from coincurve import PublicKeyXOnly

from .event import Event, Rejection, parse_event

MAX_EVENT_BYTES = 262_144
MAX_TAGS = 2_000
FUTURE_SLACK = 900

# Byte length of the compact JSON of an event object with exactly the 7 NIP-01
# keys, minus the byte length of its NIP-01 id serialization. See `_event_size`.
_SEVEN_KEY_OVERHEAD = 253
_SEVEN_KEYS = frozenset(("id", "pubkey", "created_at", "kind", "tags", "content", "sig"))
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=True).encode
# What `_dumps` does to a str (and to every str inside a list): the C `encode_basestring`.
_dump_str = json.encoder.encode_basestring


def serialize_for_id(pubkey: str, created_at: int, kind: int, tags: Any, content: str) -> str:
    """The NIP-01 serialization `[0,pubkey,created_at,kind,tags,content]` (compact, not ASCII-escaped)."""
    return _dumps([0, pubkey, created_at, kind, tags, content])


def compute_id(pubkey: str, created_at: int, kind: int, tags: Any, content: str) -> str:
    """NIP-01 event id: hex sha256 of the UTF-8 of `serialize_for_id(...)`.

    Raises UnicodeEncodeError when a string holds a lone surrogate (no UTF-8 form).
    """
    data = serialize_for_id(pubkey, created_at, kind, tags, content).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=65_536)
def _xonly(pubkey: str) -> PublicKeyXOnly | None:
    try:
        return PublicKeyXOnly(bytes.fromhex(pubkey))
    except ValueError:
        return None


@lru_cache(maxsize=8_192)
def verify_sig(pubkey: str, event_id: str, sig: str) -> bool:
    """BIP-340 check that `sig` signs `event_id` under x-only `pubkey` (all lowercase hex).

    Parsed keys and recent results are cached (bounded LRU); the function is pure.
    """
    key = _xonly(pubkey)
    if key is None:
        return False
    try:
        return key.verify(bytes.fromhex(sig), bytes.fromhex(event_id))
    except ValueError:
        return False


def _event_size(obj: dict[str, Any], id_bytes_len: int) -> int:
    """UTF-8 length of the compact JSON of the whole event object as given.

    For the usual object with exactly the 7 NIP-01 keys (already shape-checked)
    this is derived from the id serialization, which has the same `tags`,
    `content`, `created_at`, `kind` and `pubkey` text: `{"id":"<64>",...}` is
    exactly 253 bytes longer than `[0,"<pubkey>",...]`. Objects with extra keys
    are serialized in full (lone surrogates in extra keys count 3 bytes).
    """
    if len(obj) == 7 and obj.keys() == _SEVEN_KEYS:
        return id_bytes_len + _SEVEN_KEY_OVERHEAD
    try:
        text = _dumps(obj)
    except (TypeError, ValueError):
        return MAX_EVENT_BYTES + 1
    return len(text.encode("utf-8", "surrogatepass"))


def check_integrity(obj: object, receive_time: int) -> Event:
    """Run `bad_json`, `too_large`, `too_many_tags`, `bad_id`, `bad_sig`, `future` in order.

    Returns the parsed `Event` or raises the first failing `Rejection`.
    """
    ev = parse_event(obj)
    raw = cast(dict[str, Any], obj)
    # Same text as `serialize_for_id` (pubkey is hex, created_at and kind are plain ints, so nothing
    # there needs escaping), built from the tags' JSON, which the event keeps for storage.
    tags_json = _dumps(raw["tags"])
    ser = f'[0,"{ev.pubkey}",{ev.created_at},{ev.kind},{tags_json},{_dump_str(ev.content)}]'
    try:
        data = ser.encode("utf-8")
    except UnicodeEncodeError:
        raise Rejection(
            "bad_json",
            "not_utf8",
            "A tag or the content holds a lone surrogate, which has no UTF-8 form.",
            ev.id,
        ) from None
    size = _event_size(raw, len(data))
    if size > MAX_EVENT_BYTES:
        raise Rejection(
            "too_large",
            "too_large",
            f"The serialized event is {size} bytes; the limit is {MAX_EVENT_BYTES} bytes.",
            ev.id,
        )
    if len(ev.tags) > MAX_TAGS:
        raise Rejection(
            "too_many_tags",
            "too_many_tags",
            f"The event has {len(ev.tags)} tags; the limit is {MAX_TAGS}.",
            ev.id,
        )
    if hashlib.sha256(data).hexdigest() != ev.id:
        raise Rejection(
            "bad_id", "bad_id", "`id` is not the sha256 of the NIP-01 serialization of the event.", ev.id
        )
    if not verify_sig(ev.pubkey, ev.id, ev.sig):
        raise Rejection(
            "bad_sig", "bad_sig", "`sig` is not a valid BIP-340 signature of `id` by `pubkey`.", ev.id
        )
    if ev.created_at > receive_time + FUTURE_SLACK:
        raise Rejection(
            "future",
            "future",
            f"created_at {ev.created_at} is more than {FUTURE_SLACK} s after the receive time {receive_time}.",
            ev.id,
        )
    object.__setattr__(ev, "tags_json", tags_json)
    return ev
