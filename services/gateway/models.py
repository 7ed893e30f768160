"""Pydantic models of every body the API sends or accepts: the OpenAPI document is generated from these."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from libs.query_contract import MAX_PAGE, Dimension, Granularity

# 64 hex, npub or nprofile (NIP-19, optionally `nostr:`-prefixed), or NIP-05 name@domain.
PUBKEY_PATTERN = (r"^(?:[0-9a-f]{64}|(?:nostr:)?npub1[02-9ac-hj-np-z]{58}|(?:nostr:)?nprofile1[02-9ac-hj-np-z]{58,2000}"
                  r"|[A-Za-z0-9._-]{1,64}@[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?)$")
EXAMPLE_PUBKEY = "82341f882b6eabcd2ba7f1ef90aad961cf074af15b9ef44a09f9d2a8fbfbe6a2"
EXAMPLE_NPUB = "npub1sg6plzptd64u62a878hep2kev88swjh3tw00gjsfl8f237lmu63q0uf63m"
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
CohortEntry = Annotated[str, StringConstraints(pattern=r"^[!-~]{1,200}$")]
Source = Literal["canonical", "legacy"]
RollingWindow = Literal["1h", "24h", "7d", "30d", "90d", "365d", "all"]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class WindowOut(BaseModel):
    start: int = Field(description="Window start, unix seconds (inclusive).", examples=[1714521600])
    end: int = Field(description="Window end, unix seconds (exclusive).", examples=[1715126400])
    label: str = Field(description="The rolling window (1h, 24h, 7d, 30d, 90d, 365d, all), `custom` for "
                                   "start/end, or `none` for answers that are not about a window.",
                       examples=["7d"])


class RelayLagOut(BaseModel):
    url: str = Field(examples=["wss://relay.example.com"])
    lag_seconds: int = Field(examples=[4])
    healthy: bool


class FreshnessOut(BaseModel):
    as_of: int = Field(description="Newest moment up to which every ingested fact is reflected (0: not "
                                   "computed yet).", examples=[1715126390])
    watermark: int = Field(description="Compaction watermark used.", examples=[1715126340])
    lag_seconds: int = Field(description="now minus as_of.", examples=[10])
    stale: bool = Field(description="True for a fallback answer, or when ingest lag exceeds the limit.")
    relays: list[RelayLagOut] | None = Field(default=None, description="Per-relay lag, when relays feed ingest.")


class PlanOut(BaseModel):
    tiers: dict[str, int] = Field(description="Aggregate buckets read per tier: day64 and day8 (blocks of 64 and 8 UTC days), day, hour, minute.",
                                  examples=[{"day64": 0, "day8": 0, "day": 6, "hour": 23, "minute": 59}])
    raw_facts_scanned: int = Field(examples=[120])


class Meta(BaseModel):
    request_id: str = Field(examples=["6f1c2a9e0b7d4d1f9a3e5c7b8d9e0f1a"])
    source: Source = Field(description="Which path answered: the canonical rollups or the legacy raw scan.")
    window: WindowOut
    freshness: FreshnessOut
    partial: bool = Field(description="True when part of the window could not be answered exactly.")
    partial_reasons: list[str] = Field(description="Machine-readable reason per partial part.",
                                       examples=[["retention"]])
    plan: PlanOut
    cache: Literal["hit", "miss", "stale", "bypass"] = Field(
        description="hit: from the answer cache; miss: computed now; stale: the last good answer, served "
                    "because the live path failed; bypass: the answer cache was not used (Redis down, or "
                    "an answer that is not cached).")


META_EXAMPLE: dict[str, Any] = {
    "request_id": "6f1c2a9e0b7d4d1f9a3e5c7b8d9e0f1a", "source": "canonical",
    "window": {"start": 1714521600, "end": 1715126400, "label": "7d"},
    "freshness": {"as_of": 1715126390, "watermark": 1715126340, "lag_seconds": 10, "stale": False},
    "partial": False, "partial_reasons": [],
    "plan": {"tiers": {"day64": 0, "day8": 0, "day": 6, "hour": 23, "minute": 59}, "raw_facts_scanned": 120}, "cache": "miss"}


class SummaryData(BaseModel):
    pubkey: str = Field(description="The target pubkey, 64 hex.", examples=[EXAMPLE_PUBKEY])
    metrics: dict[str, int] = Field(description="Metric name (METRICS.md) to integer value.",
                                    examples=[{"zaps.count": 12, "zaps.msats": 2100000, "reactions.count": 40}])


class SummaryEnvelope(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "data": {"pubkey": EXAMPLE_PUBKEY, "metrics": {"zaps.count": 12, "zaps.msats": 2100000}},
        "meta": META_EXAMPLE}]})
    data: SummaryData
    meta: Meta


class NoteRow(BaseModel):
    key: str = Field(description="Event id, or kind:pubkey:d address.")
    deleted: bool = Field(description="The note was deleted (NIP-09); engagement still counts.")
    metrics: dict[str, int]


class CounterpartyRow(BaseModel):
    key: str = Field(description="The actor's pubkey, 64 hex.")
    npub: str | None
    display_name: str | None = Field(description="From the actor's kind 0 profile, when known.")
    metrics: dict[str, int]


class KindRow(BaseModel):
    key: str
    kind: int = Field(description="Source event kind.")
    metrics: dict[str, int] = Field(description="`facts`: counted facts of this kind.")


class TimeRow(BaseModel):
    key: str = Field(description="The bucket start as a string.")
    start: int
    end: int
    metrics: dict[str, int]


class DrilldownData(BaseModel):
    dimension: Dimension
    rows: list[NoteRow | CounterpartyRow | KindRow | TimeRow]
    next_cursor: str | None = Field(description="Pass as cursor= for the next page; null on the last page.")


class DrilldownEnvelope(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "data": {"dimension": "note", "next_cursor": None, "rows": [
            {"key": "5c83da77af1dec6d7289834998ad7aafbd9e2191396d75ec3cc27f5a77226f36", "deleted": False,
             "metrics": {"zaps.count": 3, "zaps.msats": 63000, "reactions.count": 7, "reposts.count": 1,
                         "replies.count": 2, "quotes.count": 0}}]},
        "meta": META_EXAMPLE}]})
    data: DrilldownData
    meta: Meta


class EstimatePlan(BaseModel):
    tiers: dict[str, int]
    raw_facts_scanned: int


class EstimateData(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    cost: float = Field(description="Estimated cost units.", examples=[1250.0])
    sync_limit: float = Field(description="Cost above which a request is answered as an async job.")
    async_: bool = Field(alias="async", description="True when the request would be answered with 202 + job.")
    plan: EstimatePlan


class EstimateEnvelope(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "data": {"cost": 1250.0, "sync_limit": 200000.0, "async": False,
                 "plan": {"tiers": {"day64": 0, "day8": 3, "day": 5, "hour": 23, "minute": 59}, "raw_facts_scanned": 0}},
        "meta": {**META_EXAMPLE, "window": {"start": 1712534400, "end": 1715126400, "label": "30d"},
                 "cache": "bypass"}}]})
    data: EstimateData
    meta: Meta


class JobHandle(BaseModel):
    id: str = Field(examples=["3f9a0c1e5b7d4e2f8a6c0b1d2e3f4a5b"])
    state: JobState
    status_url: str = Field(examples=["/api/v2/analytics/jobs/3f9a0c1e5b7d4e2f8a6c0b1d2e3f4a5b"])


class JobHandleData(BaseModel):
    job: JobHandle


class JobAcceptedEnvelope(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "data": {"job": {"id": "3f9a0c1e5b7d4e2f8a6c0b1d2e3f4a5b", "state": "queued",
                         "status_url": "/api/v2/analytics/jobs/3f9a0c1e5b7d4e2f8a6c0b1d2e3f4a5b"}},
        "meta": {**META_EXAMPLE, "cache": "bypass"}}]})
    data: JobHandleData
    meta: Meta


class JobError(BaseModel):
    code: str = Field(examples=["UNAVAILABLE"])
    message: str
    hint: str


class JobStatus(BaseModel):
    id: str
    state: JobState
    phase: str = Field(description="queued, planning, reading_aggregates, scanning_facts, combining, storing.")
    progress: float = Field(ge=0, le=1)
    created_at: int
    updated_at: int
    result_url: str | None = Field(description="Where the result is, once the job succeeded.")
    error: JobError | None = Field(description="Why a failed job failed, and what to do about it.")


class JobStatusEnvelope(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "data": {"id": "3f9a0c1e5b7d4e2f8a6c0b1d2e3f4a5b", "state": "running", "phase": "reading_aggregates",
                 "progress": 0.3, "created_at": 1715126400, "updated_at": 1715126402, "result_url": None,
                 "error": None},
        "meta": {**META_EXAMPLE, "cache": "bypass"}}]})
    data: JobStatus
    meta: Meta


class JobCreate(BaseModel):
    """The parameters of a summary or drilldown, plus which of the two to run."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"kind": "summary", "pubkey": EXAMPLE_PUBKEY, "window": "365d"},
        {"kind": "drilldown", "pubkey": EXAMPLE_NPUB, "start": "2024-01-01T00:00:00Z",
         "end": "2024-07-01T00:00:00Z", "dimension": "time", "granularity": "week"}]})
    kind: Literal["summary", "drilldown"]
    pubkey: str = Field(max_length=2048, description="64 lowercase hex, npub1…, nprofile1… or NIP-05 name@domain")
    window: RollingWindow | None = None
    start: str | None = Field(default=None, max_length=64)
    end: str | None = Field(default=None, max_length=64)
    metrics: list[str] | str | None = Field(default=None, description="Metric names (list or comma-separated).")
    tz: str | None = Field(default=None, max_length=64)
    dimension: Dimension | None = None
    metric: str | None = Field(default=None, max_length=64)
    granularity: Granularity | None = None
    limit: int | None = Field(default=None, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(default=None, max_length=2048, pattern=CURSOR_PATTERN)


class FlagData(BaseModel):
    mode: Literal["off", "cohort", "percent", "on"]
    percent: int = Field(ge=0, le=100)
    cohort: list[str]
    updated_at: int
    updated_by: str


class FlagEnvelope(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "data": {"mode": "percent", "percent": 25, "cohort": [], "updated_at": 1715126400,
                 "updated_by": "key:key_0123456789abcdef"},
        "meta": {**META_EXAMPLE, "window": {"start": 0, "end": 0, "label": "none"}, "cache": "bypass"}}]})
    data: FlagData
    meta: Meta


class FlagUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"mode": "percent", "percent": 25}, {"mode": "cohort", "cohort": [EXAMPLE_NPUB]}, {"mode": "on"}]})
    mode: Literal["off", "cohort", "percent", "on"]
    percent: int = Field(default=0, ge=0, le=100)
    cohort: list[CohortEntry] = Field(default_factory=list, max_length=10_000,
                                      description="Pubkeys (hex or npub) or principal ids (key:<id>, nostr:<hex>).")


class ErrorBody(BaseModel):
    code: str = Field(examples=["INVALID_WINDOW"])
    message: str = Field(examples=["window='8d' is not a known window"])
    hint: str = Field(examples=["window must be one of 1h|24h|7d|30d|90d|365d|all, or give start and end"])
    request_id: str


class ErrorEnvelope(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"error": {
        "code": "INVALID_WINDOW", "message": "window='8d' is not a known window",
        "hint": "window must be one of 1h|24h|7d|30d|90d|365d|all, or give start and end instead",
        "request_id": "6f1c2a9e0b7d4d1f9a3e5c7b8d9e0f1a"}}]})
    error: ErrorBody


class UiConfig(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"demo": True, "api_key": "canal_demo_0123456789abcdef0123456789abcdef01234567",
         "default_pubkey": EXAMPLE_PUBKEY, "admin": True, "version": "0.1.0"},
        {"demo": False, "api_key": None, "default_pubkey": None, "admin": False, "version": "0.1.0"}]})
    demo: bool
    api_key: str | None = Field(description="A local key, in demo mode and to loopback clients only.")
    default_pubkey: str | None
    admin: bool
    version: str


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "ok", "checks": {"query": "ok", "postgres": "ok", "redis": "ok"}},
        {"status": "degraded", "checks": {"query": "ok", "postgres": "ok", "redis": "unavailable"}},
        {"status": "unavailable", "checks": {"query": "unavailable", "postgres": "ok", "redis": "ok"},
         "error": {"code": "UNAVAILABLE", "message": "not ready: query unavailable",
                   "hint": "Check that the listed dependencies are running and reachable from the gateway.",
                   "request_id": "6f1c2a9e0b7d4d1f9a3e5c7b8d9e0f1a"}}]})
    status: Literal["ok", "degraded", "unavailable"]
    checks: dict[str, str] = Field(examples=[{"query": "ok", "postgres": "ok", "redis": "ok"}])
    error: ErrorBody | None = None
