"""Events and side rows written with COPY read back exactly as admitted, whatever their text holds."""

from __future__ import annotations

import json

from sqlalchemy import Engine

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
