"""The arq job worker against real Redis, PostgreSQL and the real query server: phases and results,
transient retries with backoff, permanent failures, cancellation between phases, idempotency, crash
recovery by the reaper, and result retention."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from arq import Worker
from arq.connections import ArqRedis, create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from sqlalchemy import text

from canal.common.v1 import types_pb2
from canal.jobs.v1 import jobs_service_pb2 as pb
from canal.query.v1 import query_service_pb2 as qpb
from services.query import jobs_service as jobs
from services.query import worker
from services.query.jobs_service import JOB_FUNCTION, QUEUE_NAME
from tests.services.gateway.helpers import ALICE_PK, seed, wait_for
from tests.services.query.test_jobs_service import (  # noqa: F401  (the autouse fixture applies here too)
    QueryStack,
    _servers_of_one_kind,
    query_stack,
    summary_request,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def qs(db: str, redis_url: str) -> AsyncIterator[QueryStack]:
    async with query_stack(db, redis_url) as s:
        yield s


@pytest_asyncio.fixture(loop_scope="session")
async def redis(qs: QueryStack) -> AsyncIterator[ArqRedis]:
    """arq's client (what the worker's ctx["redis"] is)."""
    client = await create_pool(worker.redis_settings(qs.settings), default_queue_name=QUEUE_NAME)
    yield client
    await client.aclose()


async def burst(qs: QueryStack, **overrides: Any) -> Worker:
    """Run every queued job with an in-process arq worker, then stop."""
    w = Worker(**{**worker.worker_options(qs.settings), "burst": True, "handle_signals": False,
                  "poll_delay": 0.05, **overrides})
    try:
        await w.async_run()
    finally:
        await w.close()
    return w


def row(qs: QueryStack, job_id: str) -> dict[str, Any]:
    found = jobs.load_job(qs.engine, job_id)  # type: ignore[arg-type]
    assert found is not None
    return found


async def test_a_job_runs_through_its_phases_to_a_stored_envelope(qs: QueryStack) -> None:
    seed(qs.engine)  # type: ignore[arg-type]
    job = await qs.stub.CreateJob(summary_request())
    await burst(qs)
    done = row(qs, job.id)
    assert (done["state"], done["phase"], done["progress"], done["attempts"]) == ("succeeded", "storing", 1.0, 1)
    assert done["result"]["data"]["metrics"]["reactions.count"] == 2
    assert done["result"]["meta"]["source"] == "canonical" and done["result"]["meta"]["window"]["label"] == "7d"
    assert qs.counter.calls["ExplainPlan"] == 1 and qs.counter.calls["GetSummary"] == 1


async def test_transient_failures_are_retried_with_backoff(qs: QueryStack) -> None:
    qs.counter.failures["GetSummary"] = 1
    job = await qs.stub.CreateJob(summary_request())
    started = time.monotonic()
    await burst(qs)
    done = row(qs, job.id)
    assert done["state"] == "succeeded" and done["attempts"] == 2
    assert time.monotonic() - started >= worker.backoff_s(1)
    assert qs.counter.calls["GetSummary"] == 2


async def test_transient_failures_past_max_tries_fail_the_job(qs: QueryStack,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "MAX_TRIES", 2)
    monkeypatch.setattr(worker, "backoff_s", lambda _try: 0.05)
    qs.counter.failures["GetSummary"] = 5
    job = await qs.stub.CreateJob(summary_request())
    await burst(qs)
    failed = row(qs, job.id)
    assert failed["state"] == "failed" and failed["attempts"] == 2
    assert failed["error"]["code"] == "UNAVAILABLE" and failed["error"]["hint"]


async def test_a_permanent_error_fails_at_once_with_its_error_info(qs: QueryStack) -> None:
    query = qpb.GetDrilldownRequest(pubkey=ALICE_PK, window=types_pb2.WindowSpec(window="365d"), dimension="time",
                                    granularity="minute")
    request = pb.CreateJobRequest(drilldown=query, principal="key:alice")
    job = await qs.stub.CreateJob(request)
    await burst(qs)
    failed = row(qs, job.id)
    assert failed["state"] == "failed" and failed["attempts"] == 1
    assert failed["error"]["code"] == "INVALID_WINDOW" and failed["error"]["status"] == "INVALID_ARGUMENT"


async def test_cancellation_is_honoured_between_phases(qs: QueryStack) -> None:
    qs.counter.delays["ExplainPlan"] = 0.5
    job = await qs.stub.CreateJob(summary_request())
    running = asyncio.create_task(burst(qs))

    async def planning() -> bool:
        return row(qs, job.id)["phase"] == "planning"

    await wait_for(planning, timeout=10, every=0.02)
    await qs.stub.CancelJob(pb.CancelJobRequest(id=job.id, principal="key:alice"))
    await running
    assert row(qs, job.id)["state"] == "cancelled"
    assert qs.counter.calls["GetSummary"] == 0


async def test_a_succeeded_job_is_never_run_again(qs: QueryStack, redis: ArqRedis) -> None:
    job = await qs.stub.CreateJob(summary_request())
    await burst(qs)
    first = row(qs, job.id)
    await redis.delete(result_key_prefix + job.id)  # as if arq delivered the job a second time
    await redis.enqueue_job(JOB_FUNCTION, job.id, _job_id=job.id, _queue_name=QUEUE_NAME)
    await burst(qs)
    again = row(qs, job.id)
    assert qs.counter.calls["GetSummary"] == 1
    assert (again["attempts"], again["updated_at"], again["result"]) == (first["attempts"], first["updated_at"],
                                                                         first["result"])


async def test_reaper_releases_jobs_of_dead_workers(qs: QueryStack, redis: ArqRedis) -> None:
    job = await qs.stub.CreateJob(summary_request())
    jobs.start_attempt(qs.engine, job.id)  # type: ignore[arg-type]
    ttl_ms = 60_000
    # A worker took the job 10 s ago and died: its in-progress key remains, its heartbeat does not.
    await redis.set(in_progress_key_prefix + job.id, b"1", px=ttl_ms - 10_000)
    assert await worker.reap_once(redis, qs.engine, ttl_ms) == [job.id]
    assert not await redis.exists(in_progress_key_prefix + job.id)
    # A live worker's job (fresh heartbeat) is left alone.
    await redis.set(in_progress_key_prefix + job.id, b"1", px=ttl_ms - 10_000)
    await redis.set(worker.HEARTBEAT_PREFIX + job.id, b"1", ex=5)
    assert await worker.reap_once(redis, qs.engine, ttl_ms) == []
    assert await redis.exists(in_progress_key_prefix + job.id)


async def test_reaper_requeues_lost_jobs_and_fails_exhausted_ones(qs: QueryStack, redis: ArqRedis) -> None:
    lost = await qs.stub.CreateJob(summary_request())
    exhausted = await qs.stub.CreateJob(summary_request())
    for job_id in (lost.id, exhausted.id):
        await redis.delete(job_key_prefix + job_id)
        await redis.zrem(QUEUE_NAME, job_id)
    await redis.set(result_key_prefix + exhausted.id, b"x")
    with qs.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("UPDATE jobs SET updated_at = updated_at - 60"))
    touched = await worker.reap_once(redis, qs.engine, 60_000)
    assert set(touched) == {lost.id, exhausted.id}
    assert await redis.exists(job_key_prefix + lost.id)
    assert row(qs, lost.id)["state"] == "queued"
    assert row(qs, exhausted.id)["state"] == "failed"


async def test_finished_results_are_kept_at_least_a_day(qs: QueryStack) -> None:
    old = await qs.stub.CreateJob(summary_request())
    recent = await qs.stub.CreateJob(summary_request())
    active = await qs.stub.CreateJob(summary_request())
    for job_id in (old.id, recent.id):
        jobs.update_active(qs.engine, job_id, state="succeeded", result={})  # type: ignore[arg-type]
    day = 86400
    with qs.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("UPDATE jobs SET updated_at = updated_at - :d WHERE id IN (:o, :a)"),
                     {"d": 3 * day, "o": old.id, "a": active.id})
        conn.execute(text("UPDATE jobs SET updated_at = updated_at - :d WHERE id = :r"),
                     {"d": day - 60, "r": recent.id})
    assert jobs.purge_expired(qs.engine, keep_hours=1) == 1  # type: ignore[arg-type]
    assert jobs.load_job(qs.engine, old.id) is None  # type: ignore[arg-type]
    assert row(qs, recent.id)["state"] == "succeeded" and row(qs, active.id)["state"] == "queued"
