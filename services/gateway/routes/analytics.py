"""GET summary and drilldown (v2 behind the feature flag, v1 legacy), and the cost estimate."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from canal.query.v1 import query_service_pb2 as qpb
from libs.envelope import TIERS, finish, placeholder_meta
from services.gateway import analytics
from services.gateway.context import gateway
from services.gateway.docs import READ_ERRORS, SECURED, errors
from services.gateway.errors import UpstreamError
from services.gateway.models import DrilldownEnvelope, EstimateEnvelope, JobAcceptedEnvelope, SummaryEnvelope
from services.gateway.params import build_query
from services.gateway.routes.deps import (
    CursorQ,
    DimensionQ,
    EndQ,
    EstimateDimensionQ,
    GranularityQ,
    LimitQ,
    MetricQ,
    MetricsQ,
    PubkeyQ,
    Reader,
    StartQ,
    TzQ,
    WindowQ,
)

router = APIRouter(tags=["analytics"])

ACCEPTED: dict[int | str, dict[str, Any]] = {202: {"model": JobAcceptedEnvelope,
                  "description": "The estimated cost is over the sync limit: the request runs as a job. Poll "
                                 "data.job.status_url."}}
SUMMARY_DOC = ("Every metric of METRICS.md (or those named by `metrics`) for the pubkey over the window, as "
               "integers. A request whose estimated cost is over the sync limit answers 202 with a job.")
DRILLDOWN_DOC = ("The window broken down by note, counterparty, kind or time. Rows sort by the metric "
                 "descending, then key; page with `cursor` = the previous `next_cursor`.")
LEGACY_DOC = " Legacy path: a raw scan of facts with no rollups (meta.source is always legacy)."


@router.get("/api/v2/analytics/summary", response_model=SummaryEnvelope, summary="Metrics of a pubkey",
            description=SUMMARY_DOC, responses={**ACCEPTED, **errors(*READ_ERRORS)}, openapi_extra=SECURED)
async def summary_v2(request: Request, principal: Reader, pubkey: PubkeyQ, window: WindowQ = None,
                     start: StartQ = None, end: EndQ = None, metrics: MetricsQ = None,
                     tz: TzQ = None) -> Response:
    q = build_query("summary", pubkey, window, start, end, metrics=metrics, tz=tz)
    return await analytics.respond(request, principal, q)


@router.get("/api/v2/analytics/drilldown", response_model=DrilldownEnvelope, summary="Breakdown of a window",
            description=DRILLDOWN_DOC, responses={**ACCEPTED, **errors(*READ_ERRORS)}, openapi_extra=SECURED)
async def drilldown_v2(request: Request, principal: Reader, pubkey: PubkeyQ, dimension: DimensionQ,
                       window: WindowQ = None, start: StartQ = None, end: EndQ = None, metric: MetricQ = None,
                       granularity: GranularityQ = None, tz: TzQ = None, limit: LimitQ = None,
                       cursor: CursorQ = None) -> Response:
    q = build_query("drilldown", pubkey, window, start, end, dimension=dimension, metric=metric,
                    granularity=granularity, tz=tz, limit=limit, cursor=cursor)
    return await analytics.respond(request, principal, q)


@router.get("/api/v1/analytics/summary", response_model=SummaryEnvelope, summary="Metrics of a pubkey (legacy)",
            description=SUMMARY_DOC + LEGACY_DOC, responses={**ACCEPTED, **errors(*READ_ERRORS)},
            openapi_extra=SECURED)
async def summary_v1(request: Request, principal: Reader, pubkey: PubkeyQ, window: WindowQ = None,
                     start: StartQ = None, end: EndQ = None, metrics: MetricsQ = None,
                     tz: TzQ = None) -> Response:
    q = build_query("summary", pubkey, window, start, end, metrics=metrics, tz=tz)
    return await analytics.respond(request, principal, q, legacy_path=True)


@router.get("/api/v1/analytics/drilldown", response_model=DrilldownEnvelope,
            summary="Breakdown of a window (legacy)", description=DRILLDOWN_DOC + LEGACY_DOC,
            responses={**ACCEPTED, **errors(*READ_ERRORS)}, openapi_extra=SECURED)
async def drilldown_v1(request: Request, principal: Reader, pubkey: PubkeyQ, dimension: DimensionQ,
                       window: WindowQ = None, start: StartQ = None, end: EndQ = None, metric: MetricQ = None,
                       granularity: GranularityQ = None, tz: TzQ = None, limit: LimitQ = None,
                       cursor: CursorQ = None) -> Response:
    q = build_query("drilldown", pubkey, window, start, end, dimension=dimension, metric=metric,
                    granularity=granularity, tz=tz, limit=limit, cursor=cursor)
    return await analytics.respond(request, principal, q, legacy_path=True)


@router.get("/api/v2/analytics/estimate", response_model=EstimateEnvelope, summary="Cost estimate",
            description="The estimated cost of a summary or drilldown over the window, the sync limit, whether "
                        "it would run as an async job, and the planned buckets per tier.",
            responses=errors(*READ_ERRORS), openapi_extra=SECURED)
async def estimate(request: Request, principal: Reader, pubkey: PubkeyQ, window: WindowQ = None,
                   start: StartQ = None, end: EndQ = None, dimension: EstimateDimensionQ = None) -> JSONResponse:
    gw = gateway(request)
    q = build_query("summary", pubkey, window, start, end)
    principal.check_read(q.pubkey)
    source = await gw.source_for(q.pubkey, principal.id)
    request.state.source = source
    req = qpb.EstimateCostRequest(pubkey=q.pubkey, window=q.window_spec(), dimension=dimension or "")
    try:
        resp = await gw.client.call(gw.client.query.EstimateCost, req)
    except UpstreamError as exc:
        raise exc.to_api() from None
    tiers = {t: int(resp.plan.tiers.get(t, 0)) for t in TIERS}
    data = {"cost": resp.cost, "sync_limit": resp.sync_limit, "async": resp.go_async,
            "plan": {"tiers": tiers, "raw_facts_scanned": resp.plan.raw_facts_scanned}}
    start_s, end_s, label = q.resolved
    body = {"data": data, "meta": placeholder_meta(source, start_s, end_s, label)}
    return JSONResponse(finish(body, request.state.request_id, "bypass"))
