"""METRICS.md replies, quotes, mentions, reactions and reposts, through the store."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from libs.metrics import SUB_DISLIKE, SUB_LIKE
from libs.nostr.bech32 import nprofile_encode, npub_encode
from tests.services.ingest.helpers import (
    ALICE,
    BOB,
    CAROL,
    T0,
    A,
    B,
    C,
    D,
    clear_dirty,
    dirty,
    ev,
    fact_keys,
    facts_of,
    ingest,
    minute,
)

MISSING = "ee" * 32  # an id no test ingests


# -- replies -----------------------------------------------------------------------------------
def test_marked_reply_goes_to_the_reply_tag_not_the_root(engine: Engine) -> None:
    root, parent = ev(ALICE, t=T0), ev(CAROL, t=T0 + 1)
    reply = ev(BOB, 1, "re", [["e", root["id"], "", "root"], ["e", parent["id"], "", "reply"], ["p", A]], T0 + 2)
    ingest(engine, root, parent, reply)
    assert facts_of(engine, "REPLY") == {(C, reply["id"], "REPLY", T0 + 2, 1, B, parent["id"], 0, 0)}


def test_marked_root_alone_is_the_parent(engine: Engine) -> None:
    root = ev(ALICE)
    reply = ev(BOB, 1, "re", [["e", root["id"], "wss://r", "root"]], T0 + 2)
    ingest(engine, reply, root)
    assert fact_keys(engine, "REPLY") == {(A, reply["id"])}


def test_positional_reply_goes_to_the_last_e(engine: Engine) -> None:
    root, parent = ev(ALICE), ev(CAROL, t=T0 + 1)
    reply = ev(BOB, 1, "re", [["e", root["id"]], ["e", parent["id"]]], T0 + 2)
    ingest(engine, root, parent, reply)
    assert fact_keys(engine, "REPLY") == {(C, reply["id"])}


def test_parent_author_comes_from_the_tag_when_the_parent_is_not_ingested(engine: Engine) -> None:
    marked = ev(BOB, 1, "re", [["e", MISSING, "", "reply", C]], T0)
    positional = ev(BOB, 1, "re2", [["e", MISSING, "", D]], T0 + 1)
    ingest(engine, marked, positional)
    assert fact_keys(engine, "REPLY") == {(C, marked["id"]), (D, positional["id"])}


def test_an_e_marked_mention_is_never_a_parent(engine: Engine) -> None:
    cited = ev(ALICE)
    note = ev(BOB, 1, "see this", [["e", cited["id"], "", "mention"], ["p", A]], T0 + 1)
    ingest(engine, cited, note)
    assert facts_of(engine, "REPLY") == set()


def test_a_kind_1_with_only_a_tags_is_not_a_reply(engine: Engine) -> None:
    ingest(engine, ev(BOB, 1, "nice article", [["a", f"30023:{A}:essay"]]))
    assert facts_of(engine, "REPLY") == set()


def test_comment_1111_replies_to_its_lowercase_e_with_the_p_tag_as_author(engine: Engine) -> None:
    comment = ev(BOB, 1111, "c", [["E", MISSING, "", D], ["P", D], ["e", MISSING], ["k", "1"], ["p", C]], T0)
    ingest(engine, comment)
    assert facts_of(engine, "REPLY") == {(C, comment["id"], "REPLY", T0, 1111, B, MISSING, 0, 0)}


def test_comment_1111_on_an_address_replies_to_the_address_author(engine: Engine) -> None:
    addr = f"30023:{A}:essay"
    comment = ev(BOB, 1111, "c", [["A", addr], ["a", addr], ["k", "30023"], ["p", C]], T0)
    ingest(engine, comment)
    assert fact_keys(engine, "REPLY") == {(A, comment["id"])}
    assert {f[6] for f in facts_of(engine, "REPLY")} == {addr}


def test_ingested_parent_author_wins_over_the_tag_hint(engine: Engine) -> None:
    parent = ev(ALICE)
    reply = ev(BOB, 1, "re", [["e", parent["id"], "", "reply", D]], T0 + 1)
    ingest(engine, reply)
    assert fact_keys(engine, "REPLY") == {(D, reply["id"])}
    ingest(engine, parent)
    assert fact_keys(engine, "REPLY") == {(A, reply["id"])}


def test_unresolved_reply_is_counted_at_its_own_time_when_the_parent_arrives(engine: Engine) -> None:
    parent = ev(ALICE, t=T0)
    reply = ev(BOB, 1, "re", [["e", parent["id"]]], T0 + 3600)
    ingest(engine, reply)
    assert facts_of(engine, "REPLY") == set()
    clear_dirty(engine)
    ingest(engine, parent)
    assert facts_of(engine, "REPLY") == {(A, reply["id"], "REPLY", T0 + 3600, 1, B, parent["id"], 0, 0)}
    assert (A, minute(T0 + 3600)) in dirty(engine)


def test_a_mention_becomes_a_reply_when_the_unresolved_parent_turns_out_to_be_by_the_mentioned(
        engine: Engine) -> None:
    parent = ev(ALICE, t=T0)
    reply = ev(BOB, 1, f"hey nostr:{npub_encode(A)}", [["e", parent["id"]]], T0 + 60)
    ingest(engine, reply)
    assert fact_keys(engine, "MENTION") == {(A, reply["id"])}
    assert facts_of(engine, "REPLY") == set()
    ingest(engine, parent)
    assert facts_of(engine, "MENTION") == set()
    assert fact_keys(engine, "REPLY") == {(A, reply["id"])}


def test_a_deleted_parent_still_resolves_the_reply_author(engine: Engine) -> None:
    parent = ev(ALICE)
    deletion = ev(ALICE, 5, "", [["e", parent["id"]]], T0 + 5)
    reply = ev(BOB, 1, "re", [["e", parent["id"]]], T0 + 10)
    ingest(engine, parent, deletion)
    ingest(engine, reply)
    assert fact_keys(engine, "REPLY") == {(A, reply["id"])}


def test_self_reply_is_not_counted(engine: Engine) -> None:
    parent = ev(ALICE)
    ingest(engine, parent, ev(ALICE, 1, "me again", [["e", parent["id"], "", "reply"]], T0 + 1))
    assert facts_of(engine, "REPLY") == set()


def test_reply_to_an_ingested_article_id_is_keyed_by_its_address(engine: Engine) -> None:
    article = ev(ALICE, 30023, "text", [["d", "essay"]], T0)
    reply = ev(BOB, 1, "re", [["e", article["id"], "", "root"]], T0 + 1)
    ingest(engine, reply, article)
    assert {f[6] for f in facts_of(engine, "REPLY")} == {f"30023:{A}:essay"}


# -- quotes ------------------------------------------------------------------------------------
def test_quote_of_an_address_counts_for_the_address_author(engine: Engine) -> None:
    addr = f"30023:{A}:essay"
    quote = ev(BOB, 1, "read this", [["q", addr]])
    ingest(engine, quote)
    assert facts_of(engine, "QUOTE") == {(A, quote["id"], "QUOTE", T0, 1, B, addr, 0, 0)}


def test_quote_of_an_id_uses_the_ingested_author_else_the_fourth_element(engine: Engine) -> None:
    quoted = ev(ALICE)
    by_ref = ev(BOB, 1, "q1", [["q", quoted["id"]]], T0 + 1)
    by_hint = ev(BOB, 1, "q2", [["q", MISSING, "wss://r", C]], T0 + 2)
    ingest(engine, by_ref, by_hint)
    assert fact_keys(engine, "QUOTE") == {(C, by_hint["id"])}  # the first waits for its quoted note
    ingest(engine, quoted)
    assert fact_keys(engine, "QUOTE") == {(A, by_ref["id"]), (C, by_hint["id"])}


def test_quotes_count_events_once_and_only_kinds_1_and_1111(engine: Engine) -> None:
    quoted, other = ev(ALICE), ev(ALICE, 1, "second", t=T0 + 1)
    twice = ev(BOB, 1, "q", [["q", quoted["id"]], ["q", other["id"]]], T0 + 2)
    comment = ev(BOB, 1111, "q", [["q", quoted["id"]]], T0 + 3)
    repost_with_q = ev(BOB, 6, "", [["e", quoted["id"]], ["p", A], ["q", quoted["id"]]], T0 + 4)
    ingest(engine, quoted, other, twice, comment, repost_with_q)
    assert fact_keys(engine, "QUOTE") == {(A, twice["id"]), (A, comment["id"])}


def test_self_quote_is_not_counted(engine: Engine) -> None:
    quoted = ev(ALICE)
    ingest(engine, quoted, ev(ALICE, 1, "me", [["q", quoted["id"]]], T0 + 1))
    assert facts_of(engine, "QUOTE") == set()


# -- mentions ----------------------------------------------------------------------------------
def test_npub_and_long_nprofile_references_are_mentions(engine: Engine) -> None:
    relays = ["wss://relay.damus.io", "wss://nos.lol", "wss://relay.nostr.band"]
    long_ref = nprofile_encode(C, relays)
    assert len(long_ref) > 90
    note = ev(BOB, 1, f"gm nostr:{npub_encode(A)} and nostr:{long_ref}!", [])
    ingest(engine, note)
    assert fact_keys(engine, "MENTION") == {(A, note["id"]), (C, note["id"])}


def test_a_mention_is_counted_once_per_event(engine: Engine) -> None:
    note = ev(BOB, 1, f"nostr:{npub_encode(A)} nostr:{npub_encode(A)} nostr:{nprofile_encode(A)}")
    ingest(engine, note)
    assert len(facts_of(engine, "MENTION")) == 1


def test_no_mention_for_a_reply_to_or_a_quote_of_the_mentioned(engine: Engine) -> None:
    parent = ev(ALICE)
    reply = ev(BOB, 1, f"nostr:{npub_encode(A)}", [["e", parent["id"], "", "reply"]], T0 + 1)
    quote = ev(CAROL, 1, f"nostr:{npub_encode(A)}", [["q", parent["id"]]], T0 + 2)
    ingest(engine, parent, reply, quote)
    assert facts_of(engine, "MENTION") == set()


def test_bare_p_tags_self_mentions_and_other_kinds_are_not_mentions(engine: Engine) -> None:
    ingest(engine,
           ev(BOB, 1, "no reference", [["p", A]]),
           ev(ALICE, 1, f"me: nostr:{npub_encode(A)}", t=T0 + 1),
           ev(BOB, 1111, f"comment nostr:{npub_encode(A)}", t=T0 + 2),
           ev(BOB, 1, f"not a pubkey nostr:{npub_encode(A)[:-1]}x", t=T0 + 3))
    assert facts_of(engine, "MENTION") == set()


# -- reactions and reposts ---------------------------------------------------------------------
@pytest.mark.parametrize(("content", "sub"), [("+", SUB_LIKE), ("", SUB_LIKE), ("-", SUB_DISLIKE),
                                              ("🤙", 0), (":soapbox:", 0), ("like", 0)])
def test_reaction_content_decides_like_dislike_or_emoji(engine: Engine, content: str, sub: int) -> None:
    note = ev(ALICE)
    reaction = ev(BOB, 7, content, [["e", note["id"]], ["p", A]], T0 + 1)
    ingest(engine, reaction)
    assert facts_of(engine, "REACTION") == {(A, reaction["id"], "REACTION", T0 + 1, 7, B, note["id"], 0, sub)}


def test_reaction_targets_the_last_e_and_the_last_p(engine: Engine) -> None:
    reaction = ev(BOB, 7, "+", [["e", MISSING], ["p", C], ["e", "dd" * 32], ["p", A]])
    ingest(engine, reaction)
    assert {(f[0], f[6]) for f in facts_of(engine, "REACTION")} == {(A, "dd" * 32)}


def test_reaction_without_p_counts_for_nobody_and_without_e_at_profile_level(engine: Engine) -> None:
    ingest(engine, ev(BOB, 7, "+", [["e", MISSING]]), ev(BOB, 7, "+", [["p", A]], T0 + 1))
    assert {(f[0], f[6]) for f in facts_of(engine, "REACTION")} == {(A, None)}


def test_self_reaction_is_not_counted(engine: Engine) -> None:
    ingest(engine, ev(ALICE, 7, "+", [["e", MISSING], ["p", A]]))
    assert facts_of(engine, "REACTION") == set()


def test_reposts_of_kind_6_and_16_target_the_first_p_and_e(engine: Engine) -> None:
    k6 = ev(BOB, 6, "{}", [["e", MISSING], ["p", A], ["p", C]])
    k16 = ev(CAROL, 16, "", [["e", "dd" * 32], ["p", A], ["k", "30023"]], T0 + 1)
    ingest(engine, k6, k16)
    assert {(f[0], f[1], f[4], f[6]) for f in facts_of(engine, "REPOST")} == {
        (A, k6["id"], 6, MISSING), (A, k16["id"], 16, "dd" * 32)}


def test_reposts_without_p_and_self_reposts_are_not_counted(engine: Engine) -> None:
    ingest(engine, ev(BOB, 6, "", [["e", MISSING]]), ev(ALICE, 6, "", [["e", MISSING], ["p", A]], T0 + 1))
    assert facts_of(engine, "REPOST") == set()
