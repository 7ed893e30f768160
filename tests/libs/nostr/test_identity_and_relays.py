"""Key forms people paste (hex, npub, nprofile, NIP-05) and NIP-65 relay lists."""

from __future__ import annotations

import pytest

from libs.nostr.bech32 import nprofile_encode, npub_encode
from libs.nostr.identity import parse_key, resolve_key
from libs.nostr.relays import is_private_relay, normalize_relay_url, parse_relay_list
from tests.libs.nostr.nip05 import nip05_server

K = "ab" * 32


def test_every_offline_form_names_the_same_key() -> None:
    assert parse_key(K).pubkey == K
    assert parse_key(npub_encode(K)).form == "npub"
    profile = parse_key("nostr:" + nprofile_encode(K, ["wss://relay.example"]))
    assert (profile.pubkey, profile.form, profile.relays) == (K, "nprofile", ("wss://relay.example",))
    with pytest.raises(ValueError, match="64 lowercase hex"):
        parse_key("xyz")
    with pytest.raises(ValueError, match="NIP-05"):
        parse_key("bob@example.com")


def test_nip05_resolves_over_http_on_loopback_with_relay_hints() -> None:
    with nip05_server({"bob": K}, {"bob": ["wss://bob.example"]}) as domain:
        got = resolve_key(f"Bob@{domain}")
        assert (got.pubkey, got.form, got.relays) == (K, "nip05", ("wss://bob.example",))
        with pytest.raises(ValueError, match="does not name a key"):
            resolve_key(f"alice@{domain}")
    with pytest.raises(ValueError, match="could not read"):
        resolve_key(f"bob@{domain}")  # the domain is gone


def test_relay_urls_have_one_spelling_and_private_ones_are_recognised() -> None:
    assert normalize_relay_url("WSS://Relay.Example:443/") == "wss://relay.example"
    assert normalize_relay_url("ws://127.0.0.1:7777/path/") == "ws://127.0.0.1:7777/path"
    assert normalize_relay_url("https://relay.example") is None
    assert normalize_relay_url("wss://user:pw@relay.example") is None
    assert is_private_relay("ws://127.0.0.1:1") and is_private_relay("wss://10.1.2.3") and is_private_relay("ws://localhost")
    assert not is_private_relay("wss://relay.damus.io")


def test_nip65_markers_split_read_and_write() -> None:
    rl = parse_relay_list([["r", "wss://both.example"], ["r", "wss://in.example", "read"],
                           ["r", "wss://out.example/", "write"], ["r", "not a url"], ["p", "x"]])
    assert rl.read == ("wss://both.example", "wss://in.example")
    assert rl.write == ("wss://both.example", "wss://out.example")
