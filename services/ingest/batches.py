"""Batches that survive one bad item: the database refusing a batch for its data costs only that item."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError

from services.ingest.store import BatchResult, IngestStore, Outcome, RawItem

log = logging.getLogger(__name__)

# Errors caused by the data of an item (an outage raises OperationalError, which propagates).
DATA_ERRORS = (DataError, IntegrityError, ProgrammingError)


def ingest_resilient(store: IngestStore, items: Sequence[RawItem], now: int) -> BatchResult:
    """Ingest a batch; when the database refuses it for its data, ingest each item alone.

    An item refused on its own is reported `rejected` with reason `store_error` (no rejects row:
    the database would not take it).
    """
    try:
        return store.ingest(items, now)
    except DATA_ERRORS as exc:
        if len(items) == 1:
            log.warning("the database refused an input from %s: %s", items[0].origin, exc.orig or exc)
            result = BatchResult()
            result.outcomes.append(Outcome(0, "rejected", None, "store_error", "store_error",
                                           f"The database refused this input ({type(exc.orig or exc).__name__})."))
            return result
    merged = BatchResult()
    for i, one_item in enumerate(items):
        one = ingest_resilient(store, [one_item], now)
        merged.facts_inserted += one.facts_inserted
        merged.facts_deleted += one.facts_deleted
        merged.rederived += one.rederived
        for o in one.outcomes:
            o.index = i
            merged.outcomes.append(o)
    return merged
