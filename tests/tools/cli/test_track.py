"""`canal track add|remove|list` against the real ingest service, with keys as hex, npub, nprofile and NIP-05."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from libs.config import Settings, get_settings
from libs.db.engine import make_engine
from libs.nostr.bech32 import nprofile_encode, npub_encode
from libs.nostr.keys import privkey_from_seed, pubkey_of
from services.ingest.server import create_server
from tests.libs.nostr.nip05 import nip05_server
from tools.cli.main import main

A = pubkey_of(privkey_from_seed("cli-track-a"))
B = pubkey_of(privkey_from_seed("cli-track-b"))


@contextlib.contextmanager
def ingest_addr(monkeypatch: pytest.MonkeyPatch, addr: str) -> Iterator[None]:
    monkeypatch.setenv("INGEST_ADDR", addr)
    get_settings.cache_clear()
    try:
        yield
    finally:
        get_settings.cache_clear()


async def test_track_add_list_remove_through_ingest(db: str, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(db, pool_size=2)
    server, port = create_server("127.0.0.1:0", engine, Settings(database_url="postgresql://unused"))
    await server.start()
    try:
        with nip05_server({"bob": B}) as domain, ingest_addr(monkeypatch, f"127.0.0.1:{port}"):
            assert await asyncio.to_thread(main, ["track", "add", npub_encode(A), f"bob@{domain}"]) == 0
            assert await asyncio.to_thread(main, ["track", "add", nprofile_encode(A, ["wss://r.example"])]) == 0
            out = capsys.readouterr().out
            assert f"tracking {npub_encode(A)}" in out and f"already tracked: {npub_encode(A)}" in out
            assert await asyncio.to_thread(main, ["track", "list", "--json"]) == 0
            listed = json.loads(capsys.readouterr().out)
            assert {k["pubkey"]: k["label"] for k in listed["keys"]} == {A: "", B: f"bob@{domain}"}
            assert all(k["state"] == "backfilling" for k in listed["keys"])
            assert await asyncio.to_thread(main, ["track", "remove", A]) == 0
            assert await asyncio.to_thread(main, ["track", "add", "nobody@" + domain]) == 2
            err = capsys.readouterr().err
            assert "does not name a key" in err and "hint" in err
    finally:
        await server.stop(0)
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(text("SELECT pubkey FROM tracked_keys"))] == [B]
    engine.dispose()


def test_track_says_how_to_start_ingest_when_it_is_not_running(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    with ingest_addr(monkeypatch, "127.0.0.1:9"):
        assert main(["track", "list"]) == 2
    assert "canal up" in capsys.readouterr().err
