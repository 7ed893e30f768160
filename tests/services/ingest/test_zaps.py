"""METRICS.md zap rules, through the store: validity, sub-reasons, payment-hash dedup, anon, deletion."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from libs.metrics import SUB_ANON
from tests.services.ingest.helpers import (
    ALICE,
    BOB,
    CAROL,
    NOW,
    PROVIDER,
    T0,
    A,
    B,
    C,
    dirty,
    ev,
    facts_of,
    ingest,
    ingest_each,
    minute,
    rows,
    zap_receipt,
    zap_request,
)

NOTE = "ab" * 32


def test_valid_zap_counts_for_the_receipt_p_with_the_request_sender_and_invoice_amount(engine: Engine) -> None:
    req = zap_request(BOB, A, 21_000, tags=[["e", NOTE]])
    receipt = zap_receipt(req, 21_000, tags=[["e", NOTE], ["P", B]])
    res = ingest(engine, receipt)
    assert [o.status for o in res.outcomes] == ["admitted"]
    assert facts_of(engine, "ZAP") == {(A, receipt["id"], "ZAP", T0 + 5, 9735, B, NOTE, 21_000, 0)}
    assert (A, minute(T0 + 5)) in dirty(engine)


def test_request_without_amount_tag_uses_the_invoice_amount(engine: Engine) -> None:
    receipt = zap_receipt(zap_request(BOB, A, None), 5_000)
    ingest(engine, receipt)
    assert {f[7] for f in facts_of(engine, "ZAP")} == {5_000}


def test_zap_target_note_is_the_first_e_else_the_first_a(engine: Engine) -> None:
    addr = f"30023:{A}:post"
    with_a = zap_receipt(zap_request(BOB, A, tags=[["a", addr]]), tags=[["a", addr]])
    ingest(engine, with_a)
    assert {f[6] for f in facts_of(engine, "ZAP")} == {addr}


def _bad_request_sig() -> dict:
    req = zap_request()
    return {**req, "sig": "00" * 64}


INVALID = {
    "no_bolt11": lambda: zap_receipt(bolt11=[]),
    "multiple_bolt11": lambda: zap_receipt(bolt11=[zap_receipt()["tags"][1][1]] * 2),
    "bad_invoice": lambda: zap_receipt(bolt11=["lnbc1notaninvoice"]),
    "no_amount": lambda: zap_receipt(zap_request(msats=None), msats=None),
    "no_payment_hash": lambda: zap_receipt(payment_hash=None),
    "no_description": lambda: ev(PROVIDER, 9735, "", [["p", A], ["bolt11", zap_receipt()["tags"][1][1]]]),
    "bad_request": lambda: zap_receipt(_bad_request_sig()),
    "request_p_count": lambda: zap_receipt(zap_request(p_tags=[A, C])),
    "request_multiple_e": lambda: zap_receipt(zap_request(tags=[["e", NOTE], ["e", "cd" * 32]])),
    "receipt_p_count": lambda: zap_receipt(p_tags=[A, A]),
    "request_p_mismatch": lambda: zap_receipt(zap_request(recipient=C)),
    "bad_amount": lambda: zap_receipt(zap_request(tags=[["amount", "21 sats"]], msats=None)),
    "amount_mismatch": lambda: zap_receipt(zap_request(msats=1_000), 21_000),
    "e_tag_mismatch": lambda: zap_receipt(tags=[["e", NOTE]]),
    "a_tag_mismatch": lambda: zap_receipt(tags=[["a", f"30023:{A}:x"]]),
    "P_tag_mismatch": lambda: zap_receipt(tags=[["P", C]]),
}


@pytest.mark.parametrize("detail", sorted(INVALID))
def test_each_invalid_zap_is_rejected_with_its_sub_reason_and_never_counted(engine: Engine, detail: str) -> None:
    receipt = INVALID[detail]()
    res = ingest(engine, receipt)
    (out,) = res.outcomes
    assert (out.status, out.reason, out.detail) == ("rejected", "invalid_zap", detail)
    assert rows(engine, "SELECT event_id, reason, detail FROM rejects") == [(receipt["id"], "invalid_zap", detail)]
    assert facts_of(engine, "ZAP") == set()
    assert rows(engine, "SELECT count(*) FROM events") == [(0,)]


def test_a_future_dated_request_makes_the_receipt_invalid(engine: Engine) -> None:
    receipt = zap_receipt(zap_request(t=NOW + 901), t=NOW)
    (out,) = ingest(engine, receipt).outcomes
    assert (out.reason, out.detail) == ("invalid_zap", "bad_request")


def test_description_hash_mismatch_is_a_flag_not_a_rejection(engine: Engine) -> None:
    receipt = zap_receipt(description_hash="11" * 32)
    assert [o.status for o in ingest(engine, receipt).outcomes] == ["admitted"]
    assert rows(engine, "SELECT description_hash_mismatch FROM zap_receipts") == [(True,)]
    assert len(facts_of(engine, "ZAP")) == 1


def test_same_payment_hash_counts_once_for_the_earliest_receipt_in_any_order(engine: Engine) -> None:
    phash = "77" * 32
    late = zap_receipt(zap_request(t=T0), payment_hash=phash, t=T0 + 50)
    early = zap_receipt(zap_request(t=T0 + 1), payment_hash=phash, t=T0 + 10)
    ingest_each(engine, [late, early])
    assert {f[1] for f in facts_of(engine, "ZAP")} == {early["id"]}
    assert (A, minute(T0 + 50)) in dirty(engine)  # the retracted later receipt's bucket is dirty too


def test_payment_hash_ties_on_created_at_go_to_the_lowest_id(engine: Engine) -> None:
    phash = "78" * 32
    r1 = zap_receipt(zap_request(t=T0), payment_hash=phash, t=T0 + 10)
    r2 = zap_receipt(zap_request(t=T0 + 1), payment_hash=phash, t=T0 + 10)
    ingest_each(engine, [r1, r2])
    assert {f[1] for f in facts_of(engine, "ZAP")} == {min(r1["id"], r2["id"])}


def test_payment_hash_dedup_is_global_across_recipients(engine: Engine) -> None:
    phash = "79" * 32
    to_a = zap_receipt(zap_request(recipient=A), payment_hash=phash, t=T0 + 10)
    to_c = zap_receipt(zap_request(recipient=C), recipient=C, payment_hash=phash, t=T0 + 20)
    ingest_each(engine, [to_c, to_a])
    assert {(f[0], f[1]) for f in facts_of(engine, "ZAP")} == {(A, to_a["id"])}


def test_deleted_earliest_receipt_leaves_nothing_for_its_payment_hash(engine: Engine) -> None:
    phash = "7a" * 32
    early = zap_receipt(zap_request(t=T0), payment_hash=phash, t=T0 + 10)
    late = zap_receipt(zap_request(t=T0 + 1), payment_hash=phash, t=T0 + 20)
    deletion = ev(PROVIDER, 5, "", [["e", early["id"]]], T0 + 30)
    ingest_each(engine, [early, late])
    assert len(facts_of(engine, "ZAP")) == 1
    ingest(engine, deletion)
    assert facts_of(engine, "ZAP") == set()


def test_self_zap_as_earliest_receipt_blocks_the_payment_hash(engine: Engine) -> None:
    phash = "7b" * 32
    self_zap = zap_receipt(zap_request(ALICE, A, t=T0), payment_hash=phash, t=T0 + 10)
    other = zap_receipt(zap_request(BOB, A, t=T0 + 1), payment_hash=phash, t=T0 + 20)
    ingest(engine, other, self_zap)
    assert facts_of(engine, "ZAP") == set()


def test_self_zap_is_not_counted(engine: Engine) -> None:
    ingest(engine, zap_receipt(zap_request(ALICE, A)))
    assert facts_of(engine, "ZAP") == set()


@pytest.mark.parametrize("anon_tag", [["anon"], ["anon", "encrypted-message"]])
def test_anon_zap_counts_in_count_and_msats_flagged_anon(engine: Engine, anon_tag: list[str]) -> None:
    receipt = zap_receipt(zap_request(CAROL, A, 3_000, tags=[anon_tag]), 3_000)
    ingest(engine, receipt)
    ((*_, msats, sub),) = facts_of(engine, "ZAP")
    assert (msats, sub & SUB_ANON) == (3_000, SUB_ANON)


def test_a_sender_cannot_delete_a_zap_but_the_provider_can(engine: Engine) -> None:
    receipt = zap_receipt(zap_request(BOB, A))
    ingest(engine, receipt, ev(BOB, 5, "", [["e", receipt["id"]]], T0 + 60))
    assert len(facts_of(engine, "ZAP")) == 1
    ingest(engine, ev(PROVIDER, 5, "", [["e", receipt["id"]]], T0 + 70))
    assert facts_of(engine, "ZAP") == set()


def test_zap_of_an_ingested_article_id_is_keyed_by_its_address(engine: Engine) -> None:
    article = ev(ALICE, 30023, "long", [["d", "essay"]], T0 - 100)
    receipt = zap_receipt(zap_request(BOB, A, tags=[["e", article["id"]]]), tags=[["e", article["id"]]])
    ingest(engine, receipt)
    assert {f[6] for f in facts_of(engine, "ZAP")} == {article["id"]}
    ingest(engine, article)
    assert {f[6] for f in facts_of(engine, "ZAP")} == {f"30023:{A}:essay"}
