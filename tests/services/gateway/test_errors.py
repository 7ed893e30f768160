"""Every error code of API.md as `{"error": {code, message, hint, request_id}}`, never FastAPI's 422."""

from __future__ import annotations

import pytest

from tests.services.gateway.helpers import ALICE_PK, Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")
SUMMARY = "/api/v2/analytics/summary"
DRILLDOWN = "/api/v2/analytics/drilldown"


def assert_error(resp, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"code", "message", "hint", "request_id"}
    assert err["code"] == code and err["message"] and err["hint"]
    assert err["request_id"] == resp.headers["x-request-id"]
    for leak in ("Traceback", "SELECT", "127.0.0.1", "psycopg", "grpc"):
        assert leak not in resp.text
    return err


@pytest.mark.parametrize(("params", "code"), [
    ({"pubkey": "nope", "window": "7d"}, "INVALID_PUBKEY"),
    ({"pubkey": ALICE_PK.upper(), "window": "7d"}, "INVALID_PUBKEY"),
    ({"pubkey": "npub1" + "q" * 58, "window": "7d"}, "INVALID_PUBKEY"),
    ({"window": "7d"}, "INVALID_PUBKEY"),
    ({"pubkey": ALICE_PK}, "INVALID_WINDOW"),
    ({"pubkey": ALICE_PK, "window": "8d"}, "INVALID_WINDOW"),
    ({"pubkey": ALICE_PK, "window": "7d", "start": "0", "end": "10"}, "INVALID_WINDOW"),
    ({"pubkey": ALICE_PK, "start": "100", "end": "50"}, "INVALID_WINDOW"),
    ({"pubkey": ALICE_PK, "start": "2024-01-01T00:00:00", "end": "2024-02-01T00:00:00Z"}, "INVALID_WINDOW"),
    ({"pubkey": ALICE_PK, "window": "7d", "tz": "Mars/Olympus"}, "INVALID_WINDOW"),
    ({"pubkey": ALICE_PK, "window": "7d", "metrics": "zaps.count,zaps.total"}, "UNKNOWN_METRIC"),
])
async def test_invalid_summary_parameters_are_400_with_their_code(shared_stack: Stack, params: dict,
                                                                 code: str) -> None:
    async with shared_stack.client() as http:
        resp = await http.get(SUMMARY, params=params)
    assert_error(resp, 400, code)


@pytest.mark.parametrize(("params", "code"), [
    ({"dimension": "note", "cursor": "forged"}, "INVALID_CURSOR"),
    ({"dimension": "note", "cursor": "p1700000000_Zm9yZ2Vk"}, "INVALID_CURSOR"),
    ({"dimension": "planet"}, "INVALID_DIMENSION"),
    ({"dimension": "time", "granularity": "fortnight"}, "INVALID_GRANULARITY"),
    ({"dimension": "note", "limit": "0"}, "INVALID_LIMIT"),
    ({"dimension": "note", "limit": "501"}, "INVALID_LIMIT"),
    ({"dimension": "note", "limit": "ten"}, "INVALID_LIMIT"),
    ({"dimension": "note", "metric": "followers.total"}, "UNKNOWN_METRIC"),
    ({"dimension": "time", "granularity": "minute", "window": "365d"}, "INVALID_WINDOW"),
])
async def test_invalid_drilldown_parameters_are_400_with_their_code(shared_stack: Stack, params: dict,
                                                                   code: str) -> None:
    async with shared_stack.client() as http:
        resp = await http.get(DRILLDOWN, params={"pubkey": ALICE_PK, "window": "7d", **params})
    assert_error(resp, 400, code)


async def test_missing_and_unknown_credentials_are_401(shared_stack: Stack) -> None:
    async with shared_stack.client(key=None) as http:
        missing = await http.get(SUMMARY, params={"pubkey": ALICE_PK, "window": "7d"})
        wrong = await http.get(SUMMARY, params={"pubkey": ALICE_PK, "window": "7d"},
                               headers={"Authorization": "Bearer canal_not-a-key"})
        scheme = await http.get(SUMMARY, params={"pubkey": ALICE_PK, "window": "7d"},
                                headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_error(missing, 401, "UNAUTHENTICATED")
    assert "Bearer" in missing.headers["www-authenticate"]
    assert_error(wrong, 401, "UNAUTHENTICATED")
    assert_error(scheme, 401, "UNAUTHENTICATED")


async def test_a_key_without_read_scope_is_403(shared_stack: Stack) -> None:
    async with shared_stack.client("noscope") as http:
        resp = await http.get(SUMMARY, params={"pubkey": ALICE_PK, "window": "7d"})
    assert_error(resp, 403, "FORBIDDEN")


async def test_unknown_job_is_404_job_not_found(shared_stack: Stack) -> None:
    async with shared_stack.client() as http:
        well_formed = await http.get("/api/v2/analytics/jobs/" + "0" * 32)
        odd = await http.get("/api/v2/analytics/jobs/../../etc")
        result = await http.get("/api/v2/analytics/jobs/" + "1" * 32 + "/result")
        cancel = await http.delete("/api/v2/analytics/jobs/" + "2" * 32)
    assert_error(well_formed, 404, "JOB_NOT_FOUND")
    assert odd.status_code == 404 and "error" in odd.json()
    assert_error(result, 404, "JOB_NOT_FOUND")
    assert_error(cancel, 404, "JOB_NOT_FOUND")


async def test_unknown_routes_and_methods_use_the_error_envelope(shared_stack: Stack) -> None:
    async with shared_stack.client() as http:
        missing = await http.get("/api/v2/nothing-here")
        method = await http.post(SUMMARY)
    assert_error(missing, 404, "NOT_FOUND")
    assert_error(method, 405, "METHOD_NOT_ALLOWED")
