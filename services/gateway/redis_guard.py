"""Redis for the gateway, behind a short circuit breaker.

Redis is an accelerator here (cache, coalescing, rate limits, NIP-98 replay set), never a
dependency of the sync path: when a command fails, the guard reports Redis as down for a
moment so that every request does not pay a timeout, and callers carry on without it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
T = TypeVar("T")


class RedisDown(Exception):
    """Redis is not configured, not reachable, or recently failed."""


class RedisGuard:
    """An asyncio Redis client plus a breaker: after a failure, skip Redis for `cooldown_s`."""

    def __init__(self, url: str | None, cooldown_s: float = 1.0, timeout_s: float = 0.5) -> None:
        self.url = url
        self.cooldown_s = cooldown_s
        self.client: aioredis.Redis | None = None
        if url:
            self.client = aioredis.Redis.from_url(url, socket_timeout=timeout_s,
                                                  socket_connect_timeout=timeout_s)
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        return self.client is not None and time.monotonic() >= self._down_until

    async def call(self, op: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """Run `op(client)`; RedisDown when Redis cannot be used right now."""
        if self.client is None:
            raise RedisDown("Redis is not configured")
        if not self.available:
            raise RedisDown("Redis failed recently")
        try:
            return await op(self.client)
        except (TimeoutError, RedisError, OSError) as exc:
            if time.monotonic() >= self._down_until:
                log.warning("redis unavailable (%s); serving without it for %.1f s", type(exc).__name__,
                            self.cooldown_s)
            self._down_until = time.monotonic() + self.cooldown_s
            raise RedisDown(type(exc).__name__) from None

    async def ping(self) -> bool:
        """True when Redis answers now (ignores the breaker; used by /readyz)."""
        if self.client is None:
            return False
        try:
            return bool(await self.client.ping())
        except (TimeoutError, RedisError, OSError):
            return False

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
