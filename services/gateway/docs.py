"""OpenAPI response documentation: every status a route can answer, each with an example."""

from __future__ import annotations

from typing import Any

from services.gateway.models import ErrorEnvelope

RID = "6f1c2a9e0b7d4d1f9a3e5c7b8d9e0f1a"

ERROR_EXAMPLES: dict[int, dict[str, tuple[str, str]]] = {
    400: {
        "INVALID_PUBKEY": ("pubkey must be 64 lowercase hex characters or an npub1... string",
                           "Pass pubkey as 64 lowercase hex characters, an npub1… or nprofile1… string, or a NIP-05 name@domain."),
        "INVALID_WINDOW": ("window='8d' is not a known window",
                           "window must be one of 1h|24h|7d|30d|90d|365d|all, or give start and end instead"),
        "UNKNOWN_METRIC": ("unknown metric 'zaps.total'", "Known metrics: zaps.count, zaps.msats, …"),
        "INVALID_CURSOR": ("the cursor is malformed",
                           "request the first page again without a cursor and follow next_cursor"),
    },
    401: {"UNAUTHENTICATED": ("this endpoint needs credentials",
                              "Send Authorization: Bearer <api key>, or a NIP-98 'Nostr' event.")},
    403: {"FORBIDDEN": ("a NIP-98 signer may read only the analytics of its own pubkey",
                        "Sign the request with the key of the pubkey you ask about, or use an API key with the "
                        "read:any scope.")},
    404: {"JOB_NOT_FOUND": ("no job '3f9a0c1e' is visible to you",
                            "Check the id from the 202 answer; jobs are visible only to the principal that made "
                            "them.")},
    409: {"JOB_FAILED": ("the job failed, so it has no result",
                         "Read the job's error for what to do, then start a new job.")},
    429: {"RATE_LIMITED": ("more than 600 requests this minute", "Wait 12 s before retrying.")},
    500: {"INTERNAL": ("the request failed unexpectedly",
                       "Retry; if it keeps failing, report the request_id to the operators.")},
    503: {"UNAVAILABLE": ("the query service is not reachable and no earlier answer is cached",
                          "Retry in a few seconds; small windows answer synchronously once it is back.")},
}

DESCRIPTIONS = {
    400: "Invalid parameters: INVALID_PUBKEY, INVALID_WINDOW, UNKNOWN_METRIC, INVALID_CURSOR, "
         "INVALID_DIMENSION, INVALID_GRANULARITY, INVALID_LIMIT, INVALID_FORMAT, INVALID_KIND, INVALID_REQUEST.",
    401: "UNAUTHENTICATED: no, an invalid, a revoked or an expired/replayed credential.",
    403: "FORBIDDEN: the principal may not read this pubkey or use this endpoint.",
    404: "JOB_NOT_FOUND: no such job, or it belongs to another principal.",
    409: "JOB_FAILED or JOB_CANCELLED: the job ended without a result.",
    429: "RATE_LIMITED: too many requests from this principal; see Retry-After.",
    500: "INTERNAL: an unexpected failure; the request_id finds the trace in the logs.",
    503: "UNAVAILABLE: a dependency is down (query service, or Redis for async jobs) and no fallback exists.",
}

RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}}


def error_response(status: int) -> dict[str, Any]:
    examples = {code: {"summary": code, "value": {"error": {"code": code, "message": m, "hint": h,
                                                            "request_id": RID}}}
                for code, (m, h) in ERROR_EXAMPLES[status].items()}
    doc: dict[str, Any] = {"model": ErrorEnvelope, "description": DESCRIPTIONS[status],
                           "content": {"application/json": {"examples": examples}}}
    if status == 429:
        doc["headers"] = RETRY_AFTER
    return doc


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Response docs for the given error statuses."""
    return {s: error_response(s) for s in statuses}


READ_ERRORS = (400, 401, 403, 429, 500, 503)
SECURED: dict[str, Any] = {"security": [{"ApiKey": []}, {"Nip98": []}]}
SECURITY_SCHEMES = {
    "ApiKey": {"type": "http", "scheme": "bearer",
               "description": "An API key: `Authorization: Bearer <key>` (scopes read:any, admin)."},
    "Nip98": {"type": "apiKey", "in": "header", "name": "Authorization",
              "description": "NIP-98: `Authorization: Nostr <base64 of a signed kind 27235 event>` with the "
                             "request's absolute URL in `u` and its method in `method`, created within 60 s. "
                             "Reads only the signer's own pubkey."},
}
