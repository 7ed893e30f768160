"""How ingest hands values to PostgreSQL quickly: array literals, COPY text rows, JSON recordsets.

psycopg's per-element array dumping was the slowest part of ingest, so arrays are bound as one
literal, bulk rows go through COPY's text format, and many-row upserts bind one JSON document.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg


def ids(name: str) -> str:
    """A text[] parameter bound as one array literal (see `_arr`): a constant the planner can index-scan."""
    return f"CAST(:{name} AS text[])"


def arr(values: Iterable[str]) -> str:
    """A PostgreSQL text[] literal; psycopg's per-element array dumping is otherwise the slowest part of ingest.

    Every element is double-quoted; only `"` and `\\` need escaping inside quotes, and ids, pubkeys
    and most note keys hold neither, so the common case is one join.
    """
    vals = values if isinstance(values, list) else list(values)
    if not vals:
        return "{}"
    body = '","'.join(vals)
    if "\\" in body or body.count('"') != 2 * (len(vals) - 1):  # only the separators' quotes: nothing to escape
        return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in vals) + "}"
    return '{"' + body + '"}'


def iarr(values: Iterable[int | None]) -> str:
    """A PostgreSQL integer array literal (None is NULL)."""
    return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"


def json_list(values: Iterable[object]) -> str:
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))


def copy_text(value: str) -> str:
    """A value escaped for COPY's text format."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\n" in value or "\r" in value or "\t" in value:
        value = value.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return value


def copy_rows(pg: psycopg.Connection[Any], table: str, columns: str, rows: Iterable[Sequence[Any]]) -> None:
    lines = []
    for row in rows:
        lines.append("\t".join("\\N" if v is None else copy_text(v) if isinstance(v, str) else
                               ("t" if v else "f") if isinstance(v, bool) else str(v) for v in row) + "\n")
    if lines:
        with pg.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            copy.write("".join(lines))


def insert_rows(pg: psycopg.Connection[Any], table: str, rows: list[dict[str, Any]],
                 conflict: str = "ON CONFLICT DO NOTHING") -> None:
    """One INSERT for many rows, bound as a single JSON document (dict keys are column names)."""
    if not rows:
        return
    cols = ", ".join(rows[0])
    pg.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM "
               f"json_populate_recordset(NULL::{table}, %s::json) {conflict}", (json_list(rows),))
