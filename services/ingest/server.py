"""The ingest process: gRPC `IngestService` plus one relay client per configured relay.

`create_server` builds the gRPC server (tests bind port 0 in process); `serve` runs it
with the relay clients (the demo relay, in demo mode, is a relay like any other: `canal up` runs it)
and the Prometheus exporter until SIGTERM/SIGINT, then stops the clients (committing
their in-flight batches) before the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

import grpc
from prometheus_client import start_http_server
from sqlalchemy import Engine, text

from canal.ingest.v1 import ingest_service_pb2 as pb
from canal.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from libs.config import Settings, get_settings
from libs.db.engine import make_engine
from libs.nostr.bech32 import npub_encode
from libs.nostr.event import Rejection, parse_line
from libs.nostr.identity import ResolvedKey, resolve_key
from libs.rpc import CanalError, Servicer
from libs.rpc import create_server as rpc_server
from libs.service_key import service_key
from services.ingest.batches import ingest_resilient
from services.ingest.interest import InterestStore, TrackedKey
from services.ingest.lines import safe_text
from services.ingest.metrics import RELAY_LAG, observe_batch
from services.ingest.relay_client import HEARTBEAT_S, InterestView, RelayClient, RelayStatus
from services.ingest.store import BatchResult, IngestStore, RawItem
from services.ingest.tracker import Tracker

__all__ = ["SERVICE_NAME", "IngestService", "create_server", "main", "serve"]

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IngestService"].full_name
MAX_BATCH = 1000
GRACE_S = 5.0
EXACT_COUNT_BELOW = 100_000  # below this estimate, count facts exactly
DISCOVERED_ATTEMPTS = 4  # a relay found through NIP-65 that never answers in this many attempts is dropped

T = TypeVar("T")
OUTCOMES = {"admitted": pb.OUTCOME_ADMITTED, "duplicate": pb.OUTCOME_DUPLICATE, "rejected": pb.OUTCOME_REJECTED}


def request_item(req: pb.IngestEventsRequest) -> RawItem:
    """One pushed event (or relay frame) as a RawItem; unparsable text is its `bad_json` Rejection."""
    value: object
    try:
        value = parse_line(req.event_json)
    except Rejection as rej:
        value = rej
    if value is None:
        value = Rejection("bad_json", "empty", "`event_json` is empty.")
    return RawItem(value, req.origin or "grpc", safe_text(req.event_json))


class IngestService(Servicer, pb_grpc.IngestServiceServicer):
    """Internal push of raw events, the ingest status (relay cursors, lag, totals) and tracked keys."""

    span_prefix = "IngestService"

    def __init__(self, engine: Engine, settings: Settings, clients: Sequence[RelayClient] = (),
                 tracker: Tracker | None = None) -> None:
        self._engine = engine
        self._settings = settings
        self._store = IngestStore(engine)
        self._clients = clients  # not copied: serve() adds relays found through NIP-65 later
        self._tracker = tracker
        self._interest = InterestStore(engine)

    async def IngestEvents(
        self, request_iterator: AsyncIterator[pb.IngestEventsRequest], context: grpc.aio.ServicerContext
    ) -> pb.IngestEventsResponse:
        resp = pb.IngestEventsResponse()
        batch: list[RawItem] = []
        offset = 0
        async for req in request_iterator:
            batch.append(request_item(req))
            if len(batch) >= MAX_BATCH:
                await self._commit(batch, offset, resp, context)
                offset += len(batch)
                batch = []
        if batch:
            await self._commit(batch, offset, resp, context)
        return resp

    async def _commit(self, batch: list[RawItem], offset: int, resp: pb.IngestEventsResponse,
                      context: grpc.aio.ServicerContext) -> None:
        started = time.perf_counter()

        def commit() -> BatchResult:
            try:
                return ingest_resilient(self._store, batch, int(time.time()))
            except Exception as exc:  # the database is down: nothing of this batch was committed
                log.exception("IngestEvents batch at %d failed", offset)
                raise CanalError(
                    "INGEST_FAILED",
                    f"events {offset}..{offset + len(batch) - 1} were not committed: {type(exc).__name__}",
                    "earlier events of the stream were committed; retrying the whole stream is safe (duplicates "
                    "are free)", status=grpc.StatusCode.UNAVAILABLE) from None

        result = await self.handle(context, "IngestEvents", commit)
        observe_batch(result, time.perf_counter() - started)
        if self._tracker is not None:
            await self._tracker.learned(batch, result)
        for o in result.outcomes:
            resp.outcomes.append(pb.EventOutcome(
                index=offset + o.index, event_id=o.event_id or "", outcome=OUTCOMES[o.status],
                reason=o.reason, detail=o.detail, message=o.message))
        resp.admitted += result.count("admitted")
        resp.duplicates += result.count("duplicate")
        resp.rejected += result.count("rejected")

    async def GetIngestStatus(
        self, request: pb.GetIngestStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetIngestStatusResponse:
        now = int(time.time())
        totals, rows, facts = await self.handle(context, "GetIngestStatus", lambda: _read_status(self._engine))
        relays = _relay_statuses(self._clients, rows, now)
        return pb.GetIngestStatusResponse(
            relays=[pb.RelayStatus(url=s.url, cursor=s.cursor, lag_seconds=s.lag_seconds, connected=s.connected,
                                   events_received=s.events_received, last_error=s.last_error,
                                   last_event_at=s.last_event_at) for s in relays],
            events_admitted=totals.get("admitted", 0),
            events_rejected=totals.get("rejected", 0),
            facts=facts,
            as_of=_as_of(self._clients, totals.get("last_commit_at", 0), now),
        )


    async def TrackKey(self, request: pb.TrackKeyRequest, context: grpc.aio.ServicerContext) -> pb.TrackKeyResponse:
        def track() -> tuple[TrackedKey, bool]:
            resolved = _resolve(request.key)
            label = request.key.strip() if resolved.form == "nip05" else ""
            return self._interest.add_key(resolved.pubkey, request.source or "api", label)

        key, added = await self.handle(context, "TrackKey", track)
        if self._tracker is not None:
            self._tracker.poke()
        return pb.TrackKeyResponse(key=tracked_proto(key), added=added, track_mode=self._tracker is not None)

    async def UntrackKey(self, request: pb.UntrackKeyRequest,
                         context: grpc.aio.ServicerContext) -> pb.UntrackKeyResponse:
        removed = await self.handle(context, "UntrackKey",
                                    lambda: self._interest.remove_key(_resolve(request.key).pubkey))
        if self._tracker is not None:
            self._tracker.poke()
        return pb.UntrackKeyResponse(removed=removed)

    async def ListTrackedKeys(self, request: pb.ListTrackedKeysRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListTrackedKeysResponse:
        keys = await self.handle(context, "ListTrackedKeys", self._interest.tracked)
        return pb.ListTrackedKeysResponse(
            keys=[tracked_proto(k) for k in keys], track_mode=self._tracker is not None,
            discovered_relays=list(self._tracker.discovered) if self._tracker is not None else [])


def _resolve(value: str) -> ResolvedKey:
    """A key in any accepted form (NIP-05 over HTTP: call it in a worker thread), else INVALID_PUBKEY."""
    try:
        return resolve_key(value)
    except ValueError as exc:
        raise CanalError("INVALID_PUBKEY", str(exc), "Give 64 lowercase hex, an npub1…, an nprofile1… or a NIP-05 "
                         "name@domain that resolves.", "key") from None


def tracked_proto(key: TrackedKey) -> pb.TrackedKey:
    """The wire form of a tracked_keys row."""
    return pb.TrackedKey(pubkey=key.pubkey, npub=npub_encode(key.pubkey), added_at=key.added_at, source=key.source,
                         label=key.label, ready_at=key.ready_at or 0,
                         state=pb.TRACK_STATE_READY if key.ready_at is not None else pb.TRACK_STATE_BACKFILLING)


def _read_status(engine: Engine) -> tuple[dict[str, int], list[dict[str, Any]], int]:
    with engine.connect() as conn:
        totals = {r[0]: int(r[1]) for r in conn.execute(text("SELECT name, value FROM ingest_state"))}
        rows = [dict(r._mapping) for r in conn.execute(text(
            "SELECT relay, filter_hash, since, last_event_at, last_seen_at, connected, events_received, last_error "
            "FROM relay_cursors ORDER BY relay, last_seen_at DESC"))]
        estimate = conn.execute(text("SELECT reltuples FROM pg_class WHERE oid = 'facts'::regclass")).scalar()
        facts = int(estimate or 0)
        if facts < EXACT_COUNT_BELOW:  # never analyzed (-1) or small: the exact count is cheap
            facts = int(conn.execute(text("SELECT count(*) FROM facts")).scalar() or 0)
    return totals, rows, facts


def _relay_statuses(clients: Sequence[RelayClient], rows: list[dict[str, Any]], now: int) -> list[RelayStatus]:
    """Running clients report themselves; relays known only from relay_cursors (another process) from their row."""
    out = {c.url: c.status(now) for c in clients}
    for row in rows:  # newest row per relay first
        if row["relay"] in out:
            continue
        fresh = row["connected"] and now - int(row["last_seen_at"]) <= 3 * HEARTBEAT_S
        lag = 0 if fresh else now - int(row["last_seen_at"] or row["since"])
        out[row["relay"]] = RelayStatus(row["relay"], int(row["since"]), max(0, lag), bool(fresh), bool(fresh),
                                        int(row["events_received"]), row["last_error"], int(row["last_event_at"]),
                                        int(row["last_seen_at"]))
    return [out[k] for k in sorted(out)]


def _as_of(clients: Sequence[RelayClient], last_commit_at: int, now: int) -> int:
    """Up to when every received event is committed: now while every client is idle, else the last commit."""
    if clients and all(c.idle for c in clients):
        return now
    return last_commit_at


def create_server(address: str, engine: Engine, settings: Settings, clients: Sequence[RelayClient] = (),
                  interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
                  tracker: Tracker | None = None) -> tuple[grpc.aio.Server, int]:
    """A not-yet-started grpc.aio server with IngestService, health (SERVING) and reflection."""

    def register(server: grpc.aio.Server) -> list[str]:
        pb_grpc.add_IngestServiceServicer_to_server(IngestService(engine, settings, clients, tracker), server)
        return [SERVICE_NAME]

    server, port, _ = rpc_server(address, register, interceptors)
    return server, port


async def serve(settings: Settings | None = None) -> None:
    """Run gRPC + relay clients (+ TRACK mode's tracker, + Prometheus) until SIGTERM/SIGINT."""
    from libs.telemetry import instrument_grpc_server, instrument_sqlalchemy, setup_tracing

    settings = settings or get_settings()
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL must be set (`canal up` starts the embedded server and sets it)")
    setup_tracing("canal-ingest", settings)
    engine = make_engine(settings.database_url, pool_size=10)
    instrument_sqlalchemy(engine)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    auth_key = await asyncio.to_thread(service_key, engine, settings.service_nsec)
    clients: list[RelayClient] = []  # the service reads this list: relays found through NIP-65 join it later

    def spawn(url: str, interest: InterestView | None, discovered: bool = False) -> RelayClient:
        return RelayClient(url, engine, interest, on_batch=observe_batch, auth_key=auth_key,
                           chunk=settings.interest_chunk, give_up_after=DISCOVERED_ATTEMPTS if discovered else None)

    tracker: Tracker | None = None
    has_keys: bool = await asyncio.to_thread(_has_tracked_keys, engine)
    if settings.track.strip() or has_keys:
        tracker = Tracker(engine, settings, clients, lambda url, found: spawn(url, tracker, found))
        await tracker.add_configured(settings.track)
        await tracker.refresh(discover=False)
    clients += [spawn(url, tracker) for url in settings.relay_list()]
    server, port = create_server(settings.ingest_addr, engine, settings, clients, [instrument_grpc_server()],  # type: ignore[list-item]
                                 tracker)
    if settings.metrics_port(1):
        start_http_server(settings.metrics_port(1), addr=settings.metrics_host)
    await server.start()
    log.info("ingest serving gRPC on port %d; relays: %s", port, ", ".join(settings.relay_list()) or "none")
    for client in clients:
        client.start()
    tracking = asyncio.create_task(tracker.run(stop)) if tracker is not None else None
    gauges = asyncio.create_task(_export_lag(clients))
    await stop.wait()
    gauges.cancel()
    if tracking is not None:
        await tracking
    await asyncio.gather(*(c.stop() for c in clients))  # commits each in-flight batch
    await server.stop(GRACE_S)
    engine.dispose()


def _has_tracked_keys(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT EXISTS (SELECT 1 FROM tracked_keys)")).scalar() is True


async def _export_lag(clients: Sequence[RelayClient]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            for c in clients:
                RELAY_LAG.labels(c.url).set(c.status().lag_seconds)
            await asyncio.sleep(2)


def main() -> None:
    """Entry point: `python -m services.ingest.server`."""
    from libs.telemetry import setup_logging

    setup_logging("ingest", get_settings().log_level)
    asyncio.run(serve())


if __name__ == "__main__":
    main()
