"""What a batch is made of and what it returns: raw inputs and per-input outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RawItem:
    """One input: a parsed JSON value (or the Rejection from parsing it), its origin and raw text."""

    value: object
    origin: str
    raw: str


@dataclass(slots=True)
class Outcome:
    """Per-input result: admitted, duplicate or rejected (with reason)."""

    index: int
    status: str
    event_id: str | None = None
    reason: str = ""
    detail: str = ""
    message: str = ""


@dataclass(slots=True)
class BatchResult:
    outcomes: list[Outcome] = field(default_factory=list)
    facts_inserted: int = 0
    facts_deleted: int = 0
    rederived: int = 0

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)
