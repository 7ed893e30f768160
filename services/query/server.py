"""gRPC QueryService: summaries, drilldowns, plans and cost estimates over canonical or legacy paths."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import grpc
from opentelemetry import trace
from sqlalchemy import Engine, text

from canal.common.v1 import types_pb2
from canal.query.v1 import query_service_pb2 as pb
from canal.query.v1 import query_service_pb2_grpc as pb_grpc
from libs import query_contract as contract
from libs.config import Settings
from libs.db.engine import make_engine
from libs.metrics import ENGAGEMENT_METRICS
from libs.rpc import RECYCLED_CONNECTIONS, CanalError, Servicer, server_metrics
from libs.rpc import create_server as rpc_server
from libs.windows.errors import PlanningError
from libs.windows.windows import parse_tz
from services.query import context
from services.query import engine as q
from services.query import service as svc
from services.query.planning.cursor import decode_page_cursor, encode_page_cursor, request_fingerprint

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
T = TypeVar("T")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["QueryService"].full_name


class QueryService(Servicer, pb_grpc.QueryServiceServicer):
    """Handlers write only their query; `Servicer.handle` owns deadlines, tracing and error mapping."""

    span_prefix = "QueryService"

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.secret = settings.canal_secret.encode()

    async def _call(self, context_: grpc.aio.ServicerContext, name: str, fn: Callable[..., T], *args: Any) -> T:
        timeout = self.deadline(context_, self.settings.query_deadline_s * 6)
        return await self.handle(context_, name, lambda: svc.run_sql(self.engine, timeout, fn, *args))

    def translate(self, exc: Exception) -> CanalError | None:
        return svc.as_canal_error(exc) if isinstance(exc, PlanningError) else None

    def _check_sync(self, conn: Any, target: int | None, window: Any, legacy: bool, enforce: bool,
                    execution: q.Execution) -> None:
        """GO_ASYNC when the request's plan (already made, recorded in `execution`) costs more than the limit."""
        if not enforce:
            return
        cost = svc.plan_cost(execution, window, legacy, svc.raw_rate(conn, target, int(time.time())))
        if cost > self.settings.sync_cost_limit:
            raise CanalError("GO_ASYNC", f"estimated cost {cost:.0f} is over the sync limit "
                             f"{self.settings.sync_cost_limit:.0f}", "Run it as an async job.",
                             status=grpc.StatusCode.RESOURCE_EXHAUSTED)

    async def GetSummary(self, request: pb.GetSummaryRequest, context_: grpc.aio.ServicerContext) -> pb.GetSummaryResponse:
        legacy = request.source == types_pb2.SOURCE_LEGACY

        def run(conn: Any) -> pb.GetSummaryResponse:
            pubkey = _pubkey(request.pubkey)
            names = svc.metrics_of(list(request.metrics))
            window = svc.window_of(request.window)
            snap = context.snapshot(conn, pubkey, window.end, self.settings.ingest_lag_limit_s)
            target = snap.target
            execution = q.Execution(inputs=snap)
            planned = q.plan_parts(conn, target, [(window.start, window.end)], legacy, execution, prefix=True)
            self._check_sync(conn, target, window, legacy, request.enforce_sync_limit, execution)
            values = q.summary(conn, target, window.start, window.end, legacy, execution, planned)
            answer = svc.Answer(window, legacy, execution, snap.freshness)
            return pb.GetSummaryResponse(
                pubkey=pubkey, metrics=[types_pb2.MetricValue(name=n, value=values[n]) for n in names],
                meta=answer.meta())

        return await self._call(context_, "GetSummary", run)

    async def GetDrilldown(self, request: pb.GetDrilldownRequest,
                           context_: grpc.aio.ServicerContext) -> pb.GetDrilldownResponse:
        legacy = request.source == types_pb2.SOURCE_LEGACY
        dim = request.dimension

        def run(conn: Any) -> pb.GetDrilldownResponse:
            contract.dimension(dim)
            size = contract.page_size(request.page_size)
            pubkey = _pubkey(request.pubkey)
            window = svc.window_of(request.window)
            snap = context.snapshot(conn, pubkey, window.end, self.settings.ingest_lag_limit_s)
            execution = q.Execution(inputs=snap)
            rows, token = self._drilldown(conn, request, pubkey, snap.target, window, legacy, size, execution)
            answer = svc.Answer(window, legacy, execution, snap.freshness)
            return pb.GetDrilldownResponse(dimension=dim, rows=rows, next_page_token=token, meta=answer.meta())

        return await self._call(context_, "GetDrilldown", run)

    def _drilldown(self, conn: Any, request: pb.GetDrilldownRequest, pubkey: str, target: int | None, window: Any,
                   legacy: bool, size: int, execution: q.Execution) -> tuple[list[pb.DrilldownRow], str]:
        dim = request.dimension

        def planned(buckets: list[tuple[int, int]], tiers: Mapping[str, int] = q.ALL_TIERS_COMPLETE) -> q.Planned:
            """The request's one plan: the sync-limit check and the executor both use it."""
            plan = q.plan_parts(conn, target, buckets, legacy, execution, tiers=tiers)
            self._check_sync(conn, target, window, legacy, request.enforce_sync_limit, execution)
            return plan

        if dim == "time":
            gran = contract.granularity(request.granularity) or "day"
            names = svc.metrics_of([request.metric] if request.metric else [])
            tz = parse_tz(request.tz or "UTC")
            # A series is read bucket by bucket, but it is as heavy as its window: the sync limit
            # weighs the whole window's plan (an hourly week would otherwise count 168 plans' scans)
            whole_window = q.Execution(inputs=execution.inputs)
            q.plan_parts(conn, target, [(window.start, window.end)], legacy, whole_window)
            self._check_sync(conn, target, window, legacy, request.enforce_sync_limit, whole_window)
            plan = q.plan_parts(conn, target, q.series_buckets(window.start, window.end, gran, tz), legacy,
                                execution, prefix=True)
            points = q.series(conn, target, window.start, window.end, gran, tz, legacy, execution, plan)
            return [pb.DrilldownRow(key=str(s), start=s, end=e, metrics={n: m[n] for n in names})
                    for s, e, m in points], ""
        if dim == "kind":
            whole = planned([(window.start, window.end)])
            return [pb.DrilldownRow(key=str(k), kind=k, metrics={"facts": n})
                    for k, n in q.kinds(conn, target, window.start, window.end, legacy, execution, whole)], ""
        whole = planned([(window.start, window.end)], q.DRILLDOWN_TIERS_COMPLETE)
        column = svc.sort_column(dim, request.metric)
        fingerprint = request_fingerprint({"p": pubkey, "s": window.start, "e": window.end, "d": dim,
                                           "m": column, "l": legacy})
        after = None
        if request.page_token:
            value, key = decode_page_cursor(request.page_token, self.secret, fingerprint)
            after = (int(value), str(key))
        found = q.engagement(conn, target, window.start, window.end, dim, column, size, after, legacy, execution,
                             whole)
        rows = []
        for r in found[:size]:
            metrics = {ENGAGEMENT_METRICS[c]: int(r[c]) for c in ENGAGEMENT_METRICS}
            row = pb.DrilldownRow(key=str(r["key"]), metrics=metrics)
            if dim == "note":
                row.deleted = bool(r["deleted"])
            else:
                row.display_name = r.get("display_name") or ""
            rows.append(row)
        token = ""
        if len(found) > size:
            last = found[size - 1]
            token = encode_page_cursor((int(last[column]), str(last["key"])), fingerprint, self.secret)
        return rows, token

    async def ExplainPlan(self, request: pb.ExplainPlanRequest,
                          context_: grpc.aio.ServicerContext) -> pb.ExplainPlanResponse:
        def run(conn: Any) -> pb.ExplainPlanResponse:
            pubkey = _pubkey(request.pubkey)
            from services.query.planning.plan import plan_window

            window = svc.window_of(request.window)
            target = context.target_id(conn, pubkey)
            dirty = context.dirty_sets(conn, target, window.start, window.end) if target else {}
            plan = plan_window(window.start, window.end, dirty, q.ALL_TIERS_COMPLETE, context.horizons(conn))
            return pb.ExplainPlanResponse(
                window=types_pb2.Window(start=window.start, end=window.end, label=window.label),
                segments=[pb.TierRange(tier=s.tier, start=s.start, end=s.end) for s in plan.segments],
                raw_ranges=[x for r in plan.raw for x in r], missing_ranges=[x for r in plan.missing for x in r],
                plan=types_pb2.Plan(tiers=plan.buckets))

        return await self._call(context_, "ExplainPlan", run)

    async def EstimateCost(self, request: pb.EstimateCostRequest,
                           context_: grpc.aio.ServicerContext) -> pb.EstimateCostResponse:
        def run(conn: Any) -> pb.EstimateCostResponse:
            pubkey = _pubkey(request.pubkey)
            window = svc.window_of(request.window)
            target = context.target_id(conn, pubkey)
            cost, tiers = svc.estimate(conn, target, window, False, int(time.time()))
            limit = self.settings.sync_cost_limit
            return pb.EstimateCostResponse(cost=cost, sync_limit=limit, go_async=cost > limit,
                                           plan=types_pb2.Plan(tiers=tiers))

        return await self._call(context_, "EstimateCost", run)

    async def GetDataVersion(self, request: pb.GetDataVersionRequest,
                             context_: grpc.aio.ServicerContext) -> pb.GetDataVersionResponse:
        return await self._call(context_, "GetDataVersion",
                                lambda conn: pb.GetDataVersionResponse(version=svc.data_version(conn)))

    async def GetProfiles(self, request: pb.GetProfilesRequest,
                          context_: grpc.aio.ServicerContext) -> pb.GetProfilesResponse:
        def run(conn: Any) -> pb.GetProfilesResponse:
            keys = [svc.pubkey_of(p) for p in request.pubkeys][:contract.MAX_PAGE]
            rows = conn.execute(text("SELECT pubkey, display_name FROM profiles WHERE pubkey = ANY(:k)"), {"k": keys})
            return pb.GetProfilesResponse(profiles=[pb.Profile(pubkey=r[0], display_name=r[1] or "") for r in rows])

        return await self._call(context_, "GetProfiles", run)


def _pubkey(value: str) -> str:
    if not value:
        raise CanalError("INVALID_PUBKEY", "pubkey is required", "Pass pubkey=… (64 lowercase hex or npub1…).",
                         "pubkey")
    return svc.pubkey_of(value)


def create_server(address: str, engine: Engine, settings: Settings,
                  interceptors: list[grpc.aio.ServerInterceptor] | None = None) -> tuple[grpc.aio.Server, int]:
    """The query server: QueryService and JobsService, with health checking, reflection and RPC metrics."""

    def register(server: grpc.aio.Server) -> list[str]:
        pb_grpc.add_QueryServiceServicer_to_server(QueryService(engine, settings), server)
        names = [SERVICE_NAME]
        try:
            from services.query.jobs_service import add_jobs_service
        except ImportError:  # jobs service not built into this process
            return names
        names.append(add_jobs_service(server, engine, settings))
        return names

    # Clients balance per call over every query pod (libs.rpc.balanced_channel); recycling connections
    # makes them re-resolve, so pods added by the autoscaler get calls within minutes. RPC metrics
    # (grpc_server_handling_seconds, served on the metrics port) come first so they time every interceptor.
    server, port, _ = rpc_server(address, register, [server_metrics(), *(interceptors or [])],
                                 options=RECYCLED_CONNECTIONS)
    return server, port


async def serve(settings: Settings) -> None:
    """Run the query server until SIGTERM/SIGINT, exporting Prometheus metrics on :9103."""
    from prometheus_client import start_http_server

    from libs.telemetry import instrument_grpc_server, instrument_sqlalchemy, setup_tracing

    setup_tracing("canal-query", settings)
    engine = make_engine(settings.database_url or "", pool_size=10)
    instrument_sqlalchemy(engine)
    server, port = create_server(settings.query_addr, engine, settings, [instrument_grpc_server()])  # type: ignore[list-item]
    if settings.metrics_port(3):
        start_http_server(settings.metrics_port(3), addr=settings.metrics_host)
    await server.start()
    log.info("query service listening on %s", settings.query_addr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=5)
    engine.dispose()
