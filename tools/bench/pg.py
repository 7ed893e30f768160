"""The bench's own embedded PostgreSQL (pgserver in `<cache>/pg`), its databases and the workload manifest."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import psycopg

from libs.db.engine import normalize_url

# The bench measures the store as `canal up` runs it: tuned for this machine by the same rules
# (libs.embedded.tune_postgres, docs/postgres-tuning.md). Bulk builds may write WAL faster than a
# 15-minute checkpoint expects; these two are the only additions, for the build's sake.
BUILD_SETTINGS = "max_wal_size=8GB,maintenance_work_mem=2GB"
REPORTED = ("server_version", "shared_buffers", "work_mem", "effective_cache_size", "max_wal_size",
            "maintenance_work_mem", "checkpoint_timeout", "wal_compression", "jit", "synchronous_commit",
            "max_parallel_workers_per_gather")


class BenchPostgres:
    """Starts (or reuses) the embedded server; stops it when the process exits."""

    def __init__(self, cache: Path) -> None:
        import pgserver

        cache.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(cache / "pg" / ".handle_pids.json")
        started = time.perf_counter()
        self.handle = pgserver.get_server(str((cache / "pg").resolve()), cleanup_mode="stop")
        self.server_url: str = self.handle.get_uri()
        from libs.config import Settings
        from libs.embedded import tune_postgres

        base = Settings()
        tune_postgres(self.handle, self.server_url,
                      base.model_copy(update={"pg_settings": ",".join(filter(None, (BUILD_SETTINGS, base.pg_settings)))}))
        self.server_url = self.handle.get_uri()
        self.start_seconds = time.perf_counter() - started

    def connect(self, database: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(self.url(database), autocommit=True)

    def url(self, database: str) -> str:
        """A plain libpq URL of `database` on this server."""
        plain = normalize_url(self.server_url).replace("postgresql+psycopg://", "postgresql://")
        base, _, query = plain.partition("?")
        return base.rsplit("/", 1)[0] + "/" + database + ("?" + query if query else "")

    def exists(self, database: str) -> bool:
        with self.connect() as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is not None

    def recreate(self, database: str) -> str:
        """Drop and create `database`; returns its URL."""
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{database}"')
        return self.url(database)

    def settings(self) -> dict[str, str]:
        with self.connect() as conn:
            return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in REPORTED}  # type: ignore[index]

    def drop(self, database: str) -> None:
        with contextlib.suppress(Exception), self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def stop(self) -> None:
        with contextlib.suppress(Exception), self.connect() as conn:
            conn.execute("CHECKPOINT")  # recycles WAL beyond max_wal_size before the shutdown
        with contextlib.suppress(Exception):
            self.handle.cleanup()


def _forget_dead_handles(path: Path) -> None:
    """pgserver stops the server when its last handle's process exits; a killed bench leaves its pid behind
    in this list, which would keep the next run from stopping the server. Drop pids that no longer exist."""
    import os

    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    alive = []
    for pid in pids if isinstance(pids, list) else []:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            continue
        except (PermissionError, ValueError, TypeError):
            pass
        alive.append(pid)
    if alive != pids:
        path.write_text(json.dumps(alive))


def head_revision(url: str) -> str:
    """The newest Alembic revision of the code (what `upgrade` would bring a database to)."""
    from alembic.script import ScriptDirectory

    from libs.db.migrate import alembic_config

    return str(ScriptDirectory.from_config(alembic_config(url)).get_current_head())


class Manifest:
    """`<cache>/manifest.json`: per database, the workload parameters it holds and its state."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        if path.exists():
            with contextlib.suppress(ValueError, OSError):
                self.data = json.loads(path.read_text())

    def get(self, database: str) -> dict[str, Any] | None:
        entry = self.data.get(database)
        return entry if isinstance(entry, dict) else None

    def put(self, database: str, entry: dict[str, Any]) -> None:
        self.data[database] = entry
        self.save()

    def mark(self, database: str, state: str) -> None:
        entry = self.get(database)
        if entry is not None:
            entry["state"] = state
            self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        tmp.replace(self.path)
