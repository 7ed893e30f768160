"""NIP-01 event shape: the `Event` value type, `Rejection`, and input-line parsing.

Only the *shape* rules of METRICS.md "Admission and input" live here; hashing,
signatures, size limits and zap rules are in `integrity`, `admission` and `zaps`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")

Tag = tuple[str, ...]
Tags = tuple[Tag, ...]

EVENT_KEYS = ("id", "pubkey", "created_at", "kind", "tags", "content", "sig")


def is_hex64(value: object) -> bool:
    """True when `value` is a string of exactly 64 lowercase hex characters."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def is_hex128(value: object) -> bool:
    """True when `value` is a string of exactly 128 lowercase hex characters."""
    return isinstance(value, str) and _HEX128.fullmatch(value) is not None


class Rejection(Exception):
    """Why an input line or event was not admitted.

    `reason` is the machine-readable top-level reason (`bad_json`, `too_large`,
    `too_many_tags`, `bad_id`, `bad_sig`, `future`, `invalid_zap`), `detail` a
    machine-readable sub-reason, `message` a sentence a person can act on, and
    `event_id` the claimed id when the input had a string `id` (else None).
    For `invalid_zap` / `bad_request` the embedded request's own Rejection is
    attached as `__cause__`.
    """

    def __init__(self, reason: str, detail: str, message: str, event_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.detail = detail
        self.message = message
        self.event_id = event_id

    def __repr__(self) -> str:
        return f"Rejection({self.reason!r}, {self.detail!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rejection):
            return NotImplemented
        return (self.reason, self.detail, self.message, self.event_id) == (
            other.reason,
            other.detail,
            other.message,
            other.event_id,
        )

    def __hash__(self) -> int:
        return hash((self.reason, self.detail, self.message, self.event_id))


@dataclass(frozen=True, slots=True)
class Event:
    """An immutable NIP-01 event whose fields have passed the shape rules."""

    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: Tags
    content: str
    sig: str
    # The compact JSON of `tags` as hashed for the id (set by admission; None otherwise). A cache
    # for storage, not part of the value: ignored by ==, hash and repr.
    tags_json: str | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The event as a plain JSON-ready dict (tags as lists)."""
        return {
            "id": self.id,
            "pubkey": self.pubkey,
            "created_at": self.created_at,
            "kind": self.kind,
            "tags": [list(t) for t in self.tags],
            "content": self.content,
            "sig": self.sig,
        }

    def tag_values(self, name: str) -> list[str]:
        """Values (`tag[1]`) of every tag named `name`; tags without a value are skipped."""
        return [t[1] for t in self.tags if len(t) >= 2 and t[0] == name]

    def first_tag(self, name: str) -> Tag | None:
        """The first tag named `name` that has a value (`len >= 2`), or None."""
        for t in self.tags:
            if len(t) >= 2 and t[0] == name:
                return t
        return None

    def has_tag(self, name: str) -> bool:
        """True when any tag (with or without a value) is named `name`."""
        return any(t[0] == name for t in self.tags)


def _bad(detail: str, message: str, obj: object = None) -> Rejection:
    event_id = None
    if isinstance(obj, dict):
        claimed = obj.get("id")
        if isinstance(claimed, str):
            event_id = claimed
    return Rejection("bad_json", detail, message, event_id)


def parse_event(obj: object) -> Event:
    """Check the NIP-01 shape rules and build an `Event`.

    Rules (METRICS.md "Admission and input"): `id` and `pubkey` are 64 lowercase
    hex, `sig` 128 lowercase hex, `created_at` an int >= 0 (not bool, not float),
    `kind` an int in 0..65535, `tags` a list of lists of >= 1 strings, `content` a
    string. Extra keys are ignored. Any failure raises `Rejection("bad_json", ...)`
    whose detail names the field (`bad_<field>`, or `not_object`).
    """
    if not isinstance(obj, dict):
        raise _bad("not_object", f"Expected a JSON object for the event, got {type(obj).__name__}.")
    try:
        eid = obj["id"]
        pubkey = obj["pubkey"]
        created_at = obj["created_at"]
        kind = obj["kind"]
        raw_tags = obj["tags"]
        content = obj["content"]
        sig = obj["sig"]
    except KeyError as exc:
        field = exc.args[0]
        raise _bad(f"bad_{field}", f"The event has no `{field}` field.", obj) from None
    if not (type(eid) is str and _HEX64.fullmatch(eid)):
        raise _bad("bad_id", "`id` must be 64 lowercase hex characters.", obj)
    if not (type(pubkey) is str and _HEX64.fullmatch(pubkey)):
        raise _bad("bad_pubkey", "`pubkey` must be 64 lowercase hex characters.", obj)
    if not (type(sig) is str and _HEX128.fullmatch(sig)):
        raise _bad("bad_sig", "`sig` must be 128 lowercase hex characters.", obj)
    if type(created_at) is not int or created_at < 0:
        raise _bad("bad_created_at", "`created_at` must be an integer >= 0 (not a float or boolean).", obj)
    if type(kind) is not int or not 0 <= kind <= 65535:
        raise _bad("bad_kind", "`kind` must be an integer between 0 and 65535.", obj)
    if type(content) is not str:
        raise _bad("bad_content", "`content` must be a string.", obj)
    if type(raw_tags) is not list:
        raise _bad("bad_tags", "`tags` must be an array of arrays of strings.", obj)
    tags: list[Tag] = []
    for i, tag in enumerate(raw_tags):
        if type(tag) is not list or not tag:
            raise _bad("bad_tags", f"tag #{i} must be a non-empty array of strings.", obj)
        for value in tag:
            if type(value) is not str:
                raise _bad("bad_tags", f"tag #{i} holds a non-string element {value!r}.", obj)
        tags.append(tuple(tag))
    return Event(eid, pubkey, created_at, kind, tuple(tags), content, sig)


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every call: `json.loads(text, parse_constant=...)` builds a new one each time.
_STRICT_DECODE = json.JSONDecoder(parse_constant=_no_constants).decode


def loads_strict(text: str) -> object:
    """`json.loads` that rejects NaN/Infinity and turns every failure into ValueError."""
    try:
        if type(text) is not str or text.startswith("\ufeff"):  # bytes, or a BOM: json.loads's own handling
            return json.loads(text, parse_constant=_no_constants)
        return _STRICT_DECODE(text)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def parse_line(line: str | bytes) -> object | None:
    """Parse one input line into a JSON value, unwrapping relay `EVENT` frames.

    Blank lines give None. Bytes must be UTF-8. A line that is not JSON raises
    `Rejection("bad_json", "not_utf8" | "not_json")`. `["EVENT", sub, event]`
    (sub a string) and `["EVENT", event]` give `event`; any other array starting
    with "EVENT" is `bad_json`/`bad_frame`. Every other JSON value is returned
    as is (and `parse_event` will reject it if it is not an event object).
    """
    if isinstance(line, bytes | bytearray):
        try:
            text = bytes(line).decode("utf-8")
        except UnicodeDecodeError:
            raise Rejection("bad_json", "not_utf8", "The line is not valid UTF-8.") from None
    else:
        text = line
    if not text.strip():
        return None
    try:
        value = loads_strict(text)
    except ValueError as exc:
        raise Rejection("bad_json", "not_json", f"The line is not valid JSON ({exc}).") from None
    if isinstance(value, list) and value and value[0] == "EVENT":
        inner: object
        if len(value) == 3 and isinstance(value[1], str):
            inner = value[2]
            return inner
        if len(value) == 2:
            inner = value[1]
            return inner
        raise Rejection(
            "bad_json",
            "bad_frame",
            'An EVENT frame must be ["EVENT", <sub_id>, <event>] or ["EVENT", <event>].',
        )
    return value
