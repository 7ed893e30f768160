"""Target keys in every form a Nostr client has them: 64 hex, npub, nprofile (NIP-19, `nostr:` prefix
allowed) and NIP-05 `name@domain`, resolved to hex before a request is validated further.

hex, npub and nprofile are parsed offline (`libs.nostr.identity.parse_key`). A NIP-05 identifier is
resolved by the gateway (`https://<domain>/.well-known/nostr.json?name=<name>`), after the caller has
authenticated, with the answer kept `ttl_s` (a failure `failure_ttl_s`, so a bad identifier does not
make the gateway ask its domain on every retry). Only public domains are asked: a domain that is an
address or resolves to a loopback, private or link-local address is refused (the gateway must not be a
way to reach its own network), unless `allow_private`: a gateway listening on loopback only (`make run`,
tests) allows them, as its callers are on the same machine anyway.
Every failure is `400 INVALID_PUBKEY` naming what went wrong.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import OrderedDict

from libs.nostr.identity import NIP05_TIMEOUT_S, fetch_nostr_json, is_nip05, parse_key, resolve_nip05
from services.gateway.errors import FIELD_HINTS, ApiError

NIP05_HINT = ("A NIP-05 identifier (name@domain) resolves through https://<domain>/.well-known/nostr.json; check "
              "the spelling, or pass the key as 64 hex, npub1… or nprofile1….")
CACHE_SIZE = 4096


def loopback_only(host: str) -> bool:
    """True when the gateway listens on loopback only (its clients are on this machine, as in `make run`):
    then NIP-05 domains on this machine or its network may be asked too."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def invalid_pubkey(message: str, hint: str = FIELD_HINTS["pubkey"]) -> ApiError:
    return ApiError(400, "INVALID_PUBKEY", message, hint)


class KeyResolver:
    """Any accepted form of a key as 64 hex (NIP-05 answers cached), else ApiError INVALID_PUBKEY."""

    def __init__(self, allow_private: bool = False, ttl_s: float = 300.0, failure_ttl_s: float = 30.0) -> None:
        self.allow_private = allow_private
        self.ttl_s, self.failure_ttl_s = ttl_s, failure_ttl_s
        self._known: OrderedDict[str, tuple[float, str | None, str]] = OrderedDict()  # id -> (until, hex, error)

    async def pubkey(self, value: str | None) -> str:
        """The hex key `value` names."""
        text = (value or "").strip()
        if not text:
            raise invalid_pubkey("pubkey is required")
        if not is_nip05(text):
            try:
                return parse_key(text).pubkey
            except ValueError as exc:
                raise invalid_pubkey(str(exc)) from None
        identifier = text.lower()
        known = self._known.get(identifier)
        if known is None or known[0] < time.monotonic():
            known = await self._resolve(identifier)
        _, hexkey, error = known
        if hexkey is None:
            raise invalid_pubkey(f"the NIP-05 identifier {identifier} could not be resolved: {error}", NIP05_HINT)
        return hexkey

    async def _resolve(self, identifier: str) -> tuple[float, str | None, str]:
        def fetch(url: str) -> dict:
            return fetch_nostr_json(url, self.allow_private)

        try:
            resolved = await asyncio.wait_for(asyncio.to_thread(resolve_nip05, identifier, fetch),
                                              NIP05_TIMEOUT_S + 1.0)
            entry: tuple[float, str | None, str] = (time.monotonic() + self.ttl_s, resolved.pubkey, "")
        except TimeoutError:
            entry = (time.monotonic() + self.failure_ttl_s, None, "its domain did not answer in time")
        except ValueError as exc:
            entry = (time.monotonic() + self.failure_ttl_s, None, str(exc))
        self._known[identifier] = entry
        self._known.move_to_end(identifier)
        while len(self._known) > CACHE_SIZE:
            self._known.popitem(last=False)
        return entry
