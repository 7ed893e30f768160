"""IngestService over real gRPC (in-process server on port 0): IngestEvents, GetIngestStatus, health."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Engine

from canal.ingest.v1 import ingest_service_pb2 as pb
from canal.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from libs.config import Settings
from services.ingest.server import SERVICE_NAME, create_server
from tests.services.ingest.helpers import (
    ALICE,
    BOB,
    A,
    client,
    ev,
    facts,
    wait_until,
    zap_receipt,
    zap_request,
)
from tools.demo.relay import start_local_relay


async def _requests(lines: list[str]) -> AsyncIterator[pb.IngestEventsRequest]:
    for i, line in enumerate(lines):
        yield pb.IngestEventsRequest(event_json=line, origin="test-push", request_id=f"r{i}")


async def test_ingest_events_answers_one_outcome_per_event_and_totals(engine: Engine) -> None:
    now = int(time.time())
    note = ev(ALICE, 1, "pushed", t=now - 60)
    reaction = ev(BOB, 7, "+", [["e", note["id"]], ["p", A]], now - 30)
    bad_sig = {**ev(BOB, 1, "x", t=now - 10), "sig": "00" * 64}
    lines = [json.dumps(note), json.dumps(["EVENT", "sub", reaction]), json.dumps(note), "{not json",
             json.dumps(bad_sig), json.dumps(zap_receipt(zap_request(msats=1), 21_000)), ""]
    server, port = create_server("127.0.0.1:0", engine, Settings())
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            resp = await pb_grpc.IngestServiceStub(channel).IngestEvents(_requests(lines))
            status = await pb_grpc.IngestServiceStub(channel).GetIngestStatus(pb.GetIngestStatusRequest())
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    finally:
        await server.stop(None)
    got = [(o.index, o.outcome, o.reason, o.detail) for o in resp.outcomes]
    assert got == [
        (0, pb.OUTCOME_ADMITTED, "", ""),
        (1, pb.OUTCOME_ADMITTED, "", ""),
        (2, pb.OUTCOME_DUPLICATE, "", ""),
        (3, pb.OUTCOME_REJECTED, "bad_json", "not_json"),
        (4, pb.OUTCOME_REJECTED, "bad_sig", "bad_sig"),
        (5, pb.OUTCOME_REJECTED, "invalid_zap", "amount_mismatch"),
        (6, pb.OUTCOME_REJECTED, "bad_json", "empty"),
    ]
    assert resp.outcomes[0].event_id == note["id"] and resp.outcomes[4].event_id == bad_sig["id"]
    assert (resp.admitted, resp.duplicates, resp.rejected) == (2, 1, 4)
    assert (A, reaction["id"], "REACTION") in {f[:3] for f in facts(engine)}
    assert (status.events_admitted, status.events_rejected, status.facts) == (2, 4, 2)
    assert status.as_of >= now
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_ingest_events_batches_long_streams(engine: Engine) -> None:
    lines = [json.dumps(ev(ALICE, 1, f"n{i}", t=1_700_000_000 + i)) for i in range(1_205)]
    server, port = create_server("127.0.0.1:0", engine, Settings())
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            resp = await pb_grpc.IngestServiceStub(channel).IngestEvents(_requests(lines + lines[:5]))
    finally:
        await server.stop(None)
    assert (resp.admitted, resp.duplicates, resp.rejected) == (1_205, 5, 0)
    assert [o.index for o in resp.outcomes] == list(range(1_210))


async def test_get_ingest_status_reports_each_relay_cursor_lag_and_counts(engine: Engine) -> None:
    now = int(time.time())
    relay, url = await start_local_relay([ev(ALICE, 1, "on the relay", t=now - 100)])
    rc = client(url, engine)
    server, port = create_server("127.0.0.1:0", engine, Settings(), clients=[rc])
    await server.start()
    rc.start()
    try:
        await wait_until(lambda: rc.idle, what="the client to catch up")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.IngestServiceStub(channel)
            up = await stub.GetIngestStatus(pb.GetIngestStatusRequest())
            relay.stop()
            await wait_until(lambda: not rc.connected, what="the disconnect")
            down = await stub.GetIngestStatus(pb.GetIngestStatusRequest())
    finally:
        await rc.stop()
        await server.stop(None)
        relay.stop()
    (r,) = up.relays
    assert (r.url, r.cursor, r.lag_seconds, r.connected) == (url, now - 100, 0, True)
    assert r.events_received >= 1 and r.last_event_at == now - 100
    assert up.as_of >= now and up.events_admitted == 1
    (d,) = down.relays
    assert d.connected is False and d.last_error
