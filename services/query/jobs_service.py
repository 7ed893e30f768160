"""JobsService: long-running analytics queries (AIP-151). State in PostgreSQL, execution on arq.

A job is a `jobs` row (kind summary|drilldown, state, phase, progress, params, result, error)
plus an arq queue entry whose arq job id is the row id, so the worker, the reaper and
cancellation all find one another by that id. Only the principal that made a job (or an
admin) sees it; anyone else gets NOT_FOUND, never a hint that it exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from typing import Any, TypeAlias, TypeVar, Union

import grpc
from arq.connections import ArqRedis, RedisSettings, create_pool
from google.protobuf import any_pb2, json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry import propagate
from redis.exceptions import RedisError
from sqlalchemy import Engine, text

from canal.common.v1 import types_pb2
from canal.jobs.v1 import jobs_service_pb2 as pb
from canal.jobs.v1 import jobs_service_pb2_grpc as pb_grpc
from canal.query.v1 import query_service_pb2 as qpb
from libs.config import Settings
from libs.nostr.bech32 import parse_pubkey
from libs.rpc import CanalError, Servicer

log = logging.getLogger(__name__)
T = TypeVar("T")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["JobsService"].full_name
QUEUE_NAME = "canal:jobs"
JOB_FUNCTION = "run_query_job"
ACTIVE = ("queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
STATES = {"queued": pb.JOB_STATE_QUEUED, "running": pb.JOB_STATE_RUNNING, "succeeded": pb.JOB_STATE_SUCCEEDED,
          "failed": pb.JOB_STATE_FAILED, "cancelled": pb.JOB_STATE_CANCELLED}
RPC_CODES = {"INVALID_ARGUMENT": code_pb2.INVALID_ARGUMENT, "NOT_FOUND": code_pb2.NOT_FOUND,
             "UNAVAILABLE": code_pb2.UNAVAILABLE, "DEADLINE_EXCEEDED": code_pb2.DEADLINE_EXCEEDED,
             "PERMISSION_DENIED": code_pb2.PERMISSION_DENIED, "CANCELLED": code_pb2.CANCELLED}
COLUMNS = "id, kind, state, phase, progress, principal, params, result, error, attempts, created_at, updated_at"
QUEUE_DOWN = ("the job queue (Redis) is unavailable",
              "Retry in a minute; requests under the sync limit still answer synchronously.")


# ---------------------------------------------------------------- the jobs table (also used by the worker)

def insert_job(engine: Engine, job_id: str, kind: str, principal: str, params: dict[str, Any]) -> dict[str, Any]:
    now = int(time.time())
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO jobs (id, kind, state, phase, progress, principal, params, attempts, "
                          "created_at, updated_at) VALUES (:i, :k, 'queued', 'queued', 0, :p, CAST(:j AS jsonb), "
                          "0, :t, :t)"),
                     {"i": job_id, "k": kind, "p": principal, "j": json.dumps(params), "t": now})
    return {"id": job_id, "kind": kind, "state": "queued", "phase": "queued", "progress": 0.0, "principal": principal,
            "params": params, "result": None, "error": None, "attempts": 0, "created_at": now, "updated_at": now}


def delete_job(engine: Engine, job_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs WHERE id = :i"), {"i": job_id})


def load_job(engine: Engine, job_id: str) -> dict[str, Any] | None:
    """The analytics job row as a dict, or None (compaction runs share the table and are never returned)."""
    with engine.connect() as conn:
        row = conn.execute(text(f"SELECT {COLUMNS} FROM jobs WHERE id = :i AND kind IN ('summary', 'drilldown')"),
                           {"i": job_id}).mappings().first()
    return None if row is None else dict(row)


def update_active(engine: Engine, job_id: str, **values: Any) -> bool:
    """Update a queued/running job; False when it is no longer active (cancelled, or finished elsewhere)."""
    values["updated_at"] = int(time.time())
    sets = ", ".join(f"{k} = CAST(:{k} AS jsonb)" if k in ("result", "error") else f"{k} = :{k}" for k in values)
    params = {k: json.dumps(v) if k in ("result", "error") else v for k, v in values.items()}
    with engine.begin() as conn:
        res = conn.execute(text(f"UPDATE jobs SET {sets} WHERE id = :id AND state IN ('queued', 'running')"),
                           {**params, "id": job_id})
    return bool(res.rowcount)


def start_attempt(engine: Engine, job_id: str) -> bool:
    """Mark the job running and count the attempt; False when it is no longer active."""
    with engine.begin() as conn:
        res = conn.execute(text("UPDATE jobs SET state = 'running', phase = 'planning', progress = 0.1, "
                                "attempts = attempts + 1, error = NULL, updated_at = :t "
                                "WHERE id = :i AND state IN ('queued', 'running')"),
                           {"i": job_id, "t": int(time.time())})
    return bool(res.rowcount)


def cancel_job(engine: Engine, job_id: str) -> None:
    update_active(engine, job_id, state="cancelled")


def purge_expired(engine: Engine, keep_hours: int) -> int:
    """Delete finished analytics jobs older than `keep_hours` (never less than 24 h)."""
    cutoff = int(time.time()) - max(24, keep_hours) * 3600
    with engine.begin() as conn:
        res = conn.execute(text("DELETE FROM jobs WHERE kind IN ('summary', 'drilldown') "
                                "AND state IN ('succeeded', 'failed', 'cancelled') AND updated_at < :c"), {"c": cutoff})
    return int(res.rowcount or 0)


def active_jobs(engine: Engine, limit: int = 500) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, state, updated_at FROM jobs WHERE kind IN ('summary', 'drilldown') "
                                 "AND state IN ('queued', 'running') ORDER BY updated_at LIMIT :n"),
                            {"n": limit}).mappings().all()
    return [dict(r) for r in rows]


def error_status(error: dict[str, Any]) -> status_pb2.Status:
    """A stored job error as google.rpc.Status with an ErrorInfo detail."""
    detail = any_pb2.Any()
    detail.Pack(types_pb2.ErrorInfo(code=str(error.get("code", "INTERNAL")), message=str(error.get("message", "")),
                                    hint=str(error.get("hint", ""))))
    code = RPC_CODES.get(str(error.get("status", "")), code_pb2.UNKNOWN)
    return status_pb2.Status(code=code, message=str(error.get("message", "")), details=[detail])


def job_proto(row: dict[str, Any]) -> pb.Job:
    job = pb.Job(id=row["id"], state=STATES.get(row["state"], pb.JOB_STATE_UNSPECIFIED), phase=row["phase"] or "",
                 progress=float(row["progress"] or 0.0), created_at=int(row["created_at"]),
                 updated_at=int(row["updated_at"]), kind=row["kind"], principal=row["principal"] or "")
    params = row["params"] or {}
    with contextlib.suppress(ValueError, json_format.ParseError):
        getattr(job, row["kind"]).CopyFrom(job_query(row["kind"], params))
        json_format.ParseDict(params.get("window") or {}, job.window, ignore_unknown_fields=True)
    if row.get("error"):
        job.error.CopyFrom(error_status(row["error"]))
    return job


def _invalid(code: str, message: str, hint: str, field: str) -> CanalError:
    return CanalError(code, message, hint, field, status=grpc.StatusCode.INVALID_ARGUMENT)


def _not_found(job_id: str) -> CanalError:
    return CanalError("JOB_NOT_FOUND", f"no job {job_id[:40]!r} is visible to you",
                      "Check the id; jobs are visible only to the principal that made them.", "id",
                      status=grpc.StatusCode.NOT_FOUND)


QueryRequest: TypeAlias = Union[qpb.GetSummaryRequest, qpb.GetDrilldownRequest]  # noqa: UP007 - a runtime alias
REQUEST_TYPES: dict[str, Any] = {"summary": qpb.GetSummaryRequest, "drilldown": qpb.GetDrilldownRequest}


def job_params(request: pb.CreateJobRequest) -> tuple[str, dict[str, Any]]:
    """(kind, the jobs row's params): the typed query as its protobuf JSON, and the resolved window."""
    kind = request.WhichOneof("query")
    if kind is None:
        raise _invalid("INVALID_REQUEST", "the job names no query", "Set `summary` or `drilldown`.", "query")
    if not request.principal:
        raise _invalid("INVALID_REQUEST", "principal is required", "Pass the caller's principal id.", "principal")
    query = getattr(request, kind)
    try:
        query.pubkey = parse_pubkey(query.pubkey)
    except ValueError as exc:
        raise _invalid("INVALID_PUBKEY", str(exc), "Pass 64 lowercase hex characters or an npub1… string.",
                       "pubkey") from None
    return kind, {"request": json_format.MessageToDict(query, preserving_proto_field_name=True),
                  "window": json_format.MessageToDict(request.window, preserving_proto_field_name=True)}


def job_query(kind: str, params: dict[str, Any]) -> QueryRequest:
    """The typed query of a jobs row (ValueError when the row predates typed jobs or is damaged)."""
    if kind not in REQUEST_TYPES or not isinstance(params.get("request"), dict):
        raise ValueError(f"job parameters of kind {kind!r} hold no typed request")
    request: QueryRequest = json_format.ParseDict(params["request"], REQUEST_TYPES[kind](), ignore_unknown_fields=True)
    return request


class JobsService(Servicer, pb_grpc.JobsServiceServicer):
    """Create, read, cancel and fetch results of analytics jobs (`Servicer.handle` maps every failure)."""

    span_prefix = "JobsService"

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self._pool: ArqRedis | None = None

    async def _queue(self) -> ArqRedis:
        if self._pool is None:
            if not self.settings.redis_url:
                raise CanalError("UNAVAILABLE", "no job queue is configured", "Set REDIS_URL.",
                                 status=grpc.StatusCode.UNAVAILABLE)
            redis_settings = RedisSettings.from_dsn(self.settings.redis_url)
            redis_settings.conn_retries = 0
            self._pool = await create_pool(redis_settings, default_queue_name=QUEUE_NAME)
        return self._pool

    async def _visible(self, job_id: str, principal: str, admin: bool) -> dict[str, Any]:
        """The job, if this principal may see it; JOB_NOT_FOUND otherwise (never "exists but not yours")."""
        row = await asyncio.to_thread(load_job, self.engine, job_id) if job_id else None
        if row is None or not (admin or (principal and row["principal"] == principal)):
            raise _not_found(job_id)
        return row

    async def CreateJob(self, request: pb.CreateJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        return await self.handle(context, "CreateJob", self._create(request, context))

    async def _create(self, request: pb.CreateJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        kind, params = job_params(request)
        job_id = secrets.token_hex(16)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the worker continues the trace of the request that made the job
        if carrier:
            params["trace_context"] = carrier
        row = await asyncio.to_thread(insert_job, self.engine, job_id, kind, request.principal, params)
        try:
            queue = await self._queue()
            await queue.enqueue_job(JOB_FUNCTION, job_id, _job_id=job_id, _queue_name=QUEUE_NAME)
        except (TimeoutError, RedisError, OSError, CanalError) as exc:
            log.warning("could not enqueue job %s: %s", job_id, type(exc).__name__)
            await asyncio.to_thread(delete_job, self.engine, job_id)
            raise CanalError("UNAVAILABLE", *QUEUE_DOWN, status=grpc.StatusCode.UNAVAILABLE) from None
        return job_proto(row)

    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        return await self.handle(context, "GetJob", self._job(request.id, request.principal, request.admin))

    async def CancelJob(self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        async def cancel() -> pb.Job:
            await self._visible(request.id, request.principal, request.admin)
            await asyncio.to_thread(cancel_job, self.engine, request.id)
            return await self._job(request.id, request.principal, request.admin)

        return await self.handle(context, "CancelJob", cancel())

    async def GetJobResult(self, request: pb.GetJobResultRequest,
                           context: grpc.aio.ServicerContext) -> pb.GetJobResultResponse:
        async def result() -> pb.GetJobResultResponse:
            row = await self._visible(request.id, request.principal, request.admin)
            text = json.dumps(row["result"]) if row["state"] == "succeeded" and row["result"] is not None else ""
            return pb.GetJobResultResponse(job=job_proto(row), result_json=text)

        return await self.handle(context, "GetJobResult", result())

    async def _job(self, job_id: str, principal: str, admin: bool) -> pb.Job:
        return job_proto(await self._visible(job_id, principal, admin))


def add_jobs_service(server: grpc.aio.Server, engine: Engine, settings: Settings) -> str:
    """Register JobsService on the query server; returns its full service name."""
    pb_grpc.add_JobsServiceServicer_to_server(JobsService(engine, settings), server)
    return SERVICE_NAME
