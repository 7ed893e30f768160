"""The analytics_v2 flag: off -> legacy, percent stable per pubkey, cohort, admin endpoint, propagation."""

from __future__ import annotations

import pytest

from libs.nostr.bech32 import npub_encode
from libs.nostr.keys import privkey_from_seed, pubkey_of
from services.gateway.flags import get_flag, pubkey_bucket, set_flag
from tests.services.gateway.helpers import ALICE_PK, BOB_PK, Stack, running_stack, wait_for
from tests.services.gateway.test_errors import assert_error

pytestmark = pytest.mark.asyncio(loop_scope="session")
SUMMARY = "/api/v2/analytics/summary"
FLAG = "/api/v2/admin/flag"


async def source_of(stack: Stack, pubkey: str, key: str = "reader") -> str:
    async with stack.client(key) as http:
        resp = await http.get(SUMMARY, params={"pubkey": pubkey, "window": "7d"})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["meta"]["source"])


async def test_missing_flag_row_means_on(stack: Stack) -> None:
    assert get_flag(stack.engine).mode == "on"
    assert await source_of(stack, ALICE_PK) == "canonical"


async def test_flag_off_sends_every_v2_request_to_legacy_with_the_same_schema(stack: Stack) -> None:
    async with stack.client() as http:
        on = (await http.get(SUMMARY, params={"pubkey": ALICE_PK, "window": "7d"})).json()
    async with stack.client("admin") as admin:
        resp = await admin.put(FLAG, json={"mode": "off"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["mode"] == "off"
    async with stack.client() as http:
        off = (await http.get(SUMMARY, params={"pubkey": ALICE_PK, "window": "7d"})).json()
        drill = (await http.get("/api/v2/analytics/drilldown", params={"pubkey": ALICE_PK, "window": "7d",
                                                                      "dimension": "kind"})).json()
    assert on["meta"]["source"] == "canonical" and off["meta"]["source"] == "legacy"
    assert drill["meta"]["source"] == "legacy"
    assert set(off["data"]) == set(on["data"]) and set(off["meta"]) == set(on["meta"])
    assert off["data"]["metrics"] == on["data"]["metrics"]


async def test_percent_is_stable_per_pubkey_hash(stack: Stack) -> None:
    pubkeys = [pubkey_of(privkey_from_seed(f"flag-{i}")) for i in range(40)]
    inside = next(p for p in pubkeys if pubkey_bucket(p) < 50)
    outside = next(p for p in pubkeys if pubkey_bucket(p) >= 50)
    async with stack.client("admin") as admin:
        resp = await admin.put(FLAG, json={"mode": "percent", "percent": 50})
    assert resp.json()["data"]["percent"] == 50
    for _ in range(3):
        assert await source_of(stack, inside) == "canonical"
        assert await source_of(stack, outside) == "legacy"
        assert await source_of(stack, npub_encode(inside)) == "canonical"


async def test_cohort_lists_pubkeys_or_principals(stack: Stack) -> None:
    async with stack.client("admin") as admin:
        resp = await admin.put(FLAG, json={"mode": "cohort", "cohort": [npub_encode(ALICE_PK)]})
    assert resp.json()["data"]["cohort"] == [ALICE_PK]
    assert await source_of(stack, ALICE_PK) == "canonical"
    assert await source_of(stack, BOB_PK) == "legacy"
    admin_id = next(k for k in _key_ids(stack) if k[1] == "admin")[0]
    set_flag(stack.engine, "cohort", 0, [f"key:{admin_id}"], by="test")
    stack.app.state.gw.flags.invalidate()
    assert await source_of(stack, BOB_PK, key="admin") == "canonical"
    assert await source_of(stack, BOB_PK, key="reader") == "legacy"


def _key_ids(stack: Stack) -> list[tuple[str, str]]:
    from services.gateway.auth import list_keys

    return [(k["id"], k["name"]) for k in list_keys(stack.engine)]


async def test_invalid_flag_settings_are_400(stack: Stack) -> None:
    cases = [({"mode": "sometimes"}, "INVALID_FLAG"), ({"mode": "percent", "percent": 101}, "INVALID_FLAG"),
             ({"percent": 5}, "INVALID_FLAG"), ({"mode": "on", "extra": True}, "INVALID_REQUEST")]
    async with stack.client("admin") as admin:
        for body, code in cases:
            assert_error(await admin.put(FLAG, json=body), 400, code)
        assert_error(await admin.put(FLAG, content=b"{not json", headers={"Content-Type": "application/json"}),
                     400, "INVALID_REQUEST")
    assert get_flag(stack.engine).mode == "on"


async def test_a_change_reaches_another_gateway_within_seconds(stack: Stack) -> None:
    async with running_stack(stack.settings.database_url or "", stack.settings.redis_url) as other:
        assert await source_of(other, ALICE_PK) == "canonical"
        set_flag(stack.engine, "off", by="cli")  # as `canal flag set off` would

        async def switched() -> bool:
            return await source_of(other, ALICE_PK) == "legacy"

        await wait_for(switched, timeout=5, every=0.25)
    flag = get_flag(stack.engine)
    assert (flag.mode, flag.updated_by) == ("off", "cli")
