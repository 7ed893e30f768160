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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

from sqlalchemy import Engine

from services.ingest.importer import IMPORT_BATCH, format_summary, import_stream

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


def run_import(args: argparse.Namespace, engine: Engine) -> int:
    """`canal import`: the summary once, on stdout (the progress bar is on stderr)."""
    with open_input(args.file) as (stream, name, total, consumed):
        summary = import_stream(stream, name, engine, total, consumed, batch=args.batch or IMPORT_BATCH,
                                progress=not args.quiet)
    print(format_summary(summary))
    return 0
