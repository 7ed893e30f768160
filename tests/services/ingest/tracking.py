"""A TRACK-mode ingest under test (tracker + relay clients, as `serve` wires them) and a reference to judge it.

The reference ingests every event the relays ever accepted (replaced versions included) into a
database of its own and answers with the legacy raw scan: what canal should say if it had seen
everything. `compare_all` asks both the same questions over gRPC and returns every difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from sqlalchemy import Engine, text

from canal.common.v1 import types_pb2
from canal.query.v1 import query_service_pb2_grpc as pb_grpc
from libs.config import Settings
from libs.db.engine import make_engine
from libs.db.migrate import upgrade
from libs.nostr.keys import privkey_from_seed
from services.ingest.interest import InterestStore
from services.ingest.relay_client import RelayClient
from services.ingest.store import IngestStore
from services.ingest.tracker import Tracker
from services.query.server import create_server
from tests.conftest import with_database
from tests.services.ingest.helpers import client, item
from tools.drift.compare import Answer, Probe, fetch
from tools.drift.sampling import Target
from tools.drift.windows import WindowCase

SERVICE_KEY = privkey_from_seed("track-service-key")
WINDOWS = ("all", "365d", "30d", "7d", "24h", "1h")
DIMENSIONS = ("summary", "note", "counterparty", "kind")


@dataclass
class TrackedIngest:
    """Tracker and relay clients running in the test's event loop."""

    engine: Engine
    tracker: Tracker
    clients: list[RelayClient]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def ready(self, pubkey: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT ready_at IS NOT NULL FROM tracked_keys WHERE pubkey = :p"),
                                {"p": pubkey}).scalar() is True

    def event_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(text("SELECT id FROM events"))}

    async def track(self, pubkey: str) -> None:
        await asyncio.to_thread(InterestStore(self.engine).add_key, pubkey, "test")
        self.tracker.poke()

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await self.task
        await asyncio.gather(*(c.stop() for c in self.clients))


async def start_tracked(engine: Engine, seeds: Sequence[str], keys: Sequence[str] = (),
                        **overrides: Any) -> TrackedIngest:
    """TRACK mode on `seeds` for `keys`, with test timings and NIP-65 discovery allowed on loopback."""
    settings = Settings(database_url="postgresql://unused", relays=",".join(seeds), track_refresh_s=0.1,
                        relay_discovery_private=True, backfill_days=30, **overrides)
    clients: list[RelayClient] = []
    tracker = Tracker(engine, settings, clients)

    def spawn(url: str, discovered: bool = False) -> RelayClient:
        return client(url, engine, interest=tracker, auth_key=SERVICE_KEY, chunk=settings.interest_chunk,
                      give_up_after=3 if discovered else None)

    tracker.spawn = spawn
    for key in keys:
        await asyncio.to_thread(InterestStore(engine).add_key, key, "test")
    await tracker.refresh(discover=False)
    clients += [spawn(url) for url in seeds]
    for c in clients:
        c.start()
    ingest = TrackedIngest(engine, tracker, clients)
    ingest.task = asyncio.create_task(tracker.run(ingest.stop))
    return ingest


@contextlib.asynccontextmanager
async def reference_db(pg_server: str) -> AsyncIterator[Engine]:
    """An empty migrated database of its own (dropped engine at the end)."""
    url = with_database(pg_server, f"canal_ref_{uuid.uuid4().hex[:8]}")
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url, pool_size=4)
    try:
        yield engine
    finally:
        engine.dispose()


def ingest_all(engine: Engine, events: Sequence[dict[str, Any]], receive_time: int) -> None:
    """Every event into the store (the reference), in batches, as an import would."""
    store = IngestStore(engine)
    for start in range(0, len(events), 500):
        store.ingest([item(e, "reference") for e in events[start : start + 500]], receive_time)


@contextlib.asynccontextmanager
async def query_stub(engine: Engine) -> AsyncIterator[pb_grpc.QueryServiceStub]:
    """A query server on `engine` (in this loop) and a blocking stub for `tools.drift.compare.fetch`."""
    settings = Settings(database_url="postgresql://unused", canal_secret="x" * 32, sync_cost_limit=1e12)
    server, port = create_server("127.0.0.1:0", engine, settings)
    await server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.QueryServiceStub(channel)
    finally:
        channel.close()
        await server.stop(0)


async def answers(stub: Any, pubkey: str, source: int, now: int) -> dict[tuple[str, str], Answer]:
    """Every (window, dimension) answer for one key."""
    out: dict[tuple[str, str], Answer] = {}
    target = Target(pubkey, 0, 0, 0, "", "tracked")
    for label in WINDOWS:
        for dim in DIMENSIONS:
            probe = Probe(target, WindowCase("rolling", label), dim)
            out[(label, dim)] = await asyncio.to_thread(fetch, stub, probe, source, now, 30.0)
    return out


async def differences(canal: Engine, reference: Engine, pubkey: str, now: int) -> list[str]:
    """Where canal's canonical answers differ from the reference's legacy answers (every window and dimension)."""
    async with query_stub(canal) as got_stub, query_stub(reference) as want_stub:
        got = await answers(got_stub, pubkey, types_pb2.SOURCE_CANONICAL, now)
        want = await answers(want_stub, pubkey, types_pb2.SOURCE_LEGACY, now)
    diffs: list[str] = []
    for key, answer in want.items():
        mine = got[key]
        for row in sorted(set(answer.rows) | set(mine.rows)):
            a, b = answer.rows.get(row, {}), mine.rows.get(row, {})
            for metric in sorted(set(a) | set(b)):
                if a.get(metric, 0) != b.get(metric, 0):
                    diffs.append(f"{key} row {row!r} {metric}: reference {a.get(metric, 0)}, canal {b.get(metric, 0)}")
    return diffs


async def summary(engine: Engine, pubkey: str, now: int, window: str = "all",
                  source: int = types_pb2.SOURCE_LEGACY) -> Answer:
    async with query_stub(engine) as stub:
        probe = Probe(Target(pubkey, 0, 0, 0, "", "tracked"), WindowCase("rolling", window), "summary")
        return await asyncio.to_thread(fetch, stub, probe, source, now, 30.0)
