"""Relay URLs and NIP-65 relay lists (kind 10002).

NIP-65: a kind 10002 event's `r` tags name relays; the optional third element `read` or
`write` limits a relay to one use, none means both. Authors publish to their *write* relays;
others who tag them publish to their *read* relays too (the outbox model), so events by a key
are found on its write relays and events about it on its read relays.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

RELAY_LIST_KIND = 10002


def normalize_relay_url(url: str) -> str | None:
    """A ws(s) relay URL in one spelling (lowercase scheme and host, no default port, no trailing slash,
    no query or fragment), or None when it is not a usable relay URL."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("ws", "wss") or not parts.hostname or parts.username or parts.password:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and not (scheme == "ws" and port == 80) and not (scheme == "wss" and port == 443):
        host = f"{host}:{port}"
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, host, path, "", ""))


def is_private_relay(url: str) -> bool:
    """True for relays on loopback, private, link-local or unspecified addresses (and `localhost`)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".local"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified or ip.is_reserved


@dataclass(frozen=True)
class RelayList:
    """A key's NIP-65 relays: where it writes (its own events) and where it reads (events tagging it)."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()


def parse_relay_list(tags: Sequence[Sequence[str]]) -> RelayList:
    """The read and write relays of a kind 10002 event's tags (unusable URLs skipped, order kept)."""
    read: list[str] = []
    write: list[str] = []
    for tag in tags:
        if len(tag) < 2 or tag[0] != "r":
            continue
        url = normalize_relay_url(tag[1])
        if url is None:
            continue
        marker = tag[2] if len(tag) > 2 else ""
        if marker in ("", "read") and url not in read:
            read.append(url)
        if marker in ("", "write") and url not in write:
            write.append(url)
    return RelayList(tuple(read), tuple(write))
