"""`canal import`: a plain file, a gzip file and standard input (plain or gzip) give the same facts, and the
summary is printed exactly once (stdout; the progress bar is on stderr)."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from libs.config import get_settings
from libs.db.engine import make_engine
from libs.nostr.keys import privkey_from_seed, pubkey_of, sign_event
from tools.cli.main import main

AUTHOR = privkey_from_seed("cli-import-author")
FAN = privkey_from_seed("cli-import-fan")


def events() -> bytes:
    note = sign_event(AUTHOR, 1, "hello", [], 1_700_000_000)
    like = sign_event(FAN, 7, "+", [["e", note["id"]], ["p", pubkey_of(AUTHOR)]], 1_700_000_010)
    return (json.dumps(note) + "\n" + json.dumps(like) + "\nnot json\n").encode()


class Stdin:
    """What `sys.stdin` offers the command: a binary `buffer`."""

    def __init__(self, data: bytes) -> None:
        self.buffer = io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]


def facts(db: str) -> int:
    engine = make_engine(db, pool_size=1)
    with engine.connect() as conn:
        n = int(conn.execute(text("SELECT count(*) FROM facts")).scalar_one())
    engine.dispose()
    return n


@pytest.mark.parametrize("source", ["file", "gzip file", "stdin", "gzip stdin"])
def test_every_input_imports_the_same_events_and_prints_the_summary_once(
        source: str, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", db)
    get_settings.cache_clear()
    data = events()
    packed = gzip.compress(data)
    if source == "file":
        (tmp_path / "events.jsonl").write_bytes(data)
        argv = ["import", str(tmp_path / "events.jsonl")]
    elif source == "gzip file":
        (tmp_path / "events.jsonl.gz").write_bytes(packed)
        argv = ["import", str(tmp_path / "events.jsonl.gz")]
    else:
        monkeypatch.setattr("sys.stdin", Stdin(packed if source == "gzip stdin" else data))
        argv = ["import", "-"]
    try:
        assert main(argv) == 0
    finally:
        get_settings.cache_clear()
    out, err = capsys.readouterr()
    assert (out + err).count("admitted") == 1 and "admitted   2" in out  # once, on stdout
    assert "rejected   1" in out and "line 3: bad_json" in out
    assert facts(db) > 0


def test_a_missing_file_is_one_line_and_status_2(db: str, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", db)
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exited:
            main(["import", "/nonexistent/events.jsonl.gz", "--quiet"])
    finally:
        get_settings.cache_clear()
    assert exited.value.code == 2
    assert "cannot read /nonexistent/events.jsonl.gz" in capsys.readouterr().err
