"""Every form of a key a Nostr client has works as `pubkey`: hex, npub, nprofile (NIP-19) and NIP-05
name@domain, resolved by the gateway after authentication; what cannot be resolved is 400 INVALID_PUBKEY."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from libs.nostr.bech32 import nprofile_encode, npub_encode
from services.gateway.identity import KeyResolver
from tests.libs.nostr.nip05 import nip05_server
from tests.services.gateway.helpers import ALICE, ALICE_PK, Stack, nip98, seed

pytestmark = pytest.mark.asyncio(loop_scope="session")
SUMMARY = "/api/v2/analytics/summary"


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error envelope (the message may echo the caller's identifier, here on 127.0.0.1)."""
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert body["error"]["code"] == code and body["error"]["hint"], body
    assert "Traceback" not in resp.text
    return body


@pytest.fixture(scope="module")
def domain() -> Iterator[str]:
    with nip05_server({"alice": ALICE_PK}) as d:
        yield d


async def test_hex_npub_nprofile_and_nip05_name_the_same_answer(shared_stack: Stack, domain: str) -> None:
    shared_stack.app.state.gw.keys = KeyResolver(allow_private=True)  # the domain is on 127.0.0.1
    t = seed(shared_stack.engine)["t"]
    window = {"start": str(t - 60), "end": str(t + 3600)}
    forms = [ALICE_PK, npub_encode(ALICE_PK), "nostr:" + npub_encode(ALICE_PK),
             nprofile_encode(ALICE_PK, ["wss://relay.example"]), f"alice@{domain}", f"Alice@{domain.upper()}"]
    async with shared_stack.client() as http:
        answers = [await http.get(SUMMARY, params={"pubkey": f, **window}) for f in forms]
        drill = await http.get("/api/v2/analytics/drilldown", params={"pubkey": f"alice@{domain}", "window": "7d",
                                                                      "dimension": "kind"})
        estimate = await http.get("/api/v2/analytics/estimate", params={"pubkey": f"alice@{domain}", "window": "7d"})
        job = await http.post("/api/v2/analytics/jobs", json={"kind": "summary", "pubkey": f"alice@{domain}",
                                                              "window": "7d"})
    assert [a.status_code for a in answers] == [200] * len(forms), [a.text for a in answers]
    assert {a.json()["data"]["pubkey"] for a in answers} == {ALICE_PK}
    assert len({str(a.json()["data"]) for a in answers}) == 1
    assert len({a.headers["etag"] for a in answers}) == 1  # one normalized request, one validator
    assert drill.status_code == 200 and estimate.status_code == 200, (drill.text, estimate.text)
    assert job.status_code == 202, job.text


async def test_a_nip05_that_does_not_resolve_is_invalid_pubkey(shared_stack: Stack, domain: str) -> None:
    shared_stack.app.state.gw.keys = KeyResolver(allow_private=True)
    async with shared_stack.client() as http:
        unknown = await http.get(SUMMARY, params={"pubkey": f"bob@{domain}", "window": "7d"})
        nowhere = await http.get(SUMMARY, params={"pubkey": "alice@127.0.0.1:9", "window": "7d"})
        broken = await http.get(SUMMARY, params={"pubkey": "nprofile1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq"
                                                           "qqqqqqqqqqqqqqqqqqq", "window": "7d"})
    body = assert_error(unknown, 400, "INVALID_PUBKEY")
    assert f"bob@{domain}" in body["error"]["message"] and "could not be resolved" in body["error"]["message"]
    assert "NIP-05" in body["error"]["hint"]
    assert_error(nowhere, 400, "INVALID_PUBKEY")
    assert_error(broken, 400, "INVALID_PUBKEY")


async def test_the_gateway_asks_only_public_domains_by_default(shared_stack: Stack, domain: str) -> None:
    shared_stack.app.state.gw.keys = KeyResolver()
    async with shared_stack.client() as http:
        local = await http.get(SUMMARY, params={"pubkey": f"alice@{domain}", "window": "7d"})
        named = await http.get(SUMMARY, params={"pubkey": "alice@localhost", "window": "7d"})
    for resp in (local, named):
        body = assert_error(resp, 400, "INVALID_PUBKEY")
        assert "not a public address" in body["error"]["message"]


async def test_nothing_is_resolved_for_an_unauthenticated_caller(shared_stack: Stack, domain: str) -> None:
    resolver = shared_stack.app.state.gw.keys = KeyResolver(allow_private=True)
    async with shared_stack.client(key=None) as http:
        resp = await http.get(SUMMARY, params={"pubkey": f"alice@{domain}", "window": "7d"})
    assert_error(resp, 401, "UNAUTHENTICATED")
    assert resolver._known == {}


async def test_a_nip98_principal_reads_its_own_key_by_its_nip05(shared_stack: Stack, domain: str) -> None:
    shared_stack.app.state.gw.keys = KeyResolver(allow_private=True)
    url = f"{shared_stack.base_url}{SUMMARY}?pubkey=alice@{domain}&window=7d"
    async with shared_stack.client(key=None) as http:
        resp = await http.get(url, headers={"Authorization": nip98(ALICE, url)})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["pubkey"] == ALICE_PK
