"""Auth: API keys (scopes, revocation), NIP-98 (signature, URL, method, age, replay), job privacy."""

from __future__ import annotations

import time

import pytest

from libs.nostr.keys import sign_event
from services.gateway.auth import create_key, list_keys, revoke_key
from tests.services.gateway.helpers import ALICE, ALICE_PK, BOB, BOB_PK, Stack, nip98
from tests.services.gateway.test_errors import assert_error

pytestmark = pytest.mark.asyncio(loop_scope="session")
SUMMARY = "/api/v2/analytics/summary"


def summary_url(stack: Stack, pubkey: str) -> str:
    return f"{stack.base_url}{SUMMARY}?pubkey={pubkey}&window=7d"


async def test_nip98_signer_reads_its_own_pubkey(stack: Stack) -> None:
    url = summary_url(stack, ALICE_PK)
    async with stack.client(key=None) as http:
        resp = await http.get(url, headers={"Authorization": nip98(ALICE, url)})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["pubkey"] == ALICE_PK


async def test_nip98_signer_may_not_read_another_pubkey(stack: Stack) -> None:
    url = summary_url(stack, BOB_PK)
    async with stack.client(key=None) as http:
        resp = await http.get(url, headers={"Authorization": nip98(ALICE, url)})
    assert_error(resp, 403, "FORBIDDEN")


async def test_nip98_replayed_event_is_rejected(stack: Stack) -> None:
    url = summary_url(stack, ALICE_PK)
    header = nip98(ALICE, url)
    async with stack.client(key=None) as http:
        first = await http.get(url, headers={"Authorization": header})
        again = await http.get(url, headers={"Authorization": header})
    assert first.status_code == 200
    assert "replay" in assert_error(again, 401, "UNAUTHENTICATED")["message"]


@pytest.mark.parametrize(("case", "fragment"), [
    ("expired", "expired"),
    ("future", "expired"),
    ("wrong_url", "u tag"),
    ("wrong_method", "method"),
    ("wrong_kind", "kind"),
    ("bad_signature", "not valid"),
    ("not_base64", "base64"),
])
async def test_invalid_nip98_is_401(stack: Stack, case: str, fragment: str) -> None:
    url = summary_url(stack, ALICE_PK)
    now = int(time.time())
    header = {
        "expired": lambda: nip98(ALICE, url, created_at=now - 75),
        "future": lambda: nip98(ALICE, url, created_at=now + 75),
        "wrong_url": lambda: nip98(ALICE, url.replace("7d", "30d")),
        "wrong_method": lambda: nip98(ALICE, url, method="POST"),
        "wrong_kind": lambda: nip98(ALICE, url, kind=1),
        "bad_signature": lambda: _tampered(url),
        "not_base64": lambda: "Nostr %%%not-base64%%%",
    }[case]()
    async with stack.client(key=None) as http:
        resp = await http.get(url, headers={"Authorization": header})
    assert fragment in assert_error(resp, 401, "UNAUTHENTICATED")["message"]


def _tampered(url: str) -> str:
    import base64
    import json

    ev = sign_event(ALICE, 27235, "", [["u", url], ["method", "GET"]], int(time.time()))
    ev["sig"] = ("0" if ev["sig"][0] != "0" else "1") + ev["sig"][1:]
    return "Nostr " + base64.b64encode(json.dumps(ev).encode()).decode()


async def test_revoked_key_is_401_and_keys_are_listed_without_secrets(stack: Stack) -> None:
    key_id, secret = create_key(stack.engine, "temp", ["read:any"])
    listed = {k["id"]: k for k in list_keys(stack.engine)}
    assert listed[key_id]["scopes"] == ["read:any"] and "secret" not in listed[key_id]
    assert revoke_key(stack.engine, key_id) is True
    assert revoke_key(stack.engine, key_id) is False
    async with stack.client(key=None) as http:
        resp = await http.get(SUMMARY, params={"pubkey": ALICE_PK, "window": "7d"},
                              headers={"Authorization": f"Bearer {secret}"})
    assert_error(resp, 401, "UNAUTHENTICATED")
    assert listed[key_id]["revoked_at"] is None
    assert {k["id"]: k for k in list_keys(stack.engine)}[key_id]["revoked_at"] is not None


async def test_keys_are_stored_only_as_hashes(stack: Stack) -> None:
    from sqlalchemy import text

    _, secret = create_key(stack.engine, "hashed", ["read:any"])
    with stack.engine.connect() as conn:
        stored = [r[0] for r in conn.execute(text("SELECT key_hash FROM api_keys"))]
    assert secret not in stored and all(len(h) == 64 for h in stored)


async def test_admin_endpoints_need_the_admin_scope(stack: Stack) -> None:
    url = f"{stack.base_url}/api/v2/admin/flag"
    async with stack.client("reader") as reader, stack.client("admin") as admin, stack.client(key=None) as anon:
        by_reader = await reader.get("/api/v2/admin/flag")
        by_signer = await anon.get(url, headers={"Authorization": nip98(ALICE, url)})
        by_admin = await admin.get("/api/v2/admin/flag")
    assert_error(by_reader, 403, "FORBIDDEN")
    assert_error(by_signer, 403, "FORBIDDEN")
    assert by_admin.status_code == 200


async def test_another_principals_job_is_404_but_admin_sees_it(stack: Stack) -> None:
    body = {"kind": "summary", "pubkey": ALICE_PK, "window": "7d"}
    jobs_url = f"{stack.base_url}/api/v2/analytics/jobs"
    async with stack.client(key=None) as anon, stack.client("reader") as reader, stack.client("admin") as admin:
        import json

        payload = json.dumps(body)
        created = await anon.post(jobs_url, content=payload, headers={
            "Authorization": nip98(ALICE, jobs_url, "POST"), "Content-Type": "application/json"})
        assert created.status_code == 202, created.text
        job_id = created.json()["data"]["job"]["id"]
        status_url = f"{jobs_url}/{job_id}"
        own = await anon.get(status_url, headers={"Authorization": nip98(ALICE, status_url)})
        other = await anon.get(status_url, headers={"Authorization": nip98(BOB, status_url)})
        other_key = await reader.get(status_url)
        other_cancel = await reader.delete(status_url)
        other_result = await reader.get(status_url + "/result")
        by_admin = await admin.get(status_url)
    assert own.status_code == 200 and own.json()["data"]["id"] == job_id
    for resp in (other, other_key, other_cancel, other_result):
        assert_error(resp, 404, "JOB_NOT_FOUND")
    assert by_admin.status_code == 200


async def test_nip98_payload_tag_must_match_the_body(stack: Stack) -> None:
    import hashlib
    import json

    jobs_url = f"{stack.base_url}/api/v2/analytics/jobs"
    payload = json.dumps({"kind": "summary", "pubkey": ALICE_PK, "window": "7d"})
    wrong = nip98(ALICE, jobs_url, "POST", extra=[["payload", hashlib.sha256(b"other").hexdigest()]])
    async with stack.client(key=None) as http:
        resp = await http.post(jobs_url, content=payload, headers={"Authorization": wrong,
                                                                   "Content-Type": "application/json"})
    assert "payload" in assert_error(resp, 401, "UNAUTHENTICATED")["message"]


async def test_nip98_event_signed_within_the_last_minute_is_accepted(stack: Stack) -> None:
    url = summary_url(stack, ALICE_PK)
    async with stack.client(key=None) as http:
        resp = await http.get(url, headers={"Authorization": nip98(ALICE, url, created_at=int(time.time()) - 45)})
    assert resp.status_code == 200, resp.text
