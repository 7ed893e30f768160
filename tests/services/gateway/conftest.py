"""Fixtures of the gateway tests: a running stack on the real query service, PostgreSQL and Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
import pytest_asyncio

from libs.db.engine import normalize_url
from libs.db.migrate import upgrade
from tests.services.gateway.helpers import Stack, running_stack


@pytest.fixture(autouse=True)
def _servers_of_one_kind(request: pytest.FixtureRequest) -> None:
    """Run embedded+embedded and machine+machine, not the mixed pairs: they add time, not coverage here."""
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params if callspec is not None else {}
    if "pg_server" in params and "redis_server" in params and params["pg_server"] != params["redis_server"]:
        pytest.skip("mixed embedded/machine server pairs add nothing to the gateway tests")


@pytest_asyncio.fixture(loop_scope="session")
async def stack(db: str, redis_url: str) -> AsyncIterator[Stack]:
    """Query server + gateway on an emptied database and Redis."""
    async with running_stack(db, redis_url) as s:
        yield s


@pytest.fixture(scope="session")
def shared_db(pg_server: str) -> str:
    """A database of its own for the shared stacks, so no test's truncation pulls keys from under them."""
    name = f"canal_gw_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    plain = normalize_url(pg_server).replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = plain.partition("?")
    url = base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")
    upgrade(url)
    return url


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def shared_stack(shared_db: str, redis_server: str) -> AsyncIterator[Stack]:
    """One stack for a module's read-only tests (no per-test truncation: faster)."""
    async with running_stack(shared_db, redis_server) as s:
        yield s
