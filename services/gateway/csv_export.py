"""CSV downloads of persisted results: a summary as metric,value rows; a drilldown's rows flattened."""

from __future__ import annotations

import csv
import io
from typing import Any


def result_csv(envelope: dict[str, Any]) -> str:
    """The envelope's data as CSV (one header line, one line per metric or row)."""
    data = envelope.get("data") or {}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if "rows" in data:
        rows: list[dict[str, Any]] = data["rows"]
        fields = [k for k in (rows[0] if rows else {}) if k != "metrics"]
        metrics: list[str] = []
        for row in rows:
            metrics.extend(m for m in row.get("metrics", {}) if m not in metrics)
        writer.writerow(fields + metrics)
        for row in rows:
            writer.writerow([_cell(row.get(f)) for f in fields] + [row.get("metrics", {}).get(m, 0) for m in metrics])
    else:
        writer.writerow(["metric", "value"])
        for name, value in (data.get("metrics") or {}).items():
            writer.writerow([name, value])
    return out.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value  # display names are user content: never a spreadsheet formula
    return value
