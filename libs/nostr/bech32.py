"""Bech32 (BIP-173) and NIP-19 entities: npub, nsec, note, nprofile, nevent, naddr.

Decoding has no 90-character limit: an `nprofile` with relay hints, or a
BOLT11 invoice, is longer than that.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .event import is_hex64

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHAR_VALUE = {c: i for i, c in enumerate(CHARSET)}
# Charset bytes to their 5-bit values; every other printable byte (33..126) stays above 31.
_TO_WORDS = bytes.maketrans(CHARSET.encode("ascii"), bytes(range(32)))
_PRINTABLE = re.compile(r"[!-~]*")
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
# _POLY_TABLE[b] is the xor of the generators selected by the 5 bits of b.
_POLY_TABLE = tuple(
    _GEN[0] * (b & 1)
    ^ _GEN[1] * (b >> 1 & 1)
    ^ _GEN[2] * (b >> 2 & 1)
    ^ _GEN[3] * (b >> 3 & 1)
    ^ _GEN[4] * (b >> 4 & 1)
    for b in range(32)
)


def _polymod_step(chk: int, v: int) -> int:
    return ((chk & 0x1FFFFFF) << 5) ^ v ^ _POLY_TABLE[chk >> 25]


# Two steps at once: the checksum step is linear over GF(2), so two steps from
# `chk` are `_POLY_TABLE2[chk >> 20] ^ (chk & 0xFFFFF) << 10 ^ v1 << 5 ^ v2`.
_POLY_TABLE2 = tuple(_polymod_step(_polymod_step(h << 20, 0), 0) for h in range(1024))


def _polymod(values: Sequence[int]) -> int:
    chk = 1
    table2 = _POLY_TABLE2
    n = len(values) & ~1
    for i in range(0, n, 2):
        chk = table2[chk >> 20] ^ ((chk & 0xFFFFF) << 10) ^ (values[i] << 5) ^ values[i + 1]
    if n != len(values):
        chk = _polymod_step(chk, values[n])
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def bech32_decode(text: str) -> tuple[str, list[int]]:
    """Split a bech32 string into (lowercase hrp, 5-bit data words without checksum).

    Accepts all-lowercase or all-uppercase input of any length. Raises
    ValueError on mixed case, characters outside 33..126, a missing separator,
    characters outside the charset, or a bad checksum (bech32, not bech32m).
    """
    if _PRINTABLE.fullmatch(text) is None:
        raise ValueError("bech32 string contains characters outside printable ASCII")
    lower = text.lower()
    if lower != text and text.upper() != text:
        raise ValueError("bech32 string mixes upper and lower case")
    pos = lower.rfind("1")
    if pos < 1 or pos + 7 > len(lower):
        raise ValueError("bech32 string has no valid '1' separator (or is too short)")
    hrp = lower[:pos]
    data = lower[pos + 1 :].encode("ascii").translate(_TO_WORDS)
    if data and max(data) > 31:
        bad = next(c for c in lower[pos + 1 :] if c not in _CHAR_VALUE)
        raise ValueError(f"bech32 data holds a character outside the charset: {bad!r}")
    if _polymod(bytes(_hrp_expand(hrp)) + data) != 1:
        raise ValueError("bech32 checksum mismatch")
    return hrp, list(data[:-6])


def bech32_encode(hrp: str, data: Sequence[int]) -> str:
    """Encode `hrp` and 5-bit `data` words as a lowercase bech32 string (BIP-173 checksum)."""
    values = _hrp_expand(hrp) + list(data)
    poly = _polymod(values + [0] * 6) ^ 1
    checksum = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[d] for d in list(data) + checksum)


def convertbits(data: Sequence[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    """Regroup `data` from `frombits`-bit to `tobits`-bit integers (BIP-173 reference rules).

    Raises ValueError on out-of-range input or, when `pad` is False, non-zero
    or overlong padding.
    """
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << tobits) - 1
    max_acc = (1 << (frombits + tobits - 1)) - 1
    for value in data:
        if value < 0 or value >> frombits:
            raise ValueError("value out of range for convertbits")
        acc = ((acc << frombits) | value) & max_acc
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or (acc << (tobits - bits)) & maxv:
        raise ValueError("invalid padding in bech32 data")
    return out


# ---------------------------------------------------------------- NIP-19


@dataclass(frozen=True, slots=True)
class ProfilePointer:
    """Decoded `nprofile`: a pubkey and relay hints."""

    pubkey: str
    relays: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EventPointer:
    """Decoded `nevent`: an event id, relay hints, optional author and kind."""

    id: str
    relays: tuple[str, ...] = ()
    author: str | None = None
    kind: int | None = None


@dataclass(frozen=True, slots=True)
class AddressPointer:
    """Decoded `naddr`: the `d` identifier, author pubkey, kind and relay hints."""

    identifier: str
    pubkey: str
    kind: int
    relays: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        """The `kind:pubkey:d` address string."""
        return f"{self.kind}:{self.pubkey}:{self.identifier}"


Nip19Value = str | ProfilePointer | EventPointer | AddressPointer


def _decode_bytes(text: str) -> tuple[str, bytes]:
    hrp, words = bech32_decode(text)
    return hrp, bytes(convertbits(words, 5, 8, False))


def _encode_bytes(hrp: str, payload: bytes) -> str:
    return bech32_encode(hrp, convertbits(list(payload), 8, 5, True))


def _tlv(payload: bytes) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    i = 0
    while i < len(payload):
        if i + 2 > len(payload):
            raise ValueError("truncated TLV record")
        t, n = payload[i], payload[i + 1]
        if i + 2 + n > len(payload):
            raise ValueError("TLV record longer than the payload")
        out.setdefault(t, []).append(payload[i + 2 : i + 2 + n])
        i += 2 + n
    return out


def _first_32(records: dict[int, list[bytes]], t: int, what: str, required: bool) -> str | None:
    values = records.get(t)
    if not values:
        if required:
            raise ValueError(f"missing {what}")
        return None
    if len(values[0]) != 32:
        raise ValueError(f"{what} must be 32 bytes")
    return values[0].hex()


def _relays(records: dict[int, list[bytes]]) -> tuple[str, ...]:
    return tuple(r.decode("utf-8", "replace") for r in records.get(1, []))


def _kind(records: dict[int, list[bytes]], required: bool) -> int | None:
    values = records.get(3)
    if not values:
        if required:
            raise ValueError("missing kind")
        return None
    if len(values[0]) != 4:
        raise ValueError("kind must be 4 bytes")
    return int.from_bytes(values[0], "big")


def decode_nip19(text: str) -> tuple[str, Nip19Value]:
    """Decode a NIP-19 entity into (prefix, value).

    npub/nsec/note give 64-hex strings; nprofile a `ProfilePointer` (TLV 0 =
    pubkey, 1 = relays); nevent an `EventPointer` (0 = id, 1 = relays, 2 =
    author, 3 = kind); naddr an `AddressPointer` (0 = d identifier, 1 = relays,
    2 = author, 3 = kind). Unknown TLV types are ignored; the first record of a
    type wins. Raises ValueError for anything else.
    """
    hrp, payload = _decode_bytes(text)
    if hrp in ("npub", "nsec", "note"):
        if len(payload) != 32:
            raise ValueError(f"{hrp} payload must be 32 bytes, got {len(payload)}")
        return hrp, payload.hex()
    if hrp == "nprofile":
        rec = _tlv(payload)
        pubkey = _first_32(rec, 0, "pubkey", True)
        assert pubkey is not None
        return hrp, ProfilePointer(pubkey, _relays(rec))
    if hrp == "nevent":
        rec = _tlv(payload)
        event_id = _first_32(rec, 0, "event id", True)
        assert event_id is not None
        return hrp, EventPointer(
            event_id, _relays(rec), _first_32(rec, 2, "author", False), _kind(rec, False)
        )
    if hrp == "naddr":
        rec = _tlv(payload)
        ident = rec.get(0)
        if not ident:
            raise ValueError("missing d identifier")
        author = _first_32(rec, 2, "author", True)
        kind = _kind(rec, True)
        assert author is not None and kind is not None
        return hrp, AddressPointer(ident[0].decode("utf-8"), author, kind, _relays(rec))
    raise ValueError(f"unknown NIP-19 prefix {hrp!r}")


def decode_pubkey_entity(text: str) -> str:
    """The pubkey hex of an `npub` or `nprofile`; ValueError for anything else."""
    hrp, value = decode_nip19(text)
    if hrp == "npub" and isinstance(value, str):
        return value
    if isinstance(value, ProfilePointer):
        return value.pubkey
    raise ValueError(f"{hrp} does not name a profile")


def _hex32(value: str, what: str) -> bytes:
    if not is_hex64(value):
        raise ValueError(f"{what} must be 64 lowercase hex characters")
    return bytes.fromhex(value)


def npub_encode(pubkey_hex: str) -> str:
    """Encode a 64-hex pubkey as `npub1...`."""
    return _encode_bytes("npub", _hex32(pubkey_hex, "pubkey"))


def nsec_encode(privkey: bytes) -> str:
    """Encode a 32-byte secret key as `nsec1...`."""
    if len(privkey) != 32:
        raise ValueError("secret key must be 32 bytes")
    return _encode_bytes("nsec", privkey)


def note_encode(event_id: str) -> str:
    """Encode a 64-hex event id as `note1...`."""
    return _encode_bytes("note", _hex32(event_id, "event id"))


def _tlv_record(t: int, value: bytes) -> bytes:
    if len(value) > 255:
        raise ValueError("TLV value longer than 255 bytes")
    return bytes((t, len(value))) + value


def nprofile_encode(pubkey_hex: str, relays: Sequence[str] = ()) -> str:
    """Encode a pubkey and relay hints as `nprofile1...`."""
    payload = _tlv_record(0, _hex32(pubkey_hex, "pubkey"))
    payload += b"".join(_tlv_record(1, r.encode("utf-8")) for r in relays)
    return _encode_bytes("nprofile", payload)


def nevent_encode(
    event_id: str, relays: Sequence[str] = (), author: str | None = None, kind: int | None = None
) -> str:
    """Encode an event pointer as `nevent1...`."""
    payload = _tlv_record(0, _hex32(event_id, "event id"))
    payload += b"".join(_tlv_record(1, r.encode("utf-8")) for r in relays)
    if author is not None:
        payload += _tlv_record(2, _hex32(author, "author"))
    if kind is not None:
        payload += _tlv_record(3, kind.to_bytes(4, "big"))
    return _encode_bytes("nevent", payload)


def naddr_encode(identifier: str, pubkey_hex: str, kind: int, relays: Sequence[str] = ()) -> str:
    """Encode an address pointer as `naddr1...`."""
    payload = _tlv_record(0, identifier.encode("utf-8"))
    payload += b"".join(_tlv_record(1, r.encode("utf-8")) for r in relays)
    payload += _tlv_record(2, _hex32(pubkey_hex, "pubkey")) + _tlv_record(3, kind.to_bytes(4, "big"))
    return _encode_bytes("naddr", payload)


def parse_pubkey(text: str) -> str:
    """Accept a pubkey as 64 lowercase hex or a lowercase `npub1...`; return the hex.

    Raises ValueError with a message saying what was wrong.
    """
    if not isinstance(text, str):
        raise ValueError("pubkey must be a string")
    if is_hex64(text):
        return text
    if text.startswith("npub1"):
        if text != text.lower():
            raise ValueError("npub must be lowercase")
        try:
            hrp, value = decode_nip19(text)
        except ValueError as exc:
            raise ValueError(f"invalid npub: {exc}") from None
        assert isinstance(value, str)
        return value
    if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
        raise ValueError("hex pubkey must be lowercase")
    raise ValueError("pubkey must be 64 lowercase hex characters or an npub1... string")
