"""HTTP conventions browsers, HTTP caches and client libraries expect: CORS, validators, Cache-Control.

- CORS: any origin may call the API from a browser. Reads authenticate with an `Authorization` header
  (an API key or a NIP-98 event), never with cookies, so `*` is safe and no credentials mode is
  offered. `Authorization` must be listed by name (a `*` in Allow-Headers does not cover it), and the
  headers a client needs to read are exposed: `ETag`, `Location`, `Retry-After`, `X-Request-ID`,
  `Content-Disposition`.
- Validators: analytics answers carry a weak `ETag` derived from the data version (the query
  service's `GetDataVersion`, which moves with every ingest commit, retention run and tracking change)
  and the request; `If-None-Match` with a current tag answers `304 Not Modified` with no body. A custom
  window's answer is a function of the version and the request, so its tag is known before anything is
  computed. A rolling window's answer also depends on the moment it ends, so its tag adds what the
  answer says (data, partial, partial_reasons): a client polling `window=7d` gets 304 until a number
  changes. The tag is weak because `meta` names the request and, for rolling windows, the instant.
- `Cache-Control: private, no-cache` on answers (a browser may keep them but revalidates each time;
  they are per principal, so never in a shared cache); `no-store` on stale fallbacks, 202 job handles
  and job status; a succeeded job's result never changes, so it may be kept for its lifetime.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware

from services.gateway.cache import digest

CORS_METHODS = ["GET", "POST", "PUT", "DELETE"]
CORS_ALLOW_HEADERS = ["Authorization", "Content-Type", "If-None-Match", "X-Request-ID"]
CORS_EXPOSE_HEADERS = ["ETag", "Location", "Retry-After", "X-Request-ID", "Content-Disposition"]
CORS_MAX_AGE_S = 600
REVALIDATE = "private, no-cache"
NO_STORE = "no-store"
RESULT_MAX_AGE = "private, max-age=86400, immutable"  # job results are kept at least 24 h and never change


def install_cors(app: FastAPI) -> None:
    """CORS on every route (add it last: it must wrap the others so even a 500 carries its headers)."""
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_credentials=False, allow_methods=CORS_METHODS,
                       allow_headers=CORS_ALLOW_HEADERS, expose_headers=CORS_EXPOSE_HEADERS,
                       max_age=CORS_MAX_AGE_S)


def weak_etag(*parts: Any) -> str:
    """`W/"<hash of parts>"`."""
    return f'W/"{digest({"p": list(parts)})[:32]}"'


def answer_content(payload: dict[str, Any]) -> dict[str, Any]:
    """What a rolling window's answer says, without the instant it was computed at."""
    meta = payload.get("meta") or {}
    return {"data": payload.get("data"), "partial": meta.get("partial"),
            "reasons": meta.get("partial_reasons"), "stale": (meta.get("freshness") or {}).get("stale")}


def matches(if_none_match: str | None, etag: str) -> bool:
    """True when an If-None-Match header names `etag` (weak comparison, as RFC 9110 says for it) or is `*`."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    wanted = _opaque(etag)
    return any(_opaque(tag) == wanted for tag in if_none_match.split(","))


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def not_modified(etag: str, cache_control: str = REVALIDATE) -> Response:
    """304 with the validator and caching headers of the answer it stands for (and no body)."""
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": cache_control})
