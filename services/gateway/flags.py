"""The `analytics_v2` feature flag: which path (canonical or legacy) serves a v2 request.

Stored in PostgreSQL (`feature_flags`), read through a 2-second in-process cache so a
change made by any process (the admin endpoint, `canal flag set`) takes effect within
seconds on every gateway. A missing row means "on".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, text

from libs.nostr.bech32 import parse_pubkey

FLAG_NAME = "analytics_v2"
MODES = ("off", "cohort", "percent", "on")
CACHE_SECONDS = 2.0
COHORT_ENTRY = re.compile(r"[!-~]{1,200}")


@dataclass(frozen=True)
class Flag:
    """The flag's settings: mode off|cohort|percent|on, the percent, and the cohort."""

    mode: str = "on"
    percent: int = 0
    cohort: tuple[str, ...] = ()
    updated_at: int = 0
    updated_by: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "percent": self.percent, "cohort": list(self.cohort),
                "updated_at": self.updated_at, "updated_by": self.updated_by}


def pubkey_bucket(pubkey_hex: str) -> int:
    """A stable bucket 0..99 per pubkey: sha256 of its 64 hex characters, as an integer, mod 100."""
    return int.from_bytes(hashlib.sha256(pubkey_hex.encode("ascii")).digest(), "big") % 100


def serves_canonical(flag: Flag, pubkey_hex: str, principal_id: str) -> bool:
    """Whether the canonical path serves this target for this principal."""
    if flag.mode == "on":
        return True
    if flag.mode == "off":
        return False
    if flag.mode == "percent":
        return pubkey_bucket(pubkey_hex) < flag.percent
    return pubkey_hex in flag.cohort or principal_id in flag.cohort


def normalize_cohort(entries: list[str]) -> tuple[str, ...]:
    """Pubkeys (hex or npub) become hex; anything else is kept as a principal id."""
    out: list[str] = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        with contextlib.suppress(ValueError):
            entry = parse_pubkey(entry)
        out.append(entry)
    return tuple(dict.fromkeys(out))


def validate(mode: str, percent: int, cohort: list[str]) -> None:
    """ValueError naming the problem when the settings are not a valid flag."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    if not 0 <= percent <= 100:
        raise ValueError("percent must be between 0 and 100")
    if len(cohort) > 10_000 or any(len(c) > 200 for c in cohort):
        raise ValueError("the cohort is too large (at most 10000 entries of 200 characters)")
    if not all(COHORT_ENTRY.fullmatch(c) for c in cohort):
        raise ValueError("cohort entries are pubkeys (hex or npub) or principal ids: printable ASCII, no spaces")


def get_flag(engine: Engine) -> Flag:
    """The current flag (a missing row means mode "on")."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT mode, percent, cohort, updated_at, updated_by FROM feature_flags "
                                "WHERE name = :n"), {"n": FLAG_NAME}).first()
    if row is None:
        return Flag()
    cohort = row[2] if isinstance(row[2], list) else []
    return Flag(row[0], int(row[1] or 0), tuple(str(c) for c in cohort), int(row[3] or 0), row[4] or "")


def set_flag(engine: Engine, mode: str, percent: int = 0, cohort: list[str] | None = None,
             by: str = "") -> Flag:
    """Store the flag (upsert); ValueError when the settings are invalid. Used by `canal flag set`."""
    entries = normalize_cohort(list(cohort or []))
    validate(mode, percent, list(entries))
    now = int(time.time())
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO feature_flags (name, mode, percent, cohort, updated_at, updated_by) "
            "VALUES (:n, :m, :p, CAST(:c AS jsonb), :t, :b) ON CONFLICT (name) DO UPDATE SET "
            "mode = EXCLUDED.mode, percent = EXCLUDED.percent, cohort = EXCLUDED.cohort, "
            "updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by"),
            {"n": FLAG_NAME, "m": mode, "p": percent, "c": json.dumps(list(entries)), "t": now, "b": by})
    return Flag(mode, percent, entries, now, by)


@dataclass
class FlagCache:
    """The flag as this process sees it, refreshed at most every CACHE_SECONDS."""

    engine: Engine
    ttl: float = CACHE_SECONDS
    _flag: Flag | None = None
    _read_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def current(self) -> Flag:
        """The cached flag; on a database error the last known flag (or "on") keeps serving."""
        if self._flag is not None and time.monotonic() - self._read_at < self.ttl:
            return self._flag
        async with self._lock:
            if self._flag is not None and time.monotonic() - self._read_at < self.ttl:
                return self._flag
            try:
                self._flag = await asyncio.to_thread(get_flag, self.engine)
            except Exception:
                self._flag = self._flag or Flag()
            self._read_at = time.monotonic()
            return self._flag

    def invalidate(self) -> None:
        self._read_at = 0.0
