"""`canal up` in TRACK mode against a public-relay-like LocalRelay, as a new user would run it (issue 13):
RELAYS=ws://… TRACK=<npub>, then a live story; the REST answers equal the truth and say when the key
is still backfilling."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from libs.nostr.bech32 import npub_encode
from libs.nostr.keys import privkey_from_seed, pubkey_of, sign_event
from services.gateway.auth import create_key
from tests.chaos.helpers import Db, LoopThread, short_tmp, suite_db_url
from tests.e2e.suite import start_suite, stop_suite, suite_env, wait_for
from tools.demo.relay import start_local_relay

pytestmark = [pytest.mark.slow]

CREATOR = privkey_from_seed("track-up-creator")
CR = pubkey_of(CREATOR)
FANS = [privkey_from_seed(f"track-up-fan-{i}") for i in range(4)]


def ev(priv: bytes, kind: int, content: str = "", tags: list[list[str]] | None = None, ago: int = 0) -> dict[str, Any]:
    return sign_event(priv, kind, content, tags or [], int(time.time()) - ago)


def test_canal_up_with_track_follows_a_creator_through_a_live_story() -> None:
    loop = LoopThread()
    note = ev(CREATOR, 1, "hello", ago=3 * 86400)
    reaction = ev(FANS[0], 7, "+", [["e", note["id"]], ["p", CR]], ago=2 * 86400)
    history = [note, reaction, ev(FANS[1], 3, "", [["p", CR]], ago=86400)]
    try:
        relay, url = loop.run(start_local_relay(history, keep_replaced=False))
        with short_tmp("ctu-") as data_dir:
            env = suite_env(data_dir, RELAYS=url, TRACK=npub_encode(CR), DEMO="false")
            suite = start_suite(env, data_dir / "canal-up.log", timeout=180)
            db = Db(suite_db_url(data_dir))
            try:
                key = create_key(db.engine, "track-up", ["read:any"])[1]

                def summary() -> dict[str, Any]:
                    r = httpx.get(f"{suite.base_url}/api/v2/analytics/summary", params={"pubkey": CR, "window": "all"},
                                  headers={"Authorization": f"Bearer {key}"}, timeout=10)
                    assert r.status_code == 200, r.text
                    return dict(r.json())

                def tracked() -> list[dict[str, Any]]:
                    out = subprocess.run([sys.executable, "-m", "tools.cli.main", "track", "list", "--json"],
                                         env=suite.env, capture_output=True, text=True, timeout=30)
                    assert out.returncode == 0, out.stderr
                    return list(json.loads(out.stdout)["keys"])

                wait_for(lambda: tracked()[0]["state"] == "ready", 60, "the creator's backfill")
                wait_for(lambda: "backfilling" not in summary()["meta"]["partial_reasons"], 10, "a settled answer")
                loop.run(relay.publish([
                    ev(FANS[1], 3, "", [["p", pubkey_of(FANS[3])]], ago=30),             # unfollow: no #p
                    ev(FANS[0], 5, "", [["e", reaction["id"]], ["k", "7"]], ago=20),      # e + k only
                    ev(FANS[2], 1, "quoting", [["q", note["id"]]], ago=10),               # q only
                    ev(FANS[3], 1, "re", [["e", note["id"], "", "root"]], ago=5),         # e root only
                ]))

                def settled() -> dict[str, Any] | None:
                    m = summary()["data"]["metrics"]
                    want = {"followers.lost": 1, "followers.total": 0, "reactions.count": 0, "quotes.count": 1,
                            "replies.count": 1}
                    return m if all(m[k] == v for k, v in want.items()) else None

                metrics = wait_for(settled, 30, "the live story in the REST answer")
                assert metrics["notes.count"] == 1
                assert summary()["meta"]["partial"] is False
            finally:
                stop_suite(suite)
                db.close()
                loop.call(relay.stop)
    finally:
        loop.close()
