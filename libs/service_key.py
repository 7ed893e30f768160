"""The secret keys canal signs with (NIP-42 AUTH to relays, NIP-85 assertions).

A key comes from the configuration (`SERVICE_NSEC`: nsec or 64 hex) or, unset, is generated
on first use and stored in `service_keys`, so every process and every restart signs with the
same key. Concurrent first uses agree: the first insert wins and everyone reads it back.
"""

from __future__ import annotations

import time

from sqlalchemy import Engine, text

from libs.nostr.bech32 import decode_nip19
from libs.nostr.event import is_hex64
from libs.nostr.keys import generate_privkey, pubkey_of

DEFAULT = "default"


def parse_secret(value: str) -> bytes:
    """A configured secret key (nsec1… or 64 lowercase hex) as 32 bytes; ValueError otherwise."""
    text = value.strip()
    if text.startswith("nsec1"):
        hrp, secret = decode_nip19(text)
        assert isinstance(secret, str)
        return bytes.fromhex(secret)
    if is_hex64(text):
        return bytes.fromhex(text)
    raise ValueError("SERVICE_NSEC must be an nsec1… string or 64 lowercase hex characters")


def service_key(engine: Engine, configured: str | None = None, name: str = DEFAULT) -> bytes:
    """The service's secret key: the configured one, else the stored one, else a new stored one."""
    if configured:
        return parse_secret(configured)
    fresh = generate_privkey().hex()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO service_keys (name, secret_hex, created_at) VALUES (:n, :s, :t) "
                          "ON CONFLICT (name) DO NOTHING"), {"n": name, "s": fresh, "t": int(time.time())})
        stored = conn.execute(text("SELECT secret_hex FROM service_keys WHERE name = :n"), {"n": name}).scalar_one()
    return bytes.fromhex(stored)


def service_pubkey(engine: Engine, configured: str | None = None, name: str = DEFAULT) -> str:
    """The public key (64 hex) of `service_key`."""
    return pubkey_of(service_key(engine, configured, name))
