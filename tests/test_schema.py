"""Story A1: migrations apply and revert on an empty database; indexes are used by the planner's queries."""

from __future__ import annotations

import uuid

import psycopg
from sqlalchemy import inspect, text

from libs.db.engine import make_engine
from libs.db.migrate import downgrade, upgrade
from libs.db.models import Base
from tests.conftest import with_database


def test_migrations_apply_to_empty_database_and_downgrade_cleanly(pg_server: str) -> None:
    url = with_database(pg_server, f"canal_mig_{uuid.uuid4().hex[:8]}")
    upgrade(url)
    eng = make_engine(url, pool_size=1)
    tables = set(inspect(eng).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= tables
    downgrade(url, "base")
    assert set(inspect(eng).get_table_names()) <= {"alembic_version"}
    upgrade(url)
    assert {t.name for t in Base.metadata.sorted_tables} <= set(inspect(eng).get_table_names())
    eng.dispose()


def test_every_fact_and_aggregate_unique_key_includes_the_target(migrated_db: str) -> None:
    eng = make_engine(migrated_db, pool_size=1)
    insp = inspect(eng)
    for table in ("facts", "aggregates", "note_aggregates", "actor_aggregates", "dirty_buckets"):
        pk = insp.get_pk_constraint(table)["constrained_columns"]
        assert "target_id" in pk, (table, pk)
        if table != "facts":  # facts' key leads with time: derivation reads facts by (created_at, source)
            assert pk[0] == "target_id", (table, pk)
        for uq in insp.get_unique_constraints(table):
            assert "target_id" in uq["column_names"], (table, uq)
    assert insp.get_pk_constraint("events")["constrained_columns"] == ["id"]
    eng.dispose()


def _plan(conn: psycopg.Connection, sql: str) -> str:
    rows = conn.execute("EXPLAIN " + sql).fetchall()
    return "\n".join(r[0] for r in rows)


def test_planner_queries_use_indexes_not_sequential_scans(db: str) -> None:
    eng = make_engine(db, pool_size=1)
    with eng.begin() as conn:
        conn.execute(text(
            "INSERT INTO facts (target_id, source_event_id, fact_type, created_at, kind, actor_id, note_id, msats, sub) "
            "SELECT (g % 500) + 1, md5(g::text) || md5((g+1)::text), 1 + g % 9, 1700000000 + g * 7, 1, g % 997, "
            "g % 3001, g, 0 FROM generate_series(1, 60000) g"))
        conn.execute(text(
            "INSERT INTO aggregates (target_id, tier, bucket_start) "
            "SELECT (g % 500) + 1, 1 + g % 3, 1700000000 + (g / 3) * 60 FROM generate_series(1, 60000) g"))
        conn.execute(text("ANALYZE"))
    queries = [
        "SELECT count(*), sum(msats) FROM facts WHERE target_id = 7 AND created_at >= 1700001000 AND created_at < 1700090000",
        "SELECT target_id, fact_type FROM facts WHERE created_at = 1700000007 AND source_event_id = md5('1') || md5('2')",
        "SELECT count(*) FROM facts WHERE created_at < 1700001000",
        "SELECT sum(zaps_count) FROM aggregates WHERE target_id = 7 AND tier = 3 AND bucket_start >= 1700000000 AND bucket_start < 1700900000",
    ]
    plain = db.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain) as conn:
        for q in queries:
            plan = _plan(conn, q)
            assert "Seq Scan" not in plan, plan
            assert "Index" in plan, plan
    eng.dispose()


def test_models_and_migrations_describe_the_same_schema(migrated_db: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    eng = make_engine(migrated_db, pool_size=1)
    with eng.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    eng.dispose()
    assert diff == []


def test_upgrade_to_day_blocks_marks_every_block_with_data_dirty_and_compaction_builds_them(pg_server: str) -> None:
    """0003 adds the 8/64-day block tiers to a database that already has day rows: no block may read as empty."""
    from libs.metrics import FactType, Tier
    from services.compactor.rollup import compact_tier
    from tests.services.compactor.helpers import assert_tier_exact, dirty_count, fact, insert_facts

    url = with_database(pg_server, f"canal_mig_{uuid.uuid4().hex[:8]}")
    upgrade(url)  # today's compactor rolls up to days, then the schema goes back to 0002 (no block tiers)
    eng = make_engine(url, pool_size=1)
    day, base = 86_400, 19_600 * 86_400
    now = base + 200 * day
    insert_facts(eng, [fact(1, base + i * 7 * day + 5, FactType.ZAP, n=i, actor_id=10 + i, msats=1000)
                       for i in range(20)])
    for tier in (Tier.MINUTE, Tier.HOUR, Tier.DAY):
        while compact_tier(eng, tier, 500, now=now).buckets:
            pass
    downgrade(url, "0002")
    with eng.begin() as conn:  # a 0002 compactor stopped at days: no block rows, no block marked dirty
        conn.execute(text("DELETE FROM dirty_buckets WHERE tier > 3"))
    assert dirty_count(eng) == 0
    upgrade(url)
    with eng.connect() as conn:
        marked = dict(conn.execute(text("SELECT tier, count(*) FROM dirty_buckets GROUP BY tier")).all())
    days = {base + i * 7 * day for i in range(20)}
    assert marked == {int(Tier.DAY8): len({d - d % (8 * day) for d in days}),
                      int(Tier.DAY64): len({d - d % (64 * day) for d in days})}
    for tier in (Tier.DAY8, Tier.DAY64):
        while compact_tier(eng, tier, 500, now=now).buckets:
            pass
    assert dirty_count(eng) == 0
    for tier in Tier:
        assert_tier_exact(eng, tier)
    eng.dispose()


def test_facts_keep_two_indexes_both_written_where_recent_time_is(migrated_db: str) -> None:
    """An index keyed by a hash takes every new fact at a random page (a cold read and a full-page WAL image
    at millions of facts): the key leads with the source's time (derivation reads a source's facts by
    (created_at, id), retention deletes by time) and the other index is the target's time range."""
    eng = make_engine(migrated_db, pool_size=1)
    insp = inspect(eng)
    assert insp.get_pk_constraint("facts")["constrained_columns"] == [
        "created_at", "source_event_id", "target_id", "fact_type"]
    assert [tuple(i["column_names"]) for i in insp.get_indexes("facts")] == [("target_id", "created_at")]
    eng.dispose()


def test_upgrade_to_lean_storage_drops_minute_drilldown_rows_and_downgrade_restores_them(pg_server: str) -> None:
    """0007 on a database with data: minute drilldown rows go, counts become int4, and answers stay equal to
    the legacy scan; its downgrade rebuilds the minute rows from facts."""
    from libs.metrics import FactType, Tier
    from tests.services.compactor.helpers import assert_tier_exact, compact_until_clean, fact, insert_facts

    url = with_database(pg_server, f"canal_mig_{uuid.uuid4().hex[:8]}")
    upgrade(url)
    eng = make_engine(url, pool_size=1)
    base = 19_600 * 86_400
    insert_facts(eng, [fact(1, base + i * 613, FactType.ZAP if i % 3 else FactType.REACTION, n=i,
                            actor_id=10 + i % 7, note_id=100 + i % 5, msats=1000 * i) for i in range(60)])
    compact_until_clean(eng, now=base + 100 * 86_400)
    downgrade(url, "0006")
    with eng.connect() as conn:
        minute_rows = conn.execute(text("SELECT count(*) FROM note_aggregates WHERE tier = 1")).scalar_one()
        kinds = conn.execute(text("SELECT data_type FROM information_schema.columns WHERE table_name = "
                                  "'actor_aggregates' AND column_name = 'reactions_count'")).scalar_one()
    assert minute_rows == 60 and kinds == "bigint"  # one minute row per fact here (613 s apart)
    upgrade(url)
    with eng.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM note_aggregates WHERE tier = 1")).scalar_one() == 0
        kinds = conn.execute(text("SELECT data_type FROM information_schema.columns WHERE table_name = "
                                  "'note_aggregates' AND column_name = 'zaps_count'")).scalar_one()
    assert kinds == "integer"
    for tier in Tier:
        assert_tier_exact(eng, tier)
    eng.dispose()
