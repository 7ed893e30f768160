"""Bench sizes: `quick` (under a minute from a cold cache) and `full` (issue 9's figures)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DAY = 86_400
# The workload ends at a fixed UTC midnight in the past, so a cached workload stays valid and every
# gRPC query pins `now` to it. (The gateway resolves rolling windows against its own clock, so it gets
# the equivalent custom windows; see tools.bench.queries.)
WORKLOAD_END = 1_759_968_000  # 2025-10-09T00:00:00Z
WORKLOAD_VERSION = 1  # bump when the generator SQL changes: invalidates cached workloads


@dataclass(frozen=True)
class Profile:
    """Workload shape (these fields key the cache) and measurement effort (these do not)."""

    name: str
    # -- workload (cache key) --
    days: int
    big_facts: int
    growth: tuple[int, ...]  # extra targets for the cost-growth series (the big target is the last point)
    tail_targets: int
    tail_min: int
    tail_max: int
    actors: int
    facts_per_note: int = 125
    # -- measurement effort --
    canonical_reps: int = 30
    legacy_reps: int = 5
    drill_legacy_reps: int = 3
    custom_windows: int = 200
    custom_legacy: int = 25
    duckdb_reps: int = 5
    growth_reps: int = 60
    ingest_users: int = 900  # demo generator network size (~67 events per user)
    growth_warm: int = 2_000  # events ingested (unmeasured) before each growth point's checkpoint
    growth_events: int = 20_000  # the same events measured at every store size
    relay_events: int = 20_000
    freshness_rate: int = 200
    freshness_seconds: float = 20.0
    compaction_facts: int = 1_000_000
    compaction_targets: int = 100
    outage_facts: int = 100_000
    compact_workers: int = 2
    compact_batch: int = 1000
    gateway_kinds: tuple[str, ...] = ("summary", "note", "counterparty", "time")
    rep_cap_s: float = 20.0  # stop repeating one (kind, window, source) once it has used this long
    legacy_drill_deadline_s: float = 30.0  # legacy drilldowns get a deadline (the server caps it at 30 s)
    custom_cap_s: float = 180.0  # canonical custom windows: stop early after this long
    budget_s: float = 38 * 60  # the whole run; phases shrink their repetitions when it runs short

    @property
    def end(self) -> int:
        return WORKLOAD_END

    @property
    def start(self) -> int:
        return WORKLOAD_END - self.days * DAY

    @property
    def db_name(self) -> str:
        return f"canal_bench_{self.name}"

    def workload_key(self) -> dict[str, Any]:
        """The parameters that determine the generated workload (compared with the cache manifest)."""
        keys = ("days", "big_facts", "growth", "tail_targets", "tail_min", "tail_max", "actors", "facts_per_note")
        out = {k: asdict(self)[k] for k in keys}
        out["growth"] = list(self.growth)
        out["end"] = WORKLOAD_END
        out["version"] = WORKLOAD_VERSION
        return out


FULL = Profile(
    name="full", days=730, big_facts=5_000_000, growth=(10_000, 100_000, 1_000_000),
    tail_targets=1_000, tail_min=10, tail_max=1_000, actors=50_000, rep_cap_s=4.0, legacy_drill_deadline_s=10.0,
    drill_legacy_reps=1, custom_legacy=10, custom_cap_s=100.0, duckdb_reps=3,
)

QUICK = Profile(
    name="quick", days=14, big_facts=60_000, growth=(1_000, 10_000), tail_targets=50, tail_min=10,
    tail_max=200, actors=5_000, canonical_reps=8, legacy_reps=2, drill_legacy_reps=0, custom_windows=20,
    custom_legacy=4, duckdb_reps=3, growth_reps=5, ingest_users=40, growth_warm=200, growth_events=1_000, relay_events=500,
    freshness_rate=200, freshness_seconds=2.0, compaction_facts=5_000, compaction_targets=10,
    outage_facts=1_000, gateway_kinds=("summary",), rep_cap_s=0.3, legacy_drill_deadline_s=1.0, custom_cap_s=2.0,
    budget_s=55.0,
)


def profile_for(quick: bool) -> Profile:
    return QUICK if quick else FULL
