"""Where a query's time goes: per-statement SQL time of the summary path, and EXPLAIN ANALYZE of the raw scan."""

from __future__ import annotations

import re
import time
from typing import Any

from sqlalchemy import event, text

from libs.bench.stats import summarize_ms
from libs.db.engine import make_engine


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


def _fn(module: Any, name: str) -> Any:
    """A private SQL builder of services.query.engine, whose signature changes with the engine."""
    return getattr(module, name)


def _takes_layout(fn: Any) -> bool:
    import inspect

    return "layout" in inspect.signature(fn).parameters


def explain_raw_scan(url: str, target_id: int, start: int, end: int) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the legacy path's raw-facts statement over [start, end)."""
    from services.query import engine as q

    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            if _takes_layout(_fn(q, "_raw_sql")):  # the statement is built from the planned layout
                lay = q.plan_buckets(conn, target_id, [(start, end)], True, q.Execution())
                sql = _fn(q, "_raw_sql")(lay, True)
                params: dict[str, Any] = {"t": target_id, "bounds": "{" + ",".join(map(str, lay.bounds)) + "}"}
            else:
                sql = _fn(q, "_raw_sql")(True)
                params = {"t": target_id, "a": [start], "b": [end], "i": [0]}
            rows = conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql), params).all()
    finally:
        engine.dispose()
    lines = [str(r[0]) for r in rows]
    keep = [ln for ln in lines if any(k in ln for k in ("Scan", "Aggregate", "Sort", "Buffers", "Execution Time",
                                                          "Planning Time", "JIT", "Heap Fetches", "Nested Loop"))]
    return {"plan": keep[:25]}


AGG_JOIN = ("JOIN aggregates g ON g.target_id = :t AND g.tier = s.tier AND g.bucket_start >= s.a "
            "AND g.bucket_start < s.b")
AGG_PINNED = ("CROSS JOIN LATERAL (SELECT * FROM aggregates g WHERE g.target_id = :t AND g.tier = s.tier "
              "AND g.bucket_start >= s.a AND g.bucket_start < s.b OFFSET 0) g")
RAW_JOIN = "JOIN facts f ON f.target_id = :t AND f.created_at >= r.a AND f.created_at < r.b"
RAW_PINNED = ("CROSS JOIN LATERAL (SELECT * FROM facts f WHERE f.target_id = :t AND f.created_at >= r.a "
              "AND f.created_at < r.b OFFSET 0) f")


def pinned_plan_fix(url: str, target_id: int, windows: list[tuple[int, int]], reps: int = 3) -> dict[str, Any]:
    """The canonical summary's two statements as they are, and with each range join pinned to an index range
    scan per segment (LATERAL ... OFFSET 0, as the compactor does): same rows, time per window."""
    from services.query import engine as q

    if _takes_layout(_fn(q, "_agg_sql")):
        return {"skipped": "services.query.engine now builds explicit per-segment ranges (the fix this compared)"}
    agg_now, raw_now = _fn(q, "_agg_sql")(True), _fn(q, "_raw_sql")(True)
    if AGG_JOIN not in agg_now or RAW_JOIN not in raw_now:
        return {"skipped": "services.query.engine SQL changed; the comparison no longer applies"}
    agg_fix, raw_fix = agg_now.replace(AGG_JOIN, AGG_PINNED), raw_now.replace(RAW_JOIN, RAW_PINNED)
    engine = make_engine(url, pool_size=1)
    cur: list[float] = []
    fixed: list[float] = []
    same = True
    try:
        with engine.connect() as conn:
            for start, end in windows:
                lay: Any = q.plan_buckets(conn, target_id, [(start, end)], False, q.Execution())  # old Layout
                agg = {"t": target_id, "tier": lay.seg_tier, "a": lay.seg_a, "b": lay.seg_b, "i": lay.seg_i}
                raw = {"t": target_id, "a": lay.raw_a, "b": lay.raw_b, "i": lay.raw_i}
                for sql_agg, sql_raw, sink in ((agg_now, raw_now, cur), (agg_fix, raw_fix, fixed)):
                    best = float("inf")
                    rows: list[Any] = []
                    for _ in range(reps):
                        began = time.perf_counter()
                        rows = []
                        if lay.seg_i:
                            rows += [tuple(r) for r in conn.execute(text(sql_agg), agg)]
                        if lay.raw_i:
                            rows += [tuple(r) for r in conn.execute(text(sql_raw), raw)]
                        best = min(best, time.perf_counter() - began)
                    sink.append(best)
                    if sink is cur:
                        reference = rows
                    elif rows != reference:
                        same = False
    finally:
        engine.dispose()
    return {"windows": len(windows), "current_ms": summarize_ms(cur), "pinned_ms": summarize_ms(fixed),
            "same_rows": same}
