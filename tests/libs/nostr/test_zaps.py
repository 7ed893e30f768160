"""NIP-57 zap receipts: every invalid_zap sub-reason and the Zap fields."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from libs.nostr.admission import admit
from libs.nostr.event import Rejection, parse_event
from libs.nostr.invoices import decode_invoice
from libs.nostr.zaps import Zap, validate_zap
from tests.libs.nostr.bolt11_reference import make_invoice

from .factories import ALICE_PK, BOB, BOB_PK, CAROL_PK, NODE, NOTE_ID, T0, signed, zap_receipt, zap_request

RT = T0 + 10
ADDR = f"30023:{ALICE_PK}:article"


def _zap(receipt: dict[str, Any], receive_time: int = RT) -> Zap:
    return validate_zap(parse_event(receipt), receive_time)


def _detail(receipt: dict[str, Any], receive_time: int = RT) -> str:
    with pytest.raises(Rejection) as info:
        _zap(receipt, receive_time)
    assert info.value.reason == "invalid_zap"
    assert info.value.message
    assert info.value.event_id == receipt["id"]
    # admission gives the same rejection for the receipt
    with pytest.raises(Rejection) as via_admit:
        admit(receipt, receive_time)
    assert (via_admit.value.reason, via_admit.value.detail) == ("invalid_zap", info.value.detail)
    return info.value.detail


def test_valid_zap_fields() -> None:
    request = zap_request(extra_tags=[["e", NOTE_ID]])
    receipt = zap_receipt(request, extra_tags=[["e", NOTE_ID], ["P", BOB_PK]])
    zap = _zap(receipt)
    invoice = decode_invoice(next(t[1] for t in receipt["tags"] if t[0] == "bolt11"))
    assert zap == Zap(
        recipient=ALICE_PK,
        sender=BOB_PK,
        msats=21_000,
        payment_hash=invoice.payment_hash or "",
        anon=False,
        note_e=NOTE_ID,
        note_a=None,
        description_hash_mismatch=False,
    )
    assert zap.target_note == NOTE_ID


def test_zap_without_amount_tag_uses_invoice_amount() -> None:
    zap = _zap(zap_receipt(zap_request(msats=None), invoice_msats=5_000))
    assert zap.msats == 5_000


def test_zap_target_falls_back_to_first_a() -> None:
    request = zap_request(extra_tags=[["a", ADDR]])
    zap = _zap(zap_receipt(request, extra_tags=[["a", ADDR]]))
    assert (zap.note_e, zap.note_a, zap.target_note) == (None, ADDR, ADDR)


@pytest.mark.parametrize("anon_tag", [["anon"], ["anon", ""], ["anon", "encrypted-payload"]])
def test_anon_tag_counts_with_or_without_value(anon_tag: list[str]) -> None:
    assert _zap(zap_receipt(zap_request(extra_tags=[anon_tag]))).anon is True


def test_description_hash_mismatch_is_a_flag_not_a_rejection() -> None:
    zap = _zap(zap_receipt(description_hash="00" * 32))
    assert zap.description_hash_mismatch is True


def test_invoice_without_description_hash_is_flagged_as_mismatch() -> None:
    assert _zap(zap_receipt(description_hash=None)).description_hash_mismatch is True


# --- invalid_zap sub-reasons, in check order --------------------------------


def test_no_bolt11() -> None:
    assert _detail(zap_receipt(bolt11=[])) == "no_bolt11"


def test_bolt11_tag_without_value_does_not_count() -> None:
    receipt = zap_receipt(bolt11=[])
    receipt = signed(priv=bytes([9] * 32), kind=9735, tags=[*receipt["tags"], ["bolt11"]])
    assert _detail(receipt) == "no_bolt11"


def test_multiple_bolt11() -> None:
    inv = make_invoice(21_000, "33" * 32, NODE, T0, None)
    assert _detail(zap_receipt(bolt11=[inv, inv])) == "multiple_bolt11"


def test_bad_invoice() -> None:
    assert _detail(zap_receipt(bolt11=["lnbc1notaninvoice"])) == "bad_invoice"


def test_no_amount() -> None:
    import bolt11

    tags = bolt11.Tags()
    tags.add(bolt11.TagChar.payment_hash, "44" * 32)
    tags.add(bolt11.TagChar.description_hash, "55" * 32)
    inv = bolt11.encode(
        bolt11.Bolt11(currency="bc", date=T0, tags=tags), private_key=NODE.hex(), ignore_exceptions=True
    )
    assert _detail(zap_receipt(bolt11=[inv])) == "no_amount"


def test_no_payment_hash() -> None:
    import bolt11

    tags = bolt11.Tags()
    tags.add(bolt11.TagChar.description_hash, "55" * 32)
    inv = bolt11.encode(
        bolt11.Bolt11(currency="bc", date=T0, tags=tags, amount_msat=bolt11.MilliSatoshi(21_000)),
        private_key=NODE.hex(),
        ignore_exceptions=True,
    )
    assert _detail(zap_receipt(bolt11=[inv])) == "no_payment_hash"


def test_no_description() -> None:
    receipt = zap_receipt()
    tags = [t for t in receipt["tags"] if t[0] != "description"]
    assert _detail(signed(priv=bytes([9] * 32), kind=9735, tags=tags)) == "no_description"


def _cause(receipt: dict[str, Any], receive_time: int = RT) -> Rejection:
    assert _detail(receipt, receive_time) == "bad_request"
    with pytest.raises(Rejection) as info:
        _zap(receipt, receive_time)
    cause = info.value.__cause__
    assert isinstance(cause, Rejection)
    return cause


def test_bad_request_description_not_json() -> None:
    assert _cause(zap_receipt("not json")).reason == "bad_json"


def test_bad_request_request_bad_id() -> None:
    request = zap_request()
    request["content"] = "edited"
    assert _cause(zap_receipt(request)).reason == "bad_id"


def test_bad_request_request_bad_sig() -> None:
    request = zap_request()
    request["sig"] = "00" * 64
    assert _cause(zap_receipt(request)).reason == "bad_sig"


def test_bad_request_request_future_dated() -> None:
    request = zap_request(created_at=RT + 901)
    assert _cause(zap_receipt(request)).reason == "future"
    assert _zap(zap_receipt(zap_request(created_at=RT + 900))).sender == BOB_PK


def test_bad_request_not_kind_9734() -> None:
    note = signed(priv=BOB, kind=1, tags=[["p", ALICE_PK]])
    with pytest.raises(Rejection) as info:
        _zap(zap_receipt(note))
    assert info.value.detail == "bad_request"
    assert "9734" in info.value.message


def test_first_description_tag_is_the_request() -> None:
    receipt = zap_receipt()
    tags = [t for t in receipt["tags"] if t[0] != "description"]
    request = next(t[1] for t in receipt["tags"] if t[0] == "description")
    good = signed(
        priv=bytes([9] * 32), kind=9735, tags=[*tags, ["description", request], ["description", "junk"]]
    )
    assert _zap(good).sender == BOB_PK
    bad = signed(
        priv=bytes([9] * 32), kind=9735, tags=[*tags, ["description", "junk"], ["description", request]]
    )
    assert _detail(bad) == "bad_request"


@pytest.mark.parametrize("p_tags", [[], [ALICE_PK, ALICE_PK], [ALICE_PK, CAROL_PK]])
def test_request_must_have_exactly_one_p(p_tags: list[str]) -> None:
    assert _detail(zap_receipt(zap_request(p_tags=p_tags))) == "request_p_count"


def test_request_with_two_e_tags() -> None:
    request = zap_request(extra_tags=[["e", NOTE_ID], ["e", "cd" * 32]])
    assert _detail(zap_receipt(request, extra_tags=[["e", NOTE_ID]])) == "request_multiple_e"


@pytest.mark.parametrize("p_tags", [[], [ALICE_PK, ALICE_PK]])
def test_receipt_must_have_exactly_one_p(p_tags: list[str]) -> None:
    assert _detail(zap_receipt(p_tags=p_tags)) == "receipt_p_count"


def test_request_p_must_equal_receipt_p() -> None:
    assert _detail(zap_receipt(p_tags=[CAROL_PK])) == "request_p_mismatch"


@pytest.mark.parametrize("amount", ["21000.0", "", "-21000", "2e4", " 21000", "２１０００"])
def test_request_amount_must_be_all_digits(amount: str) -> None:
    request = zap_request(msats=None, extra_tags=[["amount", amount]])
    assert _detail(zap_receipt(request)) == "bad_amount"


def test_request_amount_must_equal_invoice_msats() -> None:
    assert _detail(zap_receipt(zap_request(msats=21_000), invoice_msats=21_001)) == "amount_mismatch"


def test_only_first_amount_tag_counts() -> None:
    request = zap_request(msats=21_000, extra_tags=[["amount", "5"]])
    assert _zap(zap_receipt(request)).msats == 21_000


def test_amount_with_leading_zeros_compares_as_number() -> None:
    request = zap_request(msats=None, extra_tags=[["amount", "0021000"]])
    assert _zap(zap_receipt(request)).msats == 21_000


def test_receipt_e_must_be_in_request() -> None:
    assert _detail(zap_receipt(extra_tags=[["e", NOTE_ID]])) == "e_tag_mismatch"
    request = zap_request(extra_tags=[["e", "cd" * 32]])
    assert _detail(zap_receipt(request, extra_tags=[["e", NOTE_ID]])) == "e_tag_mismatch"


def test_request_e_without_receipt_e_is_fine() -> None:
    zap = _zap(zap_receipt(zap_request(extra_tags=[["e", NOTE_ID]])))
    assert zap.note_e is None


def test_receipt_a_must_be_in_request() -> None:
    assert _detail(zap_receipt(extra_tags=[["a", ADDR]])) == "a_tag_mismatch"


def test_receipt_P_must_be_request_pubkey() -> None:
    assert _detail(zap_receipt(extra_tags=[["P", CAROL_PK]])) == "P_tag_mismatch"
    assert _detail(zap_receipt(extra_tags=[["P", BOB_PK], ["P", CAROL_PK]])) == "P_tag_mismatch"


def test_checks_run_in_documented_order() -> None:
    # receipt p mismatch and amount mismatch and e mismatch at once: the p rule comes first
    receipt = zap_receipt(zap_request(msats=1), p_tags=[CAROL_PK], extra_tags=[["e", NOTE_ID]])
    assert _detail(receipt) == "request_p_mismatch"
    # amount before e/a before P
    receipt = zap_receipt(zap_request(msats=1), extra_tags=[["e", NOTE_ID], ["P", CAROL_PK]])
    assert _detail(receipt) == "amount_mismatch"
    receipt = zap_receipt(extra_tags=[["e", NOTE_ID], ["P", CAROL_PK]])
    assert _detail(receipt) == "e_tag_mismatch"


def test_description_hash_is_sha256_of_the_description_string() -> None:
    request = zap_request()
    description = json.dumps(request, indent=1)  # non-canonical spacing is kept as given
    receipt = zap_receipt(description)
    assert next(t[1] for t in receipt["tags"] if t[0] == "description") == description
    invoice = decode_invoice(next(t[1] for t in receipt["tags"] if t[0] == "bolt11"))
    assert invoice.description_hash == hashlib.sha256(description.encode()).hexdigest()
    assert _zap(receipt).description_hash_mismatch is False
