"""gRPC QueryService: validation errors, plan shape and determinism, paging cursors, deadlines, go-async."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from canal.common.v1 import types_pb2
from canal.query.v1 import query_service_pb2 as pb
from canal.query.v1 import query_service_pb2_grpc as pb_grpc
from libs.config import Settings
from libs.db.engine import make_engine
from libs.metrics import Tier
from libs.rpc import error_info_from
from services.compactor.rollup import compact_tier
from services.query.server import create_server
from tests.services.query.factgen import insert_facts, random_facts, seed_dictionaries

NOW = 1780000000
PK1 = "0" * 63 + "1"


async def _stub(db: str, **overrides: object) -> AsyncIterator[pb_grpc.QueryServiceStub]:
    engine = make_engine(db, pool_size=4)
    settings = Settings(database_url=db, canal_secret="x" * 32, **overrides)  # type: ignore[arg-type]
    server, port = create_server("127.0.0.1:0", engine, settings)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.QueryServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)
        engine.dispose()


@pytest.fixture()
async def stub(db: str) -> AsyncIterator[pb_grpc.QueryServiceStub]:
    async for s in _stub(db):
        yield s


def _seed(db: str, n: int = 3000, days: int = 60) -> None:
    engine = make_engine(db, pool_size=2)
    seed_dictionaries(engine)
    insert_facts(engine, random_facts(random.Random(9), n, NOW - days * 86400, days * 86400))
    for _ in range(2):
        for tier in Tier:
            compact_tier(engine, tier, 100_000)
    engine.dispose()


async def _error(call: object) -> tuple[grpc.StatusCode, types_pb2.ErrorInfo]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    info = error_info_from(err.value)
    assert info is not None
    return err.value.code(), info


async def test_invalid_pubkey_window_and_metric_are_invalid_argument_with_error_info(
        stub: pb_grpc.QueryServiceStub) -> None:
    code, info = await _error(stub.GetSummary(pb.GetSummaryRequest(
        pubkey="npub1nope", window=types_pb2.WindowSpec(window="7d"))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and info.code == "INVALID_PUBKEY" and info.hint
    code, info = await _error(stub.GetSummary(pb.GetSummaryRequest(
        pubkey=PK1, window=types_pb2.WindowSpec(start="200", end="100"))))
    assert info.code == "INVALID_WINDOW" and info.field == "end"
    code, info = await _error(stub.GetSummary(pb.GetSummaryRequest(
        pubkey=PK1, window=types_pb2.WindowSpec(window="7d"), metrics=["zaps.count", "zaps.bogus"])))
    assert info.code == "UNKNOWN_METRIC" and "zaps.bogus" in info.message


async def test_unknown_pubkey_answers_zeros_with_meta(stub: pb_grpc.QueryServiceStub) -> None:
    resp = await stub.GetSummary(pb.GetSummaryRequest(pubkey="f" * 64, window=types_pb2.WindowSpec(window="30d")))
    assert all(m.value == 0 for m in resp.metrics) and len(resp.metrics) == 17
    assert resp.meta.source == types_pb2.SOURCE_CANONICAL and resp.meta.window.label == "30d"
    assert resp.meta.window.end - resp.meta.window.start == 30 * 86400


async def test_thirty_day_window_reads_day_blocks_and_edges_not_minutes(
        db: str, stub: pb_grpc.QueryServiceStub) -> None:
    _seed(db)
    spec = types_pb2.WindowSpec(start=str(NOW - 30 * 86400 - 12345), end=str(NOW - 777))
    plan = await stub.ExplainPlan(pb.ExplainPlanRequest(pubkey=PK1, window=spec))
    tiers = dict(plan.plan.tiers)
    days_covered = tiers["day"] + 8 * tiers["day8"] + 64 * tiers["day64"]
    assert 28 <= days_covered <= 30 and tiers["hour"] <= 2 * 23 and tiers["minute"] <= 2 * 59
    assert tiers["day8"] >= 2 and tiers["day"] <= 2 * 7  # 8-day blocks, not 29 day rows
    assert sum(tiers.values()) < 300
    again = await stub.ExplainPlan(pb.ExplainPlanRequest(pubkey=PK1, window=spec))
    assert again == plan  # deterministic


async def test_same_request_same_answer_and_plan(db: str, stub: pb_grpc.QueryServiceStub) -> None:
    _seed(db, 800, 10)
    req = pb.GetSummaryRequest(pubkey=PK1, window=types_pb2.WindowSpec(start=str(NOW - 9 * 86400 + 11),
                                                                      end=str(NOW - 3601)))
    first, second = await stub.GetSummary(req), await stub.GetSummary(req)
    assert first.metrics == second.metrics and first.meta.plan == second.meta.plan


async def test_counterparty_pages_follow_cursor_and_reject_a_tampered_cursor(
        db: str, stub: pb_grpc.QueryServiceStub) -> None:
    _seed(db, 1500, 20)
    req = pb.GetDrilldownRequest(pubkey=PK1, window=types_pb2.WindowSpec(window="all", now=NOW),
                                 dimension="counterparty", metric="reactions.count", page_size=3)
    seen: list[str] = []
    page = await stub.GetDrilldown(req)
    while True:
        seen += [r.key for r in page.rows]
        if not page.next_page_token:
            break
        req.page_token = page.next_page_token
        page = await stub.GetDrilldown(req)
    everything = await stub.GetDrilldown(pb.GetDrilldownRequest(
        pubkey=PK1, window=types_pb2.WindowSpec(window="all", now=NOW), dimension="counterparty",
        metric="reactions.count", page_size=500))
    assert seen == [r.key for r in everything.rows] and len(seen) > 3
    token = (await stub.GetDrilldown(pb.GetDrilldownRequest(
        pubkey=PK1, window=types_pb2.WindowSpec(window="all", now=NOW), dimension="counterparty",
        page_size=2))).next_page_token
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    _, info = await _error(stub.GetDrilldown(pb.GetDrilldownRequest(
        pubkey=PK1, window=types_pb2.WindowSpec(window="all", now=NOW), dimension="counterparty",
        page_size=2, page_token=tampered)))
    assert info.code == "INVALID_CURSOR"


async def test_over_the_sync_limit_answers_go_async(db: str) -> None:
    _seed(db, 500, 5)
    async for stub in _stub(db, sync_cost_limit=1.0):
        _, info = await _error(stub.GetSummary(pb.GetSummaryRequest(
            pubkey=PK1, window=types_pb2.WindowSpec(window="all", now=NOW), enforce_sync_limit=True,
            source=types_pb2.SOURCE_LEGACY)))
        assert info.code == "GO_ASYNC"
        est = await stub.EstimateCost(pb.EstimateCostRequest(pubkey=PK1, window=types_pb2.WindowSpec(window="all")))
        assert est.sync_limit == 1.0 and est.go_async


async def test_expired_deadline_cancels_the_sql(db: str, stub: pb_grpc.QueryServiceStub) -> None:
    """A real slow database: another session holds an exclusive lock on facts; the call's SQL is cancelled."""
    _seed(db, 200, 3)
    engine = make_engine(db, pool_size=1)
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with engine.begin() as conn:
            conn.execute(text("LOCK TABLE facts IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            release.wait(20)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    locked.wait(5)
    try:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetSummary(pb.GetSummaryRequest(
                pubkey=PK1, window=types_pb2.WindowSpec(window="all", now=NOW), source=types_pb2.SOURCE_LEGACY),
                timeout=1.0)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 5
        await asyncio.sleep(1.0)
        with engine.connect() as conn:
            waiting = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%JOIN facts f%' AND state = 'active' "
                "AND pid <> pg_backend_pid()")).scalar()
        assert waiting == 0  # statement_timeout stopped it server-side
    finally:
        release.set()
        holder.join()
        engine.dispose()


async def test_health_check_serves_and_reflection_lists_query_service(db: str) -> None:
    engine = make_engine(db, pool_size=1)
    server, port = create_server("127.0.0.1:0", engine, Settings(database_url=db))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", "canal.query.v1.QueryService"):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        refl = reflection_pb2_grpc.ServerReflectionStub(ch)

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        async for answer in refl.ServerReflectionInfo(ask()):
            names = {s.name for s in answer.list_services_response.service}
            assert "canal.query.v1.QueryService" in names
            break
    await server.stop(0)
    engine.dispose()
