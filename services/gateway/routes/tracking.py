"""Admin: the keys TRACK mode follows on relays (admin scope), through the ingest service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from canal.ingest.v1 import ingest_service_pb2 as ipb
from libs.envelope import finish, placeholder_meta
from services.gateway.context import gateway
from services.gateway.docs import READ_ERRORS, SECURED, errors
from services.gateway.errors import UpstreamError
from services.gateway.ingest_client import IngestClient
from services.gateway.models import EXAMPLE_NPUB, EXAMPLE_PUBKEY, META_EXAMPLE, Meta
from services.gateway.routes.deps import Admin

router = APIRouter(tags=["admin"])
TRACK_DOC = ("TRACK mode follows these keys on relays: events by them, events tagging them or their notes, and "
             "the contact lists and deletions of their followers and engagers. A newly added key is backfilled "
             "from relays at once (BACKFILL_DAYS); until it is done its answers are partial with reason "
             "`backfilling`. In TRACK mode a key that is not tracked answers partial with reason `not_tracked`. "
             "Keys are given as 64 hex, npub, nprofile or NIP-05 name@domain.")
STATES = {ipb.TRACK_STATE_READY: "ready", ipb.TRACK_STATE_BACKFILLING: "backfilling"}


class TrackKeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"key": EXAMPLE_NPUB}]})
    key: str = Field(description="64 lowercase hex, npub1…, nprofile1… or NIP-05 name@domain.")


class TrackedKeyData(BaseModel):
    pubkey: str
    npub: str
    added_at: int = Field(description="Unix seconds.")
    source: str = Field(description="env (TRACK), cli or api.")
    label: str = Field(description="The NIP-05 identifier the key was given as, else empty.")
    state: str = Field(description="backfilling or ready.")
    ready_at: int | None = Field(description="When the first backfill completed (unix seconds).")


KEY_EXAMPLE: dict[str, Any] = {"pubkey": EXAMPLE_PUBKEY, "npub": EXAMPLE_NPUB, "added_at": 1715126400, "source": "api", "label": "",
               "state": "ready", "ready_at": 1715126460}
ADMIN_META: dict[str, Any] = {**META_EXAMPLE, "window": {"start": 0, "end": 0, "label": "none"}, "cache": "bypass"}


class TrackedKeysData(BaseModel):
    track_mode: bool = Field(description="False when ingest runs untracked (it takes every event).")
    keys: list[TrackedKeyData]
    discovered_relays: list[str] = Field(description="Relays found through NIP-65 and subscribed to.")


class TrackedKeysEnvelope(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "data": {"track_mode": True, "keys": [KEY_EXAMPLE], "discovered_relays": ["wss://relay.example.com"]},
        "meta": ADMIN_META}]})
    data: TrackedKeysData
    meta: Meta


class TrackKeyData(BaseModel):
    key: TrackedKeyData
    added: bool = Field(description="False when the key was already tracked.")
    track_mode: bool


class TrackKeyEnvelope(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "data": {"key": {**KEY_EXAMPLE, "state": "backfilling", "ready_at": None}, "added": True, "track_mode": True},
        "meta": ADMIN_META}]})
    data: TrackKeyData
    meta: Meta


class UntrackData(BaseModel):
    removed: bool


class UntrackEnvelope(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"data": {"removed": True}, "meta": ADMIN_META}]})
    data: UntrackData
    meta: Meta


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
            response_model=TrackedKeysEnvelope, responses=errors(*READ_ERRORS), openapi_extra=SECURED)
async def list_tracked(request: Request, principal: Admin) -> JSONResponse:
    resp = await _ingest(_client(request).tracked())
    return _answer(request, {"track_mode": resp.track_mode, "keys": [key_json(k) for k in resp.keys],
                             "discovered_relays": list(resp.discovered_relays)})


@router.post("/api/v2/admin/tracked-keys", summary="Track a key", description=TRACK_DOC,
             response_model=TrackKeyEnvelope, status_code=201, openapi_extra=SECURED,
             responses={200: {"description": "The key was already tracked.", "model": TrackKeyEnvelope},
                        201: {"description": "The key is tracked from now on; its backfill has started."},
                        **errors(*READ_ERRORS)})
async def track(request: Request, principal: Admin, body: TrackKeyBody) -> JSONResponse:
    resp = await _ingest(_client(request).track(body.key, "api"))
    gateway(request).versions.invalidate()  # answers' partial reasons depend on the tracked keys
    return _answer(request, {"key": key_json(resp.key), "added": resp.added, "track_mode": resp.track_mode},
                   201 if resp.added else 200)


@router.delete("/api/v2/admin/tracked-keys/{key}", summary="Stop tracking a key", description=TRACK_DOC,
               response_model=UntrackEnvelope, responses=errors(*READ_ERRORS), openapi_extra=SECURED)
async def untrack(request: Request, principal: Admin,
                  key: Annotated[str, Path(description="The key as hex, npub, nprofile or NIP-05.")]) -> JSONResponse:
    resp = await _ingest(_client(request).untrack(key))
    gateway(request).versions.invalidate()
    return _answer(request, {"removed": resp.removed})
