"""Fixtures of the gateway tests: a running stack on the real query service, PostgreSQL and Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from libs.db.migrate import upgrade
from tests.conftest import with_database
from tests.services.gateway.helpers import Stack, running_stack


@pytest_asyncio.fixture(loop_scope="session")
async def stack(db: str, redis_url: str) -> AsyncIterator[Stack]:
    """Query server + gateway on an emptied database and Redis."""
    async with running_stack(db, redis_url) as s:
        yield s


@pytest.fixture(scope="session")
def shared_db(pg_server: str) -> str:
    """A database of its own for the shared stacks, so no test's truncation pulls keys from under them."""
    url = with_database(pg_server, f"canal_gw_{os.getpid()}_{uuid.uuid4().hex[:6]}")
    upgrade(url)
    return url


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def shared_stack(shared_db: str, redis_server: str) -> AsyncIterator[Stack]:
    """One stack for a module's read-only tests (no per-test truncation: faster)."""
    async with running_stack(shared_db, redis_server) as s:
        yield s
