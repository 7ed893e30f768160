"""Signing helpers, bech32 (BIP-173) and NIP-19 entities."""

from __future__ import annotations

import pytest

from libs.nostr.bech32 import (
    AddressPointer,
    EventPointer,
    ProfilePointer,
    bech32_decode,
    bech32_encode,
    decode_nip19,
    naddr_encode,
    nevent_encode,
    note_encode,
    nprofile_encode,
    npub_encode,
    nsec_encode,
    parse_pubkey,
)
from libs.nostr.keys import generate_privkey, privkey_from_seed, pubkey_of, sign_event

# NIP-19 examples
NPUB = "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg"
NPUB_HEX = "7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e"
NSEC = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"
NSEC_HEX = "67dea2ed018072d675f5415ecfaed7d2597555e202d85b3d65ea4e58d2d92ffa"
NPROFILE = (
    "nprofile1qqsrhuxx8l9ex335q7he0f09aej04zpazpl0ne2cgukyawd24mayt8gpp4mhxue69uhhytnc9e3k7mgpz4mhxue"
    "69uhkg6nzv9ejuumpv34kytnrdaksjlyr9p"
)
NPROFILE_HEX = "3bf0c63fcb93463407af97a5e5ee64fa883d107ef9e558472c4eb9aaaefa459d"


def test_sign_event_is_deterministic_and_pubkey_matches() -> None:
    priv = privkey_from_seed("x")
    a = sign_event(priv, 1, "hi", [["t", "x"]], 1)
    b = sign_event(priv, 1, "hi", [["t", "x"]], 1)
    assert a == b
    assert a["pubkey"] == pubkey_of(priv)
    assert len(a["sig"]) == 128


def test_generate_privkey_gives_distinct_valid_keys() -> None:
    a, b = generate_privkey(), generate_privkey()
    assert a != b and len(a) == 32
    assert len(pubkey_of(a)) == 64


def test_nip19_npub_and_nsec_examples() -> None:
    assert decode_nip19(NPUB) == ("npub", NPUB_HEX)
    assert npub_encode(NPUB_HEX) == NPUB
    assert decode_nip19(NSEC) == ("nsec", NSEC_HEX)
    assert nsec_encode(bytes.fromhex(NSEC_HEX)) == NSEC


def test_nip19_nprofile_example_longer_than_90_chars() -> None:
    assert len(NPROFILE) > 90
    assert decode_nip19(NPROFILE) == (
        "nprofile",
        ProfilePointer(NPROFILE_HEX, ("wss://r.x.com", "wss://djbas.sadkb.com")),
    )
    assert nprofile_encode(NPROFILE_HEX, ["wss://r.x.com", "wss://djbas.sadkb.com"]) == NPROFILE


def test_nevent_naddr_note_round_trip() -> None:
    eid = "cd" * 32
    assert decode_nip19(note_encode(eid)) == ("note", eid)
    assert decode_nip19(nevent_encode(eid, ["wss://a"], NPUB_HEX, 1)) == (
        "nevent",
        EventPointer(eid, ("wss://a",), NPUB_HEX, 1),
    )
    assert decode_nip19(nevent_encode(eid)) == ("nevent", EventPointer(eid))
    hrp, addr = decode_nip19(naddr_encode("my-article", NPUB_HEX, 30023, ["wss://b"]))
    assert hrp == "naddr"
    assert addr == AddressPointer("my-article", NPUB_HEX, 30023, ("wss://b",))
    assert isinstance(addr, AddressPointer) and addr.address == f"30023:{NPUB_HEX}:my-article"


@pytest.mark.parametrize(
    "valid",
    [
        "A12UEL5L",
        "a12uel5l",
        "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
        "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
        "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
        "?1ezyfcl",
    ],
)
def test_bip173_valid_checksums(valid: str) -> None:
    hrp, data = bech32_decode(valid)
    assert bech32_encode(hrp, data) == valid.lower()


@pytest.mark.parametrize(
    "invalid",
    [
        "\x201nwldj5",
        "\x7f1axkwrx",
        "pzry9x0s0muk",
        "1pzry9x0s0muk",
        "x1b4n0q5v",
        "li1dgmt3",
        "de1lg7wt\xff",
        "10a06t8",
        "1qzzfhee",
        "A12uEL5L",
        "a12uel5m",
    ],
)
def test_bip173_invalid_strings_raise(invalid: str) -> None:
    with pytest.raises(ValueError):
        bech32_decode(invalid)


def test_parse_pubkey_accepts_hex_and_lowercase_npub() -> None:
    assert parse_pubkey(NPUB_HEX) == NPUB_HEX
    assert parse_pubkey(NPUB) == NPUB_HEX


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (NPUB_HEX.upper(), "lowercase"),
        (NPUB.upper(), "64 lowercase hex"),
        ("npub1" + NPUB[5:].upper(), "lowercase"),
        (NPUB[:-1] + "q", "invalid npub"),
        (NSEC, "64 lowercase hex"),
        (NPROFILE, "64 lowercase hex"),
        ("", "64 lowercase hex"),
        (NPUB_HEX[:-1], "64 lowercase hex"),
    ],
)
def test_parse_pubkey_rejects_with_clear_message(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_pubkey(text)


def test_decode_nip19_rejects_unknown_prefix_and_bad_lengths() -> None:
    with pytest.raises(ValueError, match="unknown"):
        decode_nip19(bech32_encode("nfoo", [0] * 8))
    with pytest.raises(ValueError, match="32 bytes"):
        decode_nip19(bech32_encode("npub", [0] * 10))
    with pytest.raises(ValueError):
        decode_nip19(bech32_encode("nprofile", [0] * 10))
