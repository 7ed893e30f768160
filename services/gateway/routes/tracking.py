"""Admin: the keys TRACK mode follows on relays (admin scope), through the ingest service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from canal.ingest.v1 import ingest_service_pb2 as ipb
from libs.envelope import finish, placeholder_meta
from services.gateway.context import gateway
from services.gateway.docs import READ_ERRORS, SECURED, errors
from services.gateway.errors import UpstreamError
from services.gateway.ingest_client import IngestClient
from services.gateway.routes.deps import Admin

router = APIRouter(tags=["admin"])
TRACK_DOC = ("TRACK mode follows these keys on relays: events by them, events tagging them or their notes, and "
             "the contact lists and deletions of their followers and engagers. A newly added key is backfilled "
             "from relays at once (BACKFILL_DAYS); until it is done its answers are partial with reason "
             "`backfilling`. In TRACK mode a key that is not tracked answers partial with reason `not_tracked`. "
             "Keys are given as 64 hex, npub, nprofile or NIP-05 name@domain.")
STATES = {ipb.TRACK_STATE_READY: "ready", ipb.TRACK_STATE_BACKFILLING: "backfilling"}


class TrackKeyBody(BaseModel):
    key: str = Field(description="64 lowercase hex, npub1…, nprofile1… or NIP-05 name@domain.",
                     examples=["npub1sg6plzptd64u62a878hep2kev88swjh3tw00gjsfl8f237lmu63q0uf63m"])


def _client(request: Request) -> IngestClient:
    state = request.app.state
    if getattr(state, "ingest", None) is None:
        gw = gateway(request)
        state.ingest = IngestClient(gw.settings.ingest_addr, gw.settings.query_deadline_s)
    return state.ingest  # type: ignore[no-any-return]


def key_json(key: ipb.TrackedKey) -> dict[str, Any]:
    return {"pubkey": key.pubkey, "npub": key.npub, "added_at": key.added_at, "source": key.source,
            "label": key.label, "state": STATES.get(key.state, "backfilling"), "ready_at": key.ready_at or None}


def _answer(request: Request, data: dict[str, Any], status: int = 200) -> JSONResponse:
    body = {"data": data, "meta": placeholder_meta("canonical")}
    return JSONResponse(finish(body, request.state.request_id, "bypass"), status_code=status)


async def _ingest(call):  # type: ignore[no-untyped-def]
    try:
        return await call
    except UpstreamError as exc:
        raise exc.to_api() from None


@router.get("/api/v2/admin/tracked-keys", summary="List tracked keys", description=TRACK_DOC,
            responses=errors(*READ_ERRORS), openapi_extra=SECURED)
async def list_tracked(request: Request, principal: Admin) -> JSONResponse:
    resp = await _ingest(_client(request).tracked())
    return _answer(request, {"track_mode": resp.track_mode, "keys": [key_json(k) for k in resp.keys],
                             "discovered_relays": list(resp.discovered_relays)})


@router.post("/api/v2/admin/tracked-keys", summary="Track a key", description=TRACK_DOC,
             responses={200: {"description": "The key was already tracked."}, **errors(*READ_ERRORS)},
             openapi_extra=SECURED, status_code=201)
async def track(request: Request, principal: Admin, body: TrackKeyBody) -> JSONResponse:
    resp = await _ingest(_client(request).track(body.key, "api"))
    gateway(request).versions.invalidate()  # answers' partial reasons depend on the tracked keys
    return _answer(request, {"key": key_json(resp.key), "added": resp.added, "track_mode": resp.track_mode},
                   201 if resp.added else 200)


@router.delete("/api/v2/admin/tracked-keys/{key}", summary="Stop tracking a key", description=TRACK_DOC,
               responses=errors(*READ_ERRORS), openapi_extra=SECURED)
async def untrack(request: Request, principal: Admin, key: str) -> JSONResponse:
    resp = await _ingest(_client(request).untrack(key))
    gateway(request).versions.invalidate()
    return _answer(request, {"removed": resp.removed})
