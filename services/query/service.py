"""Request handling shared by the gRPC handlers: validation, path choice, freshness, errors."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import grpc
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from canal.common.v1 import types_pb2
from libs import query_contract as contract
from libs.metrics import METRIC_NAMES
from libs.nostr.bech32 import parse_pubkey
from libs.rpc import CanalError
from libs.windows.errors import PlanningError
from libs.windows.windows import Window, resolve_window
from services.query import context
from services.query.engine import Execution, plan_parts
from services.query.planning.plan import BUCKET_UNITS, RANGE_SCAN_UNITS, RAW_ROW_UNITS


def pubkey_of(value: str) -> str:
    """64 lowercase hex or npub, else INVALID_PUBKEY."""
    try:
        return parse_pubkey(value)
    except ValueError as exc:
        raise CanalError("INVALID_PUBKEY", str(exc) or "the pubkey is not valid",
                         "Pass 64 lowercase hex characters or an npub1… string.", "pubkey") from exc


def window_of(spec: types_pb2.WindowSpec) -> Window:
    """Resolve rolling or custom windows (METRICS.md), raising INVALID_WINDOW with the field at fault."""
    now = spec.now or int(time.time())
    try:
        return resolve_window(spec.window or None, spec.start or None, spec.end or None, now)
    except PlanningError as exc:
        raise as_canal_error(exc) from exc


def metrics_of(names: list[str]) -> list[str]:
    """The requested metric names (all when empty), UNKNOWN_METRIC for a name METRICS.md lacks."""
    return list(contract.metrics(names) or METRIC_NAMES)


def as_canal_error(exc: PlanningError) -> CanalError:
    return CanalError(exc.code, exc.message, exc.hint, exc.field)


def sort_column(dimension: str, metric: str) -> str:
    """The engagement column a note/counterparty drilldown sorts by (zaps.msats by default)."""
    return contract.SORT_COLUMNS[contract.sort_metric(dimension, metric)]


@dataclass
class Answer:
    """Meta for an answer (API.md envelope, less request_id and cache)."""

    window: Window
    legacy: bool
    execution: Execution
    fresh: context.Freshness

    def meta(self) -> types_pb2.Meta:
        raw = [x for pair in self.execution.raw_ranges for x in pair]
        reasons = list(self.execution.partial_reasons)
        # API.md: an answer that depends on a relay known to be behind is partial, and says which
        reasons += [f"relay_behind:{r.url}" for r in self.fresh.relays if not r.healthy]
        reasons += list(self.fresh.coverage)  # TRACK mode: still backfilling, or not tracked at all
        return types_pb2.Meta(
            source=types_pb2.SOURCE_LEGACY if self.legacy else types_pb2.SOURCE_CANONICAL,
            window=types_pb2.Window(start=self.window.start, end=self.window.end, label=self.window.label),
            freshness=types_pb2.Freshness(
                as_of=self.fresh.as_of, watermark=self.fresh.watermark, lag_seconds=self.fresh.lag_seconds,
                stale=self.fresh.stale,
                relays=[types_pb2.RelayLag(url=r.url, lag_seconds=r.lag_seconds, healthy=r.healthy)
                        for r in self.fresh.relays]),
            partial=bool(reasons), partial_reasons=reasons,
            plan=types_pb2.Plan(tiers=self.execution.tiers, raw_facts_scanned=self.execution.raw_facts,
                                raw_ranges=raw[:200]),
        )


def run_sql(engine: Engine, timeout_s: float | None, fn, *args):  # type: ignore[no-untyped-def]
    """Run `fn(conn, *args)` in a read-only transaction that PostgreSQL cancels at the deadline."""
    with engine.connect() as conn, conn.begin():
        if timeout_s is not None:
            ms = max(1, int(timeout_s * 1000))
            conn.execute(text(f"SET LOCAL statement_timeout = {ms}"))
        try:
            return fn(conn, *args)
        except DBAPIError as exc:
            if "statement timeout" in str(exc.orig) or "canceling statement" in str(exc.orig):
                raise CanalError("DEADLINE_EXCEEDED", "the query did not finish before its deadline",
                                 "Retry, narrow the window, or use an async job.",
                                 status=grpc.StatusCode.DEADLINE_EXCEEDED) from None
            raise


def raw_rate(conn: Connection, target: int | None, now: int) -> float:
    """Facts per second of a target over its last 30 days (for cost estimates)."""
    if target is None:
        return 0.0
    row = conn.execute(text(
        "SELECT coalesce(sum(facts), 0) FROM aggregates WHERE target_id = :t AND tier = 3 AND bucket_start >= :lo"),
        {"t": target, "lo": now - 30 * 86400}).first()
    recent = int(row[0]) if row else 0
    return max(recent / (30 * 86400), 0.01)


def plan_cost(execution: Execution, window: Window, legacy: bool, rate: float) -> float:
    """Estimated cost units of a planned request (the plan recorded in `execution`): range scans,
    aggregate buckets and raw rows (`planning.plan.estimate_cost`'s units); legacy scans the window raw."""
    if legacy:
        return window.span * rate
    raw_seconds = sum(b - a for a, b in execution.raw_ranges)
    return (RANGE_SCAN_UNITS * execution.range_scans + BUCKET_UNITS * sum(execution.tiers.values())
            + RAW_ROW_UNITS * raw_seconds * rate)


def estimate(conn: Connection, target: int | None, window: Window, legacy: bool, now: int,
             inputs: context.Snapshot | None = None) -> tuple[float, dict]:
    """Estimated cost units of answering the window as a summary, and the plan's bucket counts
    (EstimateCost: no answer is computed, only the plan)."""
    execution = Execution(inputs=inputs)
    if not legacy and target is not None:
        plan_parts(conn, target, [(window.start, window.end)], legacy, execution)
    return plan_cost(execution, window, legacy, raw_rate(conn, target, now)), dict(execution.tiers)


def data_version(conn: Connection) -> str:
    """Changes whenever an answer could change: every ingest commit and every retention run."""
    commits = conn.execute(text("SELECT value FROM ingest_state WHERE name = 'commits'")).scalar() or 0
    retention = conn.execute(text("SELECT coalesce(max(updated_at), 0) FROM retention_horizons")).scalar() or 0
    # a key becoming tracked, untracked or ready changes answers' partial reasons
    tracking = conn.execute(text("SELECT count(*) * 1000003 + coalesce(max(ready_at), 0) + coalesce(max(added_at), 0) "
                                 "FROM tracked_keys")).scalar() or 0
    version = f"{commits}.{retention}.{tracking}"
    # Answers carry freshness: while a relay is down, cached answers must not keep saying "fresh". The
    # version then names the relays that are down and moves every 5 s (the answer's lag and stale re-derive).
    down = conn.execute(text("SELECT coalesce(string_agg(relay, ',' ORDER BY relay), '') FROM (SELECT relay "
                             "FROM relay_cursors GROUP BY relay HAVING NOT bool_or(connected)) d")).scalar() or ""
    if down:
        version += f".{hashlib.sha256(down.encode()).hexdigest()[:8]}.{int(time.time()) // 5}"
    return version
