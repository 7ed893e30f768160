"""Admission, zap validation and tag logic over the real events in ../shared/data/nostr-real."""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from typing import Any

import pytest

from libs.nostr.admission import MAX_TAGS, admit_many
from libs.nostr.event import Event, Rejection, parse_event, parse_line
from libs.nostr.integrity import compute_id, verify_sig
from libs.nostr.invoices import decode_invoice
from libs.nostr.tags import (
    address_of,
    contact_set,
    deletion_targets,
    mentioned_pubkeys,
    profile_name,
    quote_refs,
    reaction_target,
    reply_parent,
    repost_target,
)
from libs.nostr.zaps import Zap, validate_zap
from tests.libs.nostr.bolt11_reference import decode_invoice_bolt11

from .factories import REAL_DATA

pytestmark = pytest.mark.skipif(
    not (REAL_DATA / "events.jsonl").is_file(),
    reason=f"real Nostr test data not found at {REAL_DATA} (expected <repo>/../shared/data/nostr-real)",
)

MS_DATED = {
    "ae625fd43612127d63bfd1967ba32ae915100842a205fc2c3b3fc02ab3827f08",
    "fbd1d692610c0dc1090fd37058d36d749b753d57b9ad5521f1d84dad3914a044",
}
NEWEST_SECONDS_DATED = 1785356310  # PROVENANCE: newest created_at excluding the two above
BAD_REQUEST_RECEIPT = "fb9cbfba57cd"  # its embedded 9734 was edited after signing (bad_id)
TOO_MANY_TAGS_BAD = "bb4ec135abd3ba305445f2151be9ba887958fe7a90448059a1e6399fae4da4cf"
NON_STRING_TAG_BAD = "9fa84aa80a6d69000e887809001343884e2d7e8612b9d83010e9a709b93b5ead"


@cache
def _raw(name: str) -> tuple[Any, ...]:
    with open(REAL_DATA / name, "rb") as fh:
        return tuple(v for v in (parse_line(line) for line in fh) if v is not None)


@cache
def _events() -> tuple[Event, ...]:
    return tuple(parse_event(obj) for obj in _raw("events.jsonl"))


def _receive_time_after_all() -> int:
    return max(obj["created_at"] for obj in _raw("events.jsonl")) + 1


def test_real_events_file_has_10671_events() -> None:
    assert len(_raw("events.jsonl")) == 10_671


def test_all_real_events_admitted_except_19_invalid_zap_receipts() -> None:
    objs = _raw("events.jsonl")
    results = admit_many(objs, _receive_time_after_all())
    rejected = [r for r in results if isinstance(r, Rejection)]
    assert len(results) - len(rejected) == 10_652
    assert Counter((r.reason, r.detail) for r in rejected) == {
        ("invalid_zap", "no_payment_hash"): 18,
        ("invalid_zap", "bad_request"): 1,
    }


def test_millisecond_dated_events_are_future_at_a_realistic_clock() -> None:
    results = admit_many(_raw("events.jsonl"), NEWEST_SECONDS_DATED + 1)
    future = {r.event_id for r in results if isinstance(r, Rejection) and r.reason == "future"}
    assert future == MS_DATED
    assert sum(isinstance(r, Event) for r in results) == 10_650


def _expected_bad_reason(obj: dict[str, Any]) -> str:
    """First failing check, derived independently of check_integrity."""
    if any(not isinstance(v, str) for tag in obj["tags"] for v in tag):
        return "bad_json"
    if len(obj["tags"]) > MAX_TAGS:
        return "too_many_tags"
    if compute_id(obj["pubkey"], obj["created_at"], obj["kind"], obj["tags"], obj["content"]) != obj["id"]:
        return "bad_id"
    if not verify_sig(obj["pubkey"], obj["id"], obj["sig"]):
        return "bad_sig"
    return "admitted"


def test_every_bad_event_is_rejected_with_the_first_failing_reason() -> None:
    objs = _raw("bad_events.jsonl")
    assert len(objs) == 102
    results = admit_many(objs, 2**40)
    assert all(isinstance(r, Rejection) for r in results)
    for obj, rej in zip(objs, results, strict=True):
        assert isinstance(rej, Rejection)
        assert rej.reason == _expected_bad_reason(obj), obj["id"]
        assert rej.event_id == obj["id"]
    by_id = {obj["id"]: r for obj, r in zip(objs, results, strict=True) if isinstance(r, Rejection)}
    assert Counter(r.reason for r in by_id.values()) == {
        "bad_id": 98,
        "bad_sig": 2,
        "too_many_tags": 1,
        "bad_json": 1,
    }
    # the kind 3 with 2158 tags also has a bad id, but too_many_tags is checked first
    assert by_id[TOO_MANY_TAGS_BAD].reason == "too_many_tags"
    assert (by_id[NON_STRING_TAG_BAD].reason, by_id[NON_STRING_TAG_BAD].detail) == ("bad_json", "bad_tags")


def _zap_outcomes() -> list[Zap | Rejection]:
    out: list[Zap | Rejection] = []
    for ev in _events():
        if ev.kind == 9735:
            try:
                out.append(validate_zap(ev, _receive_time_after_all()))
            except Rejection as rej:
                out.append(rej)
    return out


def test_real_zap_receipts_breakdown() -> None:
    outcomes = _zap_outcomes()
    assert len(outcomes) == 901
    zaps = [z for z in outcomes if isinstance(z, Zap)]
    rejections = [r for r in outcomes if isinstance(r, Rejection)]
    assert len(zaps) == 882
    assert Counter(r.detail for r in rejections) == {"no_payment_hash": 18, "bad_request": 1}
    bad_request = next(r for r in rejections if r.detail == "bad_request")
    assert bad_request.event_id is not None and bad_request.event_id.startswith(BAD_REQUEST_RECEIPT)
    assert isinstance(bad_request.__cause__, Rejection) and bad_request.__cause__.reason == "bad_id"
    assert sum(z.anon for z in zaps) == 5
    assert sum(z.description_hash_mismatch for z in zaps) == 477
    assert len({z.payment_hash for z in zaps}) == 882
    assert sum(z.msats for z in zaps) == 1_865_561_000


def test_real_no_payment_hash_receipts_are_primal_internal_invoices() -> None:
    for ev in _events():
        if ev.kind != 9735:
            continue
        invoice = decode_invoice(ev.tag_values("bolt11")[0])
        if invoice.payment_hash is None:
            assert invoice.description is not None and invoice.description.startswith("__PRIMAL_INTERNAL")


def test_fast_invoice_decoder_agrees_with_bolt11_package_on_all_real_invoices() -> None:
    invoices = [ev.tag_values("bolt11")[0] for ev in _events() if ev.kind == 9735]
    assert len(invoices) == 901
    for inv in invoices:
        assert decode_invoice(inv) == decode_invoice_bolt11(inv), inv


def test_tag_logic_runs_on_every_real_event() -> None:
    counts: Counter[str] = Counter()
    for ev in _events():
        parent = reply_parent(ev)
        if parent is not None:
            counts[f"reply_{ev.kind}"] += 1
            counts["reply_hint"] += parent.author_hint is not None
        if ev.kind == 1 and mentioned_pubkeys(ev.content):
            counts["mentioning_notes"] += 1
        counts["q_tags"] += len(quote_refs(ev))
        reaction_target(ev)
        repost_target(ev)
        deletion_targets(ev)
        contact_set(ev)
        counts["addressed"] += address_of(ev) is not None
        counts["named_profiles"] += profile_name(ev) is not None
    assert counts["reply_1"] == 1226
    assert counts["reply_1111"] == 1
    assert counts["reply_hint"] == 156
    assert counts["mentioning_notes"] == 111
    assert counts["named_profiles"] == 1959


def test_real_events_round_trip_through_to_dict() -> None:
    for obj, ev in zip(_raw("events.jsonl"), _events(), strict=True):
        assert ev.to_dict() == {
            k: obj[k] for k in ("id", "pubkey", "created_at", "kind", "tags", "content", "sig")
        }
        assert json.loads(json.dumps(ev.to_dict())) == ev.to_dict()
