"""Pure tag and content interpretation for the metrics of METRICS.md.

Conventions (METRICS.md "Precise rules"): a tag `X` is one with `tag[0] == X`
and a value `tag[1]`; one-element tags are ignored. Values compare as exact
strings and are returned as given (no hex validation) unless stated.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from .bech32 import decode_pubkey_entity
from .event import Event, is_hex64

# `nostr:` + a lowercase prefix (npub, nprofile, ...) + the `1` separator + the
# longest run of bech32 data characters (the charset has no `1`, `b`, `i`, `o`).
_MENTION = re.compile(r"nostr:([a-z]+1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]+)")
_ADDRESS = re.compile(r"([0-9]+):([0-9a-f]{64}):(.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ParentRef:
    """The note a reply/comment answers: an event id (`kind="e"`) or an address (`kind="a"`).

    `author_hint` is the parent author's pubkey as stated by the reply's own
    tags, used when the parent event itself has not been ingested.
    """

    kind: Literal["e", "a"]
    value: str
    author_hint: str | None


@dataclass(frozen=True, slots=True)
class QuoteRef:
    """A NIP-18 `q` tag: `value` is an event id or an address; `fourth` is `tag[3]` if present."""

    value: str
    fourth: str | None


def _last(ev: Event, name: str) -> str | None:
    values = ev.tag_values(name)
    return values[-1] if values else None


def _first(ev: Event, name: str) -> str | None:
    tag = ev.first_tag(name)
    return tag[1] if tag is not None else None


def reaction_target(ev: Event) -> tuple[str | None, str | None]:
    """NIP-25: (target note id, target pubkey) = (last `e` value, last `p` value), each None if absent."""
    return _last(ev, "e"), _last(ev, "p")


def repost_target(ev: Event) -> tuple[str | None, str | None]:
    """NIP-18: (target note id, target pubkey) = (first `e` value, first `p` value), each None if absent."""
    return _first(ev, "e"), _first(ev, "p")


def address_pubkey(addr: str) -> str | None:
    """The pubkey of a `kind:pubkey:d` address (kind digits, pubkey 64 lowercase hex), else None."""
    m = _ADDRESS.fullmatch(addr)
    return m.group(2) if m else None


def _kind1_parent(ev: Event) -> ParentRef | None:
    """NIP-10 parent of a kind 1.

    The first `e` marked `reply`; else the first marked `root`; else the last
    `e` with no marker. "No marker" means the fourth element is absent, empty,
    or a 64-hex pubkey (an old positional form that carries the author there);
    any other fourth element (`mention`, or an unknown marker) never makes the
    tag a parent. `a` tags are ignored, so a kind 1 with only `a` tags is not a
    reply. author_hint: for a marked tag its fifth element if 64-hex; for an
    unmarked tag its fourth element if 64-hex (METRICS.md "Replies").
    """
    reply = root = unmarked = None
    for tag in ev.tags:
        if len(tag) < 2 or tag[0] != "e":
            continue
        marker = tag[3] if len(tag) >= 4 else ""
        if marker == "reply":
            if reply is None:
                reply = tag
        elif marker == "root":
            if root is None:
                root = tag
        elif marker == "" or is_hex64(marker):
            unmarked = tag
    chosen = reply or root
    if chosen is not None:
        hint = chosen[4] if len(chosen) >= 5 and is_hex64(chosen[4]) else None
        return ParentRef("e", chosen[1], hint)
    if unmarked is not None:
        hint = unmarked[3] if len(unmarked) >= 4 and is_hex64(unmarked[3]) else None
        return ParentRef("e", unmarked[1], hint)
    return None


def _kind1111_parent(ev: Event) -> ParentRef | None:
    """NIP-22 parent of a kind 1111 comment.

    The parent is the first lowercase `e` tag, else the first lowercase `a`
    tag (uppercase E/A/I are the root scope and ignored; `i` external parents
    are not notes, so such a comment has no parent). author_hint, first that
    applies (METRICS.md "Parent author"): the pubkey inside the first
    lowercase `a` address (NIP-22 puts `a` and `e` for the same addressable
    parent); the `e` tag's pubkey element (`tag[3]`, NIP-22 form) if 64-hex;
    the first lowercase `p` value if 64-hex.
    """
    e_tag = ev.first_tag("e")
    a_value = _first(ev, "a")
    if e_tag is not None:
        ref_kind: Literal["e", "a"] = "e"
        value = e_tag[1]
    elif a_value is not None:
        ref_kind, value = "a", a_value
    else:
        return None
    hint = address_pubkey(a_value) if a_value is not None else None
    if hint is None and e_tag is not None and len(e_tag) >= 4 and is_hex64(e_tag[3]):
        hint = e_tag[3]
    if hint is None:
        p_value = _first(ev, "p")
        if p_value is not None and is_hex64(p_value):
            hint = p_value
    return ParentRef(ref_kind, value, hint)


def reply_parent(ev: Event) -> ParentRef | None:
    """The parent of a kind 1 reply (NIP-10) or kind 1111 comment (NIP-22); None for other kinds or non-replies.

    See `_kind1_parent` and `_kind1111_parent` for the exact choices.
    """
    if ev.kind == 1:
        return _kind1_parent(ev)
    if ev.kind == 1111:
        return _kind1111_parent(ev)
    return None


def quote_refs(ev: Event) -> list[QuoteRef]:
    """Every `q` tag (with a value) in order, as `QuoteRef(value, tag[3] or None)`."""
    return [QuoteRef(t[1], t[3] if len(t) >= 4 else None) for t in ev.tags if len(t) >= 2 and t[0] == "q"]


def mentioned_pubkeys(content: str) -> set[str]:
    """Pubkeys referenced in `content` as `nostr:npub1...` or `nostr:nprofile1...` (NIP-27).

    A reference is `nostr:` followed by a lowercase prefix, the `1` separator
    and the longest run of lowercase bech32 data characters
    (`qpzry9x8gf2tvdw0s3jn54khce6mua7l`), with no length limit. (The prefix
    letters `b`, `i`, `o` of npub/nprofile are outside the data charset, so the
    prefix is matched as letters.) References that do not decode, or decode to
    note/nevent/naddr/nsec, are ignored.
    """
    found: set[str] = set()
    for m in _MENTION.finditer(content):
        ref = m.group(1)
        if not ref.startswith(("npub1", "nprofile1")):
            continue
        try:
            found.add(decode_pubkey_entity(ref))
        except ValueError:
            continue
    return found


def deletion_targets(ev: Event) -> tuple[list[str], list[str]]:
    """NIP-09: (event ids from `e` tags, addresses from `a` tags) of a kind 5; ([], []) for other kinds."""
    if ev.kind != 5:
        return [], []
    return ev.tag_values("e"), ev.tag_values("a")


def contact_set(ev: Event) -> frozenset[str]:
    """NIP-02 follow edges: the set of `p` values that are 64 lowercase hex."""
    return frozenset(v for v in ev.tag_values("p") if is_hex64(v))


def is_replaceable(kind: int) -> bool:
    """Replaceable kinds (0, 3, 10000-19999), addressed as `kind:pubkey:`."""
    return kind in (0, 3) or 10000 <= kind <= 19999


def is_addressable(kind: int) -> bool:
    """Parameterized replaceable kinds 30000-39999, addressed as `kind:pubkey:d`."""
    return 30000 <= kind <= 39999


def address_of(ev: Event) -> str | None:
    """`kind:pubkey:d` for kinds 30000-39999 (d = first `d` value, "" if none); `kind:pubkey:` for 0, 3, 10000-19999; else None."""
    if is_addressable(ev.kind):
        d = _first(ev, "d")
        return f"{ev.kind}:{ev.pubkey}:{d if d is not None else ''}"
    if is_replaceable(ev.kind):
        return f"{ev.kind}:{ev.pubkey}:"
    return None


def profile_name(ev: Event) -> str | None:
    """Kind 0 display name: content JSON `display_name`, else `name` (non-blank strings only); never raises."""
    if ev.kind != 0:
        return None
    try:
        meta = json.loads(ev.content)
    except (ValueError, RecursionError):
        return None
    if not isinstance(meta, dict):
        return None
    for key in ("display_name", "name"):
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None
