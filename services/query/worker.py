"""arq worker for async analytics jobs (queue "canal:jobs").

A job runs the request against QueryService over gRPC with `enforce_sync_limit=false`,
reporting its phase and progress in the `jobs` row and storing the JSON envelope there.

Guarantees, and how:
- Cancellation: every phase change is `UPDATE ... WHERE state IN (queued, running)`; a
  cancelled row refuses it and the job stops at the next phase boundary.
- Retries with backoff for transient gRPC failures only (UNAVAILABLE, DEADLINE_EXCEEDED),
  through arq's `Retry`; anything else fails the job with an actionable error.
- Crash survival: arq keeps a job in its queue until it finishes, guarded by an
  "in-progress" key that would only expire after the job timeout. Each running job keeps a
  short heartbeat key; a reaper in every worker deletes the in-progress key of a job whose
  heartbeat is gone, so a surviving or new worker picks it up within seconds. Rows whose
  queue entry was lost are re-enqueued, and rows whose arq tries ran out are failed.
- Idempotency: a job whose row is already finished (succeeded, failed, cancelled) is never
  run again, and the result is stored only while the row is still running.

The process serves HTTP on METRICS_PORT_BASE+4 from its own event loop: `/metrics` (Prometheus),
`/healthz` (the loop answers: a wedged loop fails liveness) and `/readyz` (startup done and Redis
answers), which the Kubernetes probes use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from arq import Retry, Worker, cron
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.worker import func
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from canal.common.v1 import types_pb2
from canal.query.v1 import query_service_pb2 as qpb
from canal.query.v1 import query_service_pb2_grpc as qpb_grpc
from libs.config import Settings, get_settings
from libs.db.engine import make_engine
from libs.envelope import drilldown_payload, summary_payload
from libs.rpc import balanced_channel, error_info_from
from services.query import jobs_service as jobs
from services.query.jobs_service import JOB_FUNCTION, QUEUE_NAME, TERMINAL
from services.query.provider.runner import provider_cron

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

PROGRESS = {"planning": 0.1, "reading_aggregates": 0.3, "scanning_facts": 0.5, "combining": 0.8, "storing": 0.9}
TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
MAX_TRIES = 5
JOB_TIMEOUT_S = 600
HEARTBEAT_EVERY_S = 1.0
HEARTBEAT_TTL_S = 5
REAP_EVERY_S = 2.0
ORPHAN_GRACE_S = 5.0
LOST_AFTER_S = 15
HEARTBEAT_PREFIX = "canal:jobs:alive:"
METRICS_OFFSET = 4  # the worker's Prometheus port is METRICS_PORT_BASE + 4 (Settings.metrics_port)

JOBS = Counter("canal_worker_jobs_total", "Analytics job attempts the worker finished, by outcome "
               "(succeeded, failed, cancelled, missing, retry, interrupted)", ["outcome"])
JOB_SECONDS = Histogram("canal_worker_job_duration_seconds", "Wall time of one analytics job attempt",
                        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
REAPED = Counter("canal_worker_reaped_jobs_total", "Jobs the reaper released from a dead worker, "
                 "re-enqueued or failed")


def backoff_s(job_try: int) -> float:
    """1, 2, 4, 8 ... seconds, at most 30."""
    return float(min(30, 2 ** max(0, job_try - 1)))


class Cancelled(Exception):
    """The row left the running state (cancelled) between two phases."""


async def _phase(engine: Any, job_id: str, phase: str) -> None:
    ok = await asyncio.to_thread(jobs.update_active, engine, job_id, phase=phase, progress=PROGRESS[phase])
    if not ok:
        raise Cancelled(job_id)


async def _query(stub: qpb_grpc.QueryServiceStub, request: jobs.QueryRequest, timeout: float) -> dict[str, Any]:
    """The job's request, without the sync limit, and its envelope payload."""
    request.enforce_sync_limit = False
    if isinstance(request, qpb.GetSummaryRequest):
        return summary_payload(await stub.GetSummary(request, timeout=timeout))
    return drilldown_payload(await stub.GetDrilldown(request, timeout=timeout), request.window.now)


async def _execute(ctx: dict[str, Any], job_id: str, row: dict[str, Any]) -> None:
    """planning -> reading_aggregates|scanning_facts -> combining -> storing."""
    engine, stub, settings = ctx["engine"], ctx["query"], ctx["settings"]
    deadline = settings.query_deadline_s
    try:
        request = jobs.job_query(row["kind"], row["params"] or {})
    except ValueError as exc:
        await _fail(engine, job_id, "INVALID_REQUEST", f"the job cannot be run: {exc}",
                    "Start a new job (jobs made before the typed job contract cannot run).", "INVALID_ARGUMENT")
        raise Cancelled(job_id) from None
    plan = await stub.ExplainPlan(qpb.ExplainPlanRequest(pubkey=request.pubkey, window=request.window),
                                  timeout=deadline)
    reads_aggregates = request.source != types_pb2.SOURCE_LEGACY and any(plan.plan.tiers.values())
    await _phase(engine, job_id, "reading_aggregates" if reads_aggregates else "scanning_facts")
    payload = await _query(stub, request, deadline * 6 + 5)
    await _phase(engine, job_id, "combining")  # display names come with the rows (the query joins profiles)
    await _phase(engine, job_id, "storing")
    stored = await asyncio.to_thread(jobs.update_active, engine, job_id, state="succeeded", phase="storing",
                                     progress=1.0, result=payload)
    if not stored:
        raise Cancelled(job_id)


async def _fail(engine: Any, job_id: str, code: str, message: str, hint: str, status: str) -> None:
    error = {"code": code, "message": message, "hint": hint, "status": status}
    await asyncio.to_thread(jobs.update_active, engine, job_id, state="failed", error=error)


async def _failed_rpc(ctx: dict[str, Any], job_id: str, exc: grpc.RpcError) -> str:
    """Retry transient failures (raising arq's Retry); fail the job on anything else."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    engine, job_try = ctx["engine"], int(ctx.get("job_try", 1))
    if code in TRANSIENT and job_try < MAX_TRIES:
        log.info("job %s: transient %s, retry %d in %.0f s", job_id, code.name, job_try, backoff_s(job_try))
        await asyncio.to_thread(jobs.update_active, engine, job_id, state="queued", phase="queued", progress=0.0)
        raise Retry(defer=backoff_s(job_try))
    if code in TRANSIENT:
        await _fail(engine, job_id, "UNAVAILABLE", f"the query service was unavailable after {job_try} attempts",
                    "Start the job again later; if it keeps failing, report the job id.", code.name)
        return "failed"
    info = error_info_from(exc)
    await _fail(engine, job_id, info.code if info else code.name,
                info.message if info else "the query failed",
                info.hint if info and info.hint else "Check the parameters, then start a new job.", code.name)
    return "failed"


async def _heartbeat(redis: Any, job_id: str) -> None:
    while True:
        with contextlib.suppress(Exception):
            await redis.set(HEARTBEAT_PREFIX + job_id, b"1", ex=HEARTBEAT_TTL_S)
        await asyncio.sleep(HEARTBEAT_EVERY_S)


async def run_query_job(ctx: dict[str, Any], job_id: str) -> str:
    """The arq job: run one analytics job to completion (or cancellation, or failure)."""
    began, outcome = time.perf_counter(), "interrupted"
    try:
        outcome = await _run_query_job(ctx, job_id)
        return outcome
    except Retry:
        outcome = "retry"
        raise
    finally:
        JOBS.labels(outcome).inc()
        JOB_SECONDS.observe(time.perf_counter() - began)


async def _run_query_job(ctx: dict[str, Any], job_id: str) -> str:
    beat = asyncio.create_task(_heartbeat(ctx["redis"], job_id))
    engine = ctx["engine"]
    try:
        row = await asyncio.to_thread(jobs.load_job, engine, job_id)
        if row is None:
            return "missing"
        if row["state"] in TERMINAL:
            return str(row["state"])  # already done: never run twice
        if not await asyncio.to_thread(jobs.start_attempt, engine, job_id):
            return "cancelled"
        parent = propagate.extract((row.get("params") or {}).get("trace_context") or {})
        with tracer.start_as_current_span("job run_query_job", context=parent, kind=SpanKind.CONSUMER,
                                          attributes={"canal.job_id": job_id}):
            await _execute(ctx, job_id, row)
        return "succeeded"
    except Cancelled:
        return "cancelled"
    except grpc.RpcError as exc:
        return await _failed_rpc(ctx, job_id, exc)
    except Exception:
        log.exception("job %s failed unexpectedly", job_id)
        await _fail(engine, job_id, "INTERNAL", "the job failed unexpectedly",
                    "Start a new job; if it fails again, report the job id.", "INTERNAL")
        return "failed"
    finally:
        beat.cancel()
        with contextlib.suppress(Exception):
            await ctx["redis"].delete(HEARTBEAT_PREFIX + job_id)


# ---------------------------------------------------------------- crash recovery

async def reap_once(redis: ArqRedis, engine: Any, in_progress_ttl_ms: int) -> list[str]:
    """Release jobs of dead workers, re-enqueue lost ones, fail exhausted ones; returns touched ids."""
    rows = await asyncio.to_thread(jobs.active_jobs, engine)
    touched: list[str] = []
    now = int(time.time())
    for row in rows:
        job_id = row["id"]
        async with redis.pipeline(transaction=False) as pipe:
            pipe.pttl(in_progress_key_prefix + job_id)
            pipe.exists(HEARTBEAT_PREFIX + job_id)
            pipe.exists(job_key_prefix + job_id)
            pipe.exists(result_key_prefix + job_id)
            ttl_ms, alive, queued, finished = await pipe.execute()
        if ttl_ms > 0:
            age_s = (in_progress_ttl_ms - ttl_ms) / 1000
            if not alive and age_s > ORPHAN_GRACE_S:
                log.warning("job %s: its worker is gone; releasing it for another worker", job_id)
                await redis.delete(in_progress_key_prefix + job_id)
                touched.append(job_id)
            continue
        if queued or now - int(row["updated_at"]) < LOST_AFTER_S:
            continue
        if finished:
            await _fail(engine, job_id, "INTERNAL", "the job did not complete (it timed out, or its worker "
                        f"stopped {MAX_TRIES} times)", "Try a narrower window; if it fails again, report the job id.",
                        "INTERNAL")
        else:
            log.warning("job %s: its queue entry was lost; enqueueing it again", job_id)
            await redis.enqueue_job(JOB_FUNCTION, job_id, _job_id=job_id, _queue_name=QUEUE_NAME)
        touched.append(job_id)
    return touched


async def _reap_forever(ctx: dict[str, Any]) -> None:
    ttl_ms = (JOB_TIMEOUT_S + 10) * 1000  # arq's in-progress timeout: job timeout + 10 s
    while True:
        try:
            REAPED.inc(len(await reap_once(ctx["redis"], ctx["engine"], ttl_ms)))
        except Exception:
            log.warning("job reaper pass failed", exc_info=True)
        await asyncio.sleep(REAP_EVERY_S)


async def purge_results(ctx: dict[str, Any]) -> int:
    """Hourly: drop finished jobs past JOB_RESULT_TTL_HOURS (results are kept at least 24 h)."""
    return await asyncio.to_thread(jobs.purge_expired, ctx["engine"], ctx["settings"].job_result_ttl_hours)


# ---------------------------------------------------------------- worker wiring

async def startup(ctx: dict[str, Any]) -> None:
    """Engine, instrumented gRPC channel to QUERY_ADDR, and the reaper."""
    from libs.telemetry import instrument_grpc_client

    settings: Settings = ctx.setdefault("settings", get_settings())
    ctx["engine"] = make_engine(settings.database_url or "", pool_size=4)
    # Every call balanced over the query pods QUERY_ADDR resolves to (a headless Service in Kubernetes).
    ctx["channel"] = balanced_channel(settings.query_addr, interceptors=instrument_grpc_client())  # type: ignore[arg-type]
    ctx["query"] = qpb_grpc.QueryServiceStub(ctx["channel"])
    ctx["reaper"] = asyncio.create_task(_reap_forever(ctx))
    ctx["started"] = True


async def shutdown(ctx: dict[str, Any]) -> None:
    ctx["reaper"].cancel()
    await ctx["channel"].close(grace=None)
    ctx["engine"].dispose()


def redis_settings(settings: Settings) -> RedisSettings:
    return RedisSettings.from_dsn(settings.redis_url or "redis://127.0.0.1:6379")


def worker_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of arq's Worker for these settings."""
    return {
        "functions": [func(run_query_job, name=JOB_FUNCTION, max_tries=MAX_TRIES, timeout=JOB_TIMEOUT_S)],
        "cron_jobs": [cron(purge_results, minute=17, run_at_startup=False), *provider_cron(settings)],
        "queue_name": QUEUE_NAME, "redis_settings": redis_settings(settings),
        "on_startup": startup, "on_shutdown": shutdown, "ctx": {"settings": settings},
        "job_timeout": JOB_TIMEOUT_S, "max_tries": MAX_TRIES, "keep_result": 3600, "poll_delay": 0.2,
        "max_jobs": 10, "health_check_interval": 30,
    }


class WorkerSettings:
    """For `arq services.query.worker.WorkerSettings` (settings from the environment)."""

    functions = [func(run_query_job, name=JOB_FUNCTION, max_tries=MAX_TRIES, timeout=JOB_TIMEOUT_S)]
    cron_jobs = [cron(purge_results, minute=17, run_at_startup=False), *provider_cron(get_settings())]
    queue_name = QUEUE_NAME
    redis_settings = redis_settings(get_settings())
    on_startup = startup
    on_shutdown = shutdown
    job_timeout = JOB_TIMEOUT_S
    max_tries = MAX_TRIES
    keep_result = 3600
    poll_delay = 0.2
    health_check_interval = 30


# ---------------------------------------------------------------- probes and metrics

PROBE_PATHS = ("/metrics", "/healthz", "/readyz")
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def worker_ready(worker: Worker) -> bool:
    """Startup finished (engine, query channel, reaper) and Redis answers a PING within a second."""
    if not worker.ctx.get("started") or worker.pool is None:
        return False
    try:
        return bool(await asyncio.wait_for(worker.pool.ping(), timeout=1.0))
    except Exception:
        return False


async def _probe_answer(method: str, path: str, ready: Callable[[], Awaitable[bool]]) -> tuple[int, str, bytes]:
    if path not in PROBE_PATHS:
        return 404, "text/plain; charset=utf-8", b"not found\n"
    if method not in ("GET", "HEAD"):
        return 405, "text/plain; charset=utf-8", b"GET only\n"
    if path == "/metrics":
        return 200, CONTENT_TYPE_LATEST, generate_latest()
    if path == "/healthz":
        return 200, "text/plain; charset=utf-8", b"ok\n"
    if await ready():
        return 200, "text/plain; charset=utf-8", b"ready\n"
    return 503, "text/plain; charset=utf-8", b"not ready: starting, or Redis does not answer\n"


async def start_probe_server(host: str, port: int,
                             ready: Callable[[], Awaitable[bool]]) -> asyncio.AbstractServer:
    """HTTP/1.1 on (host, port) for PROBE_PATHS, served from the running loop (port 0 binds any free port)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5.0)
            while (await asyncio.wait_for(reader.readline(), timeout=5.0)) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing here depends on them
            parts = request.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?", 1)[0]) if len(parts) >= 2 else ("", "")
            status, content_type, body = await _probe_answer(method, path, ready)
            head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)


async def serve(settings: Settings) -> None:
    """Run the worker until SIGTERM/SIGINT (running jobs are re-queued by arq, then resumed), with its
    probe and metrics endpoints on METRICS_PORT_BASE+4 (none when METRICS_PORT_BASE is 0)."""
    from libs.telemetry import setup_tracing

    setup_tracing("canal-worker", settings)
    worker = Worker(**worker_options(settings))
    probes = None
    if settings.metrics_port(METRICS_OFFSET):
        try:
            probes = await start_probe_server(settings.metrics_host, settings.metrics_port(METRICS_OFFSET),
                                              lambda: worker_ready(worker))
        except OSError as exc:
            # Jobs still run (a second local worker, a busy port); in Kubernetes the probes then fail,
            # which restarts the pod and shows the cause in this log line.
            log.error("worker probes/metrics not served on %s:%d: %s", settings.metrics_host,
                      settings.metrics_port(METRICS_OFFSET), exc)
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        pass
    finally:
        if probes is not None:
            probes.close()
        await worker.close()


if __name__ == "__main__":
    from libs.telemetry import setup_logging

    _settings = get_settings()
    setup_logging("canal-worker", _settings.log_level)
    asyncio.run(serve(_settings))
