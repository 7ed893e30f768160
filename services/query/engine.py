"""Executes windows: canonical (tiers + raw delta, per the planner) and legacy (raw scan only).

Both paths share the raw-fact SQL (`FACT_COLUMNS`, the single definition of a metric over
facts); the canonical path adds aggregate rows for the planned segments. A summary is a
time series of one bucket, so the summary, the `kind` drilldown and the `time` drilldown
all run through `compute_buckets`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from opentelemetry import trace
from pyroaring import BitMap
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from libs.db.models import DRILLDOWN_MIN_TIER, top_list_min_tier
from libs.metrics import (
    ENGAGEMENT_COLUMNS,
    ENGAGEMENT_TYPES,
    FACT_COLUMNS,
    FACT_SETS,
    TIER_BY_LABEL,
    empty_columns,
    fact_sets_sql,
    kind_counts,
    metrics_from_columns,
)
from services.query import context, topn
from services.query.planning.plan import TIERS, Plan, plan_window
from services.query.planning.timeseries import time_buckets

SET_COLUMNS = tuple(FACT_SETS)
tracer = trace.get_tracer(__name__)
ALL_TIERS_COMPLETE = dict.fromkeys(TIERS, context.FAR_FUTURE)
#: The tiers note/counterparty drilldowns read (their tables have no minute rows: raw facts instead).
DRILLDOWN_TIERS_COMPLETE = {t: m for t, m in ALL_TIERS_COMPLETE.items() if TIER_BY_LABEL[t] >= DRILLDOWN_MIN_TIER}


@dataclass
class Part:
    """Summed columns and exact distinct sets for one time bucket."""

    cols: dict[str, int] = field(default_factory=empty_columns)
    sets: dict[str, BitMap] = field(default_factory=lambda: {k: BitMap() for k in SET_COLUMNS})

    def set_sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.sets.items()}


@dataclass
class Execution:
    """What was read: buckets per tier, raw facts scanned, ranges nothing could answer."""

    tiers: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TIERS, 0))
    raw_facts: int = 0
    missing: list[tuple[int, int]] = field(default_factory=list)
    raw_ranges: list[tuple[int, int]] = field(default_factory=list)
    #: Range scans the window's plan makes (aggregate segments + raw ranges), for the cost estimate.
    range_scans: int = 0
    #: Planner inputs already read with the request's snapshot (None: read them here).
    inputs: context.Snapshot | None = None

    @property
    def partial_reasons(self) -> list[str]:
        return ["retention"] if self.missing else []


@dataclass
class Layout:
    """What to read for a list of time buckets: merged aggregate segments and raw ranges, plus bucket starts.

    Every aggregate bucket and raw range lies inside exactly one time bucket, so SQL assigns rows to
    time buckets with `width_bucket` over `bounds`.
    """

    bounds: list[int] = field(default_factory=list)
    segments: list[tuple[int, int, int]] = field(default_factory=list)  # (tier, first bucket start, end)
    raw: list[tuple[int, int]] = field(default_factory=list)


def _merge(ranges: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Join touching ranges of the same kind: (key..., a, b) with equal keys and b == next a."""
    out: list[tuple[int, ...]] = []
    for r in sorted(ranges):
        if out and out[-1][:-2] == r[:-2] and out[-1][-1] == r[-2]:
            out[-1] = (*r[:-2], out[-1][-2], r[-1])
        else:
            out.append(r)
    return out


def plan_buckets(conn: Connection, target: int, buckets: Sequence[tuple[int, int]], legacy: bool,
                 execution: Execution, prefix: bool = False,
                 tiers: Mapping[str, int] = ALL_TIERS_COMPLETE) -> Layout:
    """Plan every bucket (canonical) or scan it raw (legacy); record the plan in `execution`.

    With `prefix`, the history before the first bucket, `[0, first start)`, is planned too as
    an extra leading bucket (so one statement also answers followers.total's base); it is not
    recorded in `execution`, which describes the window only.
    """
    layout = Layout(bounds=[s for s, _ in buckets])
    if not buckets:
        return layout
    if prefix:
        buckets = [(0, buckets[0][0]), *buckets]
        layout.bounds.insert(0, 0)
    inputs = execution.inputs
    horizons = inputs.horizons if inputs is not None else context.horizons(conn)
    raw: list[tuple[int, ...]] = []
    window_raw: list[tuple[int, ...]] = []
    segments: list[tuple[int, ...]] = []
    if legacy:
        dirty: dict[str, set[int]] = {}
    elif inputs is not None:
        dirty = inputs.dirty  # every dirty bucket of the target before the window's end
    else:
        dirty = context.dirty_sets(conn, target, buckets[0][0], buckets[-1][1])
    for i, (s, e) in enumerate(buckets):
        if s >= e:
            continue
        window = execution if i >= int(prefix) else Execution()
        if legacy:
            facts_horizon = horizons.get("facts", 0)
            if s < facts_horizon:
                window.missing.append((s, min(e, facts_horizon)))
            raw.append((s, e))
            window_raw += [(s, e)] if window is execution else []
            continue
        plan: Plan = plan_window(s, e, dirty, tiers, horizons)
        segments += [(int(TIER_BY_LABEL[seg.tier]), seg.start, seg.end) for seg in plan.segments]
        raw += list(plan.raw)
        window_raw += list(plan.raw) if window is execution else []
        for tier, n in plan.buckets.items():
            window.tiers[tier] = window.tiers.get(tier, 0) + n
        window.range_scans += len(plan.segments) + len(plan.raw)
        window.missing.extend(plan.missing)
    layout.raw = [(a, b) for a, b in _merge(raw)]
    layout.segments = [(t, a, b) for t, a, b in _merge(segments)]
    execution.raw_ranges.extend((a, b) for a, b in _merge(window_raw))
    return layout


def _segment_filter(layout: Layout) -> str:
    """Explicit ranges (integers only) so PostgreSQL uses one primary-key range scan per segment."""
    return " OR ".join(f"(g.tier = {t} AND g.bucket_start >= {a} AND g.bucket_start < {b})"
                       for t, a, b in layout.segments)


def _raw_filter(layout: Layout) -> str:
    return " OR ".join(f"(f.created_at >= {a} AND f.created_at < {b})" for a, b in layout.raw)


def _bucket_index(layout: Layout, column: str) -> str:
    if len(layout.bounds) == 1:
        return "0"
    return f"width_bucket({column}, CAST(%(bounds)s AS bigint[])) - 1"


_NULL_SETS = {"bytea": ", NULL::bytea[]" * len(SET_COLUMNS), "ids": ", NULL::bigint[]" * len(SET_COLUMNS)}


def _agg_sql(layout: Layout, sets_from: int | None) -> str:
    """Summed columns per bucket, plus the bitmaps of rows at or after `sets_from` (None: no sets)."""
    cols = ", ".join(f"sum(g.{c})::bigint" for c in FACT_COLUMNS)
    only = "" if not sets_from else f" AND g.bucket_start >= {sets_from}"
    sets = ("".join(f", array_agg(g.{c}) FILTER (WHERE g.{c} IS NOT NULL{only})" for c in SET_COLUMNS)
            + _NULL_SETS["ids"] if sets_from is not None else "")
    return (f"SELECT 0 AS src, {_bucket_index(layout, 'g.bucket_start')} AS i, {cols}{sets} FROM aggregates g "
            f"WHERE g.target_id = %(t)s AND ({_segment_filter(layout)}) GROUP BY 2")


def _raw_sql(layout: Layout, sets_from: int | None) -> str:
    """Columns (and id arrays at or after `sets_from`) per bucket straight from facts."""
    cols = ", ".join(f"({sql})::bigint" for sql in FACT_COLUMNS.values())
    only = f"f.created_at >= {sets_from}" if sets_from else ""
    sets = (_NULL_SETS["bytea"] + "".join(f", ({sql})::bigint[]" for sql in fact_sets_sql(only).values())
            if sets_from is not None else "")
    return (f"SELECT 1 AS src, {_bucket_index(layout, 'f.created_at')} AS i, {cols}{sets} FROM facts f "
            f"WHERE f.target_id = %(t)s AND ({_raw_filter(layout)}) GROUP BY 2")


@dataclass(frozen=True)
class Planned:
    """A request's plan, made once: leading buckets known to be empty, then the layout of the rest."""

    skip: int
    layout: Layout | None  # None: nothing to read


def plan_parts(conn: Connection, target: int | None, buckets: Sequence[tuple[int, int]], legacy: bool,
               execution: Execution, prefix: bool = False,
               tiers: Mapping[str, int] = ALL_TIERS_COMPLETE) -> Planned:
    """Plan `buckets` once (recorded in `execution`); the handler's cost estimate and `compute_buckets` share it.
    `tiers`: the tiers the reading table has (`DRILLDOWN_TIERS_COMPLETE` for note/counterparty rows)."""
    if target is None or not buckets:
        return Planned(len(buckets), None)
    skip = _empty_leading(buckets, legacy, execution)  # buckets before the target's first data: not planned
    if skip >= len(buckets):
        return Planned(skip, None)
    return Planned(skip, plan_buckets(conn, target, buckets[skip:], legacy, execution, prefix, tiers))


def compute_buckets(conn: Connection, target: int | None, buckets: Sequence[tuple[int, int]], legacy: bool,
                    execution: Execution, with_sets: bool = True, prefix: bool = False,
                    planned: Planned | None = None) -> list[Part]:
    """Columns and distinct sets for each [start, end) bucket of one target.

    With `prefix`, the result has one more Part first: the columns (no sets) of everything
    before the first bucket, `[0, first start)`, read in the same statement. Aggregate rows
    and raw facts are read by one statement (`UNION ALL`): one round trip per request.
    `planned` is the request's plan when the handler made it already (`plan_parts`).
    """
    parts = [Part() for _ in range(len(buckets) + int(prefix))]
    if target is None or not buckets:
        return parts
    if planned is None:
        planned = plan_parts(conn, target, buckets, legacy, execution, prefix)
    if planned.layout is None:
        return parts
    rest = _read_parts(conn, target, buckets[planned.skip:], planned.layout, with_sets, prefix, execution)
    first = int(prefix)
    return rest[:first] + parts[first : first + planned.skip] + rest[first:]


def _read_parts(conn: Connection, target: int, buckets: Sequence[tuple[int, int]], layout: Layout, with_sets: bool,
                prefix: bool, execution: Execution) -> list[Part]:
    parts = [Part() for _ in range(len(buckets) + int(prefix))]
    first = int(prefix)  # index of the first window bucket; the prefix (if any) has no sets and no plan
    sets_from = (buckets[0][0] if prefix else 0) if with_sets else None
    ncols, nsets = len(FACT_COLUMNS), len(SET_COLUMNS)
    names = list(FACT_COLUMNS)
    selects = ([_agg_sql(layout, sets_from)] if layout.segments else []) + (
        [_raw_sql(layout, sets_from)] if layout.raw else [])
    if not selects:
        return parts
    params = {"t": target, "bounds": "{" + ",".join(map(str, layout.bounds)) + "}"}
    for row in binary_rows(conn, " UNION ALL ".join(f"({sql})" for sql in selects), params):
        src, part = row[0], parts[row[1]]
        _add_cols(part, names, row[2 : 2 + ncols])
        if src == 1 and row[1] >= first:
            execution.raw_facts += int(row[2])
        bitmaps, ids = row[2 + ncols : 2 + ncols + nsets], row[2 + ncols + nsets :]
        for k, blobs in zip(SET_COLUMNS, bitmaps, strict=False):
            if blobs:
                part.sets[k] = BitMap.union(part.sets[k], *(BitMap.deserialize(bytes(b)) for b in blobs))
        for k, members in zip(SET_COLUMNS, ids, strict=False):
            if members:
                part.sets[k] |= BitMap(i for i in members if i is not None)
    return parts


def _empty_leading(buckets: Sequence[tuple[int, int]], legacy: bool, execution: Execution) -> int:
    """How many leading buckets end before the target's earliest data (canonical path with a snapshot only).

    An `all` window's monthly series starts in 1970; planning those empty months produced a
    statement of ~1,200 ranges (0.5 s). The legacy path plans everything: it is the reference.
    """
    inputs = execution.inputs
    if legacy or inputs is None:
        return 0
    if inputs.earliest is None:
        return len(buckets)
    skip = 0
    while skip < len(buckets) and buckets[skip][1] <= inputs.earliest:
        skip += 1
    return skip


def binary_rows(conn: Connection, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Run a read statement (psycopg `%(name)s` placeholders) on `conn`'s transaction with binary results.

    Bitmaps arrive as bytes instead of hex text: for a year window at 5M facts the aggregate
    statement takes 0.6 ms instead of 4 ms. Errors surface as SQLAlchemy's `DBAPIError`, like
    every other statement (the deadline handling relies on it); the span stands in for the
    SQLAlchemy instrumentation this cursor bypasses.
    """
    driver = conn.connection.driver_connection
    with tracer.start_as_current_span("SELECT", kind=trace.SpanKind.CLIENT,
                                      attributes={"db.system": "postgresql", "db.statement": sql}):
        try:
            with driver.cursor(binary=True) as cur:  # type: ignore[union-attr]
                cur.execute(sql, params)
                return cur.fetchall()
        except psycopg.Error as exc:
            raise DBAPIError.instance(sql, params, exc, psycopg.Error) from exc


def _add_cols(part: Part, names: list[str], values: Sequence[object]) -> None:
    for name, value in zip(names, values, strict=True):
        if value is not None:
            part.cols[name] += int(value)  # type: ignore[call-overload]


def _net_follows(part: Part) -> int:
    return part.cols["follows"] - part.cols["unfollows"]


def summary(conn: Connection, target: int | None, start: int, end: int, legacy: bool,
            execution: Execution, planned: Planned | None = None) -> dict[str, int]:
    """Every metric of METRICS.md over [start, end); followers.total counts from the beginning of time.

    `planned`: `plan_parts(..., [(start, end)], ..., prefix=True)` when the caller planned already."""
    before, part = compute_buckets(conn, target, [(start, end)], legacy, execution, prefix=True, planned=planned)
    total = _net_follows(before) + _net_follows(part)
    return metrics_from_columns(part.cols, part.set_sizes(), total)


def kinds(conn: Connection, target: int | None, start: int, end: int, legacy: bool,
          execution: Execution, planned: Planned | None = None) -> list[tuple[int, int]]:
    """The `kind` drilldown: (kind, facts) sorted by count descending then kind, zeros omitted."""
    part = compute_buckets(conn, target, [(start, end)], legacy, execution, planned=planned)[0]
    counts = kind_counts(part.cols, part.set_sizes())
    return sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: (-kv[1], kv[0]))


def series_buckets(start: int, end: int, granularity: str, tz: ZoneInfo) -> list[tuple[int, int]]:
    """The [start, end) buckets of a `time` drilldown (local-time buckets clipped to the window)."""
    return [(b.start, b.end) for b in time_buckets(start, end, granularity, tz)]


def series(conn: Connection, target: int | None, start: int, end: int, granularity: str, tz: ZoneInfo,
           legacy: bool, execution: Execution, planned: Planned | None = None) -> list[tuple[int, int, dict[str, int]]]:
    """The `time` drilldown: (bucket start, end, metrics) per local-time bucket clipped to the window."""
    buckets = series_buckets(start, end, granularity, tz)
    before, *parts = compute_buckets(conn, target, buckets, legacy, execution, prefix=True, planned=planned)
    total = _net_follows(before)
    out = []
    for (s, e), part in zip(buckets, parts, strict=True):
        total += _net_follows(part)
        out.append((s, e, metrics_from_columns(part.cols, part.set_sizes(), total)))
    return out


def engagement(conn: Connection, target: int | None, start: int, end: int, dimension: str, sort_column: str,
               limit: int, after: tuple[int, str] | None, legacy: bool,
               execution: Execution, planned: Planned | None = None) -> list[dict[str, Any]]:
    """`note` or `counterparty` rows, sorted by `sort_column` desc then key asc, keyset-paged."""
    if target is None:
        return []
    if planned is None:
        planned = plan_parts(conn, target, [(start, end)], legacy, execution, tiers=DRILLDOWN_TIERS_COMPLETE)
    if planned.layout is None:
        return []
    layout = planned.layout
    if legacy:
        rows = _legacy_engagement(conn, target, dimension, sort_column, limit, after, layout)
    else:
        rows = _canonical_engagement(conn, target, dimension, sort_column, limit, after, layout)
    if layout.raw:
        execution.raw_facts += _count_raw(conn, target, layout)
    return rows


def _legacy_engagement(conn: Connection, target: int, dimension: str, sort_column: str, limit: int,
                       after: tuple[int, str] | None, layout: Layout) -> list[dict[str, Any]]:
    """The reference: every fact of the window (the legacy layout is raw ranges only), grouped by key."""
    if not layout.raw:
        return []
    by = "note_id" if dimension == "note" else "actor_id"
    raw_cols = ", ".join(f"({sql})::bigint AS {name}" for name, sql in ENGAGEMENT_COLUMNS.items())
    types = ", ".join(str(int(t)) for t in ENGAGEMENT_TYPES)
    part = (f"SELECT f.{by} AS k, {raw_cols} FROM facts f WHERE f.target_id = :t "
            f"AND ({_raw_filter(layout)}) AND f.fact_type IN ({types}) AND f.{by} IS NOT NULL GROUP BY f.{by}")
    sums = ", ".join(f"sum(p.{c})::bigint AS {c}" for c in ENGAGEMENT_COLUMNS)
    if dimension == "note":
        key, joins, extra, group = "n.note_key", "JOIN notes n ON n.id = p.k", ", n.deleted", ", n.deleted"
    else:
        key = "pk.pubkey"
        joins = "JOIN pubkeys pk ON pk.id = p.k LEFT JOIN profiles pr ON pr.pubkey = pk.pubkey"
        extra, group = ", pr.display_name", ", pr.display_name"
    metric_sql = f"sum(p.{sort_column})"
    having = " + ".join(f"sum(p.{c})" for c in ENGAGEMENT_COLUMNS) + " > 0"
    params: dict[str, object] = {"t": target, "lim": limit + 1}
    if after is not None:
        having += f" AND ({metric_sql} < :av OR ({metric_sql} = :av AND {key} > :ak))"
        params["av"], params["ak"] = after
    sql = (f"SELECT {key} AS key{extra}, {sums} FROM ({part}) p {joins} "
           f"GROUP BY {key}{group} HAVING {having} ORDER BY {metric_sql} DESC, {key} ASC LIMIT :lim")
    return [dict(r) for r in conn.execute(text(sql), params).mappings().all()]


def _canonical_engagement(conn: Connection, target: int, dimension: str, column: str, limit: int,
                          after: tuple[int, str] | None, layout: Layout) -> list[dict[str, Any]]:
    """Top lists and a threshold test when the window has buckets of a listed tier (`topn`); the full
    aggregation when it has none, or when the test cannot prove the page."""
    segments, raw = list(layout.segments), list(layout.raw)
    # psycopg prepares a statement run 5 times, and PostgreSQL then may switch to a generic plan: for
    # these CTE-heavy statements that estimates every CTE at one row and nests loops over them (24h
    # went from 13 to 22 ms after ten calls). A custom plan costs ~1-2 ms of planning per call.
    conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    if any(tier >= top_list_min_tier() for tier, _, _ in segments):
        found = topn.engagement_top(conn, target, dimension, column, limit, after, segments, raw)
        if found is not None:
            return found
    return topn.engagement_full(conn, target, dimension, column, limit, after, segments, raw)


def _count_raw(conn: Connection, target: int, layout: Layout) -> int:
    row = conn.execute(text(f"SELECT count(*) FROM facts f WHERE f.target_id = :t AND ({_raw_filter(layout)})"),
                       {"t": target}).first()
    return int(row[0]) if row else 0
