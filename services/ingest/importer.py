"""`canal import FILE`: stream a JSONL or JSON-array file through admission and the mapper.

The import never stops because of one bad input: unreadable lines become `bad_json`
rejects with their line number, and a batch the database refuses (bad data, not an
outage) is retried item by item so only the offending item is lost.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from sqlalchemy import Engine

from services.ingest.batches import ingest_resilient
from services.ingest.lines import InputReader
from services.ingest.store import BatchResult, IngestStore, RawItem

EXAMPLES = 20  # bad inputs listed in the summary, with their line numbers

#: Events per batch (one transaction each). 2,500 rather than 1,000: fewer round trips and statements per
#: event, 11% more events/s with 2 processes on 57k events (bench/NOTES.md); the ingest lock is held
#: a few ms longer per batch, which only file imports see (relays batch by time).
IMPORT_BATCH = 2500


@dataclass
class ImportSummary:
    """What an import did: per-outcome counts, rejects by reason, and the first bad inputs by line."""

    admitted: int = 0
    duplicates: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    seconds: float = 0.0
    items: int = 0
    bytes_read: int = 0
    facts_inserted: int = 0
    examples: list[tuple[int, str, str, str]] = field(default_factory=list)  # (line, reason, detail, message)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    @property
    def events_per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


def _batches(reader: InputReader, size: int) -> Iterator[tuple[list[int], list[RawItem]]]:
    numbers: list[int] = []
    items: list[RawItem] = []
    for line_no, item in reader:
        numbers.append(line_no)
        items.append(item)
        if len(items) >= size:
            yield numbers, items
            numbers, items = [], []
    if items:
        yield numbers, items


def _account(summary: ImportSummary, numbers: list[int], result: BatchResult) -> None:
    reasons: Counter[str] = Counter(summary.rejected_by_reason)
    for o in result.outcomes:
        if o.status == "admitted":
            summary.admitted += 1
        elif o.status == "duplicate":
            summary.duplicates += 1
        else:
            reasons[o.reason] += 1
            if len(summary.examples) < EXAMPLES:
                summary.examples.append((numbers[o.index], o.reason, o.detail, o.message))
    summary.rejected_by_reason = dict(reasons)
    summary.items += len(result.outcomes)
    summary.facts_inserted += result.facts_inserted


def import_file(
    path: str | Path,
    engine: Engine,
    batch: int = IMPORT_BATCH,
    progress: bool = True,
    origin: str | None = None,
    console: Console | None = None,
    receive_time: int | None = None,
    workers: int = 2,
) -> ImportSummary:
    """Import every event of a JSONL or JSON-array file; returns the summary (and prints it when `progress`).

    `receive_time` (default: now, per batch) is the time the `future` rule compares against.
    """
    p = Path(path)
    console = console or Console(stderr=True)
    with p.open("rb") as fh:
        summary = import_stream(fh, p.name, engine, p.stat().st_size, fh.tell, batch=batch, progress=progress,
                                workers=workers, origin=origin, console=console, receive_time=receive_time)
    if progress:
        console.print(summary_table(summary))
    return summary


def import_stream(stream: BinaryIO, name: str, engine: Engine, total: int | None = None,
                  consumed: Callable[[], int] | None = None, batch: int = IMPORT_BATCH, progress: bool = True,
                  workers: int = 2, origin: str | None = None, console: Console | None = None,
                  receive_time: int | None = None) -> ImportSummary:
    """Import every event of a JSONL or JSON-array stream, without printing the summary; the progress bar
    follows `consumed()` bytes of `total` (a gzip file's compressed bytes), or the bytes read when unknown.

    Admission (signature checks) of one batch overlaps the database phase of another; the store's advisory
    lock serializes the derivation phases, and facts do not depend on batch order.
    """
    store = IngestStore(engine)
    summary = ImportSummary()
    started = time.perf_counter()
    reader = InputReader(stream, origin or f"import:{name}")

    def position() -> int:
        return consumed() if consumed is not None and total is not None else reader.bytes_read

    with Progress(TextColumn("[bold]import[/] {task.fields[name]}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TextColumn("{task.fields[events]} events"), TimeRemainingColumn(),
                  console=console or Console(stderr=True), disable=not progress, transient=False) as bar:
        task = bar.add_task("import", total=total, name=name, events=0)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="import") as pool:
            inflight: deque[tuple[list[int], Future[BatchResult]]] = deque()
            for numbers, items in _batches(reader, batch):
                now = int(time.time()) if receive_time is None else receive_time
                inflight.append((numbers, pool.submit(ingest_resilient, store, items, now)))
                while len(inflight) > workers:
                    done, fut = inflight.popleft()
                    _account(summary, done, fut.result())
                    bar.update(task, completed=position(), events=summary.items)
            while inflight:
                done, fut = inflight.popleft()
                _account(summary, done, fut.result())
        bar.update(task, completed=position(), events=summary.items)
    summary.examples.sort()
    summary.lines, summary.bytes_read = reader.lines, reader.bytes_read
    summary.seconds = time.perf_counter() - started
    return summary


def summary_table(summary: ImportSummary) -> Table:
    """The summary as a rich table: outcomes, then rejects by reason, then the first bad lines."""
    table = Table(title="import summary", show_header=True, header_style="bold")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_row("admitted", f"{summary.admitted:,}")
    table.add_row("duplicates", f"{summary.duplicates:,}")
    table.add_row("rejected", f"{summary.rejected:,}")
    for reason, n in sorted(summary.rejected_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row("inputs", f"{summary.items:,}")
    table.add_row("lines", f"{summary.lines:,}")
    table.add_row("seconds", f"{summary.seconds:.1f}")
    table.add_row("events/s", f"{summary.events_per_second:,.0f}")
    for line, reason, detail, message in summary.examples:
        table.add_row(f"line {line}", f"{reason}/{detail}: {message}"[:160])
    return table


def format_summary(summary: ImportSummary) -> str:
    """The summary as plain text (the CLI prints it; tests read it)."""
    out = [
        f"admitted   {summary.admitted}",
        f"duplicates {summary.duplicates}",
        f"rejected   {summary.rejected}",
    ]
    for reason, n in sorted(summary.rejected_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append(f"  {reason:<14} {n}")
    out.append(f"inputs     {summary.items} ({summary.lines} lines, {summary.bytes_read} bytes)")
    out.append(f"time       {summary.seconds:.2f} s ({summary.events_per_second:.0f} events/s)")
    for line, reason, detail, message in summary.examples:
        out.append(f"line {line}: {reason}/{detail}: {message}")
    return "\n".join(out)
