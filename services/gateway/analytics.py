"""Answering a summary or drilldown: flag -> cache -> query service, or a job, or a stale fallback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
from fastapi import Request, Response
from fastapi.responses import JSONResponse

from canal.common.v1 import types_pb2
from canal.jobs.v1 import jobs_service_pb2 as jpb
from libs.envelope import drilldown_payload, finish, placeholder_meta, summary_payload
from services.gateway.auth import Principal
from services.gateway.cache import digest, settle
from services.gateway.context import Gateway, gateway
from services.gateway.conventions import (
    NO_STORE,
    REVALIDATE,
    answer_content,
    matches,
    not_modified,
    weak_etag,
)
from services.gateway.errors import UpstreamError, unavailable
from services.gateway.params import AnalyticsQuery
from services.gateway.redis_guard import RedisDown

log = logging.getLogger(__name__)
JOBS_PATH = "/api/v2/analytics/jobs"
SOURCES = {"canonical": types_pb2.SOURCE_CANONICAL, "legacy": types_pb2.SOURCE_LEGACY}
# Failures after which the last good answer is better than an error.
FALLBACK = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                      grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
HEAVY_JOB_REUSE_S = 60
JOB_STATES = {jpb.JOB_STATE_QUEUED: "queued", jpb.JOB_STATE_RUNNING: "running", jpb.JOB_STATE_SUCCEEDED: "succeeded",
              jpb.JOB_STATE_FAILED: "failed", jpb.JOB_STATE_CANCELLED: "cancelled"}
QUEUE_DOWN_HINT = ("The job queue (Redis) is unavailable, so heavy requests cannot run now; retry in a minute, "
                   "or narrow the window to answer synchronously.")


async def respond(request: Request, principal: Principal, q: AnalyticsQuery, legacy_path: bool = False) -> Response:
    """The sync answer (200, with an ETag), 304 when the client's copy is current (If-None-Match), a job
    handle for heavy requests (202), or the mapped error."""
    gw = gateway(request)
    rid: str = request.state.request_id
    principal.check_read(q.pubkey)
    source = "legacy" if legacy_path else await gw.source_for(q.pubkey, principal.id)
    request.state.source = source
    exact, stale = q.cache_fields(source), q.stale_fields(source)
    if_none_match = request.headers.get("if-none-match")
    try:
        version = await gw.versions.get()
        # A custom window's answer is a function of the data version and the request: its validator is
        # known before anything is computed (see services/gateway/conventions.py).
        etag = None if q.rolling else weak_etag(version, exact)
        if etag is not None and matches(if_none_match, etag):
            return not_modified(etag)
        payload, status = await gw.cache.answer(version, exact, stale, lambda: compute(gw, q, source, True))
    except UpstreamError as exc:
        if exc.go_async:
            return await accept_job(gw, rid, q, principal, source, reuse=True)
        if exc.status in FALLBACK:
            kept = await gw.cache.stale(stale)
            if kept is not None:
                log.warning("request_id=%s serving a stale answer: query service %s", rid, exc.status.name)
                return JSONResponse(finish(kept, rid, "stale", stale=True), headers={"Cache-Control": NO_STORE})
            if exc.status not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                raise unavailable("the query service did not answer and no earlier answer is cached",
                                  "Retry in a few seconds; answers served before are kept as a fallback.") from None
        raise exc.to_api() from None
    etag = etag or weak_etag(version, stale, answer_content(payload))
    if matches(if_none_match, etag):
        return not_modified(etag)
    return JSONResponse(finish(payload, rid, status), headers={"ETag": etag, "Cache-Control": REVALIDATE})


async def compute(gw: Gateway, q: AnalyticsQuery, source: str, enforce: bool) -> dict[str, Any]:
    """Ask the query service (one call, with the deadline) and shape the envelope payload."""
    if q.kind == "summary":
        resp = await gw.client.call(gw.client.query.GetSummary, q.summary_request(SOURCES[source], enforce))
        return summary_payload(resp)
    dresp = await gw.client.call(gw.client.query.GetDrilldown, q.drilldown_request(SOURCES[source], enforce))
    return drilldown_payload(dresp, q.now)  # counterparty rows carry display names from the query service


async def create_job(gw: Gateway, q: AnalyticsQuery, principal: Principal, source: str) -> jpb.Job:
    """A job row + queue entry in the query process; 503 with a hint when the queue is down."""
    if not gw.redis.available:
        raise unavailable("the job queue is unavailable", QUEUE_DOWN_HINT)
    start, end, label = q.resolved
    request = jpb.CreateJobRequest(principal=principal.id, window=types_pb2.Window(start=start, end=end, label=label))
    if q.kind == "summary":
        request.summary.CopyFrom(q.summary_request(SOURCES[source], enforce=False))
    else:
        request.drilldown.CopyFrom(q.drilldown_request(SOURCES[source], enforce=False))
    try:
        return await gw.client.call(gw.client.jobs.CreateJob, request)
    except UpstreamError as exc:
        if exc.status == grpc.StatusCode.UNAVAILABLE or exc.transient:
            raise unavailable("the job queue is unavailable", exc.hint or QUEUE_DOWN_HINT) from None
        raise exc.to_api() from None


async def accept_job(gw: Gateway, rid: str, q: AnalyticsQuery, principal: Principal, source: str,
                     reuse: bool = False) -> JSONResponse:
    """202 with `data.job` = {id, state, status_url}.

    With `reuse` (a heavy GET), the same principal repeating the same request within a minute gets the
    job already made for it instead of a new one: a double click or a burst runs the query once.
    """
    if reuse:
        job_id, state = await _shared_job(gw, q, principal, source)
    else:
        job_id, state = (await create_job(gw, q, principal, source)).id, "queued"
    status_url = f"{JOBS_PATH}/{job_id}"
    start, end, label = q.resolved
    body = {"data": {"job": {"id": job_id, "state": state, "status_url": status_url}},
            "meta": placeholder_meta(source, start, end, label)}
    return JSONResponse(finish(body, rid, "bypass"), status_code=202,
                        headers={"Location": status_url, "Cache-Control": NO_STORE})


async def _shared_job(gw: Gateway, q: AnalyticsQuery, principal: Principal, source: str) -> tuple[str, str]:
    key = "canal:heavy-job:v1:" + digest({"who": principal.id, **q.stale_fields(source)})
    task = gw.pending_jobs.get(key)
    if task is None:
        task = asyncio.ensure_future(_reuse_or_create(gw, key, q, principal, source))
        gw.pending_jobs[key] = task
        task.add_done_callback(settle(lambda: gw.pending_jobs.pop(key, None)))
    return await asyncio.shield(task)


async def _reuse_or_create(gw: Gateway, key: str, q: AnalyticsQuery, principal: Principal,
                           source: str) -> tuple[str, str]:
    try:
        known = await gw.redis.call(lambda r: r.get(key))
    except RedisDown:
        known = None
    if known:
        request = jpb.GetJobRequest(id=known.decode(), principal=principal.id, admin=principal.admin)
        try:
            job = await gw.client.call(gw.client.jobs.GetJob, request)
            if job.state not in (jpb.JOB_STATE_FAILED, jpb.JOB_STATE_CANCELLED):
                return job.id, JOB_STATES.get(job.state, "queued")
        except UpstreamError:
            pass
    job = await create_job(gw, q, principal, source)
    with contextlib.suppress(RedisDown):
        await gw.redis.call(lambda r: r.set(key, job.id, ex=HEAVY_JOB_REUSE_S))
    return job.id, "queued"

