"""Run the real compactor (services.compactor.rollup.compact_tier) until every tier is clean, with timings."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from libs.db.engine import make_engine
from libs.metrics import Tier
from services.compactor.rollup import RunStats, compact_tier

COUNTED = ("buckets", "facts_read", "rows_read", "rows_written", "emptied", "batches")


def dirty_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT tier, count(*) FROM dirty_buckets GROUP BY tier")).all()
    return {Tier(int(t)).label: int(n) for t, n in rows}


def compact_to_clean(engine: Engine, workers: int, batch: int, now: int, label: str = "") -> dict[str, Any]:
    """Minute, then hour, then day tier, each with `workers` threads claiming `batch` buckets per transaction."""
    began = time.perf_counter()
    out: dict[str, Any] = {"workers": workers, "batch": batch, "tiers": {}}
    for tier in Tier:
        out["tiers"][tier.label] = _drain(engine, tier, workers, batch, now, label)
    out["seconds"] = round(time.perf_counter() - began, 3)
    out["buckets"] = sum(t["buckets"] for t in out["tiers"].values())
    out["left_dirty"] = dirty_counts(engine)
    return out


def _drain(engine: Engine, tier: Tier, workers: int, batch: int, now: int, label: str) -> dict[str, Any]:
    lock = threading.Lock()
    total = RunStats(tier=tier.label)
    errors: list[str] = []
    began = time.perf_counter()
    last_note = [began]

    def work() -> None:
        failures = 0
        while True:
            try:
                stats = compact_tier(engine, tier, batch, now=now)
            except OperationalError as exc:  # deadlock or serialization: retry a few times
                failures += 1
                if failures > 5:
                    errors.append(str(exc.orig or exc)[:300])
                    return
                time.sleep(0.05 * failures)
                continue
            if not stats.buckets:
                return
            with lock:
                for name in COUNTED:
                    setattr(total, name, getattr(total, name) + getattr(stats, name))
                if time.perf_counter() - last_note[0] > 15:
                    last_note[0] = time.perf_counter()
                    print(f"  [bench] compaction{label} {tier.label}: {total.buckets:,} buckets, "
                          f"{time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)

    threads = [threading.Thread(target=work, name=f"bench-compact-{i}") for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    row: dict[str, Any] = {name: getattr(total, name) for name in COUNTED}
    row["seconds"] = round(seconds, 3)
    row["buckets_per_s"] = round(total.buckets / seconds, 1) if seconds > 0 else None
    if errors:
        row["errors"] = errors
    return row


# ------------------------------------------------------------------ measurements on the scratch database

def scratch_layout(targets: int, facts: int, actors: int = 20_000) -> Any:
    """Targets for the compaction tests: the first takes 40% of the facts, the others share the rest."""
    from tools.bench.workload import Layout, Target

    first = int(facts * 0.4)
    rest = facts - first
    sizes = [first] + [rest // (targets - 1) + (1 if i < rest % (targets - 1) else 0) for i in range(targets - 1)]
    out, base = [], 1
    for i, n in enumerate(sizes, start=1):
        count = max(3, n // 125)
        out.append(Target(i, "scratch", n, base, count))
        base += count
    return Layout(tuple(out), targets + 1, actors, base - 1)


def roll_new_facts(pg: Any, database: str, url: str, facts: int, targets: int, t0: int, workers: int,
                   batch: int) -> tuple[dict[str, Any], Any]:
    """Insert `facts` new facts over one day [t0, t0 + 1d) for `targets` targets (facts + dirty minutes in one
    transaction, as ingest writes them), then time the compactor rolling them through every tier."""
    from tools.bench.workload import insert_dictionaries, insert_facts, mark_dirty

    lay = scratch_layout(targets, facts)
    with pg.connect(database) as conn:
        with conn.transaction():
            insert_dictionaries(conn, lay, t0)
        began = time.perf_counter()
        with conn.transaction():
            n = insert_facts(conn, list(lay.targets), lay, t0, 1, "canal-bench-new:")
            dirty = mark_dirty(conn, [t.id for t in lay.targets], t0, t0 + 86_400)
        inserted_s = time.perf_counter() - began
        conn.execute("ANALYZE facts")
        conn.execute("ANALYZE dirty_buckets")
    result = _compact_facts(url, workers, batch, t0 + 2 * 86_400, " (new facts)", n)
    result.update(targets=targets, dirty_minutes=dirty, insert_seconds=round(inserted_s, 2))
    return result, lay


def outage_catch_up(pg: Any, database: str, url: str, lay: Any, facts: int, t1: int, workers: int,
                    batch: int) -> dict[str, Any]:
    """A one-day compactor outage: a day of facts (95% in [t1, t1 + 1d), 5% late data for the day before,
    whose buckets are already rolled up) arrives uncompacted; then the compactor catches up."""
    from tools.bench.workload import insert_facts, mark_dirty

    targets = list(lay.targets)
    share = [t.facts / lay.facts() for t in targets]
    today = [max(1, int(facts * 0.95 * s)) for s in share]
    late = [max(1, int(facts * 0.05 * s)) for s in share]
    with pg.connect(database) as conn:
        with conn.transaction():
            n = insert_facts(conn, targets, lay, t1, 1, "canal-bench-outage:", today)
            n += insert_facts(conn, targets, lay, t1 - 86_400, 1, "canal-bench-late:", late)
            dirty = mark_dirty(conn, [t.id for t in targets], t1 - 86_400, t1 + 86_400)
        conn.execute("ANALYZE facts")
        conn.execute("ANALYZE dirty_buckets")
    result = _compact_facts(url, workers, batch, t1 + 2 * 86_400, " (outage)", n)
    result.update(late_facts=sum(late), dirty_minutes=dirty)
    return result


def _compact_facts(url: str, workers: int, batch: int, now: int, label: str, facts: int) -> dict[str, Any]:
    """The compactor run to clean over `facts` new facts, with its rate."""
    engine = make_engine(url, pool_size=workers + 1)
    try:
        result = compact_to_clean(engine, workers, batch, now, label=label)
    finally:
        engine.dispose()
    result.update(facts=facts, facts_per_s=round(facts / result["seconds"], 1) if result["seconds"] else None)
    return result
