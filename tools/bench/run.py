"""`canal bench [--quick] [--out DIR]`: run every benchmark of issue 9 and write results.json + report.md.

Phases (each isolated: a failure is recorded in the results and the run goes on):

1. workload: the bench's own embedded PostgreSQL in ``<out>/cache/pg``; the workload database is
   generated (or reused, see ``<out>/cache/manifest.json``) and compacted by the real compactor;
   its on-disk bytes per table and per fact (tools.bench.storage);
2. queries: gRPC (canonical vs legacy, rolling and custom windows, drilldowns), DuckDB peer, gateway,
   cost growth, and profiles of the summary path;
3. ingest and freshness (a scratch database recreated every run): file import with 1 and 2
   processes, duplicate replay, LocalRelay, ingest-to-visible delay;
4. compaction: new facts through every tier, catch-up after a one-day outage;
5. ingest rate as the facts table grows (0 facts, after the compaction tests, the workload): the same
   events at every size, each after a warm-up and a checkpoint, with the server's WAL, full-page images
   and block reads per event (tools.bench.ingest_growth).

Set CANAL_BENCH_REBUILD=1 to regenerate the cached workload.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tools.bench import report
from tools.bench.pg import BenchPostgres, Manifest
from tools.bench.profile import DAY, Profile, profile_for
from tools.bench.stats import Budget, ratio, summarize_ms
from tools.bench.storage import measure as storage_measure
from tools.bench.workload import Layout, ensure_workload

REPO = Path(__file__).resolve().parents[2]
SCRATCH = "canal_bench_scratch"
NOTES_FILE = "NOTES.md"


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _phase(results: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    began = time.perf_counter()
    _log(f"phase {name}")
    try:
        value = fn()
    except Exception as exc:  # recorded, the run goes on
        traceback.print_exc()
        value = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    results.setdefault("meta", {}).setdefault("phase_seconds", {})[name] = round(time.perf_counter() - began, 1)
    return value


def machine() -> dict[str, Any]:
    out: dict[str, Any] = {"cores": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform()}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                out["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                out["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return out


def _duckdb_version() -> str:
    try:
        import duckdb
    except ImportError:
        return "not installed"
    return str(duckdb.__version__)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(args: Any) -> int:
    """Run the bench; always writes the report (a missed target never fails the command)."""
    import signal

    def _terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks: report written, servers stopped

    signal.signal(signal.SIGTERM, _terminate)
    profile = profile_for(bool(getattr(args, "quick", False)))
    out = Path(getattr(args, "out", None) or "bench")
    cache = out / "cache"
    budget = Budget(profile.budget_s)
    results: dict[str, Any] = {"meta": {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "mode": profile.name,
        "commit": git_commit(), "machine": machine(), "budget_s": profile.budget_s, "notes_file": NOTES_FILE,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "duckdb": _duckdb_version()}}
    _log(f"{profile.name} run; results in {out}/")
    pg: BenchPostgres | None = None
    try:
        pg = BenchPostgres(cache)
        results["meta"]["postgres"] = pg.settings()
        results["meta"]["postgres_start_s"] = round(pg.start_seconds, 2)
        manifest = Manifest(cache / "manifest.json")
        url, lay, build = ensure_workload(pg, profile, manifest, rebuild=os.environ.get("CANAL_BENCH_REBUILD") == "1")
        entry = manifest.get(profile.db_name) or {}
        results["workload"] = {
            "database": profile.db_name, "facts": build.get("facts"), "days": profile.days,
            "big_target_facts": lay.big.facts, "growth_sizes": [t.facts for t in lay.growth()],
            "tail_targets": profile.tail_targets, "tail_range": f"{profile.tail_min}-{profile.tail_max}",
            "actors": lay.actors, "notes": lay.notes, "end": profile.end, "built_at": entry.get("built_at"),
            "build": {k: v for k, v in build.items() if k != "compaction"},
        }
        results["compaction"] = {"build": {**build.get("compaction", {}), "cached": build.get("cached")}}
        results["storage"] = _phase(results, "storage", lambda: storage_measure(url))
        results["query"] = _phase(results, "queries", lambda: queries(url, lay, profile, cache, budget))
        results["ingest"], results["freshness"] = {}, {}
        _phase(results, "ingest", lambda: ingest_and_compaction(pg, url, lay, profile, manifest, cache, results,
                                                                  budget))
    finally:
        results["meta"]["duration_s"] = round(budget.elapsed(), 1)
        results["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        json_path, md_path = report.write(out, results)
        if pg is not None:
            pg.drop(SCRATCH)  # about 1 GB after a full run; recreated by every run anyway
            pg.stop()
        _log(f"wrote {json_path} and {md_path} in {budget.elapsed():.0f} s")
        for row in results.get("targets", []):
            verdict = "—" if row["pass"] is None else ("pass" if row["pass"] else "FAIL")
            _log(f"  {verdict:>4}  {row['figure']}: {row['value']} {row.get('unit', '')}")
    return 0


# ------------------------------------------------------------------------------------------ queries

def queries(url: str, lay: Layout, profile: Profile, cache: Path, budget: Budget) -> dict[str, Any]:
    from tools.bench import queries as qb
    from tools.bench.servers import QueryServer

    out: dict[str, Any] = {}
    server = QueryServer(url)
    client = qb.Client(server.address)
    big = lay.big
    end = data_end(url, big.id, profile.end)
    out["now"] = end
    seconds: dict[str, float] = {}
    out["seconds"] = seconds

    def step(name: str, fn: Callable[[], Any]) -> Any:
        began = time.perf_counter()
        try:
            return fn()
        finally:
            seconds[name] = round(time.perf_counter() - began, 1)

    try:
        out["grpc"] = step("grpc rolling", lambda: qb.rolling_latency(client, big.pubkey, end, profile, budget))
        windows = qb.custom_windows(profile.custom_windows, profile.start, end)
        out["now_note"] = ("every gRPC window ends at `now` = the large target's newest fact + 1 s (not aligned to "
                           "any tier, as a live request's clock is not)")
        custom = step("grpc custom", lambda: qb.custom_latency(client, big.pubkey, windows, end, profile, budget))
        answers, canonical_s = custom.pop("_answers"), custom.pop("_canonical_s")
        out["custom"] = custom
        out["duckdb"] = step("duckdb", lambda: _isolated(lambda: _duckdb(
            url, lay, profile, cache, out["grpc"]["summary"], windows, answers, canonical_s, end)))
        out["gateway"] = step("gateway", lambda: _isolated(lambda: _gateway(url, server.address, big.pubkey, profile,
                                                                           budget, end)))
        growth = [(t.pubkey, t.facts) for t in lay.growth()]
        out["growth"] = step("growth", lambda: _isolated(lambda: qb.growth_latency(
            client, growth, end, profile, budget, out["grpc"]["summary"])))
        out["profile"] = step("profiles", lambda: _isolated(lambda: _query_profiles(url, lay, profile, end)))
    finally:
        client.close()
        server.stop()
    return out


def _isolated(fn: Callable[[], Any]) -> Any:
    """Run one measurement; an exception becomes {"error": ...} so the others still run."""
    try:
        return fn()
    except Exception as exc:
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


def data_end(url: str, target_id: int, fallback: int) -> int:
    """The newest fact of the target + 1 s: where a live request's `now` would be."""
    from sqlalchemy import text

    from libs.db.engine import make_engine

    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            newest = conn.execute(text("SELECT max(created_at) FROM facts WHERE target_id = :t"),
                                  {"t": target_id}).scalar()
    finally:
        engine.dispose()
    return int(newest) + 1 if newest is not None else fallback


def _duckdb(url: str, lay: Layout, profile: Profile, cache: Path, summary: dict[str, Any],
            windows: list[tuple[int, int]], answers: list[Any], canonical_s: list[float], end: int) -> dict[str, Any]:
    from tools.bench import queries as qb
    from tools.bench.duck import DuckPeer, export_parquet, same_answer

    path = cache / f"{profile.db_name}-t{lay.big.id}-{lay.big.facts}.parquet"
    export = export_parquet(url, lay.big.id, path, lay.big.facts)
    peer = DuckPeer(path)
    try:
        rolling: dict[str, Any] = {}
        for label in qb.ROLLING:
            s, e = qb.rolling_bounds(label, end)
            times, answer = peer.timed(s, e, profile.duckdb_reps)
            lat = summarize_ms(times)
            c50 = summary.get(label, {}).get("canonical", {}).get("latency_ms", {}).get("p50")
            rolling[label] = {"latency_ms": lat, "canonical_p50": c50,
                              "speedup_canonical_vs_duckdb": ratio(lat.get("p50"), c50),
                              "equal": same_answer(answer, summary.get(label, {}).get("metrics"))}
        speedups, equal = [], []
        duck_times: list[float] = []
        for (s, e), canon, c_s in zip(windows[: len(answers)], answers, canonical_s, strict=True):
            times, answer = peer.timed(s, e, 1, warmup=0)
            duck_times += times
            speedups.append(times[0] / c_s if c_s == c_s and c_s > 0 else float("nan"))
            equal.append(same_answer(answer, canon))
        valid = sorted(x for x in speedups if x == x)
        custom = {"latency_ms": summarize_ms(duck_times), "min_speedup": round(valid[0], 2) if valid else None,
                  "median_speedup": round(valid[len(valid) // 2], 2) if valid else None,
                  "all_equal": all(x is True for x in equal)}
    finally:
        peer.close()
    return {"export": export, "threads": peer.threads, "version": peer.version, "rolling": rolling, "custom": custom}


def _gateway(url: str, query_address: str, pubkey: str, profile: Profile, budget: Budget,
             end: int) -> dict[str, Any]:
    if not (REPO / "services" / "gateway" / "app.py").exists():
        return {"measured": False, "reason": "services/gateway/app.py does not exist in this checkout"}
    from libs.db.engine import make_engine
    from services.gateway.auth import create_key
    from tools.bench.queries import gateway_latency
    from tools.bench.servers import GatewayServer

    engine = make_engine(url, pool_size=1)
    key_id, secret = create_key(engine, "canal-bench", ["read:any"])
    gw = GatewayServer(url, query_address)
    try:
        return gateway_latency(gw.base_url, secret, pubkey, end, profile, budget)
    finally:
        gw.stop()
        from sqlalchemy import text

        with engine.begin() as conn:
            conn.execute(text("DELETE FROM api_keys WHERE id = :i"), {"i": key_id})
        engine.dispose()


def _query_profiles(url: str, lay: Layout, profile: Profile, end: int) -> dict[str, Any]:
    from tools.bench.profiling import explain_raw_scan, summary_breakdown
    from tools.bench.queries import rolling_bounds

    out: dict[str, Any] = {"canonical_summary_direct": {}}
    reps = 5 if profile.name == "full" else 2
    for label in ("24h", "30d", "365d", "all"):
        s, e = rolling_bounds(label, end)
        out["canonical_summary_direct"][label] = summary_breakdown(url, lay.big.id, s, e, False, reps)
    s, e = rolling_bounds("365d", end)
    out["legacy_raw_scan_365d_explain"] = explain_raw_scan(url, lay.big.id, s, e)
    return out


# ---------------------------------------------------------------------------- ingest and compaction

def _truncate(url: str) -> None:
    from sqlalchemy import text

    from libs.db.engine import make_engine
    from libs.db.models import Base

    engine = make_engine(url, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE " + ", ".join(t.name for t in Base.metadata.sorted_tables)
                              + " RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


def ingest_and_compaction(pg: BenchPostgres, workload_url: str, lay: Layout, profile: Profile, manifest: Manifest,
                          cache: Path, results: dict[str, Any], budget: Budget) -> None:
    from libs.db.migrate import upgrade
    from tools.bench import ingest as ib

    ing: dict[str, Any] = results["ingest"]
    url = pg.recreate(SCRATCH)
    upgrade(url)
    path_a, _, info_a = ib.events_file(cache, profile.ingest_users, seed=7)
    ing["events"] = info_a
    halves = ib.split(path_a, 2)
    # the growth series ingests the same events into every store size, after the same warm-up
    warm = ib.split(path_a, 2, 0, profile.growth_warm)
    measured = ib.split(path_a, 2, profile.growth_warm, profile.growth_events)
    pool = ib.IngestPool(2)
    try:
        ing["file"] = {}
        ing["file"]["1"] = _phase(results, "ingest file 1 process", lambda: ib.file_ingest(pool, url, [path_a]))
        _truncate(url)
        ing["file"]["2"] = _phase(results, "ingest file 2 processes", lambda: ib.file_ingest(pool, url, halves))
        ing["file"]["replay"] = _phase(results, "ingest replay", lambda: ib.file_ingest(pool, url, [path_a]))
        ing["relay"] = _phase(results, "ingest relay", lambda: _relay(pool, url, path_a, profile))
        growth: list[dict[str, Any]] = []
        ing["growth"] = growth
        _truncate(url)
        growth.append(_phase(results, "ingest at 0 facts", lambda: _ingest_at(pool, url, warm, measured)))
        _truncate(url)
        ing["profile"] = _phase(results, "ingest profile", lambda: ib.profile_ingest(url, path_a, 5000))
        results["freshness"] = _phase(results, "freshness", lambda: _freshness(url, profile))
        _truncate(url)
        _phase(results, "compaction", lambda: _compaction(pg, url, profile, results["compaction"]))
        growth.append(_phase(results, "ingest after the compaction tests",
                             lambda: _ingest_at(pool, url, warm, measured)))
        growth.append(_phase(results, "ingest into the workload",
                             lambda: _ingest_into_workload(pool, pg, workload_url, profile, manifest, warm,
                                                           measured)))
    finally:
        pool.close()


def _compaction(pg: BenchPostgres, url: str, profile: Profile, comp: dict[str, Any]) -> None:
    from tools.bench.compact import outage_catch_up, roll_new_facts

    t0 = profile.end
    new, scratch_lay = roll_new_facts(pg, SCRATCH, url, profile.compaction_facts, profile.compaction_targets, t0,
                                      profile.compact_workers, profile.compact_batch)
    comp["new_facts"] = new
    comp["outage"] = outage_catch_up(pg, SCRATCH, url, scratch_lay, profile.outage_facts, t0 + DAY,
                                     profile.compact_workers, profile.compact_batch)


def _ingest_at(pool: Any, url: str, warm: list[Path], parts: list[Path]) -> dict[str, Any]:
    """`warm` (unmeasured), a checkpoint, then `parts` with the server's work per event (tools.bench.ingest_growth)."""
    from tools.bench import ingest as ib
    from tools.bench.ingest_growth import measured

    before = ib.facts_count(url)
    out = measured(url, lambda: ib.file_ingest(pool, url, warm), lambda: ib.file_ingest(pool, url, parts))
    out["facts_before"] = before
    return out


def _relay(pool: Any, url: str, path: Path, profile: Profile) -> dict[str, Any]:
    missing = [p for p in ("tools/demo/relay.py", "services/ingest/relay_client.py") if not (REPO / p).exists()]
    if missing:
        return {"reason": f"not measured: {', '.join(missing)} missing in this checkout"}
    from tools.bench import ingest as ib

    host = ib.RelayHost()
    out: dict[str, Any] = {}
    try:
        for processes in (1, 2) if profile.name == "full" else (1,):
            _truncate(url)
            out[str(processes)] = ib.relay_ingest(pool, url, path, profile.relay_events, processes, host)
    finally:
        host.stop()
    return out


def _freshness(url: str, profile: Profile) -> dict[str, Any]:
    from tools.bench import ingest as ib
    from tools.bench.servers import QueryServer

    server = QueryServer(url)
    try:
        return ib.freshness(url, server.address, profile.freshness_rate, profile.freshness_seconds)
    finally:
        server.stop()


def _ingest_into_workload(pool: Any, pg: BenchPostgres, url: str, profile: Profile, manifest: Manifest,
                          warm: list[Path], parts: list[Path]) -> dict[str, Any]:
    """Ingest fresh events into the workload database, then remove exactly what they added."""
    manifest.mark(profile.db_name, "in_use")
    out = _ingest_at(pool, url, warm, parts)
    with pg.connect(profile.db_name) as conn:
        with conn.transaction():
            conn.execute("DELETE FROM facts f USING events e WHERE f.created_at = e.created_at "
                         "AND f.source_event_id = e.id")
            conn.execute("DELETE FROM profiles p USING events e WHERE p.event_id = e.id")
            conn.execute("TRUNCATE events, event_refs, zap_receipts, tombstones, contact_lists, rejects, "
                         "dirty_buckets, ingest_state")
        row = conn.execute("SELECT count(*) FROM facts").fetchone()
    entry = manifest.get(profile.db_name) or {}
    if row is not None and int(row[0]) == entry.get("facts"):
        manifest.mark(profile.db_name, "ready")
    else:
        manifest.mark(profile.db_name, "stale")
    return out
