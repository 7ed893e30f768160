"""Answer cache in Redis, with request coalescing and a stale fallback.

- Exact entries are keyed by the normalized request and the data version, so any ingest or
  retention run makes them unreachable (no invalidation needed); they live `ttl_s`.
- Coalescing: identical requests in one process share one computation (an asyncio task);
  across processes, the first takes a Redis lock (`SET NX PX`) and the others poll for its
  answer (or its error) instead of computing.
- Stale copies are keyed by the request without the data version (a rolling window by its
  label) and kept longer; they answer when the query service fails or is too slow.
- Without Redis, answers are computed directly and marked `bypass`.
- With `CACHE_TTL_S=0` the cache is off: every request computes, marked `bypass`, and no
  stale copy is kept (what benchmarks and debugging want; Redis still serves jobs and limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from services.gateway.errors import UpstreamError
from services.gateway.redis_guard import RedisDown, RedisGuard

Payload = dict[str, Any]
Compute = Callable[[], Awaitable[Payload]]
PREFIX = "canal:cache:v1:"
STALE_PREFIX = "canal:stale:v1:"
POLL_S = 0.02
ERROR_TTL_MS = 2000

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


def settle(cleanup: Callable[[], object]) -> Callable[[asyncio.Task[Any]], None]:
    """A done-callback for a shared task: run `cleanup`, and mark the outcome as seen (its callers may
    all have gone away, and an unseen exception would be logged as never retrieved)."""

    def done(task: asyncio.Task[Any]) -> None:
        cleanup()
        if not task.cancelled():
            task.exception()

    return done


def digest(fields: dict[str, Any]) -> str:
    """A stable hash of normalized request fields."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class AnswerCache:
    """get-or-compute for summary and drilldown answers (see the module docstring)."""

    def __init__(self, redis: RedisGuard, ttl_s: int, stale_ttl_s: int, wait_s: float) -> None:
        self.redis = redis
        self.enabled = ttl_s > 0  # CACHE_TTL_S=0 turns answer caching off: every request computes (`bypass`)
        self.ttl_s = max(1, ttl_s)
        self.stale_ttl_s = max(self.ttl_s, stale_ttl_s)
        self.wait_s = wait_s
        self._inflight: dict[str, asyncio.Task[tuple[Payload, str]]] = {}

    async def answer(self, version: str, exact: dict[str, Any], stale: dict[str, Any],
                     compute: Compute) -> tuple[Payload, str]:
        """(payload, hit|miss|bypass), or the UpstreamError of the computation."""
        if not self.enabled:
            return await compute(), "bypass"
        key = PREFIX + digest({"v": version, **exact})
        task = self._inflight.get(key)
        if task is not None:
            payload, _ = await asyncio.shield(task)
            return payload, "hit"
        task = asyncio.ensure_future(self._resolve(key, STALE_PREFIX + digest(stale), compute))
        self._inflight[key] = task
        task.add_done_callback(settle(lambda: self._inflight.pop(key, None)))
        return await asyncio.shield(task)

    async def stale(self, fields: dict[str, Any]) -> Payload | None:
        """The last good answer to this request, if one is kept."""
        try:
            raw = await self.redis.call(lambda r: r.get(STALE_PREFIX + digest(fields)))
        except RedisDown:
            return None
        return json.loads(raw) if raw else None

    async def _resolve(self, key: str, stale_key: str, compute: Compute) -> tuple[Payload, str]:
        try:
            cached = await self.redis.call(lambda r: r.get(key))
        except RedisDown:
            return await compute(), "bypass"
        if cached:
            return json.loads(cached), "hit"
        deadline = time.monotonic() + self.wait_s
        while True:
            token = secrets.token_hex(8)
            try:
                locked = await self.redis.call(self._locker(key, token))
            except RedisDown:
                return await compute(), "bypass"
            if locked:
                return await self._compute_locked(key, stale_key, token, compute)
            found = await self._wait_for_holder(key, deadline)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                return await compute(), "miss"

    def _locker(self, key: str, token: str) -> Callable[[Any], Awaitable[Any]]:
        async def take(r: Any) -> Any:
            return await r.set(key + ":lock", token, nx=True, px=int(self.wait_s * 1000) + 1000)

        return take

    async def _compute_locked(self, key: str, stale_key: str, token: str, compute: Compute) -> tuple[Payload, str]:
        """Compute as the lock holder; publish the answer (or the error) before releasing the lock."""
        await self._quietly(lambda r: r.delete(key + ":err"))
        try:
            payload = await compute()
        except UpstreamError as exc:
            error = exc.to_json()

            async def publish_error(r: Any) -> None:
                async with r.pipeline(transaction=False) as pipe:
                    pipe.set(key + ":err", error, px=ERROR_TTL_MS)
                    pipe.eval(_RELEASE, 1, key + ":lock", token)
                    await pipe.execute()

            await self._quietly(publish_error)
            raise
        except BaseException:
            await self._quietly(lambda r: r.eval(_RELEASE, 1, key + ":lock", token))
            raise
        text = json.dumps(payload, separators=(",", ":"))

        async def publish(r: Any) -> None:
            async with r.pipeline(transaction=False) as pipe:
                pipe.set(key, text, ex=self.ttl_s)
                pipe.set(stale_key, text, ex=self.stale_ttl_s)
                pipe.eval(_RELEASE, 1, key + ":lock", token)
                await pipe.execute()

        await self._quietly(publish)
        return payload, "miss"

    async def _wait_for_holder(self, key: str, deadline: float) -> tuple[Payload, str] | None:
        """Poll until the lock holder stores an answer (hit) or an error (raised); None if it vanished."""
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            try:
                value, error, lock = await self.redis.call(lambda r: r.mget(key, key + ":err", key + ":lock"))
            except RedisDown:
                return None
            if value:
                return json.loads(value), "hit"
            if error:
                raise UpstreamError.from_json(error)
            if not lock:
                return None
        return None

    async def _quietly(self, op: Callable[[Any], Awaitable[Any]]) -> None:
        with contextlib.suppress(RedisDown):
            await self.redis.call(op)
