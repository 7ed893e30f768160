"""NIP-11 relay information: the limits a relay announces, read before subscribing.

`GET http(s)://<relay>` with `Accept: application/nostr+json`. Of `limitation` we use
`max_filters` (filters per REQ), `max_subscriptions` (open REQs per connection),
`max_limit` (events one filter returns; we ask for exactly this much per backfill page),
`max_message_length` (bytes per frame we send) and `auth_required`. A relay that does not
answer, or answers something else, gets conservative defaults: NIP-11 is optional.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)
NIP11_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RelayLimits:
    """What one relay accepts; None where it announces nothing (then our own defaults apply)."""

    max_filters: int = 10
    max_subscriptions: int = 20
    max_limit: int | None = None
    max_message_length: int = 65_536
    auth_required: bool = False
    announced: bool = False


DEFAULT_LIMITS = RelayLimits()


def _positive(value: Any, default: int | None) -> int | None:
    return value if type(value) is int and value > 0 else default


def limits_from_document(doc: Any) -> RelayLimits:
    """The RelayLimits of a NIP-11 document (defaults for anything missing or malformed)."""
    lim = doc.get("limitation") if isinstance(doc, dict) else None
    if not isinstance(lim, dict):
        return RelayLimits(announced=isinstance(doc, dict))
    return RelayLimits(
        max_filters=_positive(lim.get("max_filters"), DEFAULT_LIMITS.max_filters) or DEFAULT_LIMITS.max_filters,
        max_subscriptions=_positive(lim.get("max_subscriptions"), DEFAULT_LIMITS.max_subscriptions)
        or DEFAULT_LIMITS.max_subscriptions,
        max_limit=_positive(lim.get("max_limit"), None),
        max_message_length=_positive(lim.get("max_message_length"), DEFAULT_LIMITS.max_message_length)
        or DEFAULT_LIMITS.max_message_length,
        auth_required=lim.get("auth_required") is True,
        announced=True,
    )


def info_url(relay_url: str) -> str:
    """The HTTP URL of a relay's NIP-11 document (ws -> http, wss -> https)."""
    return "http" + relay_url[2:] if relay_url.startswith("ws") else relay_url


async def fetch_limits(relay_url: str, timeout: float = NIP11_TIMEOUT_S) -> RelayLimits:
    """The relay's announced limits, or the defaults when it has no usable NIP-11 document."""
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client:
            resp = await client.get(info_url(relay_url), headers={"Accept": "application/nostr+json"})
        if resp.status_code != 200:
            return DEFAULT_LIMITS
        return limits_from_document(resp.json())
    except (httpx.HTTPError, ValueError) as exc:
        log.info("relay %s has no NIP-11 document (%s): default limits", relay_url, type(exc).__name__)
        return DEFAULT_LIMITS
