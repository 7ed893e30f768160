"""NIP-57 zap receipt validation (METRICS.md "Zaps", metrics section and precise rules).

Checks run in this order; the first failure raises
`Rejection("invalid_zap", <detail>, <message>)`:

==================  ============================================================
detail              rule
==================  ============================================================
no_bolt11           the receipt has no `bolt11` tag (with a value)
multiple_bolt11     the receipt has more than one `bolt11` tag
bad_invoice         the invoice does not decode or its signature does not check
no_amount           the invoice carries no amount (or a zero amount)
no_payment_hash     the invoice carries no payment hash
no_description      the receipt has no `description` tag (with a value)
bad_request         the first description is not JSON, not a kind 9734, or fails
                    admission (bad_json/too_large/too_many_tags/bad_id/bad_sig/
                    future); the request's Rejection is the `__cause__`
request_p_count     the request does not have exactly one `p` tag
request_multiple_e  the request has more than one `e` tag
receipt_p_count     the receipt does not have exactly one `p` tag
request_p_mismatch  the request's `p` differs from the receipt's `p`
bad_amount          the request's first `amount` value is not all ASCII digits
amount_mismatch     that amount differs from the invoice amount in msats
e_tag_mismatch      a receipt `e` value is not an `e` value of the request
a_tag_mismatch      a receipt `a` value is not an `a` value of the request
P_tag_mismatch      a receipt `P` value differs from the request's pubkey
==================  ============================================================

A tag X is `tag[0] == X` with a value `tag[1]` (one-element tags are ignored),
except `anon`, which counts with or without a value.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .event import Event, Rejection, loads_strict
from .integrity import check_integrity
from .invoices import Invoice, decode_invoice

_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class Zap:
    """A valid zap.

    `recipient` is the receipt's (= the request's) `p`; `sender` the request's
    pubkey; `msats` and `payment_hash` come from the invoice; `anon` is True when
    the request has an `anon` tag; `note_e` / `note_a` are the receipt's first
    `e` / `a` values (the target note is `note_e`, else `note_a`);
    `description_hash_mismatch` is True when the invoice's description hash is
    absent or differs from sha256 of the description tag's string.
    """

    recipient: str
    sender: str
    msats: int
    payment_hash: str
    anon: bool
    note_e: str | None
    note_a: str | None
    description_hash_mismatch: bool

    @property
    def target_note(self) -> str | None:
        """The zapped note: the receipt's first `e`, else its first `a`, else None."""
        return self.note_e if self.note_e is not None else self.note_a


def _reject(detail: str, message: str, receipt: Event) -> Rejection:
    return Rejection("invalid_zap", detail, message, receipt.id)


def _check_invoice(receipt: Event) -> Invoice:
    bolt11s = receipt.tag_values("bolt11")
    if not bolt11s:
        raise _reject("no_bolt11", "The zap receipt has no bolt11 tag.", receipt)
    if len(bolt11s) > 1:
        raise _reject(
            "multiple_bolt11",
            f"The zap receipt has {len(bolt11s)} bolt11 tags; exactly one is allowed.",
            receipt,
        )
    try:
        invoice = decode_invoice(bolt11s[0])
    except ValueError as exc:
        raise _reject("bad_invoice", f"The bolt11 invoice does not decode: {exc}.", receipt) from None
    if invoice.msats is None or invoice.msats <= 0:
        raise _reject("no_amount", "The bolt11 invoice carries no amount.", receipt)
    if invoice.payment_hash is None:
        raise _reject("no_payment_hash", "The bolt11 invoice carries no payment hash.", receipt)
    return invoice


def _check_request(receipt: Event, description: str, receive_time: int) -> Event:
    try:
        obj = loads_strict(description)
    except ValueError as exc:
        inner = Rejection("bad_json", "not_json", f"The description is not valid JSON ({exc}).")
        raise _reject(
            "bad_request", "The zap request in the description tag is not valid JSON.", receipt
        ) from inner
    try:
        request = check_integrity(obj, receive_time)
    except Rejection as inner:
        raise _reject(
            "bad_request",
            f"The zap request in the description tag fails admission ({inner.reason}: {inner.message})",
            receipt,
        ) from inner
    if request.kind != 9734:
        raise _reject(
            "bad_request",
            f"The description holds a kind {request.kind} event, not a kind 9734 zap request.",
            receipt,
        )
    return request


def validate_zap(receipt: Event, receive_time: int) -> Zap:
    """Validate a kind 9735 zap receipt (already past the other admission checks).

    Raises `Rejection("invalid_zap", detail, message)`; see the module docstring
    for the details and their order.
    """
    invoice = _check_invoice(receipt)
    assert invoice.msats is not None and invoice.payment_hash is not None
    descriptions = receipt.tag_values("description")
    if not descriptions:
        raise _reject(
            "no_description", "The zap receipt has no description tag holding the zap request.", receipt
        )
    description = descriptions[0]
    request = _check_request(receipt, description, receive_time)

    request_ps = request.tag_values("p")
    if len(request_ps) != 1:
        raise _reject(
            "request_p_count",
            f"The zap request has {len(request_ps)} p tags; exactly one is required.",
            receipt,
        )
    if len(request.tag_values("e")) > 1:
        raise _reject("request_multiple_e", "The zap request has more than one e tag.", receipt)
    receipt_ps = receipt.tag_values("p")
    if len(receipt_ps) != 1:
        raise _reject(
            "receipt_p_count",
            f"The zap receipt has {len(receipt_ps)} p tags; exactly one is required.",
            receipt,
        )
    if receipt_ps[0] != request_ps[0]:
        raise _reject(
            "request_p_mismatch", "The zap request's p tag differs from the receipt's p tag.", receipt
        )

    amounts = request.tag_values("amount")
    if amounts:
        if _DIGITS.fullmatch(amounts[0]) is None:
            raise _reject(
                "bad_amount",
                f"The zap request's amount {amounts[0]!r} is not a whole number of msats.",
                receipt,
            )
        if int(amounts[0]) != invoice.msats:
            raise _reject(
                "amount_mismatch",
                f"The zap request asks for {amounts[0]} msats but the invoice is for {invoice.msats} msats.",
                receipt,
            )

    for name in ("e", "a"):
        wanted = set(request.tag_values(name))
        for value in receipt.tag_values(name):
            if value not in wanted:
                raise _reject(
                    f"{name}_tag_mismatch",
                    f"The receipt's {name} tag {value!r} is not in the zap request.",
                    receipt,
                )
    for value in receipt.tag_values("P"):
        if value != request.pubkey:
            raise _reject(
                "P_tag_mismatch", "The receipt's P tag differs from the zap request's pubkey.", receipt
            )

    desc_hash = hashlib.sha256(description.encode("utf-8", "surrogatepass")).hexdigest()
    receipt_es = receipt.tag_values("e")
    receipt_as = receipt.tag_values("a")
    return Zap(
        recipient=receipt_ps[0],
        sender=request.pubkey,
        msats=invoice.msats,
        payment_hash=invoice.payment_hash,
        anon=request.has_tag("anon"),
        note_e=receipt_es[0] if receipt_es else None,
        note_a=receipt_as[0] if receipt_as else None,
        description_hash_mismatch=invoice.description_hash != desc_hash,
    )
