"""The worker's HTTP endpoints on METRICS_PORT_BASE+4, which its Kubernetes probes and Prometheus use:
/healthz answers from the worker's event loop, /readyz only once startup is done and Redis answers,
/metrics carries the job metrics; and `canal serve worker` (the Deployment's command) serves them."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.query import worker

REPO = Path(__file__).resolve().parents[3]


def free_port_pair() -> int:
    """A base such that base+4 (the worker's port) is free."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port - worker.METRICS_OFFSET > 1024:
            return port - worker.METRICS_OFFSET
    raise RuntimeError("no free port")


async def _get(port: int, path: str, method: str = "GET") -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.request(method, f"http://127.0.0.1:{port}{path}")


@pytest.mark.asyncio(loop_scope="session")
async def test_probe_server_answers_health_readiness_and_metrics() -> None:
    ready = False

    async def is_ready() -> bool:
        return ready

    server = await worker.start_probe_server("127.0.0.1", 0, is_ready)
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await _get(port, "/healthz")).status_code == 200
        assert (await _get(port, "/readyz")).status_code == 503
        ready = True
        assert (await _get(port, "/readyz")).status_code == 200
        worker.JOBS.labels("succeeded").inc(0)
        metrics = await _get(port, "/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        assert "canal_worker_jobs_total" in metrics.text and "canal_worker_job_duration_seconds" in metrics.text
        assert (await _get(port, "/nope")).status_code == 404
        assert (await _get(port, "/metrics", "POST")).status_code == 405
        head = await _get(port, "/healthz", "HEAD")
        assert head.status_code == 200 and head.content == b""
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_silent_client_does_not_wedge_the_probe_server() -> None:
    async def is_ready() -> bool:
        return True

    server = await worker.start_probe_server("127.0.0.1", 0, is_ready)
    port = server.sockets[0].getsockname()[1]
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)  # connects, never sends
        assert (await _get(port, "/healthz")).status_code == 200
        writer.close()
    finally:
        server.close()


def test_canal_serve_worker_serves_its_probes_and_metrics(db: str, redis_url: str, tmp_path: Path) -> None:
    base = free_port_pair()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "RELAYS")}
    env.update({"DATABASE_URL": db, "REDIS_URL": redis_url, "METRICS_PORT_BASE": str(base),
                "METRICS_HOST": "127.0.0.1", "QUERY_ADDR": "127.0.0.1:1", "LOG_LEVEL": "WARNING",
                "DEMO": "false", "PYTHONUNBUFFERED": "1"})
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli.main", "serve", "worker"], env=env, cwd=REPO,
                            stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{base + worker.METRICS_OFFSET}"
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(url + "/readyz", timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, (tmp_path / "worker.log").read_text()[-2000:]
        assert httpx.get(url + "/healthz", timeout=2).status_code == 200
        assert "canal_worker_jobs_total" in httpx.get(url + "/metrics", timeout=2).text
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
