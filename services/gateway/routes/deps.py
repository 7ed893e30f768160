"""Shared route dependencies: the authenticated principal and the documented query parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from libs.query_contract import DEFAULT_PAGE, MAX_PAGE, Dimension, Granularity
from services.gateway.auth import Principal, enforce_rate_limit
from services.gateway.context import gateway
from services.gateway.models import (
    CURSOR_PATTERN,
    EXAMPLE_NPUB,
    EXAMPLE_PUBKEY,
    PUBKEY_PATTERN,
    RollingWindow,
)


async def current_principal(request: Request) -> Principal:
    """Authenticate (API key or NIP-98) and count the request against the principal's rate limit."""
    gw = gateway(request)
    body = await request.body() if request.method in ("POST", "PUT", "PATCH", "DELETE") else b""
    principal = await gw.auth.authenticate(request.headers.get("authorization"), str(request.url),
                                           request.method, body)
    await enforce_rate_limit(gw.redis, principal, gw.settings.rate_limit_per_minute)
    return principal


async def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """A principal with the admin scope, else 403."""
    principal.check_admin()
    return principal


Reader = Annotated[Principal, Depends(current_principal)]
Admin = Annotated[Principal, Depends(admin_principal)]

async def target_pubkey(request: Request, pubkey: Annotated[str, Query(
        description="The target: 64 lowercase hex characters, an npub1… or nprofile1… (NIP-19) string, or a "
                    "NIP-05 identifier name@domain (resolved by the gateway; one it cannot resolve is 400 "
                    "INVALID_PUBKEY).", pattern=PUBKEY_PATTERN, examples=[EXAMPLE_PUBKEY, EXAMPLE_NPUB])]) -> str:
    """The target as 64 hex, resolved after authentication (declare it after the principal)."""
    return await gateway(request).keys.pubkey(pubkey)


PubkeyQ = Annotated[str, Depends(target_pubkey)]
WindowQ = Annotated[RollingWindow | None, Query(
    description="A rolling window ending now. Give either window, or both start and end.", examples=["7d"])]
StartQ = Annotated[str | None, Query(
    description="Custom window start (inclusive): unix seconds or RFC 3339 with an offset.", max_length=64,
    examples=["1714521600", "2024-05-01T00:00:00Z"])]
EndQ = Annotated[str | None, Query(
    description="Custom window end (exclusive): unix seconds or RFC 3339 with an offset; at most 60 s in "
                "the future and 10 years after start.", max_length=64,
    examples=["1715126400", "2024-05-08T00:00:00+02:00"])]
MetricsQ = Annotated[str | None, Query(
    description="Comma-separated metric names to return (default: all of METRICS.md).", max_length=1000,
    examples=["zaps.count,zaps.msats,reactions.count"])]
TzQ = Annotated[str | None, Query(
    description="IANA time zone for time buckets (default UTC).", max_length=64, examples=["Europe/Berlin"])]
DimensionQ = Annotated[Dimension, Query(description="What to break the window down by.", examples=["note"])]
MetricQ = Annotated[str | None, Query(
    description="note/counterparty: the sort metric (default zaps.msats); time: the one metric of the series "
                "(default all).", max_length=64, examples=["zaps.msats"])]
GranularityQ = Annotated[Granularity | None, Query(
    description="Time bucket size for dimension=time (default day); at most 1,000 points.", examples=["day"])]
LimitQ = Annotated[int | None, Query(description=f"Rows per page (default {DEFAULT_PAGE}).", ge=1, le=MAX_PAGE,
                                     examples=[DEFAULT_PAGE])]
CursorQ = Annotated[str | None, Query(
    description="The next_cursor of the previous page (opaque, bound to this request).", max_length=2048,
    pattern=CURSOR_PATTERN)]
EstimateDimensionQ = Annotated[Dimension | None, Query(
    description="Estimate a drilldown of this dimension instead of a summary.", examples=["counterparty"])]
