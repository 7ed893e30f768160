"""`canal summary`, `canal drilldown` (keys in every form, table/JSON/CSV) and `canal status` against the real
query, ingest and compactor services over gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import Engine

from libs.config import Settings, get_settings
from libs.db.engine import make_engine
from libs.nostr.bech32 import nprofile_encode, npub_encode
from services.compactor.server import create_server as compactor_server
from services.ingest.server import create_server as ingest_server
from services.query.server import create_server as query_server
from tests.libs.nostr.nip05 import nip05_server
from tests.services.gateway.helpers import ALICE_PK, BOB_PK, seed
from tools.cli.main import main

pytestmark = pytest.mark.asyncio(loop_scope="session")


@contextlib.contextmanager
def env(monkeypatch: pytest.MonkeyPatch, **values: str) -> Iterator[None]:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        yield
    finally:
        get_settings.cache_clear()


@pytest_asyncio.fixture(loop_scope="session")
async def services(db: str) -> AsyncIterator[tuple[Engine, dict[str, str]]]:
    """Query, ingest and compactor servers on port 0 over one seeded database; their addresses by env name."""
    engine = make_engine(db, pool_size=4)
    settings = Settings(_env_file=None, database_url=db)  # type: ignore[call-arg]
    servers = []
    addrs = {}
    for name, factory in (("QUERY_ADDR", query_server), ("INGEST_ADDR", ingest_server),
                          ("COMPACTOR_ADDR", compactor_server)):
        server, port = factory("127.0.0.1:0", engine, settings)
        await server.start()
        servers.append(server)
        addrs[name] = f"127.0.0.1:{port}"
    try:
        yield engine, addrs
    finally:
        for server in servers:
            await server.stop(0)
        engine.dispose()


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_summary_of_a_key_in_every_form_as_table_json_and_csv(
        services: tuple[Engine, dict[str, str]], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    engine, addrs = services
    seed(engine)
    with nip05_server({"alice": ALICE_PK}) as domain, env(monkeypatch, **addrs):
        outputs = []
        for key in (ALICE_PK, npub_encode(ALICE_PK), nprofile_encode(ALICE_PK, ["wss://r.example"]),
                    f"alice@{domain}"):
            assert await cli("summary", key, "--window", "24h", "--json") == 0
            outputs.append(json.loads(capsys.readouterr().out))
        assert await cli("summary", f"alice@{domain}", "--window", "24h", "--csv") == 0
        table = list(csv.reader(io.StringIO(capsys.readouterr().out)))
        assert await cli("summary", ALICE_PK, "--metrics", "reactions.count,reposts.count") == 0
        text = capsys.readouterr().out
    assert {json.dumps(o["data"], sort_keys=True) for o in outputs} == {json.dumps(outputs[0]["data"], sort_keys=True)}
    answer = outputs[0]
    assert answer["data"]["pubkey"] == ALICE_PK and answer["meta"]["source"] == "canonical"
    assert answer["data"]["metrics"]["reactions.count"] == 2 and answer["data"]["metrics"]["reposts.count"] == 1
    assert answer["meta"]["window"]["label"] == "24h"
    assert table[0] == ["metric", "value"]
    assert dict(table[1:]) == {k: str(v) for k, v in answer["data"]["metrics"].items()}
    assert npub_encode(ALICE_PK) in text and "7d" in text  # the default window
    lines = {line.split()[0]: line.split()[-1] for line in text.splitlines()[1:]}
    assert lines == {"metric": "value", "reactions.count": "2", "reposts.count": "1"}


async def test_drilldowns_by_every_dimension(services: tuple[Engine, dict[str, str]],
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    engine, addrs = services
    note = seed(engine)["note"]
    with env(monkeypatch, **addrs):
        assert await cli("drilldown", ALICE_PK, "--dimension", "note", "--json") == 0
        notes = json.loads(capsys.readouterr().out)
        assert await cli("drilldown", ALICE_PK, "--dimension", "counterparty", "--metric", "reactions.count",
                         "--limit", "1", "--all", "--csv") == 0
        people = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        assert await cli("drilldown", ALICE_PK, "--dimension", "kind", "--window", "24h") == 0
        kinds = capsys.readouterr().out
        assert await cli("drilldown", ALICE_PK, "--dimension", "time", "--granularity", "hour", "--window", "24h",
                         "--metric", "reactions.count", "--csv") == 0
        series = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["key"] for r in notes["data"]["rows"]] == [note] and notes["data"]["dimension"] == "note"
    assert len(people) == 2 and {p["key"] for p in people} >= {BOB_PK}  # every page, one row a page
    assert kinds.splitlines()[1].split()[0] == "kind" and any(line.split()[0] == "7" for line in kinds.splitlines())
    assert len(series) in (24, 25) and sum(int(r["reactions.count"]) for r in series) == 2


async def test_an_unresolvable_key_or_a_stopped_service_is_one_line_on_stderr(
        services: tuple[Engine, dict[str, str]], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, addrs = services
    with env(monkeypatch, **addrs):
        assert await cli("summary", "nobody@127.0.0.1:9") == 2
        assert "could not read" in capsys.readouterr().err
        assert await cli("summary", ALICE_PK, "--window", "7d", "--start", "1") == 2
        assert "--start and --end" in capsys.readouterr().err
        assert await cli("drilldown", ALICE_PK, "--dimension", "note", "--metric", "nope") == 2
        assert "nope" in capsys.readouterr().err
    with env(monkeypatch, QUERY_ADDR="127.0.0.1:9"):
        assert await cli("summary", ALICE_PK) == 2
        assert "QUERY_ADDR" in capsys.readouterr().err


async def test_status_reports_relays_watermarks_and_retention(services: tuple[Engine, dict[str, str]],
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    engine, addrs = services
    seed(engine)
    with env(monkeypatch, **addrs):
        assert await cli("status", "--json") == 0
        report: dict[str, Any] = json.loads(capsys.readouterr().out)
        assert await cli("status") == 0
        text = capsys.readouterr().out
    assert report["errors"] == [] and report["ingest"]["facts"] > 0 and report["ingest"]["as_of"] > 0
    assert isinstance(report["ingest"]["relays"], list)
    assert {m["tier"] for m in report["watermarks"]} >= {"minute", "hour", "day"}
    assert {h["tier"] for h in report["retention"]} >= {"facts", "minute", "hour", "day"}
    assert "ingest: as of" in text and "compactor watermarks:" in text and "retention:" in text
    with env(monkeypatch, **{**addrs, "COMPACTOR_ADDR": "127.0.0.1:9"}):
        assert await cli("status", "--json") == 2
        out = capsys.readouterr()
    partial = json.loads(out.out)
    assert "ingest" in partial and "watermarks" not in partial and "COMPACTOR_ADDR" in out.err
