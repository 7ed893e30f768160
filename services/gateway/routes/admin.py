"""Admin: the analytics_v2 feature flag (admin scope)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from libs.envelope import finish, placeholder_meta
from services.gateway.context import gateway
from services.gateway.docs import READ_ERRORS, SECURED, errors
from services.gateway.errors import ApiError
from services.gateway.flags import Flag, get_flag, set_flag
from services.gateway.models import FlagEnvelope, FlagUpdate
from services.gateway.routes.deps import Admin

router = APIRouter(tags=["admin"])
FLAG_DOC = ("Which path serves v2 reads: off (everything legacy), cohort (the listed pubkeys or principal ids "
            "get canonical), percent (pubkeys whose stable hash bucket sha256(hex) mod 100 is under percent get "
            "canonical) or on. Changes take effect within seconds on every gateway.")


def _answer(request: Request, flag: Flag) -> JSONResponse:
    source = "canonical" if flag.mode != "off" else "legacy"
    body = {"data": flag.as_dict(), "meta": placeholder_meta(source)}
    return JSONResponse(finish(body, request.state.request_id, "bypass"))


@router.get("/api/v2/admin/flag", response_model=FlagEnvelope, summary="Read the feature flag",
            description=FLAG_DOC, responses=errors(*READ_ERRORS), openapi_extra=SECURED)
async def read_flag(request: Request, principal: Admin) -> JSONResponse:
    gw = gateway(request)
    return _answer(request, await asyncio.to_thread(get_flag, gw.engine))


@router.put("/api/v2/admin/flag", response_model=FlagEnvelope, summary="Set the feature flag",
            description=FLAG_DOC, responses=errors(*READ_ERRORS), openapi_extra=SECURED)
async def write_flag(request: Request, principal: Admin, body: FlagUpdate) -> JSONResponse:
    gw = gateway(request)
    try:
        flag = await asyncio.to_thread(set_flag, gw.engine, body.mode, body.percent, body.cohort, principal.id)
    except ValueError as exc:
        raise ApiError(400, "INVALID_FLAG", str(exc), "Use mode off|cohort|percent|on, percent 0..100 and a "
                                                      "cohort of pubkeys or principal ids.") from None
    gw.flags.invalidate()
    return _answer(request, flag)
