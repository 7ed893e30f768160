"""The gateway under test: the real query server (with a counting interceptor) and the app on uvicorn."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine

from libs.config import Settings
from libs.db.engine import make_engine
from libs.nostr.keys import privkey_from_seed, pubkey_of, sign_event
from services.gateway.app import create_app
from services.gateway.auth import create_key
from services.ingest.server import create_server as create_ingest_server
from services.ingest.store import IngestStore, RawItem
from services.query.server import create_server

ALICE = privkey_from_seed("gateway-test-alice")
BOB = privkey_from_seed("gateway-test-bob")
CAROL = privkey_from_seed("gateway-test-carol")
ALICE_PK, BOB_PK, CAROL_PK = pubkey_of(ALICE), pubkey_of(BOB), pubkey_of(CAROL)


class CountingInterceptor(grpc.aio.ServerInterceptor):
    """Counts calls per method on the real server; optionally delays or fails (UNAVAILABLE) some calls."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.delays: dict[str, float] = {}
        self.failures: Counter[str] = Counter()

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        name = details.method.rsplit("/", 1)[-1]
        self.calls[name] += 1
        handler = await continuation(details)
        delay = self.delays.get(name)
        fail = self.failures[name] > 0
        if fail:
            self.failures[name] -= 1
        if handler is None or handler.unary_unary is None or not (delay or fail):
            return handler
        inner = handler.unary_unary

        async def slow(request: Any, context: Any) -> Any:
            if delay:
                await asyncio.sleep(delay)
            if fail:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "injected outage")
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(slow, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


@dataclass
class Stack:
    """A running query server + gateway, and handy clients."""

    settings: Settings
    engine: Engine
    app: FastAPI
    base_url: str
    query_port: int
    counter: CountingInterceptor
    query_server: grpc.aio.Server
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, key: str | None = "reader", **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30, verify=False, **kwargs)

    async def stop_query(self) -> None:
        await self.query_server.stop(0)


def test_settings(db_url: str, redis_url: str | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": db_url, "redis_url": redis_url, "demo": False,
                              "rate_limit_per_minute": 100_000, "query_deadline_s": 5.0, "cache_ttl_s": 60}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1, port 0; yields the base URL."""
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it (no 40 ms stalls)
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    while not uv.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        uv.should_exit = True
        await task
        sock.close()


def gateway_app(settings: Settings, engine: Engine, query_port: int) -> FastAPI:
    """A gateway app whose gRPC channel goes to the query server on `query_port`."""
    return create_app(settings, query_channel_factory=lambda: grpc.aio.insecure_channel(f"127.0.0.1:{query_port}"),
                      engine=engine)


@contextlib.asynccontextmanager
async def running_stack(db_url: str, redis_url: str | None, **overrides: Any) -> AsyncIterator[Stack]:
    """Start the query server (port 0) and the gateway on uvicorn (port 0); stop both after."""
    settings = test_settings(db_url, redis_url, **overrides)
    engine = make_engine(db_url, pool_size=4)
    counter = CountingInterceptor()
    server, port = create_server("127.0.0.1:0", engine, settings, [counter])
    await server.start()
    settings.query_addr = f"127.0.0.1:{port}"
    ingest_server, ingest_port = create_ingest_server("127.0.0.1:0", engine, settings)  # admin: tracked keys
    await ingest_server.start()
    settings.ingest_addr = f"127.0.0.1:{ingest_port}"
    app = gateway_app(settings, engine, port)
    try:
        async with serving(app) as base_url:
            stack = Stack(settings, engine, app, base_url, port, counter, server)
            stack.keys["reader"] = create_key(engine, "reader", ["read:any"])[1]
            stack.keys["admin"] = create_key(engine, "admin", ["read:any", "admin"])[1]
            stack.keys["noscope"] = create_key(engine, "noscope", [])[1]
            yield stack
    finally:
        await server.stop(0)
        await ingest_server.stop(0)
        engine.dispose()


def _event(priv: bytes, kind: int, content: str, tags: list[list[str]], created_at: int) -> dict[str, Any]:
    return sign_event(priv, kind, content, tags, created_at)


def seed(engine: Engine, now: int | None = None) -> dict[str, Any]:
    """Alice posts a note; Bob and Carol react to it, Bob reposts it. Times are an hour ago."""
    t = (now or int(time.time())) - 3600
    note = _event(ALICE, 1, "hello", [], t)
    events = [
        note,
        _event(BOB, 7, "+", [["e", note["id"]], ["p", ALICE_PK]], t + 10),
        _event(CAROL, 7, "🤙", [["e", note["id"]], ["p", ALICE_PK]], t + 20),
        _event(BOB, 6, "", [["e", note["id"]], ["p", ALICE_PK]], t + 30),
    ]
    IngestStore(engine).ingest([RawItem(e, "gateway-test", json.dumps(e)) for e in events])
    return {"note": note["id"], "t": t}


def nip98(priv: bytes, url: str, method: str = "GET", created_at: int | None = None,
          kind: int = 27235, extra: list[list[str]] | None = None) -> str:
    """An Authorization header value for NIP-98."""
    tags = [["u", url], ["method", method], *(extra or [])]
    ev = sign_event(priv, kind, "", tags, created_at if created_at is not None else int(time.time()))
    return "Nostr " + base64.b64encode(json.dumps(ev).encode()).decode()


async def wait_for(predicate: Any, timeout: float = 20.0, every: float = 0.1) -> Any:
    """Poll an async predicate until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(every)
