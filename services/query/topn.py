"""Exact top-N `note` and `counterparty` drilldowns without aggregating every key (canonical path).

A page is the `limit + 1` rows with the largest value of the sort column (ties by key ascending)
after the cursor. The window's drilldown plan has coarse buckets (hours, days, 8-day and 64-day blocks:
the tiers with lists), possibly finer ones, and raw ranges. Every coarse bucket with more facts than its
tier's list size (`TOP_LIST_SIZES`) carries, per drilldown and sort column, a *top list* built by the compactor with
the bucket's rows: that many keys with the largest positive values, and `bound`, a value no
unlisted key exceeds in that bucket. Everything else (small coarse buckets, fine buckets, raw facts)
is the *rest*, aggregated whole by key id.

One statement (one snapshot) then runs a threshold test in the style of Fagin's NRA:

- a key's lower bound `lb` is its listed values plus its rest; its upper bound `ub` adds the bound
  of every list it is missing from; a key in no list and not in the rest is at most `U`, the sum of
  all bounds;
- keys whose `lb` is already past the cursor's value cannot be on the page; among the others, the
  keys whose `ub` reaches the (limit + 1)-th largest `lb` (at most `CANDIDATES`) get their exact
  columns: one primary-key probe per listed bucket, plus their rest;
- those are filtered by the cursor and ordered exactly as the full aggregation orders them (in SQL:
  same comparisons, same collation), and the statement also returns `U` and the largest `ub` of
  the keys left out.

The page is provably the answer when it has `limit + 1` rows and its last value is strictly above
both `U` and that largest left-out `ub`: every other key is then strictly below it. Otherwise (or
when a list the rule promises is missing) `engagement_top` returns None and the caller runs the
full aggregation, which is exact too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from libs.db import models
from libs.metrics import ENGAGEMENT_COLUMNS, ENGAGEMENT_TYPES

#: Most keys whose exact columns one statement reads (each costs one probe per listed bucket).
CANDIDATES = 512
DIMENSIONS = {"note": ("note_aggregates", "note_id"), "counterparty": ("actor_aggregates", "actor_id")}
_TYPES = ", ".join(str(int(t)) for t in ENGAGEMENT_TYPES)


def key_sql(dimension: str) -> tuple[str, str, str]:
    """(key expression, join from id `s.k` to the key, extra selected columns) of a drilldown."""
    if dimension == "note":
        return "n.note_key", "JOIN notes n ON n.id = s.k", ", n.deleted"
    return ("pk.pubkey", "JOIN pubkeys pk ON pk.id = s.k LEFT JOIN profiles pr ON pr.pubkey = pk.pubkey",
            ", pr.display_name")


def ranges_filter(ranges: list[tuple[int, int, int]], alias: str) -> str:
    """Explicit (tier, first bucket start, end) ranges: one primary-key range scan each."""
    return " OR ".join(f"({alias}.tier = {t} AND {alias}.bucket_start >= {a} AND {alias}.bucket_start < {b})"
                       for t, a, b in ranges) or "false"


def raw_filter(raw: list[tuple[int, int]]) -> str:
    return " OR ".join(f"(f.created_at >= {a} AND f.created_at < {b})" for a, b in raw) or "false"


def rest_parts(dimension: str, fine: list[tuple[int, int, int]], raw: list[tuple[int, int]],
               small_buckets: str | None) -> list[str]:
    """Rows (k, columns...) of the fine segments, the raw ranges and (optionally) the coarse buckets
    named by the CTE `small_buckets` (tier, bucket_start), to be summed by key."""
    table, key = DIMENSIONS[dimension]
    cols = ", ".join(f"g.{c}" for c in ENGAGEMENT_COLUMNS)
    parts = []
    if small_buckets:
        parts.append(f"SELECT g.{key} AS k, {cols} FROM {small_buckets} sb CROSS JOIN LATERAL (SELECT * FROM {table} g "
                     f"WHERE g.target_id = :t AND g.tier = sb.tier AND g.bucket_start = sb.bucket_start OFFSET 0) g")
    return parts + _window_parts(dimension, fine, raw, None)


def size_case(alias: str) -> str:
    """SQL for the list size of `alias`'s tier (the facts count above which a bucket has lists)."""
    whens = " ".join(f"WHEN {tier} THEN {n}" for tier, n in sorted(models.TOP_LIST_SIZES.items()))
    return f"(CASE {alias}.tier {whens} ELSE NULL END)"


def _type(column: str) -> str:
    """A drilldown column's SQL type as stored: counts are int4 (summed with an int8 accumulator, several
    times cheaper than sum(bigint)'s numeric one), msats int8."""
    return "bigint" if column == "zaps_msats" else "int"


def _sums(alias: str) -> str:
    return ", ".join(f"sum({alias}.{c})::bigint AS {c}" for c in ENGAGEMENT_COLUMNS)


def _cursor(column: str, key: str, after: tuple[int, str] | None) -> str:
    return "" if after is None else f" AND (s.{column} < :av OR (s.{column} = :av AND {key} > :ak))"


def engagement_top(conn: Connection, target: int, dimension: str, column: str, limit: int,
                   after: tuple[int, str] | None, segments: list[tuple[int, int, int]],
                   raw: list[tuple[int, int]]) -> list[dict[str, Any]] | None:
    """The page (limit + 1 rows, as `engine.engagement`) when the threshold test proves it, else None."""
    sql, params = top_statement(target, dimension, column, limit, after, segments, raw)
    rows = [dict(r) for r in conn.execute(text(sql), params).mappings()]
    if len(rows) < limit + 1 or any(not any(r[c] for c in ENGAGEMENT_COLUMNS) for r in rows):
        return None  # fewer rows than a page: keys with a zero sort value may follow, and no list names them
    last = rows[-1]
    left_out = -1 if last["left_out"] is None else int(last["left_out"])
    if last["want"] != last["lists"] or int(last[column]) <= max(int(last["total"]), left_out):
        return None
    for row in rows:
        for name in ("want", "lists", "total", "left_out"):
            del row[name]
    return rows


def top_statement(target: int, dimension: str, column: str, limit: int, after: tuple[int, str] | None,
                  segments: list[tuple[int, int, int]], raw: list[tuple[int, int]]) -> tuple[str, dict[str, Any]]:
    """The one statement of `engagement_top`: candidate rows, exact and ordered, plus the test's inputs."""
    listed_from = models.top_list_min_tier()
    coarse = [s for s in segments if s[0] >= listed_from]
    fine = [s for s in segments if s[0] < listed_from]
    table, key_id = DIMENSIONS[dimension]
    key, join, extra = key_sql(dimension)
    rest = rest_parts(dimension, fine, raw, "small" if coarse else None)
    rest_sql = (f"SELECT p.k, {_sums('p')} FROM ({' UNION ALL '.join(rest)}) p GROUP BY p.k" if rest else
                f"SELECT NULL::int AS k, {', '.join(f'0::bigint AS {c}' for c in ENGAGEMENT_COLUMNS)} WHERE false")
    past_cursor = "" if after is None else f"WHERE coalesce(e.v, 0) + coalesce(r.{column}, 0) <= :av"
    exact_cols = ", ".join(f"coalesce(xl.{c}, 0) + coalesce(r.{c}, 0) AS {c}" for c in ENGAGEMENT_COLUMNS)
    zero = " + ".join(f"s.{c}" for c in ENGAGEMENT_COLUMNS) + " > 0"
    out_cols = ", ".join(f"p.{c}" for c in ENGAGEMENT_COLUMNS)
    extra_name = "deleted" if dimension == "note" else "display_name"

    def probe(k: str) -> str:  # one primary-key probe per (key, listed bucket)
        return (f"SELECT g.* FROM {table} g WHERE g.target_id = :t AND g.tier = l.tier "
                f"AND g.bucket_start = l.bucket_start AND g.{key_id} = {k} OFFSET 0")
    sql = f"""
WITH b AS MATERIALIZED (
  SELECT a.tier, a.bucket_start, a.facts > {size_case('a')} AS listed FROM aggregates a
  WHERE a.target_id = :t AND ({ranges_filter(coarse, 'a')})),
small AS (SELECT tier, bucket_start FROM b WHERE NOT listed),
l AS MATERIALIZED (
  SELECT b.tier, b.bucket_start, x.keys, x.vals, x.bound FROM b CROSS JOIN LATERAL (
    SELECT x.keys, x.vals, x.bound FROM top_lists x WHERE x.target_id = :t AND x.tier = b.tier
      AND x.bucket_start = b.bucket_start AND x.dim = :dim AND x.metric = :metric OFFSET 0) x
  WHERE b.listed),
r AS MATERIALIZED ({rest_sql}),
u AS (SELECT coalesce(sum(l.bound), 0)::bigint AS total, count(*) AS lists,
      (SELECT count(*) FROM b WHERE listed) AS want FROM l),
e AS (SELECT y.k, sum(y.v)::bigint AS v, sum(l.bound)::bigint AS seen
      FROM l CROSS JOIN LATERAL unnest(l.keys, l.vals) AS y(k, v) GROUP BY y.k),
s AS MATERIALIZED (
  SELECT coalesce(e.k, r.k) AS k, coalesce(e.v, 0) + coalesce(r.{column}, 0) + u.total - coalesce(e.seen, 0) AS ub,
         coalesce(e.v, 0) + coalesce(r.{column}, 0) AS lb
  FROM e FULL JOIN r ON r.k = e.k CROSS JOIN u {past_cursor}),
th AS (SELECT coalesce((SELECT s.lb FROM s ORDER BY s.lb DESC OFFSET :lim LIMIT 1), 0) AS lb),
x AS MATERIALIZED (SELECT s.k FROM s, th WHERE s.ub >= th.lb ORDER BY s.ub DESC, s.k LIMIT :cap),
ex AS (SELECT greatest((SELECT max(s.ub) FROM s, th WHERE s.ub < th.lb),
                       (SELECT s.ub FROM s, th WHERE s.ub >= th.lb ORDER BY s.ub DESC, s.k OFFSET :cap LIMIT 1)) AS ub),
xl AS (SELECT x.k, {_sums('g')} FROM x CROSS JOIN l CROSS JOIN LATERAL ({probe('x.k')}) g GROUP BY x.k),
xv AS (SELECT x.k, {exact_cols} FROM x LEFT JOIN xl ON xl.k = x.k LEFT JOIN r ON r.k = x.k),
page AS (
  SELECT s.*, {key} AS key{extra} FROM xv s {join} WHERE {zero}{_cursor(column, key, after)}
  ORDER BY s.{column} DESC, {key} ASC LIMIT :lim + 1)
SELECT p.key, p.{extra_name}, {out_cols}, u.want, u.lists, u.total, ex.ub AS left_out
FROM page p CROSS JOIN u CROSS JOIN ex ORDER BY p.{column} DESC, p.key ASC"""
    params: dict[str, Any] = {"t": target, "dim": dimension, "metric": column, "lim": limit, "cap": CANDIDATES}
    if after is not None:
        params["av"], params["ak"] = after
    return sql, params


def engagement_full(conn: Connection, target: int, dimension: str, column: str, limit: int,
                    after: tuple[int, str] | None, segments: list[tuple[int, int, int]],
                    raw: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """Every key of the window summed by id, the sort column only; the page's keys then get their key
    and every column (a second pass over the same rows, for at most a page of keys plus its ties).

    Every row of the drilldown tables and of the raw part counts at least one engagement, so every key
    summed here has a positive total: the full path needs no zero filter (the legacy path has one)."""
    table, key_id = DIMENSIONS[dimension]
    key, join, extra = key_sql(dimension)
    parts = _window_parts(dimension, segments, raw, column)
    if not parts:
        return []
    # The threshold counts keys surely after the cursor (value below it): never above the page's last value.
    below = "" if after is None else "WHERE s.v < :av"
    every = _window_parts(dimension, segments, raw, None, "(SELECT page.k FROM page)")
    out_cols = ", ".join(f"c.{col}" for col in ENGAGEMENT_COLUMNS)
    extra_name = "deleted" if dimension == "note" else "display_name"
    sql = f"""
WITH s AS MATERIALIZED (SELECT p.k, sum(p.v)::bigint AS v FROM ({' UNION ALL '.join(parts)}) p GROUP BY p.k),
th AS (SELECT s.v FROM s {below} ORDER BY s.v DESC OFFSET :lim LIMIT 1),
page AS MATERIALIZED (
  SELECT s.k, s.v, {key} AS key{extra} FROM s {join}
  WHERE s.v >= coalesce((SELECT th.v FROM th), -1){_cursor('v', key, after)}
  ORDER BY s.v DESC, {key} ASC LIMIT :lim + 1),
c AS (SELECT p.k, {_sums('p')} FROM ({' UNION ALL '.join(every)}) p GROUP BY p.k)
SELECT page.key, page.{extra_name}, {out_cols} FROM page JOIN c ON c.k = page.k
ORDER BY page.v DESC, page.key ASC"""
    params: dict[str, Any] = {"t": target, "lim": limit}
    if after is not None:
        params["av"], params["ak"] = after
    return [dict(r) for r in conn.execute(text(sql), params).mappings()]


def _window_parts(dimension: str, segments: list[tuple[int, int, int]], raw: list[tuple[int, int]],
                  column: str | None, keys_in: str | None = None) -> list[str]:
    """Rows (k, v) of the window's segments and raw ranges with `column` as v, or (k, every column) when
    `column` is None; `keys_in` (an SQL set of key ids) keeps only those keys."""
    table, key_id = DIMENSIONS[dimension]
    if column is not None:
        cols = f"g.{column} AS v"
        raw_cols = f"({ENGAGEMENT_COLUMNS[column]})::{_type(column)} AS v"
    else:
        cols = ", ".join(f"g.{c}" for c in ENGAGEMENT_COLUMNS)
        raw_cols = ", ".join(f"({sql})::{_type(name)} AS {name}" for name, sql in ENGAGEMENT_COLUMNS.items())
    only = f" AND g.{key_id} IN {keys_in}" if keys_in else ""
    raw_only = f" AND f.{key_id} IN {keys_in}" if keys_in else ""
    parts = []
    if segments:
        parts.append(f"SELECT g.{key_id} AS k, {cols} FROM {table} g WHERE g.target_id = :t "
                     f"AND ({ranges_filter(segments, 'g')}){only}")
    if raw:
        parts.append(f"SELECT f.{key_id} AS k, {raw_cols} FROM facts f WHERE f.target_id = :t AND ({raw_filter(raw)}) "
                     f"AND f.fact_type IN ({_TYPES}) AND f.{key_id} IS NOT NULL{raw_only} GROUP BY f.{key_id}")
    return parts
