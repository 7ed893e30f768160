"""Which targets the harness samples (by fact count, deterministic by seed) and what it reads from the store."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Engine, text

from libs.config import Settings

SIZE_CLASSES: Final = ("small", "medium", "large")
# The anchors always sampled, as a rank quantile of targets ordered by fact count.
ANCHORS: Final = (("smallest", 0.0), ("median", 0.5), ("p90", 0.9), ("largest", 1.0))
DAY: Final = 86_400


@dataclass(frozen=True)
class Target:
    """A sampled target pubkey: its fact count, data range, size class and why it was picked."""

    pubkey: str
    facts: int
    first: int
    last: int
    size_class: str
    role: str


def size_class(rank: int, n: int) -> str:
    """`small` below the median rank, `large` from p90 up, `medium` between."""
    q = rank / (n - 1) if n > 1 else 0.0
    return "small" if q < 0.5 else "medium" if q < 0.9 else "large"


def target_stats(engine: Engine) -> list[tuple[str, int, int, int]]:
    """(pubkey, facts, first created_at, last created_at) of every target with facts, smallest first."""
    with engine.connect() as conn:
        if conn.execute(text("SELECT to_regclass('facts')")).scalar() is None:
            raise LookupError("the database has no canal schema: run `canal migrate` (or `canal up`) first")
        rows = conn.execute(text(
            "SELECT p.pubkey, s.n, s.lo, s.hi FROM (SELECT target_id, count(*) AS n, min(created_at) AS lo, "
            "max(created_at) AS hi FROM facts GROUP BY target_id) s JOIN pubkeys p ON p.id = s.target_id "
            "ORDER BY s.n, p.pubkey")).all()
    return [(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]


def sample_targets(stats: list[tuple[str, int, int, int]], samples: int, seed: int) -> list[Target]:
    """The smallest non-empty, median, p90 and largest targets, then random ones up to `samples`."""
    n = len(stats)
    chosen: dict[int, str] = {}
    for role, q in ANCHORS:
        if len(chosen) < samples:
            chosen.setdefault(round(q * (n - 1)) if n else 0, role)
    rest = [i for i in range(n) if i not in chosen]
    rng = random.Random(f"canal-drift-targets:{seed}")
    for i in rng.sample(rest, min(len(rest), max(0, samples - len(chosen)))):
        chosen[i] = "random"
    return [Target(stats[i][0], stats[i][1], stats[i][2], stats[i][3], size_class(i, n), role)
            for i, role in sorted(chosen.items()) if n]


def retention_horizons(engine: Engine, settings: Settings, now: int) -> dict[str, int]:
    """Per tier (and raw facts): the published retention horizon, else where configured retention will cut.

    A horizon of 0 means retention has deleted nothing yet; the harness then probes the instant
    retention will cut at next (`now - keep_days`). Keys name the tier and where the value came from.
    """
    configured = {"facts": settings.retain_facts_days, "minute": settings.retain_minute_days,
                  "hour": settings.retain_hour_days}
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT tier, keep_days, horizon FROM retention_horizons ORDER BY tier")).all()
    out: dict[str, int] = {}
    for tier, days, horizon in rows:
        configured.pop(str(tier), None)
        if int(horizon) > 0:
            out[f"{tier} (published)"] = int(horizon)
        elif days:
            out[f"{tier} (keep {int(days)} d)"] = now - int(days) * DAY
    for tier, days in configured.items():
        if days > 0:
            out[f"{tier} (keep {days} d)"] = now - days * DAY
    return out


def data_range(engine: Engine) -> tuple[int, int]:
    """(first, last) created_at over all facts; (0, 0) when there are none."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT min(created_at), max(created_at) FROM facts")).first()
    if row is None or row[0] is None:
        return 0, 0
    return int(row[0]), int(row[1])
