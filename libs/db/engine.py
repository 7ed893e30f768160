"""Engines and sessions for PostgreSQL through SQLAlchemy 2 and psycopg 3."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker


def normalize_url(url: str) -> str:
    """Accept `postgres://` and `postgresql://` and select the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, pool_size: int = 5, **kwargs: object) -> Engine:
    """A pooled synchronous engine (pre-ping so a restarted server is survived)."""
    return create_engine(
        normalize_url(url), pool_size=pool_size, max_overflow=10, pool_pre_ping=True, **kwargs  # type: ignore[arg-type]
    )


def make_async_engine(url: str, pool_size: int = 5) -> AsyncEngine:
    """A pooled asyncio engine on psycopg 3."""
    return create_async_engine(normalize_url(url), pool_size=pool_size, max_overflow=10, pool_pre_ping=True)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine per URL per process."""
    return make_engine(url)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A transaction: commit on success, roll back on any error."""
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session, session.begin():
        yield session


def check_database(url: str, timeout_s: int = 5) -> None:
    """Connect once and run `SELECT 1`; raises on failure."""
    eng = create_engine(normalize_url(url), connect_args={"connect_timeout": timeout_s}, poolclass=None)
    try:
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        eng.dispose()
