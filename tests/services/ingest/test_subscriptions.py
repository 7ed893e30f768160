"""The TRACK filters: one per way an event can reach a tracked key, chunked and packed to the relay's limits."""

from __future__ import annotations

import json

from services.ingest.interest import learn_rows
from services.ingest.relay_info import DEFAULT_LIMITS, RelayLimits, limits_from_document
from services.ingest.subscriptions import (
    KINDS,
    Item,
    fetch_filters,
    group_requests,
    plan_live,
    req_size,
    track_filters,
)

K = "a" * 64
NOTE = "b" * 64
ADDR = f"30023:{K}:essay"
FAN = "c" * 64


def test_each_interest_sort_has_its_filter() -> None:
    items = [Item(1, "key", K), Item(2, "note", NOTE), Item(3, "addr", ADDR), Item(4, "author", FAN)]
    assert track_filters(items, 256) == [
        {"authors": [K], "kinds": [*KINDS, 10002]},
        {"#p": [K], "kinds": list(KINDS)},
        {"#e": [NOTE], "kinds": [1, 1111]},
        {"#q": [NOTE, ADDR], "kinds": [1, 1111]},
        {"#a": [ADDR], "kinds": [1, 1111]},
        {"authors": [FAN], "kinds": [3, 5, 10002]},
    ]


def test_values_are_chunked_and_requests_respect_max_filters_and_frame_size() -> None:
    notes = [Item(i, "note", f"{i:064x}") for i in range(1, 1001)]
    filters = track_filters(notes, 100)
    assert [len(f.get("#e", f.get("#q", []))) for f in filters] == [100] * 20
    limits = RelayLimits(max_filters=3, max_message_length=4_000)
    groups = group_requests(filters, limits)
    assert all(len(g) <= 3 and req_size("canal-live-00", g) <= 4_000 for g in groups)
    assert sorted(v for g in groups for f in g for v in f.get("#e", [])) == sorted(i.value for i in notes)


def test_live_plan_grows_chunks_to_fit_max_subscriptions_and_reports_what_does_not_fit() -> None:
    notes = [Item(i, "note", f"{i:064x}") for i in range(1, 2001)]
    roomy = plan_live(notes, RelayLimits(max_filters=10, max_subscriptions=3, max_message_length=10**7), 50)
    assert len(roomy.requests) <= 2 and roomy.overflow == 0
    tight = plan_live(notes, RelayLimits(max_filters=1, max_subscriptions=2, max_message_length=20_000), 50)
    assert len(tight.requests) == 1 and tight.overflow > 0


def test_backfill_filters_are_cut_to_fit_one_frame_each() -> None:
    items = [Item(1, "key", K), Item(2, "author", FAN)]
    assert fetch_filters(items, DEFAULT_LIMITS, 256) == track_filters(items, 256)
    many = [Item(i, "author", f"{i:064x}") for i in range(1, 301)]
    cut = fetch_filters(many, RelayLimits(max_message_length=5_000), 300)
    assert len(cut) > 1 and all(len(json.dumps(["REQ", "canal-live-00", f])) < 5_000 for f in cut)
    assert sum(len(f["authors"]) for f in cut) == 300


def test_nip11_limitation_is_read_with_defaults_for_anything_missing() -> None:
    doc = {"limitation": {"max_filters": 4, "max_limit": 300, "max_subscriptions": "many", "auth_required": True}}
    lim = limits_from_document(doc)
    assert (lim.max_filters, lim.max_limit, lim.max_subscriptions, lim.auth_required) == (4, 300, 20, True)
    assert limits_from_document("nope") == RelayLimits()
    assert limits_from_document({"name": "x"}).announced


def test_learning_adds_notes_of_tracked_keys_and_authors_who_reach_them() -> None:
    keys = {K}
    owners = {NOTE: K}
    events = [
        {"id": "1" * 64, "pubkey": K, "kind": 1, "tags": []},                              # a new note of K
        {"id": "2" * 64, "pubkey": K, "kind": 30023, "tags": [["d", "x"]]},                 # an article
        {"id": "3" * 64, "pubkey": FAN, "kind": 7, "tags": [["e", NOTE], ["k", "1"]]},     # no p: via the note
        {"id": "4" * 64, "pubkey": "d" * 64, "kind": 3, "tags": [["p", K]]},               # a follower
        {"id": "5" * 64, "pubkey": "e" * 64, "kind": 1, "tags": [["q", f"30023:{K}:x"]]},  # quotes an address
        {"id": "6" * 64, "pubkey": "f" * 64, "kind": 1, "tags": [["p", FAN]]},             # unrelated
    ]
    assert learn_rows(events, keys, owners) == [
        ("note", "1" * 64, K), ("note", "2" * 64, K), ("addr", f"30023:{K}:x", K),
        ("author", FAN, K), ("author", "d" * 64, K), ("author", "e" * 64, K),
    ]
