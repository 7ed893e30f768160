"""Test/demo key handling and NIP-01 event signing (BIP-340 via coincurve)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from coincurve import PrivateKey

from .integrity import compute_id

_CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def generate_privkey() -> bytes:
    """A fresh random 32-byte secp256k1 secret key."""
    return PrivateKey().secret


def privkey_from_seed(seed: str | bytes) -> bytes:
    """A deterministic 32-byte secret key derived from `seed` (for reproducible demo data only)."""
    data = seed.encode("utf-8") if isinstance(seed, str) else seed
    digest = hashlib.sha256(b"canal-demo-key:" + data).digest()
    while not 0 < int.from_bytes(digest, "big") < _CURVE_ORDER:
        digest = hashlib.sha256(digest).digest()
    return digest


def pubkey_of(priv: bytes) -> str:
    """The x-only (BIP-340) public key of `priv`, as 64 lowercase hex."""
    return PrivateKey(priv).public_key_xonly.format().hex()


def sign_event(
    priv: bytes,
    kind: int,
    content: str,
    tags: Sequence[Sequence[str]],
    created_at: int,
    aux: bytes | None = None,
) -> dict[str, Any]:
    """Build and sign a NIP-01 event dict.

    The BIP-340 auxiliary randomness is `aux` when given (32 bytes), else
    sha256(id), so the same inputs always give the same signed event.
    """
    key = PrivateKey(priv)
    pubkey = key.public_key_xonly.format().hex()
    tag_lists = [list(t) for t in tags]
    event_id = compute_id(pubkey, created_at, kind, tag_lists, content)
    id_bytes = bytes.fromhex(event_id)
    aux_bytes = aux if aux is not None else hashlib.sha256(id_bytes).digest()
    sig = key.sign_schnorr(id_bytes, aux_bytes)
    return {
        "id": event_id,
        "pubkey": pubkey,
        "created_at": created_at,
        "kind": kind,
        "tags": tag_lists,
        "content": content,
        "sig": sig.hex(),
    }
