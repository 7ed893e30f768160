"""Who is asking: API keys (hashed at rest, scoped) and NIP-98 signed requests; per-principal rate limits.

API keys: `Authorization: Bearer <secret>`; the table stores sha256(secret) only. Scopes are
`read:any` (analytics of any pubkey) and `admin` (also the feature flag and every job).
NIP-98: `Authorization: Nostr <base64 kind 27235 event>` signed for this URL and method
within 60 s; each event is accepted once. Its principal may read its own pubkey only.
`create_key`, `list_keys` and `revoke_key` are what `canal keys create|list|revoke` calls.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from libs.nostr.event import Rejection
from libs.nostr.integrity import check_integrity
from services.gateway.errors import ApiError, forbidden, unauthenticated
from services.gateway.redis_guard import RedisDown, RedisGuard

SCOPES = ("read:any", "admin")
DEMO_KEY_NAME = "demo"
NIP98_KIND = 27235
NIP98_MAX_AGE_S = 60
NIP98_MAX_CHARS = 16_384
KEY_CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class Principal:
    """The caller: `key:<id>` for an API key, `nostr:<hex pubkey>` for NIP-98."""

    id: str
    scopes: frozenset[str] = frozenset()
    pubkey: str = ""
    name: str = ""

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def may_read(self, pubkey_hex: str) -> bool:
        """Keys with read:any (or admin) read any pubkey; a NIP-98 signer reads only its own."""
        return bool(self.scopes & {"read:any", "admin"}) or (bool(self.pubkey) and self.pubkey == pubkey_hex)

    def check_read(self, pubkey_hex: str) -> None:
        """403 FORBIDDEN unless this principal may read analytics of `pubkey_hex`."""
        if self.may_read(pubkey_hex):
            return
        if self.pubkey:
            raise forbidden("a NIP-98 signer may read only the analytics of its own pubkey",
                            "Sign the request with the key of the pubkey you ask about, or use an API key "
                            "with the read:any scope.")
        raise forbidden("this API key has no read scope", "Ask an operator for a key with the read:any scope.")

    def check_admin(self) -> None:
        if not self.admin:
            raise forbidden("this endpoint needs the admin scope",
                            "Use an API key created with --scope admin.")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- API keys (also the CLI's functions)

def create_key(engine: Engine, name: str, scopes: list[str] | tuple[str, ...]) -> tuple[str, str]:
    """Create an API key; returns (id, secret). The secret is shown once and stored only as sha256."""
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}")
    key_id = "key_" + secrets.token_hex(8)
    secret = "canal_" + secrets.token_urlsafe(32)
    _insert_key(engine, key_id, name, hash_secret(secret), list(dict.fromkeys(scopes)))
    return key_id, secret


def _insert_key(engine: Engine, key_id: str, name: str, key_hash: str, scopes: list[str]) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO api_keys (id, name, key_hash, scopes, created_at) "
                          "VALUES (:i, :n, :h, CAST(:s AS jsonb), :t)"),
                     {"i": key_id, "n": name, "h": key_hash, "s": json.dumps(scopes), "t": int(time.time())})


def list_keys(engine: Engine) -> list[dict[str, Any]]:
    """Every key (never its secret): id, name, scopes, created_at, revoked_at."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, name, scopes, created_at, revoked_at FROM api_keys "
                                 "ORDER BY created_at, id")).all()
    return [{"id": r[0], "name": r[1], "scopes": list(r[2] or []), "created_at": r[3], "revoked_at": r[4]}
            for r in rows]


def revoke_key(engine: Engine, key_id: str) -> bool:
    """Revoke a key by id; False when no such unrevoked key exists. Effective within seconds."""
    with engine.begin() as conn:
        res = conn.execute(text("UPDATE api_keys SET revoked_at = :t WHERE id = :i AND revoked_at IS NULL"),
                           {"t": int(time.time()), "i": key_id})
    return bool(res.rowcount)


def lookup_key(engine: Engine, secret: str) -> Principal | None:
    """The principal of an unrevoked key with this secret, or None."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT id, name, scopes FROM api_keys WHERE key_hash = :h AND revoked_at IS NULL"),
                           {"h": hash_secret(secret)}).first()
    if row is None:
        return None
    return Principal(id=f"key:{row[0]}", scopes=frozenset(row[2] or []), name=row[1] or "")


def demo_secret(canal_secret: str) -> str:
    """The demo key's secret, derived from CANAL_SECRET so every gateway process agrees on it."""
    digest = hmac.new(canal_secret.encode(), b"canal demo api key v1", hashlib.sha256).hexdigest()
    return "canal_demo_" + digest[:40]


def ensure_demo_key(engine: Engine, canal_secret: str) -> str | None:
    """Create (once) the local read:any+admin key named "demo"; its secret, or None if it was revoked."""
    secret = demo_secret(canal_secret)
    key_hash = hash_secret(secret)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT key_hash, revoked_at FROM api_keys WHERE name = :n"),
                            {"n": DEMO_KEY_NAME}).all()
    if any(r[0] == key_hash for r in rows):
        return secret if any(r[0] == key_hash and r[1] is None for r in rows) else None
    with contextlib.suppress(IntegrityError):  # another gateway process created it first
        _insert_key(engine, "key_demo_" + key_hash[:12], DEMO_KEY_NAME, key_hash, list(SCOPES))
    return secret


# ---------------------------------------------------------------- NIP-98

def _b64decode(token: str) -> bytes:
    """Standard or URL-safe base64, padding optional."""
    padded = token + "=" * (-len(token) % 4)
    if "-" in token or "_" in token:
        return base64.urlsafe_b64decode(padded)
    return base64.b64decode(padded, validate=True)


def verify_nip98(token: str, url: str, method: str, body: bytes, now: int) -> tuple[str, str]:
    """Check a NIP-98 token for this request; returns (event id, signer pubkey) or raises 401."""
    if len(token) > NIP98_MAX_CHARS:
        raise unauthenticated("the NIP-98 token is too large")
    try:
        obj = json.loads(_b64decode(token))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise unauthenticated("the NIP-98 token is not base64-encoded JSON",
                              "Send Authorization: Nostr <base64 of the signed kind 27235 event>.") from None
    try:
        ev = check_integrity(obj, now)
    except Rejection as rej:
        raise unauthenticated(f"the NIP-98 event is not valid ({rej.reason}: {rej.message})",
                              "Sign the kind 27235 event with your key (NIP-98).") from None
    if ev.kind != NIP98_KIND:
        raise unauthenticated(f"the NIP-98 event has kind {ev.kind}, not {NIP98_KIND}",
                              "Sign a kind 27235 event (NIP-98).")
    if abs(now - ev.created_at) > NIP98_MAX_AGE_S:
        raise unauthenticated("the NIP-98 event has expired (created_at is more than 60 s from now)",
                              "Sign a fresh event for every request and check your clock.")
    u = ev.first_tag("u")
    if u is None or u[1] != url:
        raise unauthenticated("the NIP-98 u tag does not match the request URL",
                              "Put the absolute request URL, query string included, in the u tag.")
    m = ev.first_tag("method")
    if m is None or m[1].upper() != method.upper():
        raise unauthenticated("the NIP-98 method tag does not match the request method",
                              f"Put ['method', '{method.upper()}'] in the event's tags.")
    payload = ev.first_tag("payload")
    if payload is not None and body and payload[1] != hashlib.sha256(body).hexdigest():
        raise unauthenticated("the NIP-98 payload tag does not match the request body",
                              "Put the sha256 hex of the exact request body in the payload tag.")
    return ev.id, ev.pubkey


class Authenticator:
    """Turns an Authorization header into a Principal, with short caches and a replay set."""

    def __init__(self, engine: Engine, redis: RedisGuard) -> None:
        self.engine = engine
        self.redis = redis
        self._keys: dict[str, tuple[Principal | None, float]] = {}
        self._inflight: dict[str, asyncio.Future[Principal | None]] = {}
        self._seen: dict[str, float] = {}

    async def authenticate(self, authorization: str | None, url: str, method: str, body: bytes) -> Principal:
        if not authorization:
            raise unauthenticated("this endpoint needs credentials")
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            principal = await self._key(value)
            if principal is None:
                raise unauthenticated("the API key is not valid or was revoked",
                                      "Check the key, or ask an operator for a new one.")
            return principal
        if scheme.lower() == "nostr" and value:
            event_id, pubkey = verify_nip98(value, url, method, body, int(time.time()))
            await self._first_use(event_id)
            return Principal(id=f"nostr:{pubkey}", pubkey=pubkey)
        raise unauthenticated("the Authorization scheme is not supported",
                              "Use 'Bearer <api key>' or 'Nostr <base64 NIP-98 event>'.")

    async def _key(self, secret: str) -> Principal | None:
        if len(secret) > 512:
            return None
        digest = hash_secret(secret)
        cached = self._keys.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = fut
        try:
            principal = await asyncio.to_thread(lookup_key, self.engine, secret)
        except Exception as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: followers re-raise it
            raise
        finally:
            self._inflight.pop(digest, None)
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[digest] = (principal, time.monotonic() + KEY_CACHE_SECONDS)
        fut.set_result(principal)
        return principal

    async def _first_use(self, event_id: str) -> None:
        """401 when this NIP-98 event was used before (Redis SET NX; in-process when Redis is down)."""
        key = f"canal:nip98:{event_id}"
        ttl = NIP98_MAX_AGE_S * 2 + 5
        try:
            fresh = await self.redis.call(lambda r: r.set(key, b"1", nx=True, ex=ttl))
        except RedisDown:
            now = time.monotonic()
            if len(self._seen) > 50_000:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
            fresh = self._seen.get(event_id, 0.0) <= now
            if fresh:
                self._seen[event_id] = now + ttl
        if not fresh:
            raise unauthenticated("this NIP-98 event was already used (replay)",
                                  "Sign a new event for every request.")


async def enforce_rate_limit(redis: RedisGuard, principal: Principal, per_minute: int) -> None:
    """429 RATE_LIMITED with Retry-After past `per_minute` requests in the current minute (fixed window).

    Without Redis the limit is not enforced: availability wins over metering.
    """
    if per_minute <= 0:
        return
    now = int(time.time())
    key = f"canal:rl:{principal.id}:{now // 60}"

    async def bump(r: Any) -> int:
        async with r.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 61)
            count, _ = await pipe.execute()
        return int(count)

    try:
        count = await redis.call(bump)
    except RedisDown:
        return
    if count > per_minute:
        retry = max(1, 60 - now % 60)
        raise ApiError(429, "RATE_LIMITED", f"more than {per_minute} requests this minute",
                       f"Wait {retry} s before retrying.", {"Retry-After": str(retry)})
