"""The metric vocabulary of METRICS.md, shared by ingest, compactor, query and tests.

Facts are typed rows; aggregates hold per-bucket columns; metrics are computed from
columns (sums) and from exact distinct sets (roaring bitmaps of dense ids).
`FACT_COLUMNS` is the single definition of how facts become aggregate columns: the
minute rollup and the legacy raw scan both use it.
"""

from __future__ import annotations

from enum import IntEnum


class FactType(IntEnum):
    """What a fact records (facts.fact_type)."""

    ZAP = 1
    REACTION = 2
    REPOST = 3
    REPLY = 4
    QUOTE = 5
    MENTION = 6
    FOLLOW = 7
    UNFOLLOW = 8
    NOTE = 9
    ARTICLE = 10


class Tier(IntEnum):
    """Aggregate tiers (aggregates.tier); values order finest to coarsest.

    DAY8 and DAY64 are blocks of 8 and 64 UTC days aligned to the Unix epoch. They exist
    so that long windows read a few dozen rows of exact distinct sets instead of one per
    day (a 365-day window: about 5 DAY64 + 7 DAY8 + 7 DAY rows instead of 364 DAY rows).
    """

    MINUTE = 1
    HOUR = 2
    DAY = 3
    DAY8 = 4
    DAY64 = 5

    @property
    def seconds(self) -> int:
        return TIER_SECONDS[self]

    @property
    def label(self) -> str:
        return self.name.lower()


TIER_SECONDS = {Tier.MINUTE: 60, Tier.HOUR: 3600, Tier.DAY: 86400, Tier.DAY8: 8 * 86400, Tier.DAY64: 64 * 86400}
#: Tier labels, coarsest first (the order the planner tries them).
TIER_LABELS = tuple(t.label for t in sorted(Tier, reverse=True))
TIER_BY_LABEL = {t.label: t for t in Tier}

# facts.sub bits
SUB_LIKE = 1  # reaction content "+" or ""
SUB_DISLIKE = 2  # reaction content "-"
SUB_ANON = 4  # zap request carried an `anon` tag

# Additive aggregate columns and the SQL that computes each from a set of fact rows.
FACT_COLUMNS: dict[str, str] = {
    "facts": "count(*)",
    "zaps_count": f"count(*) FILTER (WHERE fact_type = {FactType.ZAP})",
    "zaps_msats": f"coalesce(sum(msats) FILTER (WHERE fact_type = {FactType.ZAP}), 0)",
    "reactions_count": f"count(*) FILTER (WHERE fact_type = {FactType.REACTION})",
    "reactions_likes": f"count(*) FILTER (WHERE fact_type = {FactType.REACTION} AND sub = {SUB_LIKE})",
    "reactions_dislikes": f"count(*) FILTER (WHERE fact_type = {FactType.REACTION} AND sub = {SUB_DISLIKE})",
    "reposts_k6": f"count(*) FILTER (WHERE fact_type = {FactType.REPOST} AND kind = 6)",
    "reposts_k16": f"count(*) FILTER (WHERE fact_type = {FactType.REPOST} AND kind = 16)",
    "replies_k1": f"count(*) FILTER (WHERE fact_type = {FactType.REPLY} AND kind = 1)",
    "replies_k1111": f"count(*) FILTER (WHERE fact_type = {FactType.REPLY} AND kind = 1111)",
    "quotes_k1": f"count(*) FILTER (WHERE fact_type = {FactType.QUOTE} AND kind = 1)",
    "quotes_k1111": f"count(*) FILTER (WHERE fact_type = {FactType.QUOTE} AND kind = 1111)",
    "mentions": f"count(*) FILTER (WHERE fact_type = {FactType.MENTION})",
    "follows": f"count(*) FILTER (WHERE fact_type = {FactType.FOLLOW})",
    "unfollows": f"count(*) FILTER (WHERE fact_type = {FactType.UNFOLLOW})",
    "notes": f"count(*) FILTER (WHERE fact_type = {FactType.NOTE})",
}

# Exact distinct sets: bitmap column -> (dense id column, which fact rows count).
_SET_MEMBERS: dict[str, tuple[str, str]] = {
    "zap_senders": ("actor_id", f"fact_type = {FactType.ZAP} AND (sub & {SUB_ANON}) = 0"),
    "reactors": ("actor_id", f"fact_type = {FactType.REACTION}"),
    "articles": ("note_id", f"fact_type = {FactType.ARTICLE}"),
}


def fact_sets_sql(also: str = "") -> dict[str, str]:
    """Exact distinct-set columns over fact rows; `also` is an extra SQL condition on the rows counted."""
    extra = f" AND {also}" if also else ""
    return {name: f"array_agg(DISTINCT {column}) FILTER (WHERE {cond}{extra})"
            for name, (column, cond) in _SET_MEMBERS.items()}


# Exact distinct sets (roaring bitmaps in aggregates) -> SQL array of dense ids from fact rows.
FACT_SETS: dict[str, str] = fact_sets_sql()

# Columns of the note and counterparty drilldowns, from fact rows.
ENGAGEMENT_COLUMNS: dict[str, str] = {
    "zaps_count": f"count(*) FILTER (WHERE fact_type = {FactType.ZAP})",
    "zaps_msats": f"coalesce(sum(msats) FILTER (WHERE fact_type = {FactType.ZAP}), 0)",
    "reactions_count": f"count(*) FILTER (WHERE fact_type = {FactType.REACTION})",
    "reposts_count": f"count(*) FILTER (WHERE fact_type = {FactType.REPOST})",
    "replies_count": f"count(*) FILTER (WHERE fact_type = {FactType.REPLY})",
    "quotes_count": f"count(*) FILTER (WHERE fact_type = {FactType.QUOTE})",
}
ENGAGEMENT_TYPES = (FactType.ZAP, FactType.REACTION, FactType.REPOST, FactType.REPLY, FactType.QUOTE)

# Drilldown column -> public metric name.
ENGAGEMENT_METRICS: dict[str, str] = {
    "zaps_count": "zaps.count",
    "zaps_msats": "zaps.msats",
    "reactions_count": "reactions.count",
    "reposts_count": "reposts.count",
    "replies_count": "replies.count",
    "quotes_count": "quotes.count",
}

METRIC_NAMES: tuple[str, ...] = (
    "zaps.count",
    "zaps.msats",
    "zaps.unique_senders",
    "reactions.count",
    "reactions.likes",
    "reactions.dislikes",
    "reactions.unique_actors",
    "reposts.count",
    "replies.count",
    "quotes.count",
    "mentions.count",
    "followers.gained",
    "followers.lost",
    "followers.net",
    "followers.total",
    "notes.count",
    "articles.count",
)


def metrics_from_columns(cols: dict[str, int], set_sizes: dict[str, int], followers_total: int) -> dict[str, int]:
    """Turn summed aggregate columns and distinct-set sizes into the public metrics."""
    return {
        "zaps.count": cols["zaps_count"],
        "zaps.msats": cols["zaps_msats"],
        "zaps.unique_senders": set_sizes["zap_senders"],
        "reactions.count": cols["reactions_count"],
        "reactions.likes": cols["reactions_likes"],
        "reactions.dislikes": cols["reactions_dislikes"],
        "reactions.unique_actors": set_sizes["reactors"],
        "reposts.count": cols["reposts_k6"] + cols["reposts_k16"],
        "replies.count": cols["replies_k1"] + cols["replies_k1111"],
        "quotes.count": cols["quotes_k1"] + cols["quotes_k1111"],
        "mentions.count": cols["mentions"],
        "followers.gained": cols["follows"],
        "followers.lost": cols["unfollows"],
        "followers.net": cols["follows"] - cols["unfollows"],
        "followers.total": followers_total,
        "notes.count": cols["notes"],
        "articles.count": set_sizes["articles"],
    }


def kind_counts(cols: dict[str, int], set_sizes: dict[str, int]) -> dict[int, int]:
    """The `kind` drilldown: per source kind, the facts behind each metric (METRICS.md precise rules).

    Kind 30023 counts distinct article addresses, the same figure as `articles.count`.
    """
    return {
        9735: cols["zaps_count"],
        7: cols["reactions_count"],
        6: cols["reposts_k6"],
        16: cols["reposts_k16"],
        1: cols["replies_k1"] + cols["quotes_k1"] + cols["mentions"] + cols["notes"],
        1111: cols["replies_k1111"] + cols["quotes_k1111"],
        3: cols["follows"] + cols["unfollows"],
        30023: set_sizes["articles"],
    }


def empty_columns() -> dict[str, int]:
    """All additive columns at zero."""
    return dict.fromkeys(FACT_COLUMNS, 0)
