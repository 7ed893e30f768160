"""Two ingesters at once on overlapping batches end with exactly the facts of a serial run.

The store writes events and side rows without a lock and derives facts under the ingest lock.
`_gated` makes the dangerous interleaving happen every time: the test holds the ingest lock
while both batches store their events (or wait on each other's copy of a shared event), and
only then lets them derive, in whichever order they win the lock.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import Engine, text

from services.ingest.store import INGEST_LOCK, BatchResult
from tests.services.ingest.helpers import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    PROVIDER,
    T0,
    A,
    B,
    C,
    ev,
    facts,
    ingest,
    rows,
    zap_receipt,
    zap_request,
)
from tools.demo.generator import generate

Event = dict[str, Any]
TABLES = ("events", "event_refs", "zap_receipts", "tombstones", "contact_lists", "profiles", "facts", "pubkeys",
          "notes", "dirty_buckets", "rejects", "ingest_state")


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE " + ", ".join(TABLES)))


def _state(engine: Engine) -> tuple[list[Any], list[Any], list[Any]]:
    """Facts, deleted events and deleted notes: everything derivation writes."""
    return (sorted(facts(engine), key=str),
            sorted(rows(engine, "SELECT id FROM events WHERE deleted")),
            sorted(rows(engine, "SELECT note_key FROM notes WHERE deleted")))


def _serial(engine: Engine, events: Sequence[Event]) -> tuple[list[Any], list[Any], list[Any]]:
    _reset(engine)
    ingest(engine, *events)
    return _state(engine)


def _waiting(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE NOT l.granted AND a.datname = current_database()")).scalar() or 0)


def _run_all(engine: Engine, streams: Sequence[Sequence[Sequence[Event]]]) -> list[BatchResult]:
    """Each stream of batches in its own thread, all at once; re-raises the first failure."""
    results: list[BatchResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(streams))

    def run(stream: Sequence[Sequence[Event]]) -> None:
        try:
            start.wait()
            for batch in stream:
                results.append(ingest(engine, *batch))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    if errors:
        raise errors[0]
    return results


def _gated(engine: Engine, batches: Sequence[Sequence[Event]]) -> list[BatchResult]:
    """Both batches store before either derives: the test holds the ingest lock until both wait."""
    out: list[list[BatchResult]] = []
    with engine.connect() as gate:
        gate.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": INGEST_LOCK})
        runner = threading.Thread(target=lambda: out.append(_run_all(engine, [[b] for b in batches])))
        runner.start()
        deadline = time.monotonic() + 30
        while _waiting(engine) < len(batches):
            assert time.monotonic() < deadline, "the batches never reached the ingest lock"
            time.sleep(0.01)
        gate.rollback()  # releases the lock
        runner.join(120)
    assert out, "a concurrent batch failed"
    return out[0]


def _cases() -> dict[str, tuple[list[Event], list[Event]]]:
    note = ev(ALICE, 1, "root", t=T0)
    reply = ev(BOB, 1, "re", [["e", note["id"]], ["p", A]], T0 + 10)
    reaction = ev(CAROL, 7, "+", [["e", note["id"]], ["p", A]], T0 + 11)
    quote = ev(DAVE, 1, "look", [["q", note["id"]]], T0 + 12)
    receipt = zap_receipt(zap_request(BOB, A, tags=[["e", note["id"]]]), tags=[["e", note["id"]]], t=T0 + 20)
    zap_deletion = ev(PROVIDER, 5, "", [["e", receipt["id"]]], T0 + 30)
    phash = "5a" * 32
    early, late = (zap_receipt(zap_request(CAROL, A, t=T0 + i), payment_hash=phash, t=T0 + 60 + i) for i in range(2))
    list1 = ev(DAVE, 3, "", [["p", A], ["p", B]], T0 + 40)
    list2 = ev(DAVE, 3, "", [["p", B], ["p", C]], T0 + 50)
    list_deletion = ev(DAVE, 5, "", [["e", list1["id"]]], T0 + 55)
    article1 = ev(ALICE, 30023, "v1", [["d", "essay"]], T0 + 70)
    article2 = ev(ALICE, 30023, "v2", [["d", "essay"]], T0 + 80)
    article_deletion = ev(ALICE, 5, "", [["a", f"30023:{A}:essay"]], T0 + 75)
    note_deletion = ev(ALICE, 5, "", [["e", note["id"]]], T0 + 90)
    return {
        "reply, reaction and quote vs their parent": ([reply, reaction, quote], [note]),
        "zap receipt vs its deletion": ([receipt, note], [zap_deletion]),
        "two receipts of one payment hash": ([late], [early]),
        "contact list vs its replacement": ([list1], [list2]),
        "contact list vs its replacement and its deletion": ([list1, list2], [list_deletion]),
        "article versions vs the address deletion": ([article1, article2], [article_deletion]),
        "parent and its deletion vs the engagement": ([note, note_deletion], [reply, reaction, receipt]),
        "the same events in both batches": ([note, reply, list1, receipt], [reply, note, list2, receipt, zap_deletion]),
        "everything, split in half": ([note, receipt, early, list2, article2, note_deletion],
                                      [reply, reaction, quote, zap_deletion, late, list1, list_deletion, article1,
                                       article_deletion]),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_two_concurrent_batches_give_the_serial_facts(engine: Engine, case: str) -> None:
    first, second = _cases()[case]
    reference = _serial(engine, first + second)
    assert reference[0], "the case should derive some facts"
    for batches in ((first, second), (second, first)):
        _reset(engine)
        results = _gated(engine, batches)
        assert _state(engine) == reference
        admitted = sum(r.count("admitted") for r in results)
        assert admitted == len({e["id"] for e in first + second})  # each event admitted exactly once


def test_concurrent_free_running_ingesters_on_overlapping_batches_match_a_serial_run(engine: Engine) -> None:
    base = generate(11, T0 + 30 * 86_400, users=12, scale=0.07)
    extra = [e for pair in _cases().values() for batch in pair for e in batch]
    events = list({e["id"]: e for e in base + extra}.values())
    reference = _serial(engine, events)
    rng = random.Random(5)
    for _ in range(3):
        _reset(engine)
        streams = []
        for _ in range(2):  # each ingester gets most events, in its own order and batching: heavy overlap
            mine = [e for e in events if rng.random() < 0.7]
            rng.shuffle(mine)
            cuts = sorted(rng.sample(range(1, len(mine)), 8))
            streams.append([mine[a:b] for a, b in zip([0, *cuts], [*cuts, len(mine)], strict=True)])
        seen = {e["id"] for s in streams for batch in s for e in batch}
        _run_all(engine, streams)
        ingest(engine, *[e for e in events if e["id"] not in seen])
        assert _state(engine) == reference
