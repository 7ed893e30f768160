"""Shared pieces of the chaos tests: an event loop thread, suite database access, events, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import text

from libs.db.engine import make_engine
from tests.e2e.suite import free_port as free_port  # re-exported for the chaos tests
from tests.e2e.suite import wait_for

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running in a thread of the test process (LocalRelay serves from it)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="chaos-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Any, *args: Any) -> Any:
        async def wrapper() -> Any:
            return fn(*args)

        return self.run(wrapper())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        with contextlib.suppress(Exception):
            self.loop.close()


@contextlib.contextmanager
def short_tmp(prefix: str) -> Iterator[Path]:
    """A folder under /tmp with a short path (unix socket paths are limited to ~100 bytes)."""
    import shutil

    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def suite_db_url(data_dir: Path) -> str:
    """The URL of a running suite's embedded PostgreSQL (read from its postmaster.pid; no new handle)."""
    from pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir / "pg")
    if info is None:
        raise RuntimeError(f"no embedded PostgreSQL in {data_dir}")
    return str(info.get_uri())


class Db:
    """A tiny SQL helper on one engine."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url, pool_size=2)

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())

    def close(self) -> None:
        self.engine.dispose()


def serve_env(**extra: str) -> dict[str, str]:
    """Environment for `canal serve <service>` processes started by a test."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "RELAYS")}
    env.update({"METRICS_PORT_BASE": "0", "CANAL_SECRET": "chaos-secret-0123456789abcdef", "DEMO": "false",
                "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def wait_until(predicate: Any, timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll predicate() until truthy (exceptions count as not yet); its value, or AssertionError."""
    return wait_for(predicate, timeout, what, interval=every)


@dataclass(frozen=True)
class Answer:
    """One request of a RequestLoop: when it ran, its status (0: no answer) and meta.source/cache."""

    began: float
    ended: float
    status: int
    source: str = ""
    cache: str = ""
    error: str = ""


class RequestLoop:
    """`workers` concurrent clients asking `next_request(rng) -> (path, params)` in a thread until stopped."""

    def __init__(self, base_url: str, headers: dict[str, str], next_request: Callable[[random.Random], Any],
                 workers: int = 4) -> None:
        self.base_url, self.headers, self.next_request, self.workers = base_url, headers, next_request, workers
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _worker(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        while not self._stop.is_set():
            path, params = self.next_request(rng)
            began = time.monotonic()
            try:
                resp = await client.get(path, params=params)
            except httpx.HTTPError as exc:
                self.answers.append(Answer(began, time.monotonic(), 0, error=type(exc).__name__))
                await asyncio.sleep(0.02)
                continue
            meta: dict[str, Any] = {}
            with contextlib.suppress(ValueError, AttributeError):
                meta = resp.json().get("meta") or {}
            self.answers.append(Answer(began, time.monotonic(), resp.status_code, str(meta.get("source", "")),
                                       str(meta.get("cache", ""))))

    async def _main(self) -> None:
        limits = httpx.Limits(keepalive_expiry=2.0)  # under uvicorn's 5 s keep-alive timeout
        async with httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=15, limits=limits) as client:
            await asyncio.gather(*(self._worker(client, random.Random(i)) for i in range(self.workers)))

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


KNOWN_CAUSES = {
    "raised by servicer method [/grpc.health.v1.Health/Check]":
        "the query/ingest gRPC health check raises TypeError under the OpenTelemetry aio server interceptor "
        "(libs/rpc.py registers the synchronous HealthServicer on a grpc.aio server), so /readyz never "
        "answers 200; see the libs/rpc.py patch in docs/reports/proposed-service-patches.md",
}


def start_suite_or_explain(env: dict[str, str], log: Path, timeout: float = 120) -> Any:
    """tests.e2e.suite.start_suite, failing with one line naming a known cause when `canal up` never gets ready."""
    from tests.e2e.suite import start_suite

    try:
        return start_suite(env, log, timeout=timeout)
    except RuntimeError:
        text_ = log.read_text(errors="replace") if log.exists() else ""
        for needle, cause in KNOWN_CAUSES.items():
            if needle in text_:
                raise AssertionError(f"canal up did not become ready: {cause} (log: {log})") from None
        raise
