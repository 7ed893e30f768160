"""A small deterministic Nostr data set for the drift tests, ingested and compacted for real.

Uses `tools.demo.generator.generate` when that module exists; otherwise signs its own events:
notes, reactions (likes, dislikes, emoji), reposts (6 and 16), replies (NIP-10 and kind 1111),
quotes, mentions, zaps with real invoices (anonymous ones and duplicate receipts too), contact
lists that follow and unfollow, articles with several versions, and deletions. Times spread
over ~14 months to the second, with clusters on UTC midnights and DST transitions.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from libs.metrics import Tier
from libs.nostr.bech32 import npub_encode
from libs.nostr.keys import privkey_from_seed, pubkey_of, sign_event
from services.compactor.rollup import compact_tier
from services.ingest.store import IngestStore, RawItem
from tests.libs.nostr.bolt11_reference import make_invoice

NOW = 1_750_000_000  # 2025-06-15T15:06:40Z
SPAN = 420 * 86_400
# Instants the data clusters around: UTC midnights, and the 2025 DST changes of New York and London.
HOTSPOTS = (1_741_503_600, 1_743_296_400, 1_730_613_600, 1_729_990_800, 1_749_945_600, 1_735_689_600)


def generate_events(seed: int, now: int, users: int = 20, scale: float = 0.2) -> list[dict[str, Any]]:
    """Signed events (dicts): the demo generator's network when present, else our own."""
    try:
        from tools.demo.generator import generate
    except ImportError:
        return _own_events(seed, now, users, int(1_300 * scale))
    return list(generate(seed, now, users=users, scale=scale))


class _Builder:
    def __init__(self, seed: int, now: int, users: int) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.keys = [privkey_from_seed(f"drift-test-{seed}-{i}") for i in range(users)]
        self.pubs = [pubkey_of(k) for k in self.keys]
        # Zipf-like activity so that target sizes differ by orders of magnitude.
        self.weights = [1.0 / (i + 1) ** 1.3 for i in range(users)]
        self.provider = privkey_from_seed(f"drift-test-{seed}-provider")
        self.node = privkey_from_seed(f"drift-test-{seed}-node")
        self.events: list[dict[str, Any]] = []
        self.notes: list[tuple[str, int, int]] = []  # (id, author index, created_at)

    def when(self, after: int = 0) -> int:
        lo = max(after + 1, self.now - SPAN)
        if self.rng.random() < 0.25:
            spot = self.rng.choice(HOTSPOTS)
            return min(self.now - 120, max(lo, spot + self.rng.randint(-5_400, 5_400)))
        return self.rng.randint(lo, max(lo, self.now - 120))

    def user(self) -> int:
        return self.rng.choices(range(len(self.keys)), self.weights)[0]

    def sign(self, who: int, kind: int, content: str, tags: Sequence[Sequence[str]], at: int) -> dict[str, Any]:
        ev = sign_event(self.keys[who], kind, content, tags, at)
        self.events.append(ev)
        return ev

    def other(self, who: int) -> int:
        pick = self.user()
        return pick if pick != who else (who + 1) % len(self.keys)


def _own_events(seed: int, now: int, users: int, actions: int) -> list[dict[str, Any]]:
    b = _Builder(seed, now, users)
    for _ in range(actions // 4):
        who = b.user()
        ev = b.sign(who, 1, f"note {len(b.notes)}", [], b.when())
        b.notes.append((ev["id"], who, ev["created_at"]))
    for i in range(users):
        _contact_lists(b, i)
        if i % 3 == 0:
            _article(b, i)
    for _ in range(actions):
        _action(b)
    _deletions(b)
    return sorted(b.events, key=lambda e: (e["created_at"], e["id"]))


def _action(b: _Builder) -> None:
    note_id, author, at = b.rng.choice(b.notes)
    actor = b.other(author)
    when = b.when(at)
    pk = b.pubs[author]
    roll = b.rng.random()
    if roll < 0.3:
        b.sign(actor, 7, b.rng.choice(["+", "", "-", "\U0001f525"]), [["e", note_id], ["p", pk]], when)
    elif roll < 0.42:
        kind = b.rng.choice([6, 16])
        b.sign(actor, kind, "", [["e", note_id], ["p", pk]], when)
    elif roll < 0.56:
        ev = b.sign(actor, 1, "reply", [["e", note_id, "", "root"], ["p", pk]], when)
        b.notes.append((ev["id"], actor, when))
    elif roll < 0.62:
        b.sign(actor, 1111, "comment", [["E", note_id, "", pk], ["e", note_id, "", pk], ["p", pk]], when)
    elif roll < 0.7:
        b.sign(actor, 1, f"quoting nostr:{npub_encode(pk)}", [["q", note_id, "", pk]], when)
    elif roll < 0.78:
        b.sign(actor, 1, f"hello nostr:{npub_encode(pk)} !", [], when)
    else:
        _zap(b, actor, author, note_id, when)


def _zap(b: _Builder, sender: int, recipient: int, note_id: str, at: int) -> None:
    msats = b.rng.choice([1_000, 21_000, 100_000, 2_100_000])
    tags = [["relays", "wss://relay.example"], ["p", b.pubs[recipient]], ["e", note_id], ["amount", str(msats)]]
    if b.rng.random() < 0.15:
        tags.append(["anon", ""])
    request = sign_event(b.keys[sender], 9734, "", tags, at - 3)
    description = json.dumps(request, separators=(",", ":"))
    digest = hashlib.sha256(description.encode()).hexdigest()
    payment_hash = hashlib.sha256(description.encode() + b"pay").hexdigest()
    invoice = make_invoice(msats, payment_hash, b.node, at - 2, digest)
    receipt_tags = [["p", b.pubs[recipient]], ["e", note_id], ["bolt11", invoice], ["description", description]]
    b.events.append(sign_event(b.provider, 9735, "", receipt_tags, at))
    if b.rng.random() < 0.1:  # a second receipt for the same payment: must count once
        b.events.append(sign_event(b.provider, 9735, "", receipt_tags, at + 7))


def _contact_lists(b: _Builder, who: int) -> None:
    follows = {b.other(who) for _ in range(b.rng.randint(1, 5))}
    at = b.when()
    for _ in range(b.rng.randint(1, 3)):
        tags = [["p", b.pubs[i]] for i in sorted(follows)]
        b.sign(who, 3, "", tags, at)
        at = min(b.now - 120, at + b.rng.randint(3_600, 40 * 86_400))
        follows ^= {b.other(who)}


def _article(b: _Builder, who: int) -> None:
    for version in range(b.rng.randint(1, 3)):
        b.sign(who, 30023, f"article v{version}", [["d", f"post-{who}"], ["title", "t"]], b.when())


def _deletions(b: _Builder) -> None:
    own = [e for e in b.events if e["kind"] in (1, 7)]
    for ev in b.rng.sample(own, max(1, len(own) // 25)):
        who = b.pubs.index(ev["pubkey"])
        b.sign(who, 5, "", [["e", ev["id"]]], b.when(ev["created_at"]))


def load(engine: Engine, events: Sequence[dict[str, Any]], now: int, batch: int = 200) -> None:
    """Ingest the events through IngestStore in batches, as relays or `canal import` would."""
    store = IngestStore(engine)
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        store.ingest([RawItem(e, "drift-test", json.dumps(e)) for e in chunk], receive_time=now)


def compact(engine: Engine, now: int, batch: int = 500) -> None:
    """Roll minute -> hour -> day until no tier has a claimable dirty bucket."""
    while True:
        claimed = 0
        for tier in Tier:
            while (n := compact_tier(engine, tier, batch, now=now).buckets):
                claimed += n
        if not claimed:
            return
