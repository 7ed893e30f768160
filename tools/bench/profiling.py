"""Where a query's time goes: per-statement SQL time of the summary path, and EXPLAIN ANALYZE of the raw scan."""

from __future__ import annotations

import re
import time
from typing import Any

from sqlalchemy import event

from libs.db.engine import make_engine
from tools.bench.stats import summarize_ms


def _shape(statement: str) -> str:
    """A short, stable label for a SQL statement."""
    s = re.sub(r"\s+", " ", statement).strip()
    if "FROM aggregates" in s or "JOIN aggregates" in s:
        return "aggregates read (tier segments)"
    if "JOIN facts" in s or "FROM facts" in s:
        return "raw facts read"
    if "dirty_buckets" in s:
        return "dirty buckets (planner input)"
    if "retention_horizons" in s:
        return "retention horizons"
    if "FROM pubkeys" in s:
        return "target id"
    return s[:60]


def summary_breakdown(url: str, target_id: int, start: int, end: int, legacy: bool, reps: int) -> dict[str, Any]:
    """Run services.query.engine.summary directly (no gRPC) and time each SQL statement it issues."""
    from services.query import engine as q

    engine = make_engine(url, pool_size=1)
    spans: list[tuple[str, float]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        spans.append((_shape(statement), time.perf_counter() - conn.info.pop("bench_t0", time.perf_counter())))

    binary_rows = q.binary_rows

    def _timed(conn: Any, sql: str, params: dict[str, Any]) -> Any:  # binary reads bypass SQLAlchemy's events
        began = time.perf_counter()
        try:
            return binary_rows(conn, sql, params)
        finally:
            spans.append((_shape(sql), time.perf_counter() - began))

    q.binary_rows = _timed  # type: ignore[assignment]
    walls: list[float] = []
    try:
        for i in range(reps + 1):
            spans_before = len(spans)
            began = time.perf_counter()
            with engine.connect() as conn, conn.begin():
                q.summary(conn, target_id, start, end, legacy, q.Execution())
            if i == 0:  # warm-up
                del spans[spans_before:]
                continue
            walls.append(time.perf_counter() - began)
    finally:
        q.binary_rows = binary_rows  # type: ignore[assignment]
        engine.dispose()
    per: dict[str, list[float]] = {}
    for label, seconds in spans:
        per.setdefault(label, []).append(seconds)
    sql_total = sum(s for _, s in spans) / max(1, reps)
    wall = sum(walls) / max(1, len(walls))
    return {
        "wall_ms": summarize_ms(walls),
        "sql_ms_per_call": round(sql_total * 1000, 3),
        "python_ms_per_call": round((wall - sql_total) * 1000, 3),
        "statements_per_call": round(len(spans) / max(1, reps), 1),
        "by_statement_ms_per_call": {k: round(sum(v) / max(1, reps) * 1000, 3) for k, v in
                                     sorted(per.items(), key=lambda kv: -sum(kv[1]))},
    }


def explain_raw_scan(url: str, target_id: int, start: int, end: int) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the legacy path's raw-facts statement over [start, end)."""
    from services.query import engine as q

    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            lay = q.plan_buckets(conn, target_id, [(start, end)], True, q.Execution())
            sql = q._raw_sql(lay, 0)  # the statement exactly as the legacy path builds it, sets included
            params: dict[str, Any] = {"t": target_id, "bounds": "{" + ",".join(map(str, lay.bounds)) + "}"}
            rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).all()
    finally:
        engine.dispose()
    lines = [str(r[0]) for r in rows]
    keep = [ln for ln in lines if any(k in ln for k in ("Scan", "Aggregate", "Sort", "Buffers", "Execution Time",
                                                          "Planning Time", "JIT", "Heap Fetches", "Nested Loop"))]
    return {"plan": keep[:25]}
