"""Property: any permutation and duplication of an event set, in any batching, yields identical facts."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from tests.services.ingest.helpers import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    T0,
    A,
    B,
    C,
    ev,
    facts,
    ingest,
    zap_receipt,
    zap_request,
)
from tools.demo.generator import generate

NOW = 1_790_000_000


def _hand_built() -> list[dict[str, Any]]:
    """The order-sensitive cases: late parents, deletions first, list ties, one payment hash twice."""
    note = ev(ALICE, 1, "root", t=T0)
    reply = ev(BOB, 1, "re nostr:npub", [["e", note["id"]]], T0 + 10)
    article1 = ev(ALICE, 30023, "v1", [["d", "essay"]], T0 + 20)
    article2 = ev(ALICE, 30023, "v2", [["d", "essay"]], T0 + 40)
    lists = [ev(DAVE, 3, c, [["p", p]], T0 + 50) for c, p in (("x", A), ("y", B))]
    lists.append(ev(DAVE, 3, "", [["p", C]], T0 + 30))
    phash = "5a" * 32
    zaps = [zap_receipt(zap_request(CAROL, A, t=T0 + i), payment_hash=phash, t=T0 + 60 + i) for i in range(2)]
    return [
        note, reply, article1, article2, *lists, *zaps,
        ev(ALICE, 5, "", [["a", f"30023:{A}:essay"]], T0 + 30),
        ev(BOB, 7, "+", [["e", article1["id"]], ["p", A]], T0 + 45),
        ev(CAROL, 7, "-", [["e", note["id"]], ["p", A]], T0 + 46),
        ev(ALICE, 5, "", [["e", note["id"]]], T0 + 100),
        ev(DAVE, 5, "", [["e", lists[0]["id"]]], T0 + 60),
    ]


BASE = generate(11, NOW, users=12, scale=0.07) + _hand_built()


INGEST_TABLES = ("events", "event_refs", "zap_receipts", "tombstones", "contact_lists", "profiles", "facts", "pubkeys",
                 "notes", "dirty_buckets", "rejects", "ingest_state")


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE " + ", ".join(INGEST_TABLES)))


def _ingest_in_batches(engine: Engine, events: list[dict[str, Any]], sizes: list[int]) -> None:
    start, i = 0, 0
    while start < len(events):
        size = sizes[i % len(sizes)] if sizes else len(events)
        ingest(engine, *events[start : start + size], receive_time=NOW)
        start += size
        i += 1


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_order_duplication_and_batching_gives_identical_facts(engine: Engine, data: st.DataObject) -> None:
    if not hasattr(test_any_order_duplication_and_batching_gives_identical_facts, "reference"):
        _reset(engine)
        _ingest_in_batches(engine, BASE, [])
        ref = facts(engine)
        assert {f[2] for f in ref} >= {"ZAP", "REACTION", "REPLY", "FOLLOW", "UNFOLLOW", "NOTE", "ARTICLE"}
        test_any_order_duplication_and_batching_gives_identical_facts.reference = (  # type: ignore[attr-defined]
            json.dumps(sorted(ref, key=str)))
    reference = test_any_order_duplication_and_batching_gives_identical_facts.reference  # type: ignore[attr-defined]
    dup = data.draw(st.lists(st.sampled_from(range(len(BASE))), max_size=25), label="duplicated")
    order = data.draw(st.permutations(BASE + [BASE[i] for i in dup]), label="arrival order")
    sizes = data.draw(st.lists(st.integers(1, 120), min_size=1, max_size=6), label="batch sizes")
    _reset(engine)
    _ingest_in_batches(engine, order, sizes)
    assert json.dumps(sorted(facts(engine), key=str)) == reference
