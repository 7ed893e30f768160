"""Fixtures of the ingest tests: a SQLAlchemy engine on the emptied test database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from libs.db.engine import make_engine


@pytest.fixture()
def engine(db: str) -> Iterator[Engine]:
    """An engine on the migrated, emptied database of this test."""
    eng = make_engine(db, pool_size=4)
    yield eng
    eng.dispose()
