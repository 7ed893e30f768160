"""Every way a person names a Nostr key: 64 hex, `npub1…`, `nprofile1…` (NIP-19) and NIP-05 `name@domain`.

`parse_key` is offline (hex, npub, nprofile, with an optional `nostr:` prefix). `resolve_key`
adds NIP-05: it asks `https://<domain>/.well-known/nostr.json?name=<name>` (plain http for a
loopback domain, so tests and local setups need no certificate) and returns the key the
domain names. Both raise `ValueError` with a message a person can act on.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from libs.nostr.bech32 import ProfilePointer, decode_nip19, parse_pubkey
from libs.nostr.event import is_hex64

NIP05_TIMEOUT_S = 5.0
_NIP05 = re.compile(r"^([a-z0-9._-]+)@([a-z0-9.-]+(?::\d{1,5})?)$")


@dataclass(frozen=True)
class ResolvedKey:
    """A key and where it came from (`hex`, `npub`, `nprofile`, `nip05`) plus relay hints."""

    pubkey: str
    form: str
    relays: tuple[str, ...] = ()


def parse_key(value: str) -> ResolvedKey:
    """A key given as 64 lowercase hex, npub or nprofile (optionally `nostr:`-prefixed); ValueError otherwise."""
    text = value.strip()
    if text.startswith("nostr:"):
        text = text[len("nostr:"):]
    if text.startswith("nprofile1"):
        try:
            _, pointer = decode_nip19(text)
        except ValueError as exc:
            raise ValueError(f"invalid nprofile: {exc}") from None
        assert isinstance(pointer, ProfilePointer)
        return ResolvedKey(pointer.pubkey, "nprofile", tuple(pointer.relays))
    if text.startswith("npub1"):
        return ResolvedKey(parse_pubkey(text), "npub")
    if is_hex64(text):
        return ResolvedKey(text, "hex")
    if "@" in text:
        raise ValueError(f"{value!r} looks like a NIP-05 identifier: resolve it with resolve_key")
    return ResolvedKey(parse_pubkey(text), "hex")  # raises with parse_pubkey's message


def is_nip05(value: str) -> bool:
    """True when `value` has the shape `name@domain` (NIP-05; `_@domain` is the domain's own key)."""
    return bool(_NIP05.match(value.strip().lower()))


def _scheme(domain: str) -> str:
    host = domain.rsplit(":", 1)[0] if domain.count(":") == 1 else domain
    if host == "localhost":
        return "http"
    try:
        return "http" if ipaddress.ip_address(host).is_loopback else "https"
    except ValueError:
        return "https"


Fetch = Callable[[str], dict]


def public_hosts_only(host: str) -> None:
    """ValueError unless every address `host` names is a public (global) one."""
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ValueError(f"{host} does not resolve ({exc.strerror or exc})") from None
        addresses = {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}
    if not addresses or not all(a.is_global for a in addresses):
        raise ValueError(f"{host} is not a public address; only public domains are asked")


def fetch_nostr_json(url: str, allow_private: bool = True) -> dict:
    """GET a nostr.json (no redirects: a domain may not send the caller elsewhere); with
    `allow_private=False` a domain on a loopback, private or link-local address is refused."""
    if not allow_private:
        public_hosts_only(urlsplit(url).hostname or "")
    resp = httpx.get(url, timeout=NIP05_TIMEOUT_S, follow_redirects=False, headers={"Accept": "application/json"})
    resp.raise_for_status()
    body = resp.json()
    if not isinstance(body, dict):
        raise ValueError("nostr.json is not a JSON object")
    return body


def resolve_nip05(identifier: str, fetch: Fetch = fetch_nostr_json) -> ResolvedKey:
    """The key a NIP-05 identifier names, with the relays the domain lists for it."""
    m = _NIP05.match(identifier.strip().lower())
    if not m:
        raise ValueError(f"{identifier!r} is not a NIP-05 identifier (name@domain)")
    name, domain = m.groups()
    url = f"{_scheme(domain)}://{domain}/.well-known/nostr.json?name={name}"
    try:
        body = fetch(url)
    except (httpx.HTTPError, ValueError) as exc:
        raise ValueError(f"could not read {url}: {exc}") from None
    names = body.get("names")
    pubkey = names.get(name) if isinstance(names, dict) else None
    if not isinstance(pubkey, str) or not is_hex64(pubkey):
        raise ValueError(f"{domain} does not name a key for {name!r} (no 64-hex entry in names)")
    relays = body.get("relays")
    hints = relays.get(pubkey) if isinstance(relays, dict) else None
    return ResolvedKey(pubkey, "nip05", tuple(r for r in hints or () if isinstance(r, str)))


def resolve_key(value: str, fetch: Fetch = fetch_nostr_json) -> ResolvedKey:
    """Any accepted form of a key (hex, npub, nprofile, NIP-05); ValueError names what is wrong."""
    if is_nip05(value):
        return resolve_nip05(value, fetch)
    return parse_key(value)


__all__ = ["ResolvedKey", "is_nip05", "parse_key", "resolve_key", "resolve_nip05"]
