"""Everything a request handler needs, built once per app: settings, clients, caches, metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from fastapi import Request
from sqlalchemy import Engine, text

from libs.config import Settings
from libs.nostr.identity import parse_key
from services.gateway.auth import Authenticator, ensure_demo_key
from services.gateway.cache import AnswerCache
from services.gateway.flags import FlagCache, serves_canonical
from services.gateway.identity import KeyResolver, loopback_only
from services.gateway.observability import HttpMetrics
from services.gateway.query_client import ChannelFactory, DataVersions, QueryClient
from services.gateway.redis_guard import RedisGuard

log = logging.getLogger(__name__)
STALE_TTL_S = 86400


@dataclass
class Gateway:
    """The gateway's dependencies (one per app, kept on `app.state.gw`)."""

    settings: Settings
    engine: Engine
    redis: RedisGuard
    client: QueryClient
    flags: FlagCache
    auth: Authenticator
    cache: AnswerCache
    versions: DataVersions
    metrics: HttpMetrics
    keys: KeyResolver = field(default_factory=KeyResolver)  # hex, npub, nprofile or NIP-05 -> hex
    _demo_key: str | None = None
    _default_pubkey: tuple[str | None, float] = (None, 0.0)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending_jobs: dict[str, asyncio.Task[tuple[str, str]]] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, engine: Engine, channel_factory: ChannelFactory) -> Gateway:
        redis = RedisGuard(settings.redis_url)
        client = QueryClient(channel_factory, settings.query_deadline_s)
        return cls(
            settings=settings, engine=engine, redis=redis, client=client, flags=FlagCache(engine),
            auth=Authenticator(engine, redis),
            cache=AnswerCache(redis, settings.cache_ttl_s, STALE_TTL_S, settings.query_deadline_s + 1.0),
            versions=DataVersions(client.data_version), metrics=HttpMetrics(),
            keys=KeyResolver(allow_private=loopback_only(settings.host)))

    async def source_for(self, pubkey_hex: str, principal_id: str) -> str:
        """canonical or legacy, as the feature flag decides for this target and principal."""
        flag = await self.flags.current()
        return "canonical" if serves_canonical(flag, pubkey_hex, principal_id) else "legacy"

    async def demo_key(self) -> str | None:
        """The demo key's secret (created in the database once); None outside demo mode."""
        if not self.settings.demo_mode():
            return None
        if self._demo_key is None:
            async with self._lock:
                if self._demo_key is None:
                    self._demo_key = await asyncio.to_thread(ensure_demo_key, self.engine,
                                                             self.settings.canal_secret)
        return self._demo_key

    async def default_pubkey(self) -> str | None:
        """DEFAULT_PUBKEY, else the first tracked key, else (demo) the target with the most facts (cached a minute)."""
        if self.settings.default_pubkey:
            return self.settings.default_pubkey
        for entry in self.settings.track.split(","):
            try:
                return parse_key(entry).pubkey
            except ValueError:
                continue
        if not self.settings.demo_mode():
            return None
        value, at = self._default_pubkey
        if time.monotonic() - at < 60 and at:
            return value
        try:
            value = await asyncio.to_thread(_busiest_target, self.engine)
        except Exception:
            log.warning("could not read the default pubkey", exc_info=True)
            value = None
        if value is not None:  # do not cache "nothing ingested yet"
            self._default_pubkey = (value, time.monotonic())
        return value

    async def close(self) -> None:
        await self.client.close()
        await self.redis.close()


def _busiest_target(engine: Engine) -> str | None:
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT p.pubkey FROM (SELECT target_id, count(*) AS n FROM facts GROUP BY target_id "
            "ORDER BY n DESC LIMIT 1) t JOIN pubkeys p ON p.id = t.target_id")).first()
    return None if row is None else str(row[0])


def gateway(request: Request) -> Gateway:
    """The Gateway of the app serving this request."""
    gw: Gateway = request.app.state.gw
    return gw
