"""Events and side rows written with COPY read back exactly as admitted, whatever their text holds."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, text

from tests.services.ingest.helpers import ALICE, BOB, T0, ev, ingest, rows

AWKWARD = "tab\there\nnew line\r\nback\\slash \\N \\. \\t \"quoted\" \u2028 é 🎉 \x0b\x0c end\\"


def test_awkward_text_round_trips_through_copy(engine: Engine) -> None:
    note = ev(ALICE, 1, AWKWARD, [["t", AWKWARD], ["e", "ab" * 32, "wss://r\\x", "reply"], ["x\ty", "a\nb"]], T0)
    article = ev(BOB, 30023, AWKWARD, [["d", "d\\tag\twith\nbreaks"]], T0 + 1)
    res = ingest(engine, note, article)
    assert [o.status for o in res.outcomes] == ["admitted", "admitted"]
    got = {r[0]: r[1:] for r in rows(engine, "SELECT id, content, tags::text, address, origin FROM events")}
    for e, addr in ((note, None), (article, f"30023:{article['pubkey']}:d\\tag\twith\nbreaks")):
        content, tags, address, origin = got[e["id"]]
        assert content == e["content"]
        assert json.loads(tags) == e["tags"]
        assert address == addr
        assert origin == "test"
    assert rows(engine, "SELECT ref, event_id FROM event_refs") == [("ab" * 32, note["id"])]


def test_an_event_already_stored_is_a_duplicate_and_writes_no_second_side_row(engine: Engine) -> None:
    note = ev(ALICE, 1, "hi", [["e", "cd" * 32], ["e", "cd" * 32]], T0)
    first = ingest(engine, note)
    second = ingest(engine, note, ev(BOB, 1, "other", t=T0 + 1))
    assert [o.status for o in first.outcomes] == ["admitted"]
    assert [o.status for o in second.outcomes] == ["duplicate", "admitted"]
    assert rows(engine, "SELECT ref, event_id FROM event_refs") == [("cd" * 32, note["id"])]


def test_array_literals_round_trip_whatever_the_elements_hold(engine: Engine) -> None:
    from services.ingest.sql_values import arr as _arr

    cases: list[list[str]] = [[], [""], ["ab" * 32], ["", "x"], ["a,b", "{c}", "NULL", " sp ", 'q"uote', "back\\slash",
                                                                 "30023:" + "ab" * 32 + ":d\\t\"ag\t\n"]]
    with engine.connect() as conn:
        for values in cases:
            for given in (values, iter(values)):
                assert conn.execute(text("SELECT CAST(:a AS text[])"), {"a": _arr(given)}).scalar() == values


def test_a_nul_in_a_tag_is_found_from_the_tags_json_and_a_literal_backslash_u0000_is_not_one(engine: Engine) -> None:
    escaped = ev(ALICE, 1, "tag", [["t", "x\\u0000"]], T0)  # the six characters \u0000: storable
    nul_tag = ev(ALICE, 1, "tag", [["t", "y", "x\x00"]], T0 + 1)
    res = ingest(engine, escaped, nul_tag)
    assert [(o.status, o.detail) for o in res.outcomes] == [("admitted", ""), ("rejected", "nul_char")]
    assert rows(engine, "SELECT tags->0->>1 FROM events") == [("x\\u0000",)]


def test_tune_gc_raises_the_gen0_threshold_once_and_never_lowers_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from services.ingest import gc_tuning as store

    before = gc.get_threshold()
    try:
        monkeypatch.setattr(store, "_gc_tuned", False)
        gc.set_threshold(700, before[1], before[2])
        store.tune_gc()
        assert gc.get_threshold() == (store.GC_GEN0_THRESHOLD, before[1], before[2])
        gc.set_threshold(123, before[1], before[2])
        store.tune_gc()  # once per process
        assert gc.get_threshold()[0] == 123
        monkeypatch.setattr(store, "_gc_tuned", False)
        gc.set_threshold(50_000, before[1], before[2])
        store.tune_gc()
        assert gc.get_threshold()[0] == 50_000
    finally:
        gc.set_threshold(*before)
