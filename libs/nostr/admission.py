"""Event admission (METRICS.md "Event admission" and "Admission and input").

Checks run in this order and the first failure names the reason: `bad_json`,
`too_large`, `too_many_tags`, `bad_id`, `bad_sig`, `future`, then
`invalid_zap` for kind 9735 receipts.
"""

from __future__ import annotations

from collections.abc import Iterable

from .event import Event, Rejection
from .integrity import FUTURE_SLACK, MAX_EVENT_BYTES, MAX_TAGS, check_integrity, compute_id, verify_sig
from .zaps import Zap, validate_zap

__all__ = [
    "FUTURE_SLACK",
    "MAX_EVENT_BYTES",
    "MAX_TAGS",
    "admit",
    "admit_checked",
    "admit_many",
    "compute_id",
    "verify_sig",
]

ZAP_RECEIPT_KIND = 9735


def admit_checked(obj: object, receive_time: int) -> tuple[Event, Zap | None]:
    """The one admission path: the `Event` and, for a kind 9735 receipt, its valid `Zap`.

    Raises the first failing `Rejection`.
    """
    ev = check_integrity(obj, receive_time)
    if ev.kind == ZAP_RECEIPT_KIND:
        return ev, validate_zap(ev, receive_time)
    return ev, None


def admit(obj: object, receive_time: int) -> Event:
    """Admit one event object received at `receive_time` (unix seconds).

    Returns the `Event` or raises the first failing `Rejection`. Kind 9735
    receipts must also be valid zaps (`zaps.validate_zap`).
    """
    return admit_checked(obj, receive_time)[0]


def admit_many(objs: Iterable[object], receive_time: int) -> list[Event | Rejection]:
    """Admit a batch; one result per input, in order: the `Event` or its `Rejection`.

    Repeated work is cached: parsed public keys and signature results (bounded
    LRUs in `integrity`) and decoded invoices (`invoices.decode_invoice`).
    """
    out: list[Event | Rejection] = []
    append = out.append
    for obj in objs:
        try:
            append(admit_checked(obj, receive_time)[0])
        except Rejection as rej:
            append(rej)
    return out
