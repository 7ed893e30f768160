"""Run the whole suite (`canal up`) as a real process tree for end-to-end, browser and failure tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Suite:
    """A running `canal up` and how to reach it."""

    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    base_url: str
    log: Path
    api_key: str = ""
    default_pubkey: str = ""
    descendants: list[psutil.Process] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def child(self, name: str) -> psutil.Process:
        """The process running `canal serve <name>`."""
        for p in psutil.Process(self.proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if p.cmdline()[-2:] == ["serve", name]:
                    return p
        raise LookupError(name)


def suite_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a fully embedded suite on free ports, data in `data_dir`."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "RELAYS")}
    env.update({
        "DATA_DIR": str(data_dir), "PORT": str(free_port()),
        "INGEST_ADDR": f"127.0.0.1:{free_port()}", "COMPACTOR_ADDR": f"127.0.0.1:{free_port()}",
        "QUERY_ADDR": f"127.0.0.1:{free_port()}", "DEMO_RELAY_PORT": str(free_port()),
        "METRICS_PORT_BASE": "0", "CANAL_SECRET": "test-secret-0123456789abcdef",
        "COMPACT_MINUTE_EVERY_S": "2", "COMPACT_HOUR_EVERY_S": "5", "COMPACT_DAY_EVERY_S": "10",
    })
    env.update(extra)
    return env


def start_suite(env: dict[str, str], log: Path, timeout: float = 240) -> Suite:
    """Start `canal up` and wait until the gateway is ready and the demo config is served."""
    out = log.open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli.main", "up"], env=env, stdout=out, stderr=out,
                            cwd=env.get("CANAL_CWD", os.getcwd()))
    suite = Suite(proc, env, f"http://127.0.0.1:{env['PORT']}", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"canal up exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(suite.base_url + "/readyz", timeout=2).status_code == 200:
                config = httpx.get(suite.base_url + "/ui/config.json", timeout=5).json()
                suite.api_key = config.get("api_key") or ""
                suite.default_pubkey = config.get("default_pubkey") or ""
                suite.descendants = psutil.Process(proc.pid).children(recursive=True)
                return suite
        time.sleep(0.5)
    stop_suite(suite)
    raise RuntimeError(f"canal up not ready within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def stop_suite(suite: Suite, timeout: float = 60) -> int:
    """Ctrl-C (SIGINT) the supervisor and wait; returns its exit code."""
    if suite.proc.poll() is None:
        suite.proc.send_signal(signal.SIGINT)
        try:
            suite.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            suite.proc.kill()
            suite.proc.wait()
    return int(suite.proc.returncode)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):  # type: ignore[no-untyped-def]
    """Poll until predicate() is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # not ready yet; kept for the failure message
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
