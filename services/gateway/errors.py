"""The one error shape of the REST API, and how gRPC failures and validation errors map onto it.

Every failure leaves the gateway as `{"error": {code, message, hint, request_id}}` with an
HTTP status chosen here; nothing else (stack traces, SQL, internal addresses) ever does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from libs.rpc import error_info_from

# Transient failures of the query service: a stale answer or a retry may help.
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED})

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
    grpc.StatusCode.CANCELLED: 503,
    grpc.StatusCode.ABORTED: 503,
}

UNAVAILABLE_HINT = "The analytics backend is not reachable right now; retry in a few seconds."
INTERNAL_HINT = "Retry; if it keeps failing, report the request_id to the operators."

# Which API code a request field's validation failure is reported as.
FIELD_CODES = {
    "pubkey": "INVALID_PUBKEY",
    "window": "INVALID_WINDOW",
    "start": "INVALID_WINDOW",
    "end": "INVALID_WINDOW",
    "tz": "INVALID_WINDOW",
    "metrics": "UNKNOWN_METRIC",
    "metric": "UNKNOWN_METRIC",
    "cursor": "INVALID_CURSOR",
    "dimension": "INVALID_DIMENSION",
    "granularity": "INVALID_GRANULARITY",
    "limit": "INVALID_LIMIT",
    "format": "INVALID_FORMAT",
    "kind": "INVALID_KIND",
    "mode": "INVALID_FLAG",
    "percent": "INVALID_FLAG",
    "cohort": "INVALID_FLAG",
}

FIELD_HINTS = {
    "pubkey": "Pass pubkey as 64 lowercase hex characters, an npub1… or nprofile1… string, or a NIP-05 name@domain.",
    "window": "Give window=1h|24h|7d|30d|90d|365d|all, or both start and end.",
    "start": "Give start and end as unix seconds or RFC 3339 with an offset.",
    "end": "Give start and end as unix seconds or RFC 3339 with an offset.",
    "tz": "Give an IANA time zone name such as UTC or Europe/Berlin.",
    "metrics": "Use metric names from the metric spec, comma-separated (e.g. zaps.count,reactions.count).",
    "metric": "Use a metric name from the metric spec (e.g. zaps.msats).",
    "cursor": "Request the first page without a cursor and follow next_cursor.",
    "dimension": "Use dimension=note|counterparty|kind|time.",
    "granularity": "Use granularity=minute|hour|day|week|month.",
    "limit": "Use a limit between 1 and 500.",
    "format": "Use format=json or format=csv.",
    "kind": "Use kind=summary or kind=drilldown.",
    "mode": "Use mode off|cohort|percent|on.",
    "percent": "Use a whole percent between 0 and 100.",
    "cohort": "Give a list of pubkeys (hex or npub) or principal ids.",
}


class ApiError(Exception):
    """An answer that is an error: HTTP status, API code, message and an actionable hint."""

    def __init__(self, status: int, code: str, message: str, hint: str = "",
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.hint = status, code, message, hint
        self.headers = dict(headers or {})

    def body(self, request_id: str) -> dict[str, Any]:
        """The JSON error envelope."""
        return {"error": {"code": self.code, "message": self.message, "hint": self.hint,
                          "request_id": request_id}}


class UpstreamError(Exception):
    """A failed call to the query or jobs service: its status and ErrorInfo, with no transport detail."""

    def __init__(self, status: grpc.StatusCode, code: str = "", message: str = "", hint: str = "",
                 field: str = "") -> None:
        super().__init__(f"{status.name} {code}: {message}")
        self.status, self.code, self.message, self.hint, self.field = status, code, message, hint, field

    @classmethod
    def from_rpc(cls, exc: grpc.RpcError) -> UpstreamError:
        """Keep only the status and the server's ErrorInfo (never the transport's text: it names hosts)."""
        status = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        try:
            info = error_info_from(exc)
        except Exception:  # malformed details: treat as absent
            info = None
        if info is None:
            return cls(status)
        return cls(status, info.code, info.message, info.hint, info.field)

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT

    @property
    def go_async(self) -> bool:
        return self.status == grpc.StatusCode.RESOURCE_EXHAUSTED and self.code == "GO_ASYNC"

    def to_json(self) -> str:
        return json.dumps({"s": self.status.name, "c": self.code, "m": self.message, "h": self.hint,
                           "f": self.field})

    @classmethod
    def from_json(cls, text: str | bytes) -> UpstreamError:
        d = json.loads(text)
        return cls(grpc.StatusCode[d["s"]], d["c"], d["m"], d["h"], d["f"])

    def to_api(self) -> ApiError:
        """The HTTP error for this failure (the caller handles GO_ASYNC and stale fallbacks first)."""
        http = HTTP_STATUS.get(self.status, 500)
        if http == 503:
            return ApiError(503, "UNAVAILABLE", "the analytics backend did not answer in time",
                            self.hint or UNAVAILABLE_HINT, {"Retry-After": "5"})
        if http == 500 or not self.code:
            if http in (400, 401, 403, 404):
                return ApiError(http, _default_code(http), self.message or "the request was refused",
                                self.hint)
            return ApiError(500, "INTERNAL", "the request failed unexpectedly", INTERNAL_HINT)
        headers = {"Retry-After": "1"} if http == 429 else None
        code = "RATE_LIMITED" if http == 429 else self.code
        return ApiError(http, code, self.message, self.hint or FIELD_HINTS.get(self.field, ""), headers)


def _default_code(http: int) -> str:
    return {400: "INVALID_REQUEST", 401: "UNAUTHENTICATED", 403: "FORBIDDEN", 404: "NOT_FOUND"}[http]


def validation_error(errors: Sequence[Mapping[str, Any]]) -> ApiError:
    """FastAPI/pydantic validation errors as one 400 with the code of the first field at fault."""
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ())]
    field = next((p for p in reversed(loc) if p in FIELD_CODES), "")
    if first.get("type") == "json_invalid":
        return ApiError(400, "INVALID_REQUEST", "the request body is not valid JSON",
                        "Send a JSON object with Content-Type: application/json.")
    code = FIELD_CODES.get(field, "INVALID_REQUEST")
    where = field or (loc[-1] if loc else "request")
    reason = str(first.get("msg", "is not valid"))
    if first.get("type") == "string_pattern_mismatch":  # never echo our validation regex to clients
        reason = "is not in an accepted format"
    if len(reason) > 200:
        reason = reason[:197] + "..."
    hint = FIELD_HINTS.get(field) or "Check the parameter against the API documentation at /api/v2/docs."
    return ApiError(400, code, f"{where}: {reason}", hint)


def unauthenticated(message: str, hint: str = "") -> ApiError:
    return ApiError(401, "UNAUTHENTICATED", message,
                    hint or "Send Authorization: Bearer <api key>, or a NIP-98 'Nostr' event.",
                    {"WWW-Authenticate": 'Bearer realm="canal", Nostr realm="canal"'})


def forbidden(message: str, hint: str) -> ApiError:
    return ApiError(403, "FORBIDDEN", message, hint)


def unavailable(message: str, hint: str) -> ApiError:
    return ApiError(503, "UNAVAILABLE", message, hint, {"Retry-After": "5"})


def job_not_found(job_id: str) -> ApiError:
    shown = job_id if len(job_id) <= 40 else job_id[:37] + "..."
    return ApiError(404, "JOB_NOT_FOUND", f"no job {shown!r} is visible to you",
                    "Check the id from the 202 answer; jobs are visible only to the principal that made them.")
