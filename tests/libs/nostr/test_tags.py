"""Tag interpretation: reactions, reposts, replies, quotes, mentions, deletions, contacts, addresses."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from libs.nostr.bech32 import naddr_encode, nevent_encode, note_encode, nprofile_encode, npub_encode
from libs.nostr.event import Event
from libs.nostr.tags import (
    ParentRef,
    QuoteRef,
    address_of,
    address_pubkey,
    contact_set,
    deletion_targets,
    mentioned_pubkeys,
    profile_name,
    quote_refs,
    reaction_target,
    reply_parent,
    repost_target,
)

from .factories import ALICE_PK, BOB_PK, CAROL_PK

ID1, ID2, ID3 = "11" * 32, "22" * 32, "33" * 32
ADDR = f"30023:{BOB_PK}:post"


def ev(kind: int = 1, tags: Sequence[Sequence[str]] = (), content: str = "", pubkey: str = ALICE_PK) -> Event:
    """An unsigned Event for pure tag logic."""
    return Event("00" * 32, pubkey, 1, kind, tuple(tuple(t) for t in tags), content, "00" * 64)


# --- reactions / reposts ------------------------------------------------------


def test_reaction_target_is_last_e_and_last_p() -> None:
    e = ev(7, [["e", ID1], ["p", BOB_PK], ["e", ID2], ["p", CAROL_PK]])
    assert reaction_target(e) == (ID2, CAROL_PK)


def test_reaction_without_e_or_p() -> None:
    assert reaction_target(ev(7, [["p", BOB_PK]])) == (None, BOB_PK)
    assert reaction_target(ev(7, [["e", ID1]])) == (ID1, None)
    assert reaction_target(ev(7, [["e"], ["p"]])) == (None, None)


def test_repost_target_is_first_e_and_first_p() -> None:
    e = ev(6, [["e", ID1], ["p", BOB_PK], ["e", ID2], ["p", CAROL_PK]])
    assert repost_target(e) == (ID1, BOB_PK)
    assert repost_target(ev(16)) == (None, None)


# --- replies: NIP-10 kind 1 ---------------------------------------------------


def test_marked_reply_wins_over_root() -> None:
    e = ev(
        1, [["e", ID1, "", "root", ALICE_PK], ["e", ID2, "wss://r", "reply", BOB_PK], ["e", ID3, "", "reply"]]
    )
    assert reply_parent(e) == ParentRef("e", ID2, BOB_PK)


def test_marked_root_only_is_the_parent() -> None:
    e = ev(1, [["e", ID1, "wss://r", "root", BOB_PK], ["p", CAROL_PK]])
    assert reply_parent(e) == ParentRef("e", ID1, BOB_PK)


def test_marked_tag_author_hint_needs_64_hex_fifth_element() -> None:
    assert reply_parent(ev(1, [["e", ID1, "", "reply", "npub1xyz"]])) == ParentRef("e", ID1, None)
    assert reply_parent(ev(1, [["e", ID1, "", "reply"]])) == ParentRef("e", ID1, None)


def test_positional_scheme_uses_last_unmarked_e() -> None:
    e = ev(1, [["e", ID1], ["e", ID2, "wss://r"], ["e", ID3, "wss://r", ""]])
    assert reply_parent(e) == ParentRef("e", ID3, None)


def test_positional_author_hint_is_64_hex_fourth_element() -> None:
    e = ev(1, [["e", ID1], ["e", ID2, "wss://r", BOB_PK]])
    assert reply_parent(e) == ParentRef("e", ID2, BOB_PK)


def test_positional_empty_marker_ignores_fifth_element() -> None:
    assert reply_parent(ev(1, [["e", ID2, "", "", BOB_PK]])) == ParentRef("e", ID2, None)


def test_mention_marker_is_never_a_parent() -> None:
    assert reply_parent(ev(1, [["e", ID1, "", "mention"]])) is None
    e = ev(1, [["e", ID1], ["e", ID2, "", "mention"]])
    assert reply_parent(e) == ParentRef("e", ID1, None)


def test_marked_tags_win_over_later_unmarked() -> None:
    e = ev(1, [["e", ID1, "", "root"], ["e", ID2]])
    assert reply_parent(e) == ParentRef("e", ID1, None)


def test_unknown_marker_is_not_a_parent() -> None:
    assert reply_parent(ev(1, [["e", ID1, "", "fork"]])) is None


def test_kind1_with_only_a_tags_is_not_a_reply() -> None:
    assert reply_parent(ev(1, [["a", ADDR], ["p", BOB_PK]])) is None


def test_kind1_without_e_is_not_a_reply() -> None:
    assert reply_parent(ev(1, [["p", BOB_PK], ["e"]])) is None


def test_other_kinds_have_no_parent() -> None:
    assert reply_parent(ev(7, [["e", ID1]])) is None


# --- replies: NIP-22 kind 1111 ------------------------------------------------


def test_comment_parent_is_lowercase_e_with_pubkey_element() -> None:
    e = ev(1111, [["E", ID1, "", CAROL_PK], ["e", ID2, "", BOB_PK], ["p", CAROL_PK]])
    assert reply_parent(e) == ParentRef("e", ID2, BOB_PK)


def test_comment_parent_e_falls_back_to_lowercase_p() -> None:
    e = ev(1111, [["E", ID1], ["P", CAROL_PK], ["e", ID2], ["p", BOB_PK]])
    assert reply_parent(e) == ParentRef("e", ID2, BOB_PK)


def test_comment_parent_is_lowercase_a_with_address_pubkey() -> None:
    e = ev(1111, [["A", ADDR], ["a", ADDR], ["p", CAROL_PK]])
    assert reply_parent(e) == ParentRef("a", ADDR, BOB_PK)


def test_comment_with_e_and_a_prefers_e_and_takes_author_from_address() -> None:
    e = ev(1111, [["a", ADDR], ["e", ID2, "", CAROL_PK]])
    assert reply_parent(e) == ParentRef("e", ID2, BOB_PK)


def test_comment_with_uppercase_only_or_i_has_no_parent() -> None:
    assert reply_parent(ev(1111, [["E", ID1], ["P", BOB_PK]])) is None
    assert reply_parent(ev(1111, [["I", "https://x"], ["i", "https://x"]])) is None


def test_comment_unresolvable_author_hint_is_none() -> None:
    assert reply_parent(ev(1111, [["e", ID2]])) == ParentRef("e", ID2, None)
    assert reply_parent(ev(1111, [["a", "30023:nothex:d"]])) == ParentRef("a", "30023:nothex:d", None)


# --- addresses, quotes -------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "pubkey"),
    [
        (ADDR, BOB_PK),
        (f"30023:{BOB_PK}:", BOB_PK),
        (f"30023:{BOB_PK}:with:colons", BOB_PK),
        (f"0:{BOB_PK}:", BOB_PK),
        (f"x:{BOB_PK}:d", None),
        (f"30023:{BOB_PK.upper()}:d", None),
        (f"30023:{BOB_PK}", None),
        (BOB_PK, None),
    ],
)
def test_address_pubkey(addr: str, pubkey: str | None) -> None:
    assert address_pubkey(addr) == pubkey


def test_quote_refs_take_q_tags_with_optional_fourth() -> None:
    e = ev(1, [["q", ID1, "wss://r", BOB_PK], ["q", ADDR], ["q"], ["e", ID2]])
    assert quote_refs(e) == [QuoteRef(ID1, BOB_PK), QuoteRef(ADDR, None)]


def test_address_of_kinds() -> None:
    assert address_of(ev(30023, [["d", "post"], ["d", "other"]])) == f"30023:{ALICE_PK}:post"
    assert address_of(ev(30023, [["d"], ["d", "x"]])) == f"30023:{ALICE_PK}:x"
    assert address_of(ev(39999)) == f"39999:{ALICE_PK}:"
    for kind in (0, 3, 10000, 10002, 19999):
        assert address_of(ev(kind, [["d", "ignored"]])) == f"{kind}:{ALICE_PK}:"
    for kind in (1, 5, 7, 20000, 29999, 40000, 9735):
        assert address_of(ev(kind)) is None


# --- mentions ---------------------------------------------------------------


def test_mentions_npub_and_long_nprofile() -> None:
    nprofile = nprofile_encode(CAROL_PK, ["wss://relay.one.example.com", "wss://relay.two.example.com"])
    assert len(nprofile) > 90
    content = f"hi nostr:{npub_encode(BOB_PK)}, and nostr:{nprofile}!"
    assert mentioned_pubkeys(content) == {BOB_PK, CAROL_PK}


def test_mentions_ignore_note_nevent_naddr_and_bad_refs() -> None:
    content = " ".join(
        [
            f"nostr:{note_encode(ID1)}",
            f"nostr:{nevent_encode(ID1, author=BOB_PK)}",
            f"nostr:{naddr_encode('d', BOB_PK, 30023)}",
            f"nostr:{npub_encode(BOB_PK)[:-1]}q",
            f"{npub_encode(CAROL_PK)}",
            f"NOSTR:{npub_encode(CAROL_PK)}",
        ]
    )
    assert mentioned_pubkeys(content) == set()


def test_mention_reference_is_the_longest_bech32_run() -> None:
    npub = npub_encode(BOB_PK)
    assert mentioned_pubkeys(f"(nostr:{npub})") == {BOB_PK}
    assert mentioned_pubkeys(f"nostr:{npub}.") == {BOB_PK}
    # glued to more bech32 characters the run no longer decodes
    assert mentioned_pubkeys(f"nostr:{npub}qq") == set()
    # uppercase letters end the run
    assert mentioned_pubkeys(f"nostr:{npub}Hello") == {BOB_PK}


# --- deletions, contacts, profiles -------------------------------------------


def test_deletion_targets_from_e_and_a_of_kind5() -> None:
    e = ev(5, [["e", ID1], ["a", ADDR], ["e", ID2], ["p", BOB_PK], ["k", "1"]])
    assert deletion_targets(e) == ([ID1, ID2], [ADDR])
    assert deletion_targets(ev(1, [["e", ID1]])) == ([], [])


def test_contact_set_keeps_64_hex_p_values() -> None:
    e = ev(
        3,
        [
            ["p", BOB_PK],
            ["p", BOB_PK, "wss://r", "bob"],
            ["p", CAROL_PK.upper()],
            ["p", "npub1x"],
            ["p"],
            ["t", ALICE_PK],
        ],
    )
    assert contact_set(e) == frozenset({BOB_PK})


@pytest.mark.parametrize(
    ("content", "name"),
    [
        ('{"display_name": "Bob B", "name": "bob"}', "Bob B"),
        ('{"display_name": "", "name": "bob"}', "bob"),
        ('{"display_name": "  ", "name": "bob"}', "bob"),
        ('{"display_name": 5, "name": "bob"}', "bob"),
        ('{"name": "bob"}', "bob"),
        ("{}", None),
        ("[1]", None),
        ("not json", None),
        ('{"name": ' * 10_000, None),
        ("", None),
    ],
)
def test_profile_name(content: str, name: str | None) -> None:
    assert profile_name(ev(0, content=content)) == name


def test_profile_name_only_for_kind0() -> None:
    assert profile_name(ev(1, content='{"name": "bob"}')) is None
