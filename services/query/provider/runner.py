"""One provider run, and the arq cron job that schedules it in the query worker.

For every subject (tracked keys, plus PROVIDER_KEYS): ask QueryService for the summary over
`all` and each PROVIDER_WINDOWS window, and for the `all` note drilldown (every page); turn the
answers into assertions; sign and publish only those whose tags differ from what was last
published, to every PROVIDER_RELAYS relay, awaiting each relay's OK (NIP-42 AUTH answered with
the provider key). A relay that did not acknowledge an unchanged assertion gets the same event
again on the next run; nothing is signed twice for the same numbers.

Answers that are `partial` (a key still backfilling, a relay behind, data past retention) are
not exact, so they are not published: the previous assertion stays until an exact answer differs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import grpc
from arq.cron import CronJob, cron

from canal.common.v1 import types_pb2
from canal.query.v1 import query_service_pb2 as qpb
from canal.query.v1 import query_service_pb2_grpc as qpb_grpc
from libs.config import Settings
from libs.nostr.publisher import Outcome, RelayPublisher
from libs.service_key import service_key
from libs.windows.windows import ROLLING_WINDOWS
from services.query.provider import store
from services.query.provider.assertions import (
    ALL,
    NOTE_KINDS,
    SUMMARY_METRICS,
    Assertion,
    note_assertion,
    parse_windows,
    user_assertion,
    zero_note_assertion,
)

log = logging.getLogger(__name__)

PAGE_SIZE = 500
MAX_NOTE_PAGES = 200  # 100,000 notes with engagement per key


@dataclass
class RunStats:
    """What one run did (the cron job's result)."""

    subjects: int = 0
    assertions: int = 0  # assertions computed from exact answers
    published: int = 0  # new events signed (a value changed, or never published)
    unchanged: int = 0  # same tags as last time, already on every relay
    resent: int = 0  # same tags and event, sent again to relays that had not acknowledged it
    partial: int = 0  # answers skipped because they were partial
    refused: int = 0  # (event, relay) pairs a relay did not acknowledge
    errors: int = 0  # subjects whose numbers the query service could not give
    locked: bool = False  # another run held the lock; this one did nothing

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def relay_list(settings: Settings) -> list[str]:
    """PROVIDER_RELAYS as a list (empty: the provider is off)."""
    return [r.strip() for r in settings.provider_relays.split(",") if r.strip()]


def windows(settings: Settings) -> list[str]:
    """PROVIDER_WINDOWS: the rolling windows asserted besides `all`."""
    return parse_windows(settings.provider_windows, [w for w in ROLLING_WINDOWS if w != ALL])


def _spec(window: str, now: int) -> types_pb2.WindowSpec:
    return types_pb2.WindowSpec(window=window, now=now)


async def _summaries(stub: qpb_grpc.QueryServiceStub, pubkey: str, wins: Sequence[str], now: int,
                     timeout: float, stats: RunStats) -> list[Assertion]:
    out = []
    for window in (ALL, *wins):
        resp = await stub.GetSummary(qpb.GetSummaryRequest(pubkey=pubkey, window=_spec(window, now),
                                                           metrics=list(SUMMARY_METRICS)), timeout=timeout)
        if resp.meta.partial:
            stats.partial += 1
            log.info("NIP-85: %s %s is partial (%s): not published", pubkey, window,
                     ",".join(resp.meta.partial_reasons))
            continue
        out.append(user_assertion(pubkey, window, {m.name: int(m.value) for m in resp.metrics}))
    return out


async def _notes(stub: qpb_grpc.QueryServiceStub, pubkey: str, now: int, timeout: float,
                 stats: RunStats) -> list[Assertion] | None:
    """Every note row of the `all` note drilldown as an assertion; None when the answer is partial."""
    out: list[Assertion] = []
    token = ""
    for _ in range(MAX_NOTE_PAGES):
        resp = await stub.GetDrilldown(qpb.GetDrilldownRequest(
            pubkey=pubkey, window=_spec(ALL, now), dimension="note", page_size=PAGE_SIZE, page_token=token),
            timeout=timeout)
        if resp.meta.partial:
            stats.partial += 1
            return None
        out += [note_assertion(pubkey, row.key, dict(row.metrics)) for row in resp.rows]
        token = resp.next_page_token
        if not token:
            return out
    log.warning("NIP-85: %s has more than %d notes with engagement; the rest are not asserted this run",
                pubkey, MAX_NOTE_PAGES * PAGE_SIZE)
    return out


def _with_zeroed_notes(pubkey: str, current: list[Assertion],
                       last: dict[tuple[int, str], store.Published]) -> list[Assertion]:
    """Notes published before that left the drilldown (all counts back to zero) are asserted as zeros."""
    seen = {a.address for a in current}
    gone = [zero_note_assertion(pubkey, kind, d) for (kind, d) in sorted(last)
            if kind in NOTE_KINDS and (kind, d) not in seen]
    return current + gone


async def _publish_subject(ctx: _Run, pubkey: str) -> None:
    stats, settings = ctx.stats, ctx.settings
    timeout = settings.query_deadline_s * 6 + 5
    current = await _summaries(ctx.stub, pubkey, ctx.windows, ctx.now, timeout, stats)
    notes = await _notes(ctx.stub, pubkey, ctx.now, timeout, stats)
    last = await asyncio.to_thread(store.published, ctx.engine, pubkey)
    if notes is not None:
        current = _with_zeroed_notes(pubkey, current + notes, last)
    stats.assertions += len(current)

    rows: list[store.Published] = []
    sends: dict[str, list[dict[str, Any]]] = {url: [] for url in ctx.relays}
    for a in current:
        prev = last.get(a.address)
        if prev is not None and prev.tags == a.tags:
            missing = [url for url in ctx.relays if url not in prev.relays]
            if not missing:
                stats.unchanged += 1
                continue
            stats.resent += 1
            row = prev
        else:
            created_at = max(ctx.now, prev.created_at + 1) if prev is not None else ctx.now  # replaces strictly
            row = store.Published(a.kind, a.d, pubkey, a.window, a.tags, a.event(ctx.key, created_at), [])
            stats.published += 1
            missing = list(ctx.relays)
        rows.append(row)
        for url in missing:
            sends[url].append(row.event)

    outcomes = await asyncio.gather(*(ctx.publisher.publish(url, evs) for url, evs in sends.items() if evs))
    by_relay: dict[str, dict[str, Outcome]] = dict(zip([u for u, evs in sends.items() if evs], outcomes, strict=True))
    for row in rows:
        for url, said in by_relay.items():
            outcome = said.get(row.event["id"])
            if outcome is None:
                continue
            if outcome.ok:
                row.relays = sorted({*row.relays, url})
            else:
                stats.refused += 1
                log.warning("NIP-85: %s refused %s %s: %s", url, row.kind, row.d, outcome.message)
    await asyncio.to_thread(store.save, ctx.engine, rows, ctx.now)


@dataclass
class _Run:
    engine: Any
    stub: qpb_grpc.QueryServiceStub
    settings: Settings
    publisher: RelayPublisher
    key: bytes
    relays: list[str]
    windows: list[str]
    now: int
    stats: RunStats


async def run_provider(engine: Any, stub: qpb_grpc.QueryServiceStub, settings: Settings,
                       now: int | None = None) -> RunStats:
    """Publish what changed for every subject (no-op without PROVIDER_RELAYS)."""
    stats = RunStats()
    relays = relay_list(settings)
    if not relays:
        return stats
    at = int(time.time()) if now is None else now
    key = await asyncio.to_thread(service_key, engine, settings.service_nsec)
    with store.run_lock(engine) as got:
        if not got:
            stats.locked = True
            return stats
        keys = await asyncio.to_thread(store.subjects, engine, settings.provider_keys.split(","))
        stats.subjects = len(keys)
        async with RelayPublisher(key) as publisher:
            run = _Run(engine, stub, settings, publisher, key, relays, windows(settings), at, stats)
            for pubkey in keys:
                try:
                    await _publish_subject(run, pubkey)
                except grpc.RpcError as exc:
                    stats.errors += 1
                    code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
                    log.warning("NIP-85: no numbers for %s from the query service (%s)", pubkey, code)
    log.info("NIP-85 run: %s", stats.as_dict())
    return stats


async def publish_assertions(ctx: dict[str, Any]) -> dict[str, Any]:
    """arq cron (query worker): one provider run with the worker's engine and QueryService channel."""
    stats = await run_provider(ctx["engine"], ctx["query"], ctx["settings"])
    return stats.as_dict()


def schedule(every_s: int) -> dict[str, Any]:
    """arq cron fields firing every `every_s` seconds, 30 s past the slot (off the compactor's beat).

    `every_s` must be a whole number of minutes dividing an hour, or of hours dividing a day.
    """
    if every_s % 60 == 0 and 0 < every_s < 3600 and 3600 % every_s == 0:
        return {"minute": set(range(0, 60, every_s // 60)), "second": 30}
    if every_s % 3600 == 0 and 0 < every_s <= 86400 and 86400 % every_s == 0:
        return {"hour": set(range(0, 24, every_s // 3600)), "minute": 0, "second": 30}
    raise ValueError(f"PROVIDER_EVERY_S={every_s}: use whole minutes dividing an hour or hours dividing a day")


def provider_cron(settings: Settings) -> list[CronJob]:
    """The provider's cron job for the query worker (none when PROVIDER_RELAYS is empty)."""
    if not relay_list(settings):
        return []
    windows(settings)  # an unknown window fails at start, not at the first run
    return [cron(publish_assertions, run_at_startup=False, timeout=max(300, settings.provider_every_s),
                 **schedule(settings.provider_every_s))]
