"""`canal drift`: compare the canonical rollup path with the legacy raw scan through gRPC.

`run_drift` samples targets across sizes and windows of every kind (see `tools.drift.windows`),
asks the query service each question twice (`SOURCE_LEGACY`, `SOURCE_CANONICAL`, the same
explicit `now`), compares every metric of every row and returns a `DriftReport`. `main`
finds a query service (QUERY_ADDR, else one started in process on port 0 against
DATABASE_URL or the embedded database of `canal up`), writes the reports and the
Prometheus metrics, and exits 0 (no drift), 1 (drift) or 2 (could not run).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Engine

from canal.query.v1 import query_service_pb2_grpc as pb_grpc
from libs.config import Settings
from tools.drift import exposition
from tools.drift.compare import DIMENSIONS, DriftError, Probe, run_probe
from tools.drift.report import DriftReport
from tools.drift.sampling import Target, retention_horizons, sample_targets, target_stats
from tools.drift.windows import (
    WindowCase,
    custom_cases,
    day_boundary_cases,
    dedupe,
    dst_cases,
    retention_cases,
    rolling_cases,
    tz_offset_cases,
)

CUSTOM_PER_TARGET: Final = 3
WORKERS: Final = 6
RPC_TIMEOUT_S: Final = 60.0
CONNECT_TIMEOUT_S: Final = 10.0
PROBE_TIMEOUT_S: Final = 2.0
# Windows chosen for their time zone (DST, :30/:45 offsets) test local-time buckets: they ask
# the summary and the time series; note, counterparty and kind do not depend on a zone and
# are covered by the other windows (this keeps the demo run well under two minutes).
ZONE_KINDS: Final = ("dst", "tz_offset")
ZONE_DIMENSIONS: Final = ("summary", "time")


def target_windows(target: Target, seed: int, now: int, shared: list[WindowCase]) -> list[WindowCase]:
    """Every window case of one target: rolling, custom, day-boundary and :30/:45 cases, plus the shared ones."""
    rng = random.Random(f"canal-drift-windows:{seed}:{target.pubkey}")
    return dedupe([
        *rolling_cases(),
        *custom_cases(rng, target.first, target.last, now, CUSTOM_PER_TARGET),
        *day_boundary_cases(rng, target.first, target.last, now),
        *tz_offset_cases(rng, target.first, target.last, now),
        *shared,
    ])


def plan_probes(targets: list[Target], seed: int, now: int, shared: list[WindowCase]) -> list[Probe]:
    """Every (target, window, dimension) question, in a deterministic order."""
    probes = []
    for target in targets:
        for case in target_windows(target, seed, now, shared):
            gran = case.series_granularity(now)
            dims = ZONE_DIMENSIONS if case.kind in ZONE_KINDS else DIMENSIONS
            probes += [Probe(target, case, dim, gran if dim == "time" else "") for dim in dims]
    return probes


def run_drift(query_addr: str, engine: Engine, samples: int, seed: int, now: int, *,
              settings: Settings | None = None, workers: int = WORKERS, gateway: str | None = None,
              reproduce_addr: str | None = None) -> DriftReport:
    """Compare legacy and canonical answers for sampled targets and windows; deterministic by `seed`.

    `engine` is only read to sample targets (fact counts) and retention horizons; every
    answer comes from the query service at `query_addr`. Raises `DriftError` when there is
    nothing to compare or the service cannot be reached.
    """
    settings = settings or Settings()
    began = time.perf_counter()
    try:
        stats = target_stats(engine)
    except LookupError as exc:
        raise DriftError(str(exc)) from None
    if not stats:
        raise DriftError("no target has any fact: nothing to compare (run `canal up` for the demo data, "
                         "or `canal import` a file, first)")
    targets = sample_targets(stats, samples, seed)
    first = min(s[2] for s in stats)
    shared = [*dst_cases(random.Random(f"canal-drift-dst:{seed}"), first, now),
              *retention_cases(retention_horizons(engine, settings, now), now)]
    probes = plan_probes(targets, seed, now, shared)
    windows = Counter(p.window.kind for p in probes if p.dimension == "summary")
    report = DriftReport(
        params={"now": now, "seed": seed, "samples": samples, "targets_with_facts": len(stats)},
        targets=targets, windows=dict(sorted(windows.items())), query_addr=reproduce_addr or query_addr,
        gateway=gateway or f"http://{settings.host}:{settings.port}")
    with grpc.insecure_channel(query_addr) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            raise DriftError(f"the query service at {query_addr} did not answer within "
                             f"{CONNECT_TIMEOUT_S:.0f} s") from None
        stub = pb_grpc.QueryServiceStub(channel)
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for result in pool.map(lambda p: run_probe(stub, p, now, RPC_TIMEOUT_S), probes):
                report.add(result)
    report.duration_s = time.perf_counter() - began
    return report


# --- where the query service is ------------------------------------------------------------------

def serving(addr: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True when a gRPC health check at `addr` answers SERVING."""
    try:
        with grpc.insecure_channel(addr) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                               timeout=timeout_s)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


class LocalQueryServer:
    """The real query server (services.query.server.create_server) on 127.0.0.1:0 in a background
    thread with its own event loop, so the synchronous harness can call it over gRPC."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine, self.settings = engine, settings
        self.port = 0
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="drift-query-server", daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        self._ready.wait(30)
        if self._failure is not None:
            raise DriftError(f"could not start an in-process query server: {self._failure}")
        if not self.port:
            raise DriftError("the in-process query server did not start within 30 s")
        return f"127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the caller by __enter__
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        from services.query.server import create_server

        server, self.port = create_server("127.0.0.1:0", self.engine, self.settings)
        await server.start()
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await server.stop(grace=2)


@contextmanager
def query_endpoint(settings: Settings) -> Iterator[tuple[str, Engine, str]]:
    """(query address, engine for sampling, description): QUERY_ADDR when it is serving, else an
    in-process server against DATABASE_URL, or the embedded database of `canal up` when unset."""
    from libs.db.engine import make_engine
    from tools.cli.up import SetupError, resolve_database

    try:
        url, handle = resolve_database(settings)
    except SetupError as err:
        raise DriftError(str(err)) from None
    engine = make_engine(url, pool_size=WORKERS + 2)
    try:
        if serving(settings.query_addr):
            yield settings.query_addr, engine, f"query service at {settings.query_addr}"
        else:
            with LocalQueryServer(engine, settings) as addr:
                db = "DATABASE_URL" if settings.database_url else f"embedded database in {settings.data_dir}"
                yield addr, engine, (f"in-process query server on {addr} against {db} "
                                     f"({settings.query_addr} is not serving)")
    finally:
        engine.dispose()
        del handle  # the embedded server (if any) stays up until here


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def main(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """`canal drift`: exit 0 when every delta is zero, 1 on any drift, 2 when it could not run."""
    settings = settings or Settings()
    out = Path(args.out)
    now = int(getattr(args, "now", None) or time.time())  # `now` pins the clock (tests, re-runs of a report)
    report: DriftReport | None = None
    reason = ""
    try:
        with query_endpoint(settings) as (addr, engine, where):
            print(f"canal drift: comparing through the {where}", file=sys.stderr)
            report = run_drift(addr, engine, args.samples, args.seed, now, settings=settings,
                               reproduce_addr=settings.query_addr)
            report.params["compared_via"] = where
    except Exception as exc:  # noqa: BLE001 - any failure to run is exit 2 with one clear line
        reason = f"{type(exc).__name__}: {_one_line(exc)}" if not isinstance(exc, DriftError) else _one_line(exc)
    outcome = report.outcome if report is not None else "error"
    ran = report is not None and report.totals.comparisons + report.totals.partial_comparisons > 0
    warnings = exposition.export(outcome, report.max_abs_delta if report is not None and ran else None, out,
                                 _pushgateway(settings))
    if report is None:
        print(f"canal drift: could not run: {reason}", file=sys.stderr)
        for warning in warnings:
            print(f"canal drift: warning: {warning}", file=sys.stderr)
        return 2
    warnings += _write_reports(report, out)
    for line in report.summary_lines():
        print(line)
    for warning in warnings:
        print(f"canal drift: warning: {warning}", file=sys.stderr)
    if report.outcome == "error":
        first = report.errors[0]["error"] if report.errors else "no value was compared"
        print(f"canal drift: could not run every comparison ({report.error_count} failed): {first}",
              file=sys.stderr)
    return report.exit_code


def _pushgateway(settings: Settings) -> str | None:
    return settings.pushgateway_url or None


def _write_reports(report: DriftReport, out: Path) -> list[str]:
    try:
        json_path, md_path = report.write(out)
    except OSError as exc:
        return [f"could not write the reports to {out}: {exc}"]
    print(f"reports: {json_path} {md_path} {out / exposition.PROM_FILE}")
    return []
