"""METRICS.md deletions, contact lists, own activity, admission idempotence and dirty buckets."""

from __future__ import annotations

from sqlalchemy import Engine

from tests.services.ingest.helpers import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    NOW,
    T0,
    A,
    B,
    C,
    D,
    clear_dirty,
    dirty,
    ev,
    fact_keys,
    facts,
    facts_of,
    ingest,
    ingest_each,
    item,
    minute,
    rows,
    scalar,
)

MISSING = "ee" * 32


# -- deletions ---------------------------------------------------------------------------------
def test_own_deletion_retracts_a_reaction_and_marks_its_bucket_dirty(engine: Engine) -> None:
    reaction = ev(BOB, 7, "+", [["e", MISSING], ["p", A]], T0)
    ingest(engine, reaction)
    clear_dirty(engine)
    ingest(engine, ev(BOB, 5, "", [["e", reaction["id"]]], T0 + 500))
    assert facts_of(engine, "REACTION") == set()
    assert dirty(engine) == {(A, minute(T0))}


def test_a_foreign_deletion_is_ignored(engine: Engine) -> None:
    note = ev(ALICE)
    reaction = ev(BOB, 7, "+", [["e", note["id"]], ["p", A]], T0 + 1)
    ingest(engine, note, reaction, ev(CAROL, 5, "", [["e", note["id"]], ["e", reaction["id"]]], T0 + 2))
    assert fact_keys(engine, "NOTE") == {(A, note["id"])}
    assert fact_keys(engine, "REACTION") == {(A, reaction["id"])}
    assert scalar(engine, "SELECT deleted FROM notes WHERE note_key = :k", k=note["id"]) is False


def test_a_deletion_arriving_before_its_target_is_a_tombstone(engine: Engine) -> None:
    note = ev(ALICE)
    ingest(engine, ev(ALICE, 5, "", [["e", note["id"]]], T0 + 10))
    assert rows(engine, "SELECT ref, deleter FROM tombstones") == [(note["id"], A)]
    ingest(engine, note, ev(BOB, 7, "+", [["e", note["id"]], ["p", A]], T0 + 1))
    assert facts_of(engine, "NOTE") == set()
    assert fact_keys(engine, "REACTION") != set()  # others' engagement with the deleted note stays


def test_a_deleted_note_leaves_notes_count_but_keeps_others_engagement_and_is_flagged(engine: Engine) -> None:
    note = ev(ALICE)
    reaction = ev(BOB, 7, "+", [["e", note["id"]], ["p", A]], T0 + 1)
    reply = ev(CAROL, 1, "re", [["e", note["id"], "", "reply"]], T0 + 2)
    ingest(engine, note, reaction, reply)
    ingest(engine, ev(ALICE, 5, "", [["e", note["id"]]], T0 + 3))
    assert facts_of(engine, "NOTE") == {(C, reply["id"], "NOTE", T0 + 2, 1, C, reply["id"], 0, 0)}
    assert fact_keys(engine, "REACTION") == {(A, reaction["id"])}
    assert fact_keys(engine, "REPLY") == {(A, reply["id"])}
    assert scalar(engine, "SELECT deleted FROM notes WHERE note_key = :k", k=note["id"]) is True
    assert scalar(engine, "SELECT deleted FROM events WHERE id = :k", k=note["id"]) is True


def test_address_deletion_retracts_versions_up_to_its_created_at(engine: Engine) -> None:
    v1 = ev(ALICE, 30023, "v1", [["d", "essay"]], T0)
    v2 = ev(ALICE, 30023, "v2", [["d", "essay"]], T0 + 100)
    v3 = ev(ALICE, 30023, "v3", [["d", "essay"]], T0 + 300)
    deletion = ev(ALICE, 5, "", [["a", f"30023:{A}:essay"]], T0 + 100)
    ingest(engine, v3, deletion, v1)
    ingest(engine, v2)
    assert fact_keys(engine, "ARTICLE") == {(A, v3["id"])}


def test_address_deletion_by_someone_else_is_ignored(engine: Engine) -> None:
    v1 = ev(ALICE, 30023, "v1", [["d", "essay"]], T0)
    ingest(engine, v1, ev(BOB, 5, "", [["a", f"30023:{A}:essay"]], T0 + 100))
    assert fact_keys(engine, "ARTICLE") == {(A, v1["id"])}


def test_deleting_a_deletion_has_no_effect(engine: Engine) -> None:
    note = ev(ALICE)
    first = ev(ALICE, 5, "", [["e", note["id"]]], T0 + 1)
    undo = ev(ALICE, 5, "", [["e", first["id"]]], T0 + 2)
    ingest(engine, note, first, undo)
    assert facts_of(engine, "NOTE") == set()


def test_retraction_is_final_whatever_the_deletion_time(engine: Engine) -> None:
    note = ev(ALICE, t=T0 + 1000)
    ingest(engine, note, ev(ALICE, 5, "", [["e", note["id"]]], T0))  # dated before its target
    assert facts_of(engine, "NOTE") == set()


# -- contact lists -----------------------------------------------------------------------------
def _follows(engine: Engine) -> set[tuple[str, str, int]]:
    return {(f[2], f[0], f[3]) for f in facts(engine) if f[2] in ("FOLLOW", "UNFOLLOW")}


def test_the_first_list_counts_its_members_as_followed_at_its_time(engine: Engine) -> None:
    ingest(engine, ev(BOB, 3, "", [["p", A], ["p", C]], T0))
    assert _follows(engine) == {("FOLLOW", A, T0), ("FOLLOW", C, T0)}
    assert {f[5] for f in facts(engine)} == {B}


def test_successive_lists_give_follow_and_unfollow_moments(engine: Engine) -> None:
    ingest(engine, ev(BOB, 3, "", [["p", A], ["p", C]], T0), ev(BOB, 3, "", [["p", C], ["p", D]], T0 + 100))
    assert _follows(engine) == {("FOLLOW", A, T0), ("FOLLOW", C, T0), ("UNFOLLOW", A, T0 + 100),
                                ("FOLLOW", D, T0 + 100)}


def test_a_late_older_list_is_history_between_its_neighbours(engine: Engine) -> None:
    l1 = ev(BOB, 3, "", [["p", A]], T0)
    l2 = ev(BOB, 3, "", [["p", A], ["p", C]], T0 + 100)
    l3 = ev(BOB, 3, "", [["p", C], ["p", D]], T0 + 200)
    ingest_each(engine, [l1, l3])
    clear_dirty(engine)
    ingest(engine, l2)
    assert _follows(engine) == {("FOLLOW", A, T0), ("FOLLOW", C, T0 + 100), ("UNFOLLOW", A, T0 + 200),
                                ("FOLLOW", D, T0 + 200)}
    assert (C, minute(T0 + 100)) in dirty(engine) and (C, minute(T0 + 200)) in dirty(engine)


def test_lists_with_the_same_created_at_leave_the_lowest_id_effective(engine: Engine) -> None:
    base = ev(BOB, 3, "", [["p", D]], T0)
    x, y = ev(BOB, 3, "x", [["p", A]], T0 + 100), ev(BOB, 3, "y", [["p", C]], T0 + 100)
    low, high = sorted([x, y], key=lambda e: e["id"])
    low_p, high_p = low["tags"][0][1], high["tags"][0][1]
    ingest_each(engine, [low, base, high])  # arrival order is not history order
    follows = {(f[2], f[0], f[1]) for f in facts(engine) if f[2] in ("FOLLOW", "UNFOLLOW")}
    # history: base, then the higher id, then the lowest id (last, so effective)
    assert follows == {("FOLLOW", D, base["id"]), ("FOLLOW", high_p, high["id"]), ("UNFOLLOW", D, high["id"]),
                       ("FOLLOW", low_p, low["id"]), ("UNFOLLOW", high_p, low["id"])}


def test_a_deleted_list_leaves_the_history_and_its_neighbours_are_compared(engine: Engine) -> None:
    l1 = ev(BOB, 3, "", [["p", A]], T0)
    l2 = ev(BOB, 3, "", [["p", A], ["p", C]], T0 + 100)
    l3 = ev(BOB, 3, "", [["p", A], ["p", C]], T0 + 200)
    ingest(engine, l1, l2, l3)
    assert _follows(engine) == {("FOLLOW", A, T0), ("FOLLOW", C, T0 + 100)}
    ingest(engine, ev(BOB, 5, "", [["e", l2["id"]]], T0 + 300))
    assert _follows(engine) == {("FOLLOW", A, T0), ("FOLLOW", C, T0 + 200)}


def test_self_follows_are_not_counted(engine: Engine) -> None:
    ingest(engine, ev(BOB, 3, "", [["p", B], ["p", A]], T0), ev(BOB, 3, "", [["p", A]], T0 + 10))
    assert _follows(engine) == {("FOLLOW", A, T0)}


# -- own activity ------------------------------------------------------------------------------
def test_every_kind_1_counts_as_a_note_of_its_author_replies_included(engine: Engine) -> None:
    root = ev(ALICE)
    reply = ev(ALICE, 1, "me too", [["e", MISSING, "", "reply", C]], T0 + 1)
    ingest(engine, root, reply, ev(ALICE, 1111, "comment", [["e", MISSING], ["p", C]], T0 + 2))
    assert fact_keys(engine, "NOTE") == {(A, root["id"]), (A, reply["id"])}


def test_article_versions_share_one_note_per_distinct_d(engine: Engine) -> None:
    v1 = ev(ALICE, 30023, "v1", [["d", "essay"]], T0)
    v2 = ev(ALICE, 30023, "v2", [["d", "essay"]], T0 + 10)
    other = ev(ALICE, 30023, "o", [["d", "notes"]], T0 + 20)
    no_d = ev(ALICE, 30023, "x", [], T0 + 30)
    ingest(engine, v1, v2, other, no_d)
    assert {(f[1], f[6]) for f in facts_of(engine, "ARTICLE")} == {
        (v1["id"], f"30023:{A}:essay"), (v2["id"], f"30023:{A}:essay"), (other["id"], f"30023:{A}:notes"),
        (no_d["id"], f"30023:{A}:")}


# -- admission and idempotence -----------------------------------------------------------------
def test_duplicates_within_and_across_batches_change_nothing_and_leave_no_reject_row(engine: Engine) -> None:
    note = ev(ALICE)
    first = ingest(engine, note, note)
    assert [o.status for o in first.outcomes] == ["admitted", "duplicate"]
    before = facts(engine)
    broken_copy = {**note, "sig": "00" * 64}
    again = ingest(engine, note, broken_copy)
    assert [o.status for o in again.outcomes] == ["duplicate", "duplicate"]
    assert facts(engine) == before
    assert scalar(engine, "SELECT count(*) FROM rejects") == 0


def test_an_id_seen_only_broken_does_not_block_a_later_valid_copy(engine: Engine) -> None:
    note = ev(ALICE)
    (out,) = ingest(engine, {**note, "content": "tampered"}).outcomes
    assert (out.status, out.reason) == ("rejected", "bad_id")
    assert [o.status for o in ingest(engine, note).outcomes] == ["admitted"]


def test_future_rule_admits_exactly_900_seconds_ahead(engine: Engine) -> None:
    edge = ev(ALICE, t=NOW + 900)
    ahead = ev(ALICE, 1, "later", t=NOW + 901)
    res = ingest(engine, edge, ahead)
    assert [(o.status, o.reason) for o in res.outcomes] == [("admitted", ""), ("rejected", "future")]


def test_rejects_keep_reason_origin_and_raw_text(engine: Engine) -> None:
    bad = {**ev(DAVE), "sig": "11" * 64}
    from services.ingest.store import IngestStore

    IngestStore(engine).ingest([item(bad, origin="wss://relay.example")], NOW)
    ((event_id, reason, origin, raw),) = rows(engine, "SELECT event_id, reason, origin, raw FROM rejects")
    assert (event_id, reason, origin) == (bad["id"], "bad_sig", "wss://relay.example")
    assert bad["id"] in raw


def test_ingest_state_counts_admitted_duplicates_and_rejects(engine: Engine) -> None:
    note = ev(ALICE)
    ingest(engine, note, note, {**note, "id": "00" * 32}, receive_time=NOW)
    got = dict(rows(engine, "SELECT name, value FROM ingest_state"))
    assert (got["admitted"], got["duplicates"], got["rejected"], got["last_commit_at"]) == (1, 1, 1, NOW)


def test_an_event_holding_nul_is_rejected_as_unstorable_without_failing_its_batch(engine: Engine) -> None:
    nul = ev(ALICE, 1, "a\x00b")
    nul_tag = ev(ALICE, 1, "tag", [["t", "x\x00"]], T0 + 1)
    fine = ev(BOB)
    res = ingest(engine, nul, nul_tag, fine)
    assert [(o.status, o.reason, o.detail) for o in res.outcomes] == [
        ("rejected", "unstorable", "nul_char"), ("rejected", "unstorable", "nul_char"), ("admitted", "", "")]


def test_a_profile_name_with_an_escaped_nul_is_stored(engine: Engine) -> None:
    profile = ev(ALICE, 0, '{"name": "a\\u0000b"}')
    assert [o.status for o in ingest(engine, profile).outcomes] == ["admitted"]
    assert scalar(engine, "SELECT display_name FROM profiles") == "a\ufffdb"
