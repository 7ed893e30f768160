"""In-process servers for the bench: the real gRPC query server and the gateway (uvicorn), each on its own loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Any

import grpc

from libs.config import Settings
from libs.db.engine import make_engine

SECRET = "canal-bench-secret-0123456789abcdef-0123456789"


def bench_settings(url: str, **overrides: Any) -> Settings:
    """Settings for in-process services: this database, answer cache off, no Redis, no metrics ports."""
    base: dict[str, Any] = {"database_url": url, "redis_url": None, "cache_ttl_s": 0, "canal_secret": SECRET,
                            "metrics_port_base": 0,
                            "demo": False, "relays": "", "track": "", "log_level": "WARNING"}
    base.update(overrides)
    return Settings(**base)


class QueryServer:
    """services.query.server.create_server on 127.0.0.1 (a real port), served from a background event loop."""

    def __init__(self, url: str, pool_size: int = 4) -> None:
        from services.query.server import create_server

        self.engine = make_engine(url, pool_size=pool_size)
        self.settings = bench_settings(url)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._error: BaseException | None = None

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                server, port = create_server("127.0.0.1:0", self.engine, self.settings)
                self.loop.run_until_complete(server.start())
                self._server, self.port = server, port
            except BaseException as exc:  # reported to the starting thread
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="bench-query-server", daemon=True)
        self.thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"the query server did not start: {self._error}") from self._error

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._server.stop(0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.engine.dispose()


class GatewayServer:
    """services.gateway.app.create_app under uvicorn on 127.0.0.1, in its own process (as deployed).

    In the bench's process the gateway would share the GIL with the query server and the client,
    which adds tens of milliseconds of switching latency that a deployment never sees.
    """

    def __init__(self, url: str, query_address: str) -> None:
        import subprocess
        import sys
        import time

        import httpx

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.proc = subprocess.Popen([sys.executable, "-m", "libs.bench.servers", url, query_address, str(self.port)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway process exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the gateway did not start within 30 s")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _serve_gateway(url: str, query_address: str, port: int) -> None:
    import uvicorn

    from services.gateway.app import create_app

    app = create_app(bench_settings(url, query_addr=query_address),
                     lambda: grpc.aio.insecure_channel(query_address))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    import sys

    _serve_gateway(sys.argv[1], sys.argv[2], int(sys.argv[3]))
