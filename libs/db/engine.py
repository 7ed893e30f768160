"""Engines and sessions for PostgreSQL through SQLAlchemy 2 and psycopg 3."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, text


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


def check_database(url: str, timeout_s: int = 5) -> None:
    """Connect once and run `SELECT 1`; raises on failure."""
    eng = create_engine(normalize_url(url), connect_args={"connect_timeout": timeout_s}, poolclass=None)
    try:
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        eng.dispose()
