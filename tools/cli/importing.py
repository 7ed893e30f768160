"""`canal import FILE|-`: events from a file, a gzip file (`.gz`) or standard input (`-`), streamed
through admission and the mapper, with the summary printed once (on stdout) at the end.

The batching, the accounting and the summary are the importer's (`services.ingest.importer`); this
module only opens the input and drives it, so a pipe (`nak req … | canal import -`) or a compressed
dump is read as it arrives, never unpacked to disk first.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, cast

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from sqlalchemy import Engine

from services.ingest.batches import ingest_resilient
from services.ingest.importer import ImportSummary, _account, _batches, format_summary
from services.ingest.lines import InputReader
from services.ingest.store import BatchResult, IngestStore

GZIP_MAGIC = b"\x1f\x8b"


@contextlib.contextmanager
def open_input(spec: str) -> Iterator[tuple[BinaryIO, str, int | None, Callable[[], int]]]:
    """(binary stream, name, total bytes or None, bytes consumed so far) of `-` (stdin), a `.gz` file
    (or any gzip file, by its magic bytes) or a plain file. Progress counts the bytes read from disk."""
    if spec == "-":
        stdin = sys.stdin.buffer
        head = stdin.peek(2)[:2] if hasattr(stdin, "peek") else b""
        if head == GZIP_MAGIC:  # `curl … | canal import -` of a .gz
            with gzip.GzipFile(fileobj=stdin) as unpacked:
                yield cast(BinaryIO, unpacked), "stdin", None, lambda: 0
        else:
            yield stdin, "stdin", None, lambda: 0
        return
    path = Path(spec)
    try:
        raw = path.open("rb")
    except OSError as exc:
        print(f"canal: cannot read {spec}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(2) from None
    with raw:
        total = path.stat().st_size
        if spec.endswith(".gz") or raw.read(2) == GZIP_MAGIC:
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw) as unpacked:
                yield cast(BinaryIO, unpacked), path.name, total, raw.tell
        else:
            raw.seek(0)
            yield raw, path.name, total, raw.tell


def import_stream(stream: BinaryIO, name: str, engine: Engine, total: int | None = None,
                  consumed: Callable[[], int] | None = None, batch: int = 1000, progress: bool = True,
                  workers: int = 2) -> ImportSummary:
    """Import every event of a JSONL or JSON-array stream (as `import_file` does a file), without printing
    the summary; the progress bar (stderr) follows `consumed()` bytes of `total`, or events when unknown."""
    store = IngestStore(engine)
    summary = ImportSummary()
    started = time.perf_counter()
    reader = InputReader(stream, f"import:{name}")

    def position() -> int:
        return consumed() if consumed is not None and total is not None else reader.bytes_read

    with Progress(TextColumn("[bold]import[/] {task.fields[name]}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TextColumn("{task.fields[events]} events"), TimeRemainingColumn(),
                  console=Console(stderr=True), disable=not progress, transient=False) as bar:
        task = bar.add_task("import", total=total, name=name, events=0)
        # Admission of one batch overlaps the database phase of another (as in import_file).
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="import") as pool:
            inflight: deque[tuple[list[int], Future[BatchResult]]] = deque()
            for numbers, items in _batches(reader, batch):
                inflight.append((numbers, pool.submit(ingest_resilient, store, items, int(time.time()))))
                while len(inflight) > workers:
                    done, fut = inflight.popleft()
                    _account(summary, done, fut.result())
                    bar.update(task, completed=position(), events=summary.items)
            while inflight:
                done, fut = inflight.popleft()
                _account(summary, done, fut.result())
        bar.update(task, completed=position() if total is not None else reader.bytes_read, events=summary.items)
    summary.examples.sort()
    summary.lines, summary.bytes_read = reader.lines, reader.bytes_read
    summary.seconds = time.perf_counter() - started
    return summary


def run_import(args: argparse.Namespace, engine: Engine) -> int:
    """`canal import`: the summary once, on stdout (the progress bar is on stderr)."""
    with open_input(args.file) as (stream, name, total, consumed):
        summary = import_stream(stream, name, engine, total, consumed, batch=args.batch, progress=not args.quiet)
    print(format_summary(summary))
    return 0
