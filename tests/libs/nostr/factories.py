"""Deterministic keys, signed events and real signed zap receipts for the libs.nostr tests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from libs.nostr.keys import privkey_from_seed, pubkey_of, sign_event
from tests.libs.nostr.bolt11_reference import make_invoice

REAL_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "nostr-real"

ALICE = privkey_from_seed("alice")
BOB = privkey_from_seed("bob")
CAROL = privkey_from_seed("carol")
PROVIDER = privkey_from_seed("zap-provider")
NODE = privkey_from_seed("lightning-node")
ALICE_PK = pubkey_of(ALICE)
BOB_PK = pubkey_of(BOB)
CAROL_PK = pubkey_of(CAROL)
PROVIDER_PK = pubkey_of(PROVIDER)

T0 = 1_700_000_000
NOTE_ID = "ab" * 32


def signed(
    priv: bytes = ALICE,
    kind: int = 1,
    content: str = "hello",
    tags: Sequence[Sequence[str]] = (),
    created_at: int = T0,
) -> dict[str, Any]:
    """A valid signed event dict."""
    return sign_event(priv, kind, content, tags, created_at)


def zap_request(
    sender: bytes = BOB,
    recipient: str = ALICE_PK,
    msats: int | None = 21_000,
    extra_tags: Sequence[Sequence[str]] = (),
    p_tags: Sequence[str] | None = None,
    created_at: int = T0,
) -> dict[str, Any]:
    """A signed kind 9734 zap request (p = recipient unless `p_tags` is given)."""
    tags: list[list[str]] = [["relays", "wss://relay.example"]]
    for p in [recipient] if p_tags is None else p_tags:
        tags.append(["p", p])
    if msats is not None:
        tags.append(["amount", str(msats)])
    tags.extend(list(t) for t in extra_tags)
    return sign_event(sender, 9734, "", tags, created_at)


def zap_receipt(
    request: dict[str, Any] | str | None = None,
    invoice_msats: int = 21_000,
    recipient: str = ALICE_PK,
    extra_tags: Sequence[Sequence[str]] = (),
    bolt11: Sequence[str] | None = None,
    p_tags: Sequence[str] | None = None,
    description_hash: str | None = "auto",
    created_at: int = T0 + 5,
) -> dict[str, Any]:
    """A signed kind 9735 receipt with a real signed mainnet invoice.

    `request` is a dict (serialized as the description), a raw description
    string, or None (a default zap request). `bolt11` overrides the bolt11 tag
    values; `p_tags` the receipt's p values; `description_hash="auto"` uses
    sha256 of the description, None puts a plain `d` description instead.
    """
    if request is None:
        request = zap_request()
    description = request if isinstance(request, str) else json.dumps(request, separators=(",", ":"))
    if description_hash == "auto":
        description_hash = hashlib.sha256(description.encode("utf-8")).hexdigest()
    payment_hash = hashlib.sha256(description.encode("utf-8") + str(invoice_msats).encode()).hexdigest()
    invoice = make_invoice(invoice_msats, payment_hash, NODE, created_at - 1, description_hash)
    tags: list[list[str]] = [["p", p] for p in ([recipient] if p_tags is None else p_tags)]
    for value in [invoice] if bolt11 is None else bolt11:
        tags.append(["bolt11", value])
    tags.append(["description", description])
    tags.extend(list(t) for t in extra_tags)
    return sign_event(PROVIDER, 9735, "", tags, created_at)
