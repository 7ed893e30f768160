"""The `bolt11` PyPI package as the reference: decoding to cross-check `libs.nostr.invoices.decode_invoice`,
and encoding real signed invoices for test events (a test dependency only)."""

from __future__ import annotations

import hashlib

import bolt11 as _bolt11pkg
from coincurve import PublicKey

from libs.nostr.invoices import Invoice


def decode_invoice_bolt11(bolt11_str: str) -> Invoice:
    """Reference decoder: the `bolt11` package (slow), same result type and signature check.

    Uses `ignore_exceptions=True` so a missing payment secret or description
    does not fail decoding (zap rules only need amount and payment hash).
    """
    try:
        inv = _bolt11pkg.decode(bolt11_str, ignore_exceptions=True)
    except Exception as exc:  # the package raises many exception types
        raise ValueError(f"invoice does not decode: {exc!r}") from None
    return Invoice(
        int(inv.amount_msat) if inv.amount_msat is not None else None,
        inv.payment_hash if inv.has_payment_hash else None,
        inv.description_hash,
        inv.currency,
        inv.date,
        inv.payee or "",
        inv.description,
    )


def make_invoice(
    msats: int,
    payment_hash_hex: str,
    node_privkey: bytes,
    timestamp: int,
    description_hash_hex: str | None = None,
    description: str = "",
    currency: str = "bc",
) -> str:
    """Encode a real, signed BOLT11 invoice (mainnet `lnbc` by default) with the `bolt11` package.

    Carries the amount, payment hash, a payment secret derived from the payment
    hash, and either `description_hash_hex` (`h`) or `description` (`d`).
    The payee (`n`) field is included, so decoding verifies against it.
    """
    if msats <= 0:
        raise ValueError("msats must be positive")
    secret = hashlib.sha256(b"canal-payment-secret:" + bytes.fromhex(payment_hash_hex)).hexdigest()
    tag_char = _bolt11pkg.TagChar
    tags = _bolt11pkg.Tags(
        [
            _bolt11pkg.Tag(tag_char.payment_hash, payment_hash_hex),
            _bolt11pkg.Tag(tag_char.payment_secret, secret),
        ]
    )
    if description_hash_hex is not None:
        tags.add(tag_char.description_hash, description_hash_hex)
    else:
        tags.add(tag_char.description, description)
    payee = PublicKey.from_secret(node_privkey).format(compressed=True).hex()
    tags.add(tag_char.payee, payee)
    invoice = _bolt11pkg.Bolt11(
        currency=currency, date=timestamp, tags=tags, amount_msat=_bolt11pkg.MilliSatoshi(msats)
    )
    return _bolt11pkg.encode(invoice, private_key=node_privkey.hex(), keep_payee=True)
