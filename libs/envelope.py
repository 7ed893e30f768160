"""The API.md envelope: query-service answers (protobuf) turned into `{data, meta}` JSON.

Pure functions, shared by the gateway (sync answers) and the job worker (persisted
results), so a job's result has exactly the shape of the sync answer.
"""

from __future__ import annotations

import time
from typing import Any

from canal.common.v1 import types_pb2
from canal.query.v1 import query_service_pb2 as qpb
from libs.metrics import TIER_LABELS
from libs.nostr.bech32 import npub_encode

TIERS = TIER_LABELS


def source_name(source: int) -> str:
    """`canonical` or `legacy` for a proto Source (unspecified means canonical)."""
    return "legacy" if source == types_pb2.SOURCE_LEGACY else "canonical"


def meta_from(meta: types_pb2.Meta) -> dict[str, Any]:
    """The meta block without request_id and cache (the gateway adds those per answer)."""
    fresh = meta.freshness
    freshness: dict[str, Any] = {"as_of": fresh.as_of, "watermark": fresh.watermark,
                                 "lag_seconds": fresh.lag_seconds, "stale": fresh.stale}
    if fresh.relays:
        freshness["relays"] = [{"url": r.url, "lag_seconds": r.lag_seconds, "healthy": r.healthy}
                               for r in fresh.relays]
    tiers = {t: int(meta.plan.tiers.get(t, 0)) for t in TIERS}
    return {
        "source": source_name(meta.source),
        "window": {"start": meta.window.start, "end": meta.window.end, "label": meta.window.label or "custom"},
        "freshness": freshness,
        "partial": bool(meta.partial),
        "partial_reasons": list(meta.partial_reasons),
        "plan": {"tiers": tiers, "raw_facts_scanned": meta.plan.raw_facts_scanned},
    }


def placeholder_meta(source: str, start: int = 0, end: int = 0, label: str = "none") -> dict[str, Any]:
    """Meta for answers that are not computed windows (jobs, estimates, admin): nothing read yet."""
    return {
        "source": source,
        "window": {"start": start, "end": end, "label": label},
        "freshness": {"as_of": 0, "watermark": 0, "lag_seconds": 0, "stale": False},
        "partial": False,
        "partial_reasons": [],
        "plan": {"tiers": dict.fromkeys(TIERS, 0), "raw_facts_scanned": 0},
    }


def summary_payload(resp: qpb.GetSummaryResponse) -> dict[str, Any]:
    """`{data: {pubkey, metrics}, meta}` for a summary."""
    return {"data": {"pubkey": resp.pubkey, "metrics": {m.name: int(m.value) for m in resp.metrics}},
            "meta": meta_from(resp.meta)}


def drilldown_row(dimension: str, row: qpb.DrilldownRow) -> dict[str, Any]:
    """One row in the shape of its dimension (API contract)."""
    metrics = {k: int(v) for k, v in row.metrics.items()}
    if dimension == "note":
        return {"key": row.key, "deleted": bool(row.deleted), "metrics": metrics}
    if dimension == "counterparty":
        try:
            npub: str | None = npub_encode(row.key)
        except ValueError:
            npub = None
        return {"key": row.key, "npub": npub, "display_name": row.display_name or None, "metrics": metrics}
    if dimension == "kind":
        kind = row.kind or (int(row.key) if row.key.isdigit() else 0)
        return {"key": row.key, "kind": kind, "metrics": {"facts": int(metrics.get("facts", 0))}}
    return {"key": row.key, "start": row.start, "end": row.end, "metrics": metrics}


def drilldown_payload(resp: qpb.GetDrilldownResponse, now: int) -> dict[str, Any]:
    """`{data: {dimension, rows, next_cursor}, meta}` for a drilldown resolved at `now`.

    next_cursor carries `now` (`p<now>_<page token>`) so the next page resolves a rolling
    window at the same instant; the page token itself is tamper-evident.
    """
    rows = [drilldown_row(resp.dimension, r) for r in resp.rows]
    cursor = f"p{now}_{resp.next_page_token}" if resp.next_page_token else None
    return {"data": {"dimension": resp.dimension, "rows": rows, "next_cursor": cursor},
            "meta": meta_from(resp.meta)}


def finish(payload: dict[str, Any], request_id: str, cache: str, stale: bool = False) -> dict[str, Any]:
    """The envelope as sent: payload plus this answer's request_id and cache status.

    A stale fallback also says so in freshness (and its lag grows with the answer's age).
    """
    meta = dict(payload["meta"])
    meta["request_id"] = request_id
    meta["cache"] = cache
    if stale:
        fresh = dict(meta["freshness"])
        fresh["stale"] = True
        if fresh.get("as_of"):
            fresh["lag_seconds"] = max(0, int(time.time()) - int(fresh["as_of"]))
        meta["freshness"] = fresh
    ordered = {k: meta[k] for k in ("request_id", "source", "window", "freshness", "partial",
                                    "partial_reasons", "plan", "cache")}
    return {"data": payload["data"], "meta": ordered}
