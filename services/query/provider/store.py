"""What the provider publishes for, and what it last published (table `provider_assertions`).

A row per addressable assertion `(kind, d)`: its value tags, the signed event that carried them
and the relays that acknowledged it. A run compares fresh tags with the row: equal tags are not
signed again (relays that missed the event get the very same event), different tags make a new
event that replaces the old one on every relay.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, text

from libs.nostr.bech32 import parse_pubkey

#: pg advisory lock held for a whole run, so overlapping runs (several workers, a slow run) never
#: sign the same change twice.
LOCK_ID = 0x4E49503835  # "NIP85"


@dataclass
class Published:
    """The last published version of one assertion."""

    kind: int
    d: str
    subject: str
    window: str
    tags: list[list[str]]
    event: dict[str, Any]
    relays: list[str] = field(default_factory=list)

    @property
    def created_at(self) -> int:
        return int(self.event["created_at"])


def subjects(engine: Engine, extra: Iterable[str] = ()) -> list[str]:
    """Every tracked key plus the configured extra keys (PROVIDER_KEYS, hex or npub), sorted, once each."""
    with engine.connect() as conn:
        keys = {str(r[0]) for r in conn.execute(text("SELECT pubkey FROM tracked_keys"))}
    keys |= {parse_pubkey(k.strip()) for k in extra if k.strip()}
    return sorted(keys)


def published(engine: Engine, subject: str) -> dict[tuple[int, str], Published]:
    """Every assertion last published about `subject`'s numbers, by (kind, d)."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT kind, d, subject, \"window\", tags, event, relays FROM provider_assertions "
                                 "WHERE subject = :s"), {"s": subject})
        return {(r[0], r[1]): Published(r[0], r[1], r[2], r[3], r[4], r[5], list(r[6])) for r in rows}


def save(engine: Engine, rows: Sequence[Published], now: int) -> None:
    """Insert or replace rows (by kind and d)."""
    if not rows:
        return
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO provider_assertions (kind, d, subject, \"window\", tags, event, relays, created_at, updated_at) "
            "VALUES (:kind, :d, :subject, :window, CAST(:tags AS jsonb), CAST(:event AS jsonb), CAST(:relays AS jsonb), "
            ":created_at, :now) ON CONFLICT (kind, d) DO UPDATE SET subject = excluded.subject, "
            "\"window\" = excluded.\"window\", tags = excluded.tags, event = excluded.event, "
            "relays = excluded.relays, created_at = excluded.created_at, updated_at = excluded.updated_at"),
            [{"kind": r.kind, "d": r.d, "subject": r.subject, "window": r.window, "tags": json.dumps(r.tags),
              "event": json.dumps(r.event), "relays": json.dumps(sorted(set(r.relays))), "created_at": r.created_at,
              "now": now} for r in rows])


@contextlib.contextmanager
def run_lock(engine: Engine) -> Iterator[bool]:
    """Hold the provider's advisory lock for the block; yields False when another run holds it."""
    conn: Connection = engine.connect()
    try:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_ID}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_ID})
                conn.commit()
    finally:
        conn.close()
