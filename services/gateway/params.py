"""Request parameters: validated in the gateway and normalized into one `AnalyticsQuery`.

The normalized query is what the cache keys, the gRPC requests and the job parameters are
built from, so two spellings of the same request (npub or hex, RFC 3339 or unix seconds)
share one cache entry. Rolling windows are resolved against `now` truncated to the second.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from canal.common.v1 import types_pb2
from canal.query.v1 import query_service_pb2 as qpb
from libs import query_contract as contract
from libs.nostr.identity import parse_key
from libs.windows.errors import PlanningError
from libs.windows.windows import parse_tz, resolve_window
from services.gateway.errors import FIELD_HINTS, ApiError

CURSOR = re.compile(r"p([0-9]{1,12})_([A-Za-z0-9_-]+)")


def pubkey_hex(value: str | None) -> str:
    """64 lowercase hex, npub1… or nprofile1… as hex, else 400 INVALID_PUBKEY (a NIP-05 identifier is
    resolved before, by `services.gateway.identity.KeyResolver`)."""
    if not value:
        raise ApiError(400, "INVALID_PUBKEY", "pubkey is required", FIELD_HINTS["pubkey"])
    try:
        return parse_key(value).pubkey
    except ValueError as exc:
        raise ApiError(400, "INVALID_PUBKEY", str(exc), FIELD_HINTS["pubkey"]) from None


def metric_list(value: str | list[str] | None) -> tuple[str, ...]:
    """Requested metric names in order without repeats (empty: all), else 400 UNKNOWN_METRIC."""
    if value is None or value == "" or value == []:
        return ()
    try:
        return contract.metrics(value.split(",") if isinstance(value, str) else list(value))
    except PlanningError as exc:
        raise _planning(exc) from None


def _planning(exc: PlanningError) -> ApiError:
    return ApiError(400, exc.code, exc.message, exc.hint)


@dataclass(frozen=True)
class AnalyticsQuery:
    """One summary or drilldown request, validated and normalized."""

    kind: str
    pubkey: str
    window: str | None
    start: str | None
    end: str | None
    now: int
    resolved: tuple[int, int, str]
    metrics: tuple[str, ...] = ()
    tz: str = ""
    dimension: str = ""
    metric: str = ""
    granularity: str = ""
    limit: int = 0
    cursor: str = ""

    @property
    def rolling(self) -> bool:
        return self.window is not None

    def window_spec(self) -> types_pb2.WindowSpec:
        return types_pb2.WindowSpec(window=self.window or "", start=self.start or "", end=self.end or "",
                                    now=self.now)

    def cache_fields(self, source: str) -> dict[str, Any]:
        """Everything an exact answer depends on (the data version is added by the cache)."""
        start, end, label = self.resolved
        return {**self._shape(source), "s": start, "e": end, "l": label}

    def stale_fields(self, source: str) -> dict[str, Any]:
        """The request as a person means it: a rolling window by its label, not its instant."""
        if self.rolling:
            return {**self._shape(source), "l": self.resolved[2]}
        return self.cache_fields(source)

    def _shape(self, source: str) -> dict[str, Any]:
        return {"k": self.kind, "p": self.pubkey, "src": source, "m": list(self.metrics), "tz": self.tz,
                "d": self.dimension, "mt": self.metric, "g": self.granularity, "n": self.limit,
                "c": self.cursor}

    def summary_request(self, source: int, enforce: bool) -> qpb.GetSummaryRequest:
        return qpb.GetSummaryRequest(pubkey=self.pubkey, window=self.window_spec(), metrics=list(self.metrics),
                                     source=source, enforce_sync_limit=enforce)

    def drilldown_request(self, source: int, enforce: bool) -> qpb.GetDrilldownRequest:
        return qpb.GetDrilldownRequest(
            pubkey=self.pubkey, window=self.window_spec(), dimension=self.dimension, metric=self.metric,
            granularity=self.granularity, tz=self.tz, page_size=self.limit, page_token=self.cursor,
            source=source, enforce_sync_limit=enforce)


def build_query(kind: str, pubkey: str | None, window: str | None, start: str | None, end: str | None, *,
                metrics: str | list[str] | None = None, tz: str | None = None, dimension: str | None = None,
                metric: str | None = None, granularity: str | None = None, limit: int | None = None,
                cursor: str | None = None, now: int | None = None) -> AnalyticsQuery:
    """Validate every parameter the way the query service would, and normalize the request."""
    hexkey = pubkey_hex(pubkey)
    now_s = int(time.time()) if now is None else now
    page_token = ""
    if cursor and kind == "drilldown":
        # A later page resolves the window at the first page's `now`, so a rolling window keeps its instant.
        now_s, page_token = split_cursor(cursor, now_s)
    try:
        win = resolve_window(window or None, start or None, end or None, now_s)
        if tz:
            parse_tz(tz)
    except PlanningError as exc:
        raise _planning(exc) from None
    if kind == "summary":  # tz is validated but shapes nothing: windows are absolute instants
        return AnalyticsQuery("summary", hexkey, window or None, start or None, end or None, now_s,
                              (win.start, win.end, win.label), metrics=metric_list(metrics))
    try:
        dim = contract.dimension(dimension or "")
        if metric:
            contract.metrics([metric])
        gran = contract.granularity(granularity or "")
        size = contract.page_size(contract.DEFAULT_PAGE if limit is None else limit)
    except PlanningError as exc:
        raise _planning(exc) from None
    # Spell defaults out so equivalent requests share a cache entry.
    if dim in ("note", "counterparty"):
        metric = metric or contract.DEFAULT_SORT
    elif dim == "kind":
        metric = ""
    return AnalyticsQuery("drilldown", hexkey, window or None, start or None, end or None, now_s,
                          (win.start, win.end, win.label), tz=tz or "", dimension=dim, metric=metric or "",
                          granularity=(gran or "day") if dim == "time" else "", limit=size,
                          cursor=page_token)


def split_cursor(cursor: str, now: int) -> tuple[int, str]:
    """(now, page token) of a public cursor; 400 INVALID_CURSOR when it is not one of ours."""
    match = CURSOR.fullmatch(cursor) if len(cursor) <= 2048 else None
    if match is None or int(match[1]) > now + 60:
        raise ApiError(400, "INVALID_CURSOR", "the cursor is malformed", FIELD_HINTS["cursor"])
    return int(match[1]), match[2]
