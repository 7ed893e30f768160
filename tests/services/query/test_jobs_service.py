"""JobsService over gRPC on the real query server: create, read, cancel, results, privacy, queue down."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from arq.constants import job_key_prefix

from canal.common.v1 import types_pb2
from canal.jobs.v1 import jobs_service_pb2 as pb
from canal.jobs.v1 import jobs_service_pb2_grpc as pb_grpc
from canal.query.v1 import query_service_pb2 as qpb
from libs.config import Settings
from libs.db.engine import make_engine
from libs.rpc import error_info_from
from services.query import jobs_service as jobs
from services.query.jobs_service import QUEUE_NAME
from services.query.server import create_server
from tests.services.gateway.helpers import ALICE_PK, CountingInterceptor

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(autouse=True)
def _servers_of_one_kind(request: pytest.FixtureRequest) -> None:
    """Run embedded+embedded and machine+machine, not the mixed pairs: they add time, not coverage here."""
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params if callspec is not None else {}
    if "pg_server" in params and "redis_server" in params and params["pg_server"] != params["redis_server"]:
        pytest.skip("mixed embedded/machine server pairs add nothing to the jobs tests")


@dataclass
class QueryStack:
    settings: Settings
    engine: object
    stub: pb_grpc.JobsServiceStub
    counter: CountingInterceptor
    port: int


@contextlib.asynccontextmanager
async def query_stack(db_url: str, redis_url: str | None) -> AsyncIterator[QueryStack]:
    """The real query server (QueryService + JobsService) on port 0, and a JobsService stub."""
    settings = Settings(_env_file=None, database_url=db_url, redis_url=redis_url, demo=False)  # type: ignore[call-arg]
    engine = make_engine(db_url, pool_size=4)
    counter = CountingInterceptor()
    server, port = create_server("127.0.0.1:0", engine, settings, [counter])
    await server.start()
    settings.query_addr = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(settings.query_addr)
    try:
        yield QueryStack(settings, engine, pb_grpc.JobsServiceStub(channel), counter, port)
    finally:
        await channel.close()
        await server.stop(0)
        engine.dispose()  # type: ignore[attr-defined]


@pytest_asyncio.fixture(loop_scope="session")
async def qs(db: str, redis_url: str) -> AsyncIterator[QueryStack]:
    async with query_stack(db, redis_url) as s:
        yield s


def summary_request(principal: str = "key:alice") -> pb.CreateJobRequest:
    query = qpb.GetSummaryRequest(pubkey=ALICE_PK, window=types_pb2.WindowSpec(window="7d"),
                                  source=types_pb2.SOURCE_CANONICAL)
    return pb.CreateJobRequest(summary=query, principal=principal, window=types_pb2.Window(label="7d"))


async def test_create_job_stores_a_queued_row_and_enqueues_it(qs: QueryStack, redis_url: str) -> None:
    job = await qs.stub.CreateJob(summary_request())
    assert (job.state, job.phase, job.progress, job.kind) == (pb.JOB_STATE_QUEUED, "queued", 0.0, "summary")
    row = jobs.load_job(qs.engine, job.id)  # type: ignore[arg-type]
    assert row is not None and row["principal"] == "key:alice"
    assert jobs.job_query(row["kind"], row["params"]) == summary_request().summary  # the typed query, stored
    assert job.summary == summary_request().summary and job.window.label == "7d"
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.exists(job_key_prefix + job.id)
        assert await client.zscore(QUEUE_NAME, job.id) is not None
    finally:
        await client.aclose()


@pytest.mark.parametrize(("request_", "code"), [
    (pb.CreateJobRequest(principal="p"), "INVALID_REQUEST"),  # no query
    (pb.CreateJobRequest(summary=qpb.GetSummaryRequest(pubkey="zz"), principal="p"), "INVALID_PUBKEY"),
    (pb.CreateJobRequest(summary=qpb.GetSummaryRequest(pubkey=ALICE_PK)), "INVALID_REQUEST"),  # no principal
])
async def test_invalid_create_requests_are_invalid_argument(qs: QueryStack, request_: pb.CreateJobRequest,
                                                            code: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await qs.stub.CreateJob(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info_from(caught.value)
    assert info is not None and info.code == code and info.hint


async def test_jobs_are_visible_only_to_their_principal_and_admin(qs: QueryStack) -> None:
    job = await qs.stub.CreateJob(summary_request("key:alice"))
    own = await qs.stub.GetJob(pb.GetJobRequest(id=job.id, principal="key:alice"))
    admin = await qs.stub.GetJob(pb.GetJobRequest(id=job.id, principal="key:root", admin=True))
    assert own.id == admin.id == job.id
    for call in (qs.stub.GetJob(pb.GetJobRequest(id=job.id, principal="key:mallory")),
                 qs.stub.CancelJob(pb.CancelJobRequest(id=job.id, principal="key:mallory")),
                 qs.stub.GetJobResult(pb.GetJobResultRequest(id=job.id, principal="key:mallory")),
                 qs.stub.GetJob(pb.GetJobRequest(id="f" * 32, principal="key:alice", admin=True))):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        info = error_info_from(caught.value)
        assert info is not None and info.code == "JOB_NOT_FOUND"
    assert jobs.load_job(qs.engine, job.id)["state"] == "queued"  # type: ignore[arg-type,index]


async def test_cancel_stops_an_active_job_but_not_a_finished_one(qs: QueryStack) -> None:
    job = await qs.stub.CreateJob(summary_request())
    cancelled = await qs.stub.CancelJob(pb.CancelJobRequest(id=job.id, principal="key:alice"))
    assert cancelled.state == pb.JOB_STATE_CANCELLED
    done = await qs.stub.CreateJob(summary_request())
    jobs.update_active(qs.engine, done.id, state="succeeded", progress=1.0, result={"data": {}, "meta": {}})  # type: ignore[arg-type]
    kept = await qs.stub.CancelJob(pb.CancelJobRequest(id=done.id, principal="key:alice"))
    assert kept.state == pb.JOB_STATE_SUCCEEDED


async def test_result_is_returned_once_succeeded(qs: QueryStack) -> None:
    job = await qs.stub.CreateJob(summary_request())
    pending = await qs.stub.GetJobResult(pb.GetJobResultRequest(id=job.id, principal="key:alice"))
    assert pending.result_json == "" and pending.job.state == pb.JOB_STATE_QUEUED
    envelope = {"data": {"pubkey": ALICE_PK, "metrics": {"zaps.count": 1}}, "meta": {"source": "canonical"}}
    jobs.update_active(qs.engine, job.id, state="succeeded", progress=1.0, result=envelope)  # type: ignore[arg-type]
    done = await qs.stub.GetJobResult(pb.GetJobResultRequest(id=job.id, principal="key:alice"))
    assert json.loads(done.result_json) == envelope and done.job.state == pb.JOB_STATE_SUCCEEDED


async def test_failed_job_error_is_a_status_with_error_info(qs: QueryStack) -> None:
    job = await qs.stub.CreateJob(summary_request())
    jobs.update_active(qs.engine, job.id, state="failed",  # type: ignore[arg-type]
                       error={"code": "INVALID_WINDOW", "message": "too many points", "hint": "use days",
                              "status": "INVALID_ARGUMENT"})
    failed = await qs.stub.GetJob(pb.GetJobRequest(id=job.id, principal="key:alice"))
    assert failed.state == pb.JOB_STATE_FAILED and failed.error.message == "too many points"
    info = types_pb2.ErrorInfo()
    assert failed.error.details[0].Unpack(info)
    assert (info.code, info.hint) == ("INVALID_WINDOW", "use days")


async def test_queue_down_is_unavailable_and_leaves_no_row(db: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    dead = f"unix://{tmp_path_factory.mktemp('r')}/none.sock"
    async with query_stack(db, dead) as qs:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await qs.stub.CreateJob(summary_request())
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        info = error_info_from(caught.value)
        assert info is not None and info.code == "UNAVAILABLE" and "Retry" in info.hint
        from sqlalchemy import text

        with qs.engine.connect() as conn:  # type: ignore[attr-defined]
            assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 0
