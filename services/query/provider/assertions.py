"""NIP-85 assertions from query answers: which tags, which `d`, which kind (pure, no I/O).

Only tags NIP-85 defines and canal computes exactly (METRICS.md) are published:

kind 30382 (a user)            | canal metric (query service)
-------------------------------|-------------------------------------------------------------
followers                      | followers.total (contact lists naming the key at the window end)
post_cnt                       | notes.count (kind 1 notes by the key, replies included, not deleted)
reply_cnt                      | replies.count (replies and NIP-22 comments to the key's notes)
reactions_cnt                  | reactions.count (kind 7 reactions to the key)
zap_cnt_recd                   | zaps.count (valid zaps to the key)
zap_amt_recd                   | zaps.msats // 1000 (NIP-85 counts sats)

kind 30383 (a note, d = event id) and 30384 (an addressable note, d = kind:pubkey:d), from the note
drilldown: comment_cnt = replies.count, quote_cnt = quotes.count, repost_cnt = reposts.count,
reaction_cnt = reactions.count, zap_cnt = zaps.count, zap_amount = zaps.msats // 1000.

Not published, because canal does not compute them exactly: rank, zap_amt_sent, zap_cnt_sent
(canal keeps zaps per recipient, not per sender), zap_avg_amt_day_recd/sent, first_created_at
(canal only holds what it ingested: the key's first event may predate its backfill),
reports_cnt_recd/sent (kind 1984 is not ingested), t, active_hours_start/end.

Beyond the NIP, rolling windows: the same kind 30382 tags over a rolling window are a separate
assertion whose `d` is `<pubkey>:<window>` (e.g. `<pubkey>:7d`), so a client asking for `#d:
[<pubkey>]` only ever gets the all-time numbers. Notes are asserted for `all` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from libs.nostr.keys import sign_event

USER_KIND: Final = 30382
EVENT_KIND: Final = 30383
ADDRESS_KIND: Final = 30384
NOTE_KINDS: Final = (EVENT_KIND, ADDRESS_KIND)
ALL: Final = "all"

#: kind 30382 tag -> the summary metric behind it (amounts are msats and become sats).
USER_TAGS: Final[tuple[tuple[str, str], ...]] = (
    ("followers", "followers.total"),
    ("post_cnt", "notes.count"),
    ("reply_cnt", "replies.count"),
    ("reactions_cnt", "reactions.count"),
    ("zap_cnt_recd", "zaps.count"),
    ("zap_amt_recd", "zaps.msats"),
)
#: kind 30383/30384 tag -> the note-drilldown column behind it.
NOTE_TAGS: Final[tuple[tuple[str, str], ...]] = (
    ("comment_cnt", "replies.count"),
    ("quote_cnt", "quotes.count"),
    ("repost_cnt", "reposts.count"),
    ("reaction_cnt", "reactions.count"),
    ("zap_cnt", "zaps.count"),
    ("zap_amount", "zaps.msats"),
)
#: What the provider asks the query service for (GetSummary `metrics`).
SUMMARY_METRICS: Final[tuple[str, ...]] = tuple(metric for _, metric in USER_TAGS)

Tags = list[list[str]]


def _value(metric: str, metrics: Mapping[str, int]) -> str:
    value = int(metrics.get(metric, 0))
    return str(value // 1000 if metric == "zaps.msats" else value)


def user_d(pubkey: str, window: str) -> str:
    """`d` of a key's kind 30382: the pubkey (NIP-85) for `all`, `<pubkey>:<window>` for a rolling window."""
    return pubkey if window == ALL else f"{pubkey}:{window}"


def note_kind(note_key: str) -> int:
    """30384 for an address (`kind:pubkey:d`), 30383 for an event id."""
    return ADDRESS_KIND if ":" in note_key else EVENT_KIND


@dataclass(frozen=True)
class Assertion:
    """One addressable event's content: its kind, `d` and value tags, and whose numbers they are."""

    kind: int
    d: str
    subject: str  # the tracked key the numbers belong to
    window: str
    tags: Tags

    @property
    def address(self) -> tuple[int, str]:
        return self.kind, self.d

    def event(self, key: bytes, created_at: int) -> dict[str, Any]:
        """The signed event (`d` first, then the value tags, empty content)."""
        return sign_event(key, self.kind, "", [["d", self.d], *self.tags], created_at)


def user_assertion(pubkey: str, window: str, metrics: Mapping[str, int]) -> Assertion:
    """Kind 30382 for `pubkey` over `window` from a summary's metrics."""
    return Assertion(USER_KIND, user_d(pubkey, window), pubkey, window,
                     [[tag, _value(metric, metrics)] for tag, metric in USER_TAGS])


def note_assertion(pubkey: str, note_key: str, metrics: Mapping[str, int]) -> Assertion:
    """Kind 30383/30384 for one of `pubkey`'s notes from its note-drilldown row (all time)."""
    return Assertion(note_kind(note_key), note_key, pubkey, ALL,
                     [[tag, _value(metric, metrics)] for tag, metric in NOTE_TAGS])


def zero_note_assertion(pubkey: str, kind: int, d: str) -> Assertion:
    """A note that left the drilldown (every count back to zero, e.g. its only reaction was deleted)."""
    return Assertion(kind, d, pubkey, ALL, [[tag, "0"] for tag, _ in NOTE_TAGS])


def parse_windows(value: str | Sequence[str], allowed: Sequence[str]) -> list[str]:
    """PROVIDER_WINDOWS as a list of rolling windows besides `all`; ValueError on an unknown one."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in (w.strip() for w in items):
        if not item or item == ALL or item in out:
            continue
        if item not in allowed:
            raise ValueError(f"PROVIDER_WINDOWS: unknown window {item!r} (use {', '.join(allowed)})")
        out.append(item)
    return out


def tag_values(tags: Tags) -> dict[str, int]:
    """A published assertion's value tags as {tag: int} (for readers and tests)."""
    return {t[0]: int(t[1]) for t in tags if len(t) >= 2 and t[0] != "d" and t[1].lstrip("-").isdigit()}
