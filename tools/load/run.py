"""`canal load`: a bounded, self-stopping load test of the gateway on 127.0.0.1 (story D2).

Against the suite at `--base-url` (default http://127.0.0.1:8080), or, when nothing answers
there, a suite of its own (`canal up` on embedded PostgreSQL and Redis with demo data, in a
temporary folder, stopped at the end). Four scenarios run at once until `--seconds` have
passed or `--requests` were sent:

- hot: the demo's largest targets over rolling windows (mostly cache hits);
- custom: random custom windows to the second over random targets (high cardinality: misses);
- stampede: every few seconds, 100 identical concurrent requests for a window nobody asked before
  (coalescing: ideally one computation, 99 hits);
- mix: drilldowns (note, counterparty, kind, time) and the legacy v1 summary.

It writes `<out>/load-report.json` and `<out>/load-report.md`: p50/p95/p99 per route (client
side, and server side from the gateway's histogram), throughput, error rate, cache hit rate,
freshness, and every row of docs/slo.md checked pass/fail. It exits 0 whenever the load ran
(an SLO miss is a finding, not a crash) and non-zero only when it could not run; the report
then says what failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tools.load import report, slo
from tools.load.stats import (
    Sample,
    by_label,
    by_route,
    histogram_delta,
    histogram_quantile,
    latency,
    parse_histograms,
    percentile,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BASE_URL = "http://127.0.0.1:8080"
ALLOWED_HOST = "127.0.0.1"
DEFAULT_MAX_REQUESTS = 200_000
STAMPEDE_SIZE = 100
STAMPEDE_EVERY_S = 5.0
WORKERS = {"hot": 6, "custom": 4, "mix": 4}
BASELINE_SHARE = 0.15  # of the time budget: one request at a time first (service time without queueing)
BASELINE_MAX_S = 10.0
CLIENT_TIMEOUT_S = 10.0
SUMMARY_V2 = "/api/v2/analytics/summary"
DRILLDOWN_V2 = "/api/v2/analytics/drilldown"
SUMMARY_V1 = "/api/v1/analytics/summary"
DAY = 86_400


def _log(msg: str) -> None:
    print(f"[load] {msg}", file=sys.stderr, flush=True)


class CannotRun(Exception):
    """The load test cannot run (refused host, no suite, no data); the message says why."""


def check_local(base_url: str) -> str:
    """The base URL when its host is 127.0.0.1; CannotRun otherwise (this tool never loads anything else)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or parts.hostname != ALLOWED_HOST:
        raise CannotRun(f"refusing to load {base_url!r}: only http://{ALLOWED_HOST}:<port> is allowed")
    return base_url.rstrip("/")


# ---------------------------------------------------------------- the system under test

@dataclass
class Target:
    """Where the load goes, and how it was obtained."""

    base_url: str
    api_key: str
    started_suite: Any = None  # tests.e2e.suite.Suite when this run started it
    data_dir: Path | None = None
    db_url: str | None = None
    setup_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def _answers(base_url: str) -> bool:
    try:
        return httpx.get(base_url + "/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _ui_config(base_url: str) -> dict[str, Any]:
    try:
        resp = httpx.get(base_url + "/ui/config.json", timeout=5.0)
        return dict(resp.json()) if resp.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return {}


def _engine(db_url: str) -> Any:
    from libs.db.engine import make_engine

    return make_engine(db_url, pool_size=1)


def _scalar(db_url: str, sql: str) -> Any:
    from sqlalchemy import text

    eng = _engine(db_url)
    try:
        with eng.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        eng.dispose()


def _wait(what: str, predicate: Callable[[], bool], timeout: float, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(every)
    raise CannotRun(f"timed out after {timeout:.0f} s waiting for {what}")


def start_own_suite() -> Target:
    """`canal up` in a temporary folder (demo data, no rate limit), ready and with its demo data ingested."""
    from pgserver.utils import PostmasterInfo

    from tests.e2e.suite import start_suite, suite_env

    data_dir = Path(tempfile.mkdtemp(prefix="canal-load-", dir="/tmp"))  # short: unix socket paths are limited
    env = suite_env(data_dir, RATE_LIMIT_PER_MINUTE="1000000000", CANAL_CWD=str(REPO), LOG_LEVEL="WARNING")
    began = time.monotonic()
    _log(f"no suite answers; starting one in {data_dir} (log: {data_dir / 'canal-up.log'})")
    try:
        suite = start_suite(env, data_dir / "canal-up.log", timeout=240)
    except Exception as exc:
        raise CannotRun(f"could not start a suite: {str(exc)[:1500]}") from None
    target = Target(suite.base_url, suite.api_key, suite, data_dir)
    target.setup_s["suite_ready"] = round(time.monotonic() - began, 1)
    info = PostmasterInfo.read_from_pgdata(data_dir / "pg")
    if info is None:
        raise CannotRun("the suite's embedded PostgreSQL has no postmaster.pid")
    target.db_url = info.get_uri()
    _log("waiting for the demo relay's backfill to finish")
    db_url = target.db_url
    _wait("the demo data (relay cursor past the backfill)",
          lambda: int(_scalar(db_url, "SELECT coalesce(max(since), 0) FROM relay_cursors") or 0) > 0, 300)
    target.setup_s["demo_ingested"] = round(time.monotonic() - began, 1)
    with contextlib.suppress(CannotRun):
        _wait("compaction of the demo data",
              lambda: int(_scalar(db_url, "SELECT count(*) FROM dirty_buckets") or 0) < 50, 120)
    target.setup_s["compacted"] = round(time.monotonic() - began, 1)
    return target


def acquire(base_url: str, api_key: str | None) -> Target:
    """The running suite at base_url, or one started for this run."""
    if _answers(base_url):
        config = _ui_config(base_url)
        key = api_key or str(config.get("api_key") or "")
        if not key:
            raise CannotRun(f"the suite at {base_url} gave no API key (set CANAL_API_KEY)")
        target = Target(base_url, key)
        target.db_url = os.environ.get("DATABASE_URL") or None
        target.notes.append(f"external suite at {base_url}")
        return target
    target = start_own_suite()
    if api_key:
        target.api_key = api_key
    if not target.api_key:
        raise CannotRun("the started suite served no demo API key")
    target.notes.append("suite started by `canal load` (embedded PostgreSQL and Redis, demo data)")
    return target


def release(target: Target) -> None:
    if target.started_suite is None:
        return
    from tests.e2e.suite import stop_suite

    code = stop_suite(target.started_suite)
    _log(f"stopped the suite (exit {code})")
    if target.data_dir is not None:
        shutil.rmtree(target.data_dir, ignore_errors=True)


# ---------------------------------------------------------------- targets and windows

@dataclass
class Workload:
    """Who and when the scenarios ask about."""

    demo: str
    hot: list[str]
    pool: list[str]
    data_start: int
    data_end: int


def discover(target: Target) -> Workload:
    """The demo pubkey and the largest targets (database when reachable, else the counterparty drilldown)."""
    config = _ui_config(target.base_url)
    demo = str(config.get("default_pubkey") or "")
    now = int(time.time())
    ranked: list[str] = []
    span = (now - 90 * DAY, now)
    if target.db_url:
        from sqlalchemy import text

        eng = _engine(target.db_url)
        try:
            with eng.connect() as conn:
                ranked = [str(r[0]) for r in conn.execute(text(
                    "SELECT p.pubkey FROM (SELECT target_id, count(*) AS n FROM facts GROUP BY target_id "
                    "ORDER BY n DESC LIMIT 60) t JOIN pubkeys p ON p.id = t.target_id ORDER BY t.n DESC"))]
                lo, hi = conn.execute(text("SELECT min(created_at), max(created_at) FROM facts")).one()
                if lo and hi:
                    span = (int(lo), min(int(hi) + 60, now))
        finally:
            eng.dispose()
    if not demo and ranked:
        demo = ranked[0]
    if not demo:
        raise CannotRun("no target to load: the suite has no default pubkey and no facts")
    if not ranked:
        resp = httpx.get(target.base_url + DRILLDOWN_V2, headers=target.headers, timeout=30, params={
            "pubkey": demo, "dimension": "counterparty", "window": "30d", "limit": 50})
        if resp.status_code != 200:
            raise CannotRun(f"could not list the demo's counterparties: HTTP {resp.status_code} {resp.text[:300]}")
        ranked = [demo] + [str(r["key"]) for r in resp.json()["data"]["rows"]]
    hot = list(dict.fromkeys([demo, *ranked]))[:10]
    pool = list(dict.fromkeys([*hot, *ranked]))
    return Workload(demo, hot, pool, span[0], span[1])


def custom_window(rng: random.Random, w: Workload) -> dict[str, str]:
    """A random window to the second inside the data's time range (1 minute to 30 days long)."""
    lo, hi = w.data_start, max(w.data_start + 120, w.data_end)
    length = int(min(hi - lo, rng.choice([60, 3600, 6 * 3600, DAY, 7 * DAY, 30 * DAY]) * rng.uniform(0.5, 1.0)))
    start = rng.randint(lo, max(lo, hi - length))
    return {"start": str(start), "end": str(start + max(1, length))}


# ---------------------------------------------------------------- the load phase

@dataclass
class Run:
    """Shared state of the scenarios."""

    client: httpx.AsyncClient
    workload: Workload
    deadline: float
    max_requests: int
    began: float
    samples: list[Sample] = field(default_factory=list)
    stampedes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def going(self) -> bool:
        return time.monotonic() < self.deadline and len(self.samples) < self.max_requests

    async def fetch(self, scenario: str, route: str, params: dict[str, Any]) -> Sample:
        started = time.perf_counter()
        at = time.monotonic() - self.began
        try:
            resp = await self.client.get(route, params=params)
            ms = (time.perf_counter() - started) * 1000
        except httpx.HTTPError as exc:
            sample = Sample(scenario, route, 0, (time.perf_counter() - started) * 1000, at, error=type(exc).__name__)
            self.samples.append(sample)
            return sample
        cache = source = ""
        lag: int | None = None
        if resp.headers.get("content-type", "").startswith("application/json"):
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                meta = resp.json().get("meta") or {}
                cache, source = str(meta.get("cache") or ""), str(meta.get("source") or "")
                fresh = meta.get("freshness") or {}
                if resp.status_code == 200 and source == "canonical" and "lag_seconds" in fresh:
                    lag = int(fresh["lag_seconds"])
        sample = Sample(scenario, route, resp.status_code, ms, at, cache, source, lag)
        self.samples.append(sample)
        return sample


async def hot(run: Run, rng: random.Random) -> None:
    while run.going:
        await run.fetch("hot", SUMMARY_V2, {"pubkey": rng.choice(run.workload.hot),
                                           "window": rng.choice(["24h", "7d", "30d"])})


async def custom(run: Run, rng: random.Random) -> None:
    while run.going:
        params: dict[str, Any] = {"pubkey": rng.choice(run.workload.pool), **custom_window(rng, run.workload)}
        if rng.random() < 0.7:
            await run.fetch("custom", SUMMARY_V2, params)
        else:
            await run.fetch("custom", DRILLDOWN_V2, {**params, "dimension": rng.choice(["note", "counterparty"])})


async def mix(run: Run, rng: random.Random) -> None:
    while run.going:
        pubkey = rng.choice(run.workload.hot)
        roll = rng.random()
        if roll < 0.45:
            dim = rng.choice(["note", "counterparty", "kind", "time"])
            params: dict[str, Any] = {"pubkey": pubkey, "dimension": dim, "window": rng.choice(["24h", "7d", "30d"])}
            if dim == "time":
                params["granularity"] = rng.choice(["hour", "day"])
            await run.fetch("mix", DRILLDOWN_V2, params)
        elif roll < 0.85:
            window = ({"window": rng.choice(["24h", "7d", "30d"])} if rng.random() < 0.5
                      else custom_window(rng, run.workload))
            await run.fetch("mix", SUMMARY_V1, {"pubkey": pubkey, **window})
        else:
            await run.fetch("mix", SUMMARY_V2, {"pubkey": pubkey, "window": rng.choice(["90d", "365d"])})


async def baseline(run: Run, rng: random.Random) -> None:
    """One request at a time, cycling through the routes: latency without queueing (cold, then warm)."""
    while run.going:
        pubkey = rng.choice(run.workload.hot)
        window = custom_window(rng, run.workload)
        rolling = {"window": rng.choice(["24h", "7d", "30d"])}
        await run.fetch("baseline", SUMMARY_V2, {"pubkey": pubkey, **window})
        await run.fetch("baseline", SUMMARY_V2, {"pubkey": pubkey, **window})  # the same again: a warm hit
        await run.fetch("baseline", SUMMARY_V2, {"pubkey": pubkey, **rolling})
        await run.fetch("baseline", DRILLDOWN_V2, {"pubkey": pubkey, "dimension": rng.choice(["note", "counterparty"]),
                                                   **window})
        await run.fetch("baseline", SUMMARY_V1, {"pubkey": pubkey, **window})


async def stampedes(run: Run, rng: random.Random) -> None:
    """Every STAMPEDE_EVERY_S: STAMPEDE_SIZE identical concurrent requests for a window nobody asked before."""
    await asyncio.sleep(1.0)
    while run.going:
        params = {"pubkey": run.workload.demo, **custom_window(rng, run.workload)}
        began = time.perf_counter()
        burst = await asyncio.gather(*(run.fetch("stampede", SUMMARY_V2, params) for _ in range(STAMPEDE_SIZE)))
        caches: dict[str, int] = {}
        statuses: dict[str, int] = {}
        for s in burst:
            caches[s.cache or "-"] = caches.get(s.cache or "-", 0) + 1
            statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
        run.stampedes.append({"window": f"{params['start']}..{params['end']}", "requests": len(burst),
                              "wall_ms": round((time.perf_counter() - began) * 1000, 1), "cache": caches,
                              "statuses": statuses, **latency([s.ms for s in burst if s.status])})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(_until(run), STAMPEDE_EVERY_S)


async def _until(run: Run) -> None:
    while run.going:
        await asyncio.sleep(0.2)


async def _metrics(client: httpx.AsyncClient) -> str:
    try:
        resp = await client.get("/metrics", timeout=10)
        return resp.text if resp.status_code == 200 else ""
    except httpx.HTTPError:
        return ""


async def run_load(target: Target, workload: Workload, seconds: float, max_requests: int,
                   seed: int = 1) -> dict[str, Any]:
    """Run every scenario until the time or request budget is spent; the raw results."""
    # keepalive_expiry under uvicorn's 5 s keep-alive timeout: reusing a connection the server is closing is a
    # client-side ReadError, not a server failure.
    limits = httpx.Limits(max_connections=STAMPEDE_SIZE + 2 * sum(WORKERS.values()), max_keepalive_connections=200,
                          keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=target.base_url, headers=target.headers, limits=limits,
                                 timeout=httpx.Timeout(CLIENT_TIMEOUT_S)) as client:
        base_s = min(BASELINE_MAX_S, seconds * BASELINE_SHARE)
        base = Run(client, workload, time.monotonic() + base_s, max_requests, time.monotonic())
        await baseline(base, random.Random(f"{seed}-baseline"))
        before = await _metrics(client)
        began = time.monotonic()
        run = Run(client, workload, began + seconds - base_s, max(0, max_requests - len(base.samples)), began)
        tasks: list[Awaitable[None]] = []
        for name, fn in (("hot", hot), ("custom", custom), ("mix", mix)):
            tasks += [fn(run, random.Random(f"{seed}-{name}-{i}")) for i in range(WORKERS[name])]
        tasks.append(stampedes(run, random.Random(f"{seed}-stampede")))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - began
        after = await _metrics(client)
    server = {}
    if before or after:
        for (route, source), buckets in sorted(histogram_delta(parse_histograms(before),
                                                                parse_histograms(after)).items()):
            count = max(buckets.values(), default=0.0)
            if count <= 0 or not route.startswith("/api/"):
                continue
            server[f"{route} ({source})"] = {
                "requests": int(count),
                **{f"p{q}_ms": None if (v := histogram_quantile(buckets, q / 100)) is None else round(v, 1)
                   for q in (50, 95, 99)}}
    return {"samples": run.samples, "baseline": base.samples, "baseline_s": base_s, "stampedes": run.stampedes,
            "elapsed_s": elapsed, "server_side": server}


# ---------------------------------------------------------------- checks

def check_slos(samples: list[Sample], rows: list[slo.LatencySlo], routes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every SLO row: the measured p95/p99 (client side) and error rate, and pass/fail with the reasons."""
    out = []
    for row in rows:
        if row.cached:
            measured = [s.ms for s in samples if s.route == row.path and s.cache == "hit" and s.status in (200, 202)]
        elif row.path.startswith("/api/v1/"):
            measured = [s.ms for s in samples if s.status in (200, 202) and s.cache in ("miss", "bypass")
                        and (s.route == row.path or (s.route == row.path.replace("/v1/", "/v2/")
                                                     and s.source == "legacy"))]
        else:
            measured = [s.ms for s in samples if s.route == row.path and s.cache in ("miss", "bypass")
                        and s.status in (200, 202) and s.source != "legacy"]
        p95, p99 = percentile(measured, 95), percentile(measured, 99)
        error_rate = routes.get(row.path, {}).get("error_rate_percent")
        reasons = []
        if not measured:
            reasons.append("no answers measured")
        if p95 is not None and p95 > row.p95_ms:
            reasons.append(f"p95 {p95:.1f} ms > {row.p95_ms:g} ms")
        if p99 is not None and p99 > row.p99_ms:
            reasons.append(f"p99 {p99:.1f} ms > {row.p99_ms:g} ms")
        if error_rate is not None and error_rate > row.max_error_rate:
            reasons.append(f"error rate {error_rate:g} % > {row.max_error_rate:g} %")
        out.append({"route": row.route, "target_p95_ms": row.p95_ms, "target_p99_ms": row.p99_ms,
                    "target_max_error_rate_percent": row.max_error_rate, "answers": len(measured),
                    "p95_ms": None if p95 is None else round(p95, 1), "p99_ms": None if p99 is None else round(p99, 1),
                    "error_rate_percent": error_rate, "pass": not reasons, "reasons": reasons})
    return out


def check_objectives(samples: list[Sample], objectives: list[slo.Objective]) -> list[dict[str, Any]]:
    """freshness_p95 from meta.freshness.lag_seconds; availability as the non-5xx share of this run."""
    out = []
    for obj in objectives:
        if obj.name == "freshness_p95":
            lags = [float(s.lag_s) for s in samples if s.lag_s is not None]
            p95 = percentile(lags, 95)
            out.append({"objective": obj.name, "target": obj.target, "unit": obj.unit, "measured": p95,
                        "answers": len(lags), "pass": p95 is not None and p95 <= obj.target,
                        "note": "p95 of meta.freshness.lag_seconds on canonical 200 answers"})
        elif obj.name == "availability":
            total = len(samples)
            ok = sum(not s.failed for s in samples)
            share = round(100 * ok / total, 3) if total else None
            out.append({"objective": obj.name, "target": obj.target, "unit": obj.unit, "measured": share,
                        "answers": total, "pass": share is not None and share >= obj.target,
                        "note": "non-failure share of this run's requests (the SLO is over 30 days)"})
    return out


def summarize(raw: dict[str, Any], target: Target, workload: Workload, seconds: float,
              max_requests: int) -> dict[str, Any]:
    samples: list[Sample] = raw["samples"]
    base: list[Sample] = raw["baseline"]
    elapsed = float(raw["elapsed_s"])
    rows, objectives = slo.load()
    routes = by_route(samples, elapsed)
    cached = [s for s in samples if s.cache]
    hits = sum(s.cache == "hit" for s in cached)
    failures = sum(s.failed for s in samples)
    # Stampede followers wait for the one computation they coalesce on: they load the system but are
    # neither warm-cache reads nor cold answers, so the SLO rows leave them out (reported on their own).
    checks = check_slos([s for s in samples if s.scenario != "stampede"], rows, routes)
    base_checks = check_slos(base, rows, by_route(base, float(raw["baseline_s"])))
    scenarios: dict[str, int] = {}
    for s in samples:
        scenarios[s.scenario] = scenarios.get(s.scenario, 0) + 1
    return {
        "meta": {
            "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "base_url": target.base_url,
            "suite": "; ".join(target.notes),
            "seconds_budget": seconds,
            "request_budget": max_requests,
            "elapsed_s": round(elapsed, 1),
            "setup_s": target.setup_s,
            "cores": os.cpu_count(),
            "workers": {**WORKERS, "stampede": f"{STAMPEDE_SIZE} concurrent every {STAMPEDE_EVERY_S:g} s"},
            "client_timeout_s": CLIENT_TIMEOUT_S,
        },
        "workload": {"demo_pubkey": workload.demo, "hot_targets": workload.hot,
                     "target_pool": len(workload.pool), "data_range": [workload.data_start, workload.data_end]},
        "overall": {
            "requests": len(samples),
            "throughput_rps": round(len(samples) / elapsed, 1) if elapsed else None,
            "failures": failures,
            "error_rate_percent": round(100 * failures / len(samples), 3) if samples else None,
            "rate_limited": sum(s.status == 429 for s in samples),
            "cache_hit_rate_percent": round(100 * hits / len(cached), 1) if cached else None,
            "requests_per_scenario": scenarios,
            "slo_rows_passed": f"{sum(c['pass'] for c in checks)}/{len(checks)}",
        },
        "routes": routes,
        "latency_client_side": by_label([s for s in samples if s.scenario != "stampede"]),
        "baseline": {"seconds": round(float(raw["baseline_s"]), 1), "requests": len(base),
                     "latency_client_side": by_label(base), "slo": base_checks},
        "latency_server_side": raw["server_side"],
        "stampedes": raw["stampedes"],
        "slo": checks,
        "objectives": check_objectives(samples, objectives),
        "problems": [],
    }


# ---------------------------------------------------------------- entry point

def write(out: Path, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "load-report.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "load-report.md").write_text(report.markdown(result), encoding="utf-8")
    _log(f"report written to {out / 'load-report.md'}")


def main(args: argparse.Namespace) -> int:
    """Run the load test; 0 when it ran (whatever the SLO verdicts), non-zero when it could not."""
    seconds = float(getattr(args, "seconds", 60) or 60)
    out = Path(getattr(args, "out", None) or "docs/reports/load")
    base_url = getattr(args, "base_url", None) or os.environ.get("CANAL_LOAD_BASE_URL") or DEFAULT_BASE_URL
    max_requests = int(getattr(args, "requests", None) or os.environ.get("CANAL_LOAD_MAX_REQUESTS")
                       or DEFAULT_MAX_REQUESTS)
    api_key = getattr(args, "api_key", None) or os.environ.get("CANAL_API_KEY")
    failure: dict[str, Any] = {"meta": {"generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                        "base_url": base_url, "seconds_budget": seconds}, "problems": []}
    try:
        base_url = check_local(base_url)
    except CannotRun as exc:
        failure["problems"].append(str(exc))
        _log(str(exc))
        write(out, failure)
        return 2
    target: Target | None = None
    try:
        target = acquire(base_url, api_key)
        if os.environ.get("CANAL_LOAD_NOTE"):  # how this run's code differs from the tree, if it does
            target.notes.append(os.environ["CANAL_LOAD_NOTE"])
        workload = discover(target)
        _log(f"load for {seconds:g} s (at most {max_requests} requests) on {target.base_url}; "
             f"hot targets: {len(workload.hot)}")
        raw = asyncio.run(run_load(target, workload, seconds, max_requests))
        result = summarize(raw, target, workload, seconds, max_requests)
    except Exception as exc:  # the report says what failed
        if not isinstance(exc, CannotRun):
            traceback.print_exc()
        failure["problems"].append(f"{type(exc).__name__}: {exc}"[:3000])
        if target is not None:
            failure["meta"].update({"suite": "; ".join(target.notes), "setup_s": target.setup_s})
        write(out, failure)
        return 1
    finally:
        if target is not None:
            release(target)
    write(out, result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.load.run", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--requests", type=int, default=DEFAULT_MAX_REQUESTS, help="request budget")
    p.add_argument("--base-url", default=None, help=f"default {DEFAULT_BASE_URL}; 127.0.0.1 only")
    p.add_argument("--api-key", default=None, help="default: the demo key from /ui/config.json")
    p.add_argument("--out", default="docs/reports/load")
    return p


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
