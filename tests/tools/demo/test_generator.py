"""The demo network generator: deterministic, realistic, fast; and its fast signers equal the reference ones."""

from __future__ import annotations

import hashlib
import time
from collections import Counter

from sqlalchemy import Engine

from libs.nostr.admission import admit
from libs.nostr.event import Rejection
from libs.nostr.invoices import decode_invoice
from libs.nostr.keys import privkey_from_seed, sign_event
from tests.libs.nostr.bolt11_reference import decode_invoice_bolt11, make_invoice
from tests.services.ingest.helpers import facts, ingest, rows, scalar
from tools.demo.generator import demo_pubkey, generate
from tools.demo.signing import InvoiceSigner, Signer

NOW = 1_790_000_000
DAY = 86_400


def test_fast_signer_matches_sign_event() -> None:
    key = privkey_from_seed("signer")
    tags = [["e", "ab" * 32, "", "reply"], ["p", "cd" * 32]]
    assert Signer(key).sign(1, "hi \u2028 ⚡", tags, NOW) == sign_event(key, 1, "hi \u2028 ⚡", tags, NOW)


def test_fast_invoices_match_make_invoice_and_decode_with_both_decoders() -> None:
    node = privkey_from_seed("node")
    signer = InvoiceSigner(node)
    for msats in (1, 1_000, 21_000, 123_456_789, 10**11, 5 * 10**11 + 3):
        ph, dh = hashlib.sha256(b"p%d" % msats).digest(), hashlib.sha256(b"d%d" % msats).digest()
        fast = signer.invoice(msats, ph, NOW, dh)
        assert fast == make_invoice(msats, ph.hex(), node, NOW, dh.hex())
        assert decode_invoice(fast).msats == decode_invoice_bolt11(fast).msats == msats


def test_generation_is_deterministic_in_seed_and_now() -> None:
    a = generate(5, NOW, users=20, scale=0.2)
    assert a == generate(5, NOW, users=20, scale=0.2)
    assert a != generate(6, NOW, users=20, scale=0.2)
    assert a != generate(5, NOW + 1, users=20, scale=0.2)


def test_default_demo_set_is_realistic_and_fast() -> None:
    started = time.perf_counter()
    events = generate(7, NOW)
    elapsed = time.perf_counter() - started
    assert 15_000 <= len(events) <= 25_000
    assert elapsed < 30  # about 2 s on an idle 2-core machine
    assert len({e["id"] for e in events}) == len(events)
    kinds = Counter(e["kind"] for e in events)
    assert set(kinds) == {0, 1, 3, 5, 6, 7, 16, 1111, 9735, 30023}
    assert all(NOW - 430 * DAY <= e["created_at"] < NOW for e in events)
    for window in (3600, DAY, 7 * DAY, 30 * DAY, 90 * DAY, 365 * DAY):  # every rolling window has data
        assert sum(1 for e in events if e["created_at"] >= NOW - window) >= 20, window
    # power-law followers: the demo pubkey leads; the top decile holds ~4x its uniform share of follow edges
    latest: dict[str, tuple[int, str, set[str]]] = {}
    for e in events:
        if e["kind"] == 3:
            key = (e["created_at"], "".join(chr(255 - ord(c)) for c in e["id"]))
            if e["pubkey"] not in latest or key > latest[e["pubkey"]][:2]:
                latest[e["pubkey"]] = (*key, {t[1] for t in e["tags"] if t[0] == "p"} - {e["pubkey"]})  # type: ignore[assignment]
    followers = Counter(p for _, _, follows in latest.values() for p in follows)
    ranked = [p for p, _ in followers.most_common()]
    assert ranked[0] == demo_pubkey(7)
    top = sum(n for _, n in followers.most_common(30))
    assert top > 0.4 * sum(followers.values())


def test_demo_set_holds_invalid_events_and_every_metric_kind(engine: Engine) -> None:
    events = generate(9, NOW, users=40, scale=0.3)
    outcomes: Counter[str] = Counter()
    for e in events:
        try:
            admit(e, NOW)
        except Rejection as rej:
            outcomes[rej.reason] += 1
    assert outcomes == {"bad_sig": 3, "bad_id": 3, "invalid_zap": 3}
    for start in range(0, len(events), 400):
        ingest(engine, *events[start : start + 400], receive_time=NOW)
    types = Counter(f[2] for f in facts(engine))
    assert set(types) == {"ZAP", "REACTION", "REPOST", "REPLY", "QUOTE", "MENTION", "FOLLOW", "UNFOLLOW", "NOTE",
                          "ARTICLE"}
    assert any(f[8] & 4 for f in facts(engine) if f[2] == "ZAP")  # some anonymous zaps
    # one payment hash was reported twice; only its earliest receipt counts
    (phash, n), = rows(engine, "SELECT payment_hash, count(*) FROM zap_receipts GROUP BY 1 HAVING count(*) > 1")
    assert n == 2
    counted = scalar(engine, "SELECT count(*) FROM facts WHERE source_event_id IN "
                             "(SELECT event_id FROM zap_receipts WHERE payment_hash = :h)", h=phash)
    assert counted == 1
    assert scalar(engine, "SELECT count(*) FROM notes WHERE deleted") > 0
    assert scalar(engine, "SELECT count(*) FROM tombstones") > 0
