"""Streaming input reader for `canal import`: JSONL or one JSON array, item by item.

JSONL is split on b"\\n" only: event content may hold U+2028/U+2029, which
`str.splitlines` would treat as line breaks. A file whose first value is a JSON
array of events (`[{...}, ...]`) is decoded incrementally with
`json.JSONDecoder.raw_decode`, so a multi-GB array never sits in memory. Each
input becomes a `RawItem` whose value is the parsed JSON (relay frames
unwrapped) or the `Rejection("bad_json", ...)` naming the line.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from libs.nostr.event import Rejection, parse_line
from services.ingest.store import RawItem

CHUNK = 1 << 20
# An element that still does not decode with this much text buffered is broken, not incomplete.
MAX_ELEMENT_CHARS = 4 << 20
_WS = b" \t\r\n\xef\xbb\xbf"  # JSON whitespace plus a UTF-8 byte-order mark
_TEXT_WS = " \t\r\n\ufeff"


def safe_text(text: str) -> str:
    """Text PostgreSQL can store: no NUL, no lone surrogates (used for reject rows' raw text)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _with_line(rej: Rejection, line_no: int) -> Rejection:
    return Rejection(rej.reason, rej.detail, f"line {line_no}: {rej.message}", rej.event_id)


def item_from_text(text: str, line_no: int, origin: str) -> RawItem | None:
    """One input line (already decoded) as a RawItem; None for a blank line."""
    try:
        value = parse_line(text)
    except Rejection as rej:
        return RawItem(_with_line(rej, line_no), origin, safe_text(text))
    if value is None:
        return None
    return RawItem(value, origin, text)


def item_from_bytes(line: bytes, line_no: int, origin: str) -> RawItem | None:
    """One input line as a RawItem (`bad_json`/`not_utf8` when it is not UTF-8); None when blank."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        rej = Rejection("bad_json", "not_utf8", "The line is not valid UTF-8.")
        return RawItem(_with_line(rej, line_no), origin, safe_text(line.decode("utf-8", "replace")))
    return item_from_text(text, line_no, origin)


class InputReader:
    """Iterates `(line_number, RawItem)` over a JSONL or JSON-array stream; `bytes_read` tracks progress."""

    def __init__(self, stream: BinaryIO, origin: str, chunk_size: int = CHUNK) -> None:
        self.stream = stream
        self.origin = origin
        self.chunk_size = chunk_size
        self.bytes_read = 0
        self.lines = 0
        self.mode = "jsonl"

    def _read(self) -> bytes:
        chunk = self.stream.read(self.chunk_size)
        self.bytes_read += len(chunk)
        return chunk

    def __iter__(self) -> Iterator[tuple[int, RawItem]]:
        head = self._read()
        while head and not head.lstrip(_WS):
            more = self._read()
            if not more:
                break
            head += more
        if _is_array(head):
            self.mode = "array"
            return self._array(head)
        return self._jsonl(head)

    def _jsonl(self, head: bytes) -> Iterator[tuple[int, RawItem]]:
        pending = head
        line_no = 0
        while True:
            start = 0
            while True:
                end = pending.find(b"\n", start)
                if end < 0:
                    break
                line_no += 1
                item = item_from_bytes(pending[start:end], line_no, self.origin)
                start = end + 1
                self.lines = line_no
                if item is not None:
                    yield line_no, item
            pending = pending[start:]
            chunk = self._read()
            if not chunk:
                break
            pending += chunk
        if pending:
            line_no += 1
            self.lines = line_no
            item = item_from_bytes(pending, line_no, self.origin)
            if item is not None:
                yield line_no, item

    def _array(self, head: bytes) -> Iterator[tuple[int, RawItem]]:
        return _ArrayDecoder(self, head).items()


def _is_array(head: bytes) -> bool:
    """A JSON array of events starts with `[` followed by `{`, `[` or `]` (a JSONL relay frame by `"`)."""
    text = head.lstrip(_WS)
    if not text.startswith(b"["):
        return False
    rest = text[1:].lstrip(_WS)
    return not rest.startswith(b'"')


class _ArrayDecoder:
    """Incremental decoder of `[value, value, ...]` over byte chunks (line numbers tracked)."""

    def __init__(self, reader: InputReader, head: bytes) -> None:
        self.reader = reader
        self.utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self.buf = self.utf8.decode(head)
        self.pos = 0
        self.line = 1
        self.eof = False
        self.decoder = json.JSONDecoder()

    def _more(self) -> bool:
        if self.eof:
            return False
        chunk = self.reader._read()
        if not chunk:
            self.eof = True
            self.buf += self.utf8.decode(b"", final=True)
            return True
        # drop consumed text so the buffer holds about one element
        self.buf = self.buf[self.pos :] + self.utf8.decode(chunk)
        self.pos = 0
        return True

    def _advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to
        self.reader.lines = self.line

    def _skip_ws(self) -> bool:
        """Move past whitespace; False at end of input."""
        while True:
            n = len(self.buf)
            i = self.pos
            while i < n and self.buf[i] in _TEXT_WS:
                i += 1
            self._advance(i)
            if i < n:
                return True
            if not self._more():
                return False

    def items(self) -> Iterator[tuple[int, RawItem]]:
        origin = self.reader.origin
        if not self._skip_ws() or self.buf[self.pos] != "[":
            return
        self._advance(self.pos + 1)
        expect_value = True
        while self._skip_ws():
            ch = self.buf[self.pos]
            if ch == "]":
                self._advance(self.pos + 1)
                yield from self._trailing(origin)
                return
            if ch == "," and not expect_value:
                self._advance(self.pos + 1)
                expect_value = True
                continue
            line = self.line
            end = self._value_end()
            if end is None:
                bad_end = self._resync()
                text = self.buf[self.pos : bad_end]
                self._advance(bad_end)
                rej = Rejection("bad_json", "not_json", f"line {line}: The array element is not valid JSON.")
                yield line, RawItem(rej, origin, safe_text(text[:4096]))
                expect_value = False
                continue
            text = self.buf[self.pos : end]
            self._advance(end)
            expect_value = False
            item = item_from_text(text, line, origin)
            if item is not None:
                yield line, item
        # input ended without the closing bracket: whatever was read is reported above

    def _value_end(self) -> int | None:
        """End offset of the JSON value at `pos`, reading more input as needed; None when it is broken."""
        while True:
            try:
                _, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                # only an error at the buffer's end (or an unterminated string) may be cured by more input
                curable = exc.pos >= len(self.buf) - 1 or exc.msg.startswith("Unterminated string")
                if not curable or self.eof or len(self.buf) - self.pos > MAX_ELEMENT_CHARS:
                    return None
                self._more()
                continue
            if end == len(self.buf) and not self.eof:
                self._more()  # a number at the very end of the buffer may continue in the next chunk
                continue
            return end

    def _resync(self) -> int:
        """Where to resume after a broken element: the next line starting with `{`, `[`, `]` or `,`; else the end."""
        rel = 1
        while True:
            i = self.pos + rel
            restart = len(self.buf) - 1
            j = self.buf.find("\n", i)
            while j >= 0:
                k = j + 1
                while k < len(self.buf) and self.buf[k] in " \t\r":
                    k += 1
                if k == len(self.buf):
                    restart = j  # the next value may start in the next chunk
                    break
                if self.buf[k] in "{[],":
                    return k
                j = self.buf.find("\n", k)
            rel = max(restart - self.pos, 1)
            if not self._more():
                return len(self.buf)

    def _trailing(self, origin: str) -> Iterator[tuple[int, RawItem]]:
        """Anything after the closing bracket is one more bad input."""
        if self._skip_ws():
            line = self.line
            start = self.pos
            while self._more():
                pass
            text = self.buf[start:]
            self._advance(len(self.buf))
            rej = Rejection("bad_json", "not_json", f"line {line}: Text after the end of the JSON array.")
            yield line, RawItem(rej, origin, safe_text(text[:4096]))


def read_items(path: str | Path, origin: str | None = None) -> Iterator[tuple[int, RawItem]]:
    """`(line_number, RawItem)` for every non-blank input of a JSONL or JSON-array file."""
    p = Path(path)
    with p.open("rb") as fh:
        yield from InputReader(fh, origin or f"import:{p.name}")
