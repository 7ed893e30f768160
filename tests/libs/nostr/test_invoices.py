"""BOLT11 decode (signature checked) and encode with the bolt11 package."""

from __future__ import annotations

import bolt11
import pytest

from libs.nostr.bech32 import bech32_decode, bech32_encode
from libs.nostr.invoices import Invoice, decode_invoice
from libs.nostr.keys import privkey_from_seed
from tests.libs.nostr.bolt11_reference import decode_invoice_bolt11, make_invoice

NODE = privkey_from_seed("node")
PH = "11" * 32
DH = "22" * 32


def test_make_invoice_is_a_real_signed_mainnet_invoice() -> None:
    inv = make_invoice(21_000, PH, NODE, 1_700_000_000, DH)
    assert inv.startswith("lnbc210n1")
    decoded = decode_invoice(inv)
    assert (decoded.msats, decoded.payment_hash, decoded.description_hash) == (21_000, PH, DH)
    assert decoded.currency == "bc" and decoded.timestamp == 1_700_000_000
    ref = bolt11.decode(inv)  # the package's own decoder, with all its checks
    assert ref.amount_msat == 21_000 and ref.payment_hash == PH and ref.payee == decoded.payee


@pytest.mark.parametrize("msats", [1, 999, 1_000, 21_000, 100_000_000_000, 123_456_789])
def test_amounts_round_trip_and_agree_with_bolt11_package(msats: int) -> None:
    inv = make_invoice(msats, PH, NODE, 1_600_000_000, None, description="coffee")
    decoded = decode_invoice(inv)
    assert decoded.msats == msats
    assert decoded.description == "coffee" and decoded.description_hash is None
    assert decode_invoice_bolt11(inv) == decoded


def test_make_invoice_rejects_non_positive_amount() -> None:
    with pytest.raises(ValueError):
        make_invoice(0, PH, NODE, 1, DH)


def _rechecksum(inv: str, mutate_word: int) -> str:
    hrp, words = bech32_decode(inv)
    words = list(words)
    words[mutate_word] ^= 1
    return bech32_encode(hrp, words)


def test_invoice_with_payee_and_tampered_data_fails_signature() -> None:
    inv = make_invoice(21_000, PH, NODE, 1_700_000_000, DH)
    tampered = _rechecksum(inv, 3)  # flips a timestamp bit; the checksum is recomputed
    with pytest.raises(ValueError, match="signature"):
        decode_invoice(tampered)
    with pytest.raises(ValueError):
        decode_invoice_bolt11(tampered)


def test_invoice_bad_checksum_fails() -> None:
    inv = make_invoice(21_000, PH, NODE, 1_700_000_000, DH)
    bad = inv[:-1] + ("q" if inv[-1] != "q" else "p")
    with pytest.raises(ValueError, match="checksum"):
        decode_invoice(bad)


def _encode_with_package(amount: int | None, with_hash: bool) -> str:
    tags = bolt11.Tags()
    if with_hash:
        tags.add(bolt11.TagChar.payment_hash, PH)
    tags.add(bolt11.TagChar.description_hash, DH)
    inv = bolt11.Bolt11(
        currency="bc",
        date=1_700_000_000,
        tags=tags,
        amount_msat=bolt11.MilliSatoshi(amount) if amount is not None else None,
    )
    return bolt11.encode(inv, private_key=NODE.hex(), ignore_exceptions=True)


def test_invoice_without_amount_decodes_with_msats_none() -> None:
    decoded = decode_invoice(_encode_with_package(None, True))
    assert decoded.msats is None and decoded.payment_hash == PH


def test_invoice_without_payment_hash_decodes_with_none() -> None:
    inv = _encode_with_package(5_000, False)
    decoded = decode_invoice(inv)
    assert decoded.payment_hash is None and decoded.msats == 5_000
    assert decode_invoice_bolt11(inv) == decoded


@pytest.mark.parametrize(
    "text",
    ["", "lnbc1", "hello", "lnxx10n1" + "q" * 120, 12],
)
def test_garbage_is_value_error(text: object) -> None:
    with pytest.raises(ValueError):
        decode_invoice(text)  # type: ignore[arg-type]


def test_sub_millisatoshi_amount_is_refused() -> None:
    inv = make_invoice(21_000, PH, NODE, 1_700_000_000, DH)
    hrp, words = bech32_decode(inv)
    odd = bech32_encode("lnbc1p", words)  # 0.1 msat
    with pytest.raises(ValueError, match="whole number"):
        decode_invoice(odd)


def test_invoice_dataclass_defaults() -> None:
    assert Invoice(1, None, None).currency == "bc"
