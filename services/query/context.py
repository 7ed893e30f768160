"""What the planner needs to know from the store: dirty buckets, watermarks, horizons, freshness."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import Connection, text

from libs.metrics import TIER_SECONDS, Tier

FAR_FUTURE = 2**62
_ALL_TIERS = ", ".join(str(int(t)) for t in Tier)


@dataclass(frozen=True)
class RelayHealth:
    url: str
    lag_seconds: int
    healthy: bool
    last_seen_at: int


@dataclass(frozen=True)
class Freshness:
    """API.md freshness: as_of, watermark, lag_seconds, stale (+ per relay)."""

    as_of: int
    watermark: int
    lag_seconds: int
    stale: bool
    relays: tuple[RelayHealth, ...] = field(default_factory=tuple)


def target_id(conn: Connection, pubkey: str) -> int | None:
    """The dense id of a target pubkey, or None when it never appeared in any fact."""
    row = conn.execute(text("SELECT id FROM pubkeys WHERE pubkey = :p"), {"p": pubkey}).first()
    return None if row is None else int(row[0])


def dirty_sets(conn: Connection, target: int, start: int, end: int) -> dict[str, set[int]]:
    """Dirty bucket starts per tier for a target around [start, end).

    A dirty minute also makes its hour, day and day blocks unreadable (their rows were built
    before it changed), a dirty hour its day and blocks, and so on: the planner must descend
    past all of them.
    """
    out: dict[str, set[int]] = {t.label: set() for t in Tier}
    rows = conn.execute(
        text(f"SELECT tier, bucket_start FROM dirty_buckets WHERE target_id = :t AND tier IN ({_ALL_TIERS}) "
             "AND bucket_start >= :lo AND bucket_start < :hi"),
        {"t": target, "lo": start - TIER_SECONDS[Tier.DAY], "hi": end},
    )
    for tier_value, bucket in rows:
        tier = Tier(tier_value)
        for up in Tier:
            if up >= tier:
                out[up.label].add(bucket - bucket % up.seconds)
    return out


def horizons(conn: Connection) -> dict[str, int]:
    """Earliest data still present per tier and for raw facts (published by retention)."""
    return {r[0]: int(r[1]) for r in conn.execute(text("SELECT tier, horizon FROM retention_horizons"))}


def watermarks(conn: Connection) -> dict[str, int]:
    """Per tier watermark as the compactor published it."""
    return {Tier(r[0]).label: int(r[1]) for r in conn.execute(text("SELECT tier, watermark FROM watermarks"))}


def freshness(conn: Connection, lag_limit_s: int, now: int | None = None) -> Freshness:
    """as_of: newest moment up to which every ingested fact is reflected.

    With relays: the oldest moment any disconnected relay was last seen (a connected relay
    is live). Without relays (file import only): the last ingest commit or now.
    """
    now = int(time.time()) if now is None else now
    relays: list[RelayHealth] = []
    as_of = now
    for url, connected, last_seen in conn.execute(
        text("SELECT relay, bool_or(connected), max(last_seen_at) FROM relay_cursors GROUP BY relay ORDER BY relay")
    ):
        seen = int(last_seen or 0)
        lag = 0 if connected else max(0, now - seen)
        relays.append(RelayHealth(url, lag, bool(connected), seen))
        if not connected:
            as_of = min(as_of, seen)
    marks = watermarks(conn)
    watermark = min(marks.values()) if marks else 0
    lag = max(0, now - as_of)
    return Freshness(as_of, watermark, lag, lag > lag_limit_s, tuple(relays))
