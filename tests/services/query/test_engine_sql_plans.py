"""The canonical path's statements stay index range scans on a big table (a regression guard).

An earlier form (`unnest(segments) JOIN aggregates`) let PostgreSQL hash-join all of
`aggregates` with a sequential scan; every unaligned window then took seconds at 5M facts.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from libs.db.engine import make_engine
from services.query import engine as query_engine
from services.query.engine import Execution, summary

DAY = 86_400
END = 1_760_000_000 + 12_345  # unaligned, like a live `now`


def test_year_summary_statements_use_index_scans_not_sequential_scans(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    eng = make_engine(db, pool_size=1)
    with eng.begin() as conn:
        conn.execute(text("INSERT INTO pubkeys (id, pubkey) SELECT g, md5(g::text) || md5((g + 1)::text) "
                          "FROM generate_series(1, 500) g"))
        conn.execute(text(
            "INSERT INTO facts (target_id, source_event_id, fact_type, created_at, kind, actor_id, note_id, msats, sub) "
            "SELECT (g % 500) + 1, md5(g::text) || md5((g + 1)::text), 1 + g % 9, :end - g * 97, 1, g % 997, "
            "g % 3001, g, 0 FROM generate_series(1, 60000) g"), {"end": END})
        for tier, size in ((1, 60), (2, 3600), (3, DAY), (4, 8 * DAY), (5, 64 * DAY)):
            conn.execute(text(
                "INSERT INTO aggregates (target_id, tier, bucket_start, facts) "
                "SELECT DISTINCT (g % 500) + 1, :tier, (CAST(:end AS bigint) - (g % 400) * CAST(:size AS bigint)) - (CAST(:end AS bigint) - (g % 400) * CAST(:size AS bigint)) % :size, 1 "
                "FROM generate_series(1, 20000) g"), {"tier": tier, "size": size, "end": END})
        conn.execute(text("ANALYZE"))
    statements: list[tuple[str, Any]] = []
    run = query_engine.binary_rows

    def capture(conn: Any, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        statements.append((sql, params))  # the statements exactly as the engine sends them
        return run(conn, sql, params)

    monkeypatch.setattr(query_engine, "binary_rows", capture)
    with eng.connect() as conn:
        execution = Execution()
        summary(conn, 7, END - 365 * DAY, END, False, execution)
    assert execution.tiers["day64"] >= 4  # the window really reads block rows over many segments
    assert {"aggregates", "facts"} <= {t for sql, _ in statements for t in ("aggregates", "facts") if f"FROM {t}" in sql}
    with eng.connect() as conn:
        cursor = conn.connection.cursor()
        for statement, parameters in statements:
            cursor.execute("EXPLAIN " + statement, parameters)
            plan = "\n".join(r[0] for r in cursor.fetchall())
            assert "Seq Scan" not in plan, plan
            assert "Index" in plan, plan
    eng.dispose()
