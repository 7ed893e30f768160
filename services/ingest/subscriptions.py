"""What ingest asks a relay for: the REQ filters, from the tracked keys and what is learned about them.

Without tracked keys, one filter takes every kind the metrics use. With tracked keys (TRACK
mode), METRICS.md counts events that reach a tracked key P in these ways, and each filter
below exists for one of them (relays index every single-letter tag, NIP-01):

==========  ===================================================  =============================================
filter      asks for                                             because
==========  ===================================================  =============================================
BY_KEY      ``authors: P``, every metric kind + 10002            P's notes, articles, deletions (notes.count,
                                                                 articles.count), P's relay list (NIP-65)
ABOUT_KEY   ``#p: P``, every metric kind                         zaps (a receipt's ``p``), reactions, reposts,
                                                                 replies/comments/quotes/mentions that tag P,
                                                                 contact lists that follow P
ON_NOTE     ``#e: P's note ids``, kinds 1, 1111                  replies with only an ``e`` root/reply tag and
                                                                 comments with only a lowercase ``e`` (NIP-10
                                                                 and NIP-22 require no ``p``)
QUOTE       ``#q: P's note ids and addresses``, kinds 1, 1111    NIP-18 quotes need no ``p`` tag
ON_ADDR     ``#a: P's article addresses``, kinds 1, 1111         comments on P's articles (lowercase ``a``)
SOCIAL      ``authors: followers and engagers``, kinds 3, 5,     an unfollow is a new contact list *without* P
            10002                                                (no ``#p`` to match); a deletion of a reaction,
                                                                 repost, reply or zap receipt names the event,
                                                                 not P (``e``/``k`` tags only); their relay
                                                                 lists say where they write (NIP-65)
==========  ===================================================  =============================================

Reactions and reposts without ``p`` count for nobody and zap receipts always carry ``p``, so
``#e``/``#a`` ask only for kinds 1 and 1111. What no filter can find: a mention written only in
the content (``nostr:npub…``) without a ``p`` tag (relays do not index content), and contact-list
versions a relay replaced before canal first read it (relays keep only the newest).

Value arrays are cut into chunks; filters are grouped into REQs that respect the relay's NIP-11
limits (`max_filters`, `max_subscriptions`, `max_message_length`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from libs.nostr.relays import RELAY_LIST_KIND
from services.ingest.relay_info import RelayLimits

KINDS = (0, 1, 3, 5, 6, 7, 16, 1111, 9735, 30023)
#: Kinds of a tracked key's events that others reply to, quote or comment on by id.
NOTE_KINDS = (1, 6, 16, 1111, 30023)
REPLY_KINDS = (1, 1111)
SOCIAL_KINDS = (3, 5, RELAY_LIST_KIND)
SORTS = ("key", "note", "addr", "author")
LIVE_CHUNK_GROWTH = (1, 2, 4, 8, 16, 32)

Filter = dict[str, Any]


@dataclass(frozen=True)
class Item:
    """One interest row: a tracked key, a note id or address of one, or an author to follow."""

    id: int
    sort: str
    value: str


def _chunks(values: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(values), max(1, size)):
        yield list(values[start : start + size])


def untracked_filters() -> list[Filter]:
    """Everything of the kinds the metrics use (no tracked key)."""
    return [{"kinds": list(KINDS)}]


def track_filters(items: Iterable[Item], chunk: int) -> list[Filter]:
    """The filters (table in the module docstring) for these interest items, value arrays chunked."""
    by: dict[str, list[str]] = {s: [] for s in SORTS}
    for item in sorted(items, key=lambda i: i.id):
        by[item.sort].append(item.value)
    out: list[Filter] = []
    for keys in _chunks(sorted(by["key"]), chunk):
        out.append({"authors": keys, "kinds": [*KINDS, RELAY_LIST_KIND]})
        out.append({"#p": keys, "kinds": list(KINDS)})
    for ids in _chunks(by["note"], chunk):
        out.append({"#e": ids, "kinds": list(REPLY_KINDS)})
    for refs in _chunks(by["note"] + by["addr"], chunk):
        out.append({"#q": refs, "kinds": list(REPLY_KINDS)})
    for addrs in _chunks(by["addr"], chunk):
        out.append({"#a": addrs, "kinds": list(REPLY_KINDS)})
    for authors in _chunks(by["author"], chunk):
        out.append({"authors": authors, "kinds": list(SOCIAL_KINDS)})
    return out


def req_size(sub: str, filters: Sequence[Filter]) -> int:
    """Bytes of the REQ frame carrying `filters` (with room for since/until/limit)."""
    return len(json.dumps(["REQ", sub, *filters], separators=(",", ":"))) + 64 * len(filters)


def _split_filter(flt: Filter) -> list[Filter]:
    """A filter whose largest value array is cut in two halves (one filter if it cannot be cut)."""
    key = max((k for k, v in flt.items() if isinstance(v, list) and k != "kinds"), key=lambda k: len(flt[k]),
              default=None)
    if key is None or len(flt[key]) < 2:
        return [flt]
    half = len(flt[key]) // 2
    return [{**flt, key: flt[key][:half]}, {**flt, key: flt[key][half:]}]


def fit_message(filters: Sequence[Filter], max_bytes: int) -> list[Filter]:
    """The filters, cut until each fits one REQ frame of `max_bytes`."""
    out: list[Filter] = []
    todo = list(filters)
    while todo:
        flt = todo.pop(0)
        if req_size("canal-live-00", [flt]) <= max_bytes:
            out.append(flt)
            continue
        parts = _split_filter(flt)
        if len(parts) == 1:
            out.append(flt)  # cannot be cut further; the relay will say what it thinks
        else:
            todo[:0] = parts
    return out


def group_requests(filters: Sequence[Filter], limits: RelayLimits) -> list[list[Filter]]:
    """Filters packed into REQs: at most `max_filters` each, each frame under `max_message_length`."""
    groups: list[list[Filter]] = []
    current: list[Filter] = []
    for flt in fit_message(filters, limits.max_message_length):
        if current and (len(current) >= limits.max_filters
                        or req_size("canal-live-00", [*current, flt]) > limits.max_message_length):
            groups.append(current)
            current = []
        current.append(flt)
    if current:
        groups.append(current)
    return groups


@dataclass(frozen=True)
class LivePlan:
    """The live REQs for a relay, and whether the interest set had to be cut to fit its limits."""

    requests: list[list[Filter]]
    overflow: int = 0  # REQs that did not fit max_subscriptions (their events are not followed live)


def plan_live(items: Sequence[Item], limits: RelayLimits, chunk: int, untracked: bool = False) -> LivePlan:
    """Live REQs for every item, using at most `max_subscriptions - 1` subscriptions (one stays free for
    backfill pages): chunks grow until the REQs fit; what still does not fit is reported as overflow."""
    if untracked:
        return LivePlan([untracked_filters()])
    budget = max(1, limits.max_subscriptions - 1)
    groups: list[list[Filter]] = []
    for growth in LIVE_CHUNK_GROWTH:
        groups = group_requests(track_filters(items, chunk * growth), limits)
        if len(groups) <= budget:
            return LivePlan(groups)
    return LivePlan(groups[:budget], len(groups) - budget)


def fetch_filters(items: Sequence[Item], limits: RelayLimits, chunk: int, untracked: bool = False) -> list[Filter]:
    """Filters for a backfill, one per REQ: paging backwards with `until` is only exact per filter
    (with several filters, one filter's older events could hide behind another's oldest)."""
    filters = untracked_filters() if untracked else track_filters(items, chunk)
    return fit_message(filters, limits.max_message_length)
