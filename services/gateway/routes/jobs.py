"""Async jobs (AIP-151 style): create, status, cancel, result as JSON or CSV."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

import grpc
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from canal.common.v1 import types_pb2
from canal.jobs.v1 import jobs_service_pb2 as jpb
from libs.envelope import finish, placeholder_meta
from services.gateway import analytics
from services.gateway.auth import Principal
from services.gateway.context import Gateway, gateway
from services.gateway.conventions import NO_STORE, RESULT_MAX_AGE, matches, not_modified, weak_etag
from services.gateway.csv_export import result_csv
from services.gateway.docs import READ_ERRORS, SECURED, errors
from services.gateway.errors import ApiError, UpstreamError, job_not_found
from services.gateway.models import JobAcceptedEnvelope, JobCreate, JobStatusEnvelope
from services.gateway.params import build_query
from services.gateway.routes.deps import Reader

router = APIRouter(tags=["jobs"])
JOB_ID = re.compile(r"[0-9a-f]{32}")
STATES = analytics.JOB_STATES
JobIdP = Annotated[str, Path(description="The job id from the 202 answer.", max_length=64,
                             examples=["3f9a0c1e5b7d4e2f8a6c0b1d2e3f4a5b"])]
FormatQ = Annotated[Literal["json", "csv"], Query(description="json (the envelope) or csv.", examples=["csv"])]


def job_error(job: jpb.Job) -> dict[str, str] | None:
    """A failed job's {code, message, hint} from its google.rpc.Status and ErrorInfo detail."""
    if not job.HasField("error") or (job.error.code == 0 and not job.error.message):
        return None
    for detail in job.error.details:
        if detail.Is(types_pb2.ErrorInfo.DESCRIPTOR):
            info = types_pb2.ErrorInfo()
            detail.Unpack(info)
            return {"code": info.code, "message": info.message, "hint": info.hint}
    return {"code": "INTERNAL", "message": job.error.message or "the job failed",
            "hint": "Start a new job; if it fails again, report the job id."}


def job_status(job: jpb.Job) -> dict[str, Any]:
    state = STATES.get(job.state, "queued")
    return {"id": job.id, "state": state, "phase": job.phase or "queued",
            "progress": min(1.0, max(0.0, job.progress)), "created_at": job.created_at,
            "updated_at": job.updated_at,
            "result_url": f"{analytics.JOBS_PATH}/{job.id}/result" if state == "succeeded" else None,
            "error": job_error(job)}


def job_meta(job: jpb.Job) -> dict[str, Any]:
    """Meta of a job answer: the job's source and resolved window; nothing read yet."""
    kind = job.WhichOneof("query")
    legacy = kind is not None and getattr(job, kind).source == types_pb2.SOURCE_LEGACY
    if not job.HasField("window"):
        return placeholder_meta("legacy" if legacy else "canonical")
    return placeholder_meta("legacy" if legacy else "canonical", job.window.start, job.window.end,
                            job.window.label or "none")


async def _call(gw: Gateway, method: Any, request: Any, job_id: str) -> Any:
    try:
        return await gw.client.call(method, request)
    except UpstreamError as exc:
        if exc.status == grpc.StatusCode.NOT_FOUND:
            raise job_not_found(job_id) from None
        raise exc.to_api() from None


def _visible_id(job_id: str) -> str:
    if not JOB_ID.fullmatch(job_id):
        raise job_not_found(job_id)
    return job_id


def _status_answer(request: Request, job: jpb.Job) -> JSONResponse:
    meta = job_meta(job)
    request.state.source = meta["source"]
    return JSONResponse(finish({"data": job_status(job), "meta": meta}, request.state.request_id, "bypass"),
                        headers={"Cache-Control": NO_STORE})


@router.post("/api/v2/analytics/jobs", status_code=202, response_model=JobAcceptedEnvelope,
             summary="Start an async job",
             description="Always runs the summary or drilldown as a job, whatever its cost. Parameters as for "
                         "the GET endpoints, plus kind. Needs Redis (the job queue): 503 when it is down.",
             responses=errors(*READ_ERRORS), openapi_extra=SECURED)
async def create_job(request: Request, principal: Reader, body: JobCreate) -> JSONResponse:
    gw = gateway(request)
    q = build_query(body.kind, await gw.keys.pubkey(body.pubkey), body.window, body.start, body.end, metrics=body.metrics, tz=body.tz,
                    dimension=body.dimension, metric=body.metric, granularity=body.granularity, limit=body.limit,
                    cursor=body.cursor)
    principal.check_read(q.pubkey)
    source = await gw.source_for(q.pubkey, principal.id)
    request.state.source = source
    return await analytics.accept_job(gw, request.state.request_id, q, principal, source)


@router.get("/api/v2/analytics/jobs/{job_id}", response_model=JobStatusEnvelope, summary="Job status",
            description="State, phase and progress of a job; result_url once it succeeded, error once it failed.",
            responses=errors(404, *READ_ERRORS), openapi_extra=SECURED)
async def get_job(request: Request, principal: Reader, job_id: JobIdP) -> JSONResponse:
    gw = gateway(request)
    req = jpb.GetJobRequest(id=_visible_id(job_id), principal=principal.id, admin=principal.admin)
    return _status_answer(request, await _call(gw, gw.client.jobs.GetJob, req, job_id))


@router.delete("/api/v2/analytics/jobs/{job_id}", response_model=JobStatusEnvelope, summary="Cancel a job",
               description="Cancels a queued or running job (it stops between phases); a finished job is "
                           "left as it is. Answers the job's status.",
               responses=errors(404, *READ_ERRORS), openapi_extra=SECURED)
async def cancel_job(request: Request, principal: Reader, job_id: JobIdP) -> JSONResponse:
    gw = gateway(request)
    req = jpb.CancelJobRequest(id=_visible_id(job_id), principal=principal.id, admin=principal.admin)
    return _status_answer(request, await _call(gw, gw.client.jobs.CancelJob, req, job_id))


RESULT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The persisted result (kept at least 24 h): the sync answer's envelope, or CSV.",
          "content": {"application/json": {"schema": {"anyOf": [
              {"$ref": "#/components/schemas/SummaryEnvelope"}, {"$ref": "#/components/schemas/DrilldownEnvelope"}]}},
                      "text/csv": {"schema": {"type": "string"},
                                   "example": "metric,value\nzaps.count,12\nzaps.msats,2100000\n"}}},
    202: {"model": JobAcceptedEnvelope, "description": "The job has not finished yet; poll its status."},
    **errors(404, 409, *READ_ERRORS),
}


@router.get("/api/v2/analytics/jobs/{job_id}/result", response_model=None, summary="Job result",
            description="The result of a succeeded job as JSON (summary or drilldown envelope) or CSV (summary: "
                        "metric,value rows; drilldown: one line per row).",
            responses=RESULT_RESPONSES, openapi_extra=SECURED)
async def job_result(request: Request, principal: Reader, job_id: JobIdP, format: FormatQ = "json") -> Response:
    gw = gateway(request)
    req = jpb.GetJobResultRequest(id=_visible_id(job_id), principal=principal.id, admin=principal.admin)
    resp = await _call(gw, gw.client.jobs.GetJobResult, req, job_id)
    return _result_answer(request, principal, resp, format)


def _result_answer(request: Request, principal: Principal, resp: jpb.GetJobResultResponse, fmt: str) -> Response:
    job, rid = resp.job, request.state.request_id
    meta = job_meta(job)
    request.state.source = meta["source"]
    state = STATES.get(job.state, "queued")
    if state in ("queued", "running"):
        status_url = f"{analytics.JOBS_PATH}/{job.id}"
        handle = {"id": job.id, "state": state, "status_url": status_url}
        return JSONResponse(finish({"data": {"job": handle}, "meta": meta}, rid, "bypass"), status_code=202,
                            headers={"Location": status_url, "Retry-After": "1", "Cache-Control": NO_STORE})
    if state == "cancelled":
        raise ApiError(409, "JOB_CANCELLED", "the job was cancelled, so it has no result",
                       "Start a new job with the same parameters.")
    if state != "succeeded" or not resp.result_json:
        err = job_error(job) or {}
        raise ApiError(409, "JOB_FAILED", "the job failed, so it has no result: " + err.get("message", ""),
                       err.get("hint") or "Start a new job; if it fails again, report the job id.")
    # A succeeded job's result never changes: one validator per job and format, kept for the result's life.
    etag = weak_etag("job-result", job.id, fmt)
    if matches(request.headers.get("if-none-match"), etag):
        return not_modified(etag, RESULT_MAX_AGE)
    cached = {"ETag": etag, "Cache-Control": RESULT_MAX_AGE}
    envelope = json.loads(resp.result_json)
    if fmt == "csv":
        return Response(result_csv(envelope), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="canal-{job.id}.csv"', **cached})
    return JSONResponse(finish(envelope, rid, "bypass"), headers=cached)
