"""Servers for the bench: the real gRPC query server and the gateway (uvicorn), each in its own process."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

import grpc

from libs.config import Settings
from libs.db.engine import make_engine

SECRET = "canal-bench-secret-0123456789abcdef-0123456789"


def bench_settings(url: str, **overrides: Any) -> Settings:
    """Settings for the bench's services: this database, answer cache off, no Redis, no metrics ports."""
    base: dict[str, Any] = {"database_url": url, "redis_url": None, "cache_ttl_s": 0, "canal_secret": SECRET,
                            "metrics_port_base": 0,
                            "demo": False, "relays": "", "track": "", "log_level": "WARNING"}
    base.update(overrides)
    return Settings(**base)


class _ServerProcess:
    """A service started as `python -m tools.bench.servers KIND ...` on a free 127.0.0.1 port, in its own process
    (as deployed): in the bench's process it would share the GIL with the client, which adds milliseconds of
    thread-switching latency that a deployment never sees."""

    def __init__(self, kind: str, args: list[str], ready: Callable[[int], bool]) -> None:
        import subprocess
        import sys
        import time

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.proc = subprocess.Popen([sys.executable, "-m", "tools.bench.servers", kind, *args, str(self.port)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {kind} process exited with {self.proc.returncode}")
            with contextlib.suppress(Exception):
                if ready(self.port):
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the {kind} server did not start within 30 s")

    def stop(self) -> None:
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _grpc_serving(port: int) -> bool:
    from libs.rpc import check_health

    return bool(check_health(f"127.0.0.1:{port}", timeout=1.0))


def _http_serving(port: int) -> bool:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200


class QueryServer(_ServerProcess):
    """services.query.server.create_server (QueryService + JobsService) on 127.0.0.1, in its own process."""

    def __init__(self, url: str) -> None:
        super().__init__("query", [url], _grpc_serving)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class GatewayServer(_ServerProcess):
    """services.gateway.app.create_app under uvicorn on 127.0.0.1, in its own process."""

    def __init__(self, url: str, query_address: str) -> None:
        super().__init__("gateway", [url, query_address], _http_serving)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _serve_query(url: str, port: int) -> None:
    from services.query.server import create_server

    async def main() -> None:
        engine = make_engine(url, pool_size=4)
        server, _ = create_server(f"127.0.0.1:{port}", engine, bench_settings(url))
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def _serve_gateway(url: str, query_address: str, port: int) -> None:
    import uvicorn

    from services.gateway.app import create_app

    app = create_app(bench_settings(url, query_addr=query_address),
                     lambda: grpc.aio.insecure_channel(query_address))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    import sys

    if sys.argv[1] == "query":
        _serve_query(sys.argv[2], int(sys.argv[3]))
    else:
        _serve_gateway(sys.argv[2], sys.argv[3], int(sys.argv[4]))
