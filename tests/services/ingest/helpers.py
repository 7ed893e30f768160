"""Small signed events, real zap receipts, and readable views of facts for the ingest tests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Engine, text

from libs.metrics import FactType
from libs.nostr.event import Rejection
from libs.nostr.keys import privkey_from_seed, pubkey_of, sign_event
from services.ingest.relay_client import RelayClient
from services.ingest.store import BatchResult, IngestStore, RawItem
from tests.libs.nostr.bolt11_reference import make_invoice
from tools.demo.signing import InvoiceSigner

ALICE = privkey_from_seed("ingest-alice")
BOB = privkey_from_seed("ingest-bob")
CAROL = privkey_from_seed("ingest-carol")
DAVE = privkey_from_seed("ingest-dave")
PROVIDER = privkey_from_seed("ingest-zap-provider")
NODE = privkey_from_seed("ingest-lightning-node")
A, B, C, D = (pubkey_of(k) for k in (ALICE, BOB, CAROL, DAVE))
PROV = pubkey_of(PROVIDER)
T0 = 1_700_000_000
NOW = T0 + 30 * 86_400  # the receive time of every test batch unless given

Event = dict[str, Any]
FactView = tuple[str, str, str, int, int, str | None, str | None, int, int]


def ev(priv: bytes = ALICE, kind: int = 1, content: str = "hello", tags: Sequence[Sequence[str]] = (),
       t: int = T0) -> Event:
    """A signed event."""
    return sign_event(priv, kind, content, tags, t)


def zap_request(sender: bytes = BOB, recipient: str = A, msats: int | None = 21_000,
                tags: Sequence[Sequence[str]] = (), p_tags: Sequence[str] | None = None, t: int = T0) -> Event:
    """A signed kind 9734 request (amount tag = msats unless None; p = recipient unless `p_tags`)."""
    out: list[list[str]] = [["relays", "wss://relay.example"]]
    out += [["p", p] for p in ([recipient] if p_tags is None else p_tags)]
    if msats is not None:
        out.append(["amount", str(msats)])
    out += [list(x) for x in tags]
    return sign_event(sender, 9734, "", out, t)


def zap_receipt(request: Event | str | None = None, msats: int | None = 21_000, recipient: str = A,
                tags: Sequence[Sequence[str]] = (), p_tags: Sequence[str] | None = None,
                bolt11: Sequence[str] | None = None, payment_hash: str | None = "auto", t: int = T0 + 5,
                provider: bytes = PROVIDER, description_hash: str | None = "auto") -> Event:
    """A signed kind 9735 receipt with a real signed invoice for `msats` (None: an amountless invoice).

    `payment_hash="auto"` derives one from the description; None leaves it out of the invoice.
    """
    request = zap_request(recipient=recipient) if request is None else request
    description = request if isinstance(request, str) else json.dumps(request, separators=(",", ":"))
    dh = hashlib.sha256(description.encode()).hexdigest() if description_hash == "auto" else description_hash
    ph = hashlib.sha256(b"pay:" + description.encode()).hexdigest() if payment_hash == "auto" else payment_hash
    if msats is not None and ph is not None and dh is not None:
        invoice = make_invoice(msats, ph, NODE, t - 1, dh)
    else:
        invoice = InvoiceSigner(NODE).invoice(msats, bytes.fromhex(ph) if ph else None, t - 1,
                                              bytes.fromhex(dh or "00" * 32))
    out: list[list[str]] = [["p", p] for p in ([recipient] if p_tags is None else p_tags)]
    out += [["bolt11", b] for b in ([invoice] if bolt11 is None else bolt11)]
    out.append(["description", description])
    out += [list(x) for x in tags]
    return sign_event(provider, 9735, "", out, t)


def item(value: object, origin: str = "test") -> RawItem:
    """A RawItem of an event dict (or a Rejection)."""
    raw = value.message if isinstance(value, Rejection) else json.dumps(value, ensure_ascii=False)
    return RawItem(value, origin, raw)


def ingest(engine: Engine, *events: object, receive_time: int = NOW) -> BatchResult:
    """One batch through the store."""
    return IngestStore(engine).ingest([item(e) for e in events], receive_time)


def ingest_each(engine: Engine, events: Iterable[object], receive_time: int = NOW) -> list[BatchResult]:
    """Each event in its own batch, in the given order."""
    return [ingest(engine, e, receive_time=receive_time) for e in events]


def facts(engine: Engine) -> set[FactView]:
    """Every fact with readable keys: (target, source, type, created_at, kind, actor, note, msats, sub)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT t.pubkey, f.source_event_id, f.fact_type, f.created_at, f.kind, a.pubkey, n.note_key, f.msats, "
            "f.sub FROM facts f JOIN pubkeys t ON t.id = f.target_id LEFT JOIN pubkeys a ON a.id = f.actor_id "
            "LEFT JOIN notes n ON n.id = f.note_id"))
        return {(r[0], r[1], FactType(r[2]).name, r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows}


def facts_of(engine: Engine, fact_type: str) -> set[FactView]:
    """The facts of one type (by FactType name)."""
    return {f for f in facts(engine) if f[2] == fact_type}


def fact_keys(engine: Engine, fact_type: str) -> set[tuple[str, str]]:
    """(target, source event id) of the facts of one type."""
    return {(f[0], f[1]) for f in facts_of(engine, fact_type)}


def dirty(engine: Engine) -> set[tuple[str, int]]:
    """Dirty minute buckets as (target pubkey, bucket start)."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT p.pubkey, d.bucket_start FROM dirty_buckets d JOIN pubkeys p "
                                 "ON p.id = d.target_id WHERE d.tier = 1"))
        return {(r[0], r[1]) for r in rows}


def clear_dirty(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM dirty_buckets"))


def scalar(engine: Engine, sql: str, **params: object) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def rows(engine: Engine, sql: str, **params: object) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def minute(t: int) -> int:
    return t - t % 60


async def wait_until(pred: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll `pred` until it holds (AssertionError naming `what` after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def client(url: str, engine: Engine, **kw: Any) -> RelayClient:
    """A RelayClient with test timings: small batches, fast flushes, short backoff."""
    opts: dict[str, Any] = {"batch_size": 200, "flush_interval": 0.05, "backoff_base": 0.05, "backoff_cap": 0.3}
    return RelayClient(url, engine, **{**opts, **kw})
