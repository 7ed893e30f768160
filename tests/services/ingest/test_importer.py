"""`canal import`: the streaming reader (JSONL and JSON arrays) and import_file's summary and facts."""

from __future__ import annotations

import io
import json
from pathlib import Path

from sqlalchemy import Engine

from libs.nostr.event import Rejection
from services.ingest.importer import format_summary, import_file
from services.ingest.lines import InputReader
from tests.conftest import real_events_path
from tests.services.ingest.helpers import ALICE, BOB, CAROL, A, ev, facts, rows, scalar

RECEIVE = 1_795_000_000  # fixed, so the `future` rule gives the same answer on any day


def _read(data: bytes, chunk: int = 7) -> tuple[str, list[tuple[int, object]]]:
    reader = InputReader(io.BytesIO(data), "t", chunk_size=chunk)
    out = [(n, (it.value.reason, it.value.detail) if isinstance(it.value, Rejection) else it.value)
           for n, it in reader]
    return reader.mode, out


def test_jsonl_splits_only_on_newline_so_u2028_inside_content_survives() -> None:
    note = {"content": "a\u2028b\u2029c", "kind": 1}
    mode, got = _read(json.dumps(note, ensure_ascii=False).encode() + b"\n")
    assert mode == "jsonl" and got == [(1, note)]


def test_jsonl_reports_bad_lines_with_their_numbers_and_skips_blank_lines() -> None:
    data = b'{"a":1}\n\n   \nnot json\n\xff\xfe\n["EVENT","sub",{"b":2}]\n["EVENT",{"c":3}]\r\n{"d":4}'
    mode, got = _read(data)
    assert mode == "jsonl"
    assert got == [(1, {"a": 1}), (4, ("bad_json", "not_json")), (5, ("bad_json", "not_utf8")), (6, {"b": 2}),
                   (7, {"c": 3}), (8, {"d": 4})]


def test_a_jsonl_file_of_relay_frames_is_not_mistaken_for_an_array() -> None:
    mode, got = _read(b'["EVENT","s",{"a":1}]\n["EVENT","s",{"b":2}]\n')
    assert mode == "jsonl" and [v for _, v in got] == [{"a": 1}, {"b": 2}]


def test_a_json_array_is_streamed_element_by_element_with_line_numbers() -> None:
    data = b'\xef\xbb\xbf [\n {"a": 1},\n {"b": "x\\"]y"} ,\n {broken\n ,{"c":3}, ["EVENT","s",{"d":4}]\n]\n'
    mode, got = _read(data, chunk=5)
    assert mode == "array"
    assert got == [(2, {"a": 1}), (3, {"b": 'x"]y'}), (4, ("bad_json", "not_json")), (5, {"c": 3}), (5, {"d": 4})]


def test_a_truncated_array_reports_the_broken_tail() -> None:
    assert _read(b'[{"a":1},{"b":')[1] == [(1, {"a": 1}), (1, ("bad_json", "not_json"))]


def test_import_of_a_file_with_bad_lines_reports_each_and_stores_only_valid_facts(
        engine: Engine, tmp_path: Path) -> None:
    note = ev(ALICE, 1, "line\u2028separator inside", t=RECEIVE - 100)
    reaction = ev(BOB, 7, "+", [["e", note["id"]], ["p", A]], RECEIVE - 50)
    bad_sig = {**ev(CAROL, 7, "+", [["e", note["id"]], ["p", A]], RECEIVE - 40), "sig": "00" * 64}
    bad_id = {**ev(CAROL, 1, "x", t=RECEIVE - 30), "content": "changed"}
    future = ev(CAROL, 1, "from the future", t=RECEIVE + 901)
    lines = [
        json.dumps(note, ensure_ascii=False),
        "",
        "this is not json",
        json.dumps(["EVENT", "sub1", reaction]),
        json.dumps(bad_sig),
        json.dumps(note, ensure_ascii=False),  # duplicate
        json.dumps(["EVENT", reaction]),  # duplicate, as a two-element frame
        json.dumps(bad_id),
        json.dumps(future),
        '{"id": "short"}',
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = import_file(path, engine, batch=3, progress=False, receive_time=RECEIVE)
    assert (summary.admitted, summary.duplicates, summary.lines, summary.items) == (2, 2, 10, 9)
    assert summary.rejected_by_reason == {"bad_json": 2, "bad_sig": 1, "bad_id": 1, "future": 1}
    assert [(line, reason) for line, reason, _, _ in summary.examples] == [
        (3, "bad_json"), (5, "bad_sig"), (8, "bad_id"), (9, "future"), (10, "bad_json")]
    assert "line 3" in summary.examples[0][3]
    text = format_summary(summary)
    assert "admitted   2" in text and "bad_sig" in text and "line 5" in text
    assert {(f[0], f[1], f[2]) for f in facts(engine)} == {(A, note["id"], "NOTE"), (A, reaction["id"], "REACTION")}
    assert scalar(engine, "SELECT content FROM events WHERE id = :i", i=note["id"]) == note["content"]
    assert scalar(engine, "SELECT count(*) FROM rejects") == 5


def test_import_reads_a_json_array_file(engine: Engine, tmp_path: Path) -> None:
    events = [ev(ALICE, 1, f"n{i}", t=RECEIVE - i) for i in range(4)]
    path = tmp_path / "events.json"
    path.write_text(json.dumps(events, indent=2), encoding="utf-8")
    summary = import_file(path, engine, progress=False, receive_time=RECEIVE)
    assert (summary.admitted, summary.rejected) == (4, 0)


def test_real_events_import_pins_counts_and_a_replay_adds_nothing(engine: Engine) -> None:
    events = real_events_path()
    bad = events.with_name("bad_events.jsonl")
    first = import_file(events, engine, progress=False, receive_time=RECEIVE)
    assert (first.admitted, first.duplicates, first.lines) == (10_650, 0, 10_671)
    assert first.rejected_by_reason == {"invalid_zap": 19, "future": 2}
    broken = import_file(bad, engine, progress=False, receive_time=RECEIVE)
    assert (broken.admitted, broken.duplicates) == (0, 0)
    assert broken.rejected_by_reason == {"bad_id": 98, "bad_sig": 2, "bad_json": 1, "too_many_tags": 1}
    facts_before = facts(engine)
    rejects_before = scalar(engine, "SELECT count(*) FROM rejects")
    replay = import_file(events, engine, progress=False, receive_time=RECEIVE)
    assert (replay.admitted, replay.duplicates) == (0, 10_650)
    assert facts(engine) == facts_before
    # the replay re-rejects only what was never admitted: no reject row names an admitted id
    assert scalar(engine, "SELECT count(*) FROM rejects") == rejects_before + 21
    assert rows(engine, "SELECT count(*) FROM rejects r JOIN events e ON e.id = r.event_id") == [(0,)]
