"""The DuckDB peer: the large target's facts exported once to Parquet, the same summary computed by a scan."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg

COLUMNS = ("target_id", "source_event_id", "fact_type", "created_at", "kind", "actor_id", "note_id", "msats", "sub")
TYPES = {"target_id": "INTEGER", "source_event_id": "VARCHAR", "fact_type": "SMALLINT", "created_at": "BIGINT",
         "kind": "INTEGER", "actor_id": "INTEGER", "note_id": "INTEGER", "msats": "BIGINT", "sub": "SMALLINT"}
# Every metric of METRICS.md over [$1, $2), with followers.total as of $2, like GetSummary computes it.
SUMMARY_SQL = """
SELECT
  count(*) FILTER (WHERE created_at >= $1 AND fact_type = 1),
  coalesce(sum(msats) FILTER (WHERE created_at >= $1 AND fact_type = 1), 0),
  count(DISTINCT actor_id) FILTER (WHERE created_at >= $1 AND fact_type = 1 AND (sub & 4) = 0),
  count(*) FILTER (WHERE created_at >= $1 AND fact_type = 2),
  count(*) FILTER (WHERE created_at >= $1 AND fact_type = 2 AND sub = 1),
  count(*) FILTER (WHERE created_at >= $1 AND fact_type = 2 AND sub = 2),
  count(DISTINCT actor_id) FILTER (WHERE created_at >= $1 AND fact_type = 2),
  count(*) FILTER (WHERE created_at >= $1 AND fact_type = 3),
  count(*) FILTER (WHERE created_at >= $1 AND fact_type = 4),
  count(*) FILTER (WHERE created_at >= $1 AND fact_type = 5),
  count(*) FILTER (WHERE created_at >= $1 AND fact_type = 6),
  count(*) FILTER (WHERE created_at >= $1 AND fact_type = 7),
  count(*) FILTER (WHERE created_at >= $1 AND fact_type = 8),
  count(*) FILTER (WHERE fact_type = 7) - count(*) FILTER (WHERE fact_type = 8),
  count(*) FILTER (WHERE created_at >= $1 AND fact_type = 9),
  count(DISTINCT note_id) FILTER (WHERE created_at >= $1 AND fact_type = 10)
FROM facts WHERE created_at < $2
"""
NAMES = ("zaps.count", "zaps.msats", "zaps.unique_senders", "reactions.count", "reactions.likes",
         "reactions.dislikes", "reactions.unique_actors", "reposts.count", "replies.count", "quotes.count",
         "mentions.count", "followers.gained", "followers.lost", "followers.total", "notes.count", "articles.count")


def export_parquet(pg_url: str, target_id: int, path: Path, expected_rows: int) -> dict[str, Any]:
    """COPY the target's facts (ordered by created_at) out of PostgreSQL into Parquet; reused when present."""
    import duckdb

    if path.exists():
        con = duckdb.connect()
        try:
            rows = con.execute("SELECT count(*) FROM read_parquet(?)", [str(path)]).fetchone()
        finally:
            con.close()
        if rows is not None and int(rows[0]) == expected_rows:
            return {"cached": True, "rows": expected_rows, "bytes": path.stat().st_size}
    began = time.perf_counter()
    csv = path.with_suffix(".csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(pg_url) as conn, csv.open("wb") as fh, conn.cursor().copy(
            f"COPY (SELECT {', '.join(COLUMNS)} FROM facts WHERE target_id = {int(target_id)} ORDER BY created_at) "
            "TO STDOUT WITH (FORMAT csv)") as copy:
        for chunk in copy:
            fh.write(chunk)
    con = duckdb.connect()
    try:
        cols = "{" + ", ".join(f"'{c}': '{TYPES[c]}'" for c in COLUMNS) + "}"
        tmp = path.with_suffix(".tmp.parquet")
        con.execute(f"COPY (SELECT * FROM read_csv('{csv}', header=false, columns={cols}, nullstr='')) "
                    f"TO '{tmp}' (FORMAT parquet)")
        tmp.replace(path)
    finally:
        con.close()
        csv.unlink(missing_ok=True)
    return {"cached": False, "rows": expected_rows, "bytes": path.stat().st_size,
            "seconds": round(time.perf_counter() - began, 2)}


class DuckPeer:
    """An in-process DuckDB with a `facts` view over the Parquet file."""

    def __init__(self, path: Path) -> None:
        import duckdb

        self.con = duckdb.connect()
        self.con.execute(f"CREATE VIEW facts AS SELECT * FROM read_parquet('{path}')")
        self.threads = int(self.con.execute("SELECT current_setting('threads')").fetchone()[0])  # type: ignore[index]
        self.version = str(duckdb.__version__)

    def summary(self, start: int, end: int) -> dict[str, int]:
        row = self.con.execute(SUMMARY_SQL, [start, end]).fetchone()
        assert row is not None
        values = dict(zip(NAMES, (int(v or 0) for v in row), strict=True))
        values["followers.net"] = values["followers.gained"] - values["followers.lost"]
        return values

    def timed(self, start: int, end: int, reps: int, warmup: int = 1) -> tuple[list[float], dict[str, int]]:
        answer: dict[str, int] = {}
        for _ in range(warmup):
            answer = self.summary(start, end)
        times = []
        for _ in range(reps):
            began = time.perf_counter()
            answer = self.summary(start, end)
            times.append(time.perf_counter() - began)
        return times, answer

    def close(self) -> None:
        self.con.close()


def same_answer(duck: dict[str, int], canonical: dict[str, int] | None) -> bool | None:
    """DuckDB's numbers equal the canonical answer on every metric both compute."""
    if canonical is None:
        return None
    return all(canonical.get(k) == v for k, v in duck.items())
