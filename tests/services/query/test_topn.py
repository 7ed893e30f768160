"""Top lists + threshold test (services.query.topn): every page equals the legacy raw scan.

Lists are made tiny (TOP_LIST_SIZES 1..24) so that random data exercises both outcomes of the test
(proved from the lists, or the full aggregation) with heavy ties, zero sort values, cursor pages,
late and deleted facts (dirty buckets read raw) and the `deleted` flag of note rows.
"""

from __future__ import annotations

import random
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, text

from libs.db.engine import make_engine
from libs.metrics import ENGAGEMENT_COLUMNS, Tier
from services.compactor.rollup import compact_tier
from services.query import engine as q
from services.query import topn
from tests.services.query.factgen import delete_facts, insert_facts, random_facts, seed_dictionaries

DAY = 86_400
T0 = 1772900000
SPAN = 70 * DAY  # covers 8-day blocks and one whole 64-day block
END = T0 + SPAN
TABLES = "facts, aggregates, note_aggregates, actor_aggregates, top_lists, dirty_buckets, watermarks"


def _compact(engine) -> None:  # type: ignore[no-untyped-def]
    for tier in Tier:
        while compact_tier(engine, tier, 10_000, now=END + 70 * DAY).buckets:
            pass


def _pages(conn: Connection, target: int, start: int, end: int, dim: str, column: str, limit: int,
           legacy: bool, pages: int) -> list[list[dict[str, Any]]]:
    """Up to `pages` pages, following the cursor exactly as the query service builds it."""
    out, after = [], None
    for _ in range(pages):
        found = q.engagement(conn, target, start, end, dim, column, limit, after, legacy, q.Execution())
        out.append(found)
        if len(found) <= limit:
            break
        last = found[limit - 1]
        after = (int(last[column]), str(last["key"]))
    return out


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), size=st.sampled_from([1, 2, 4, 8]), late=st.booleans())
def test_pages_equal_the_legacy_scan_for_random_facts_list_sizes_windows_and_cursors(
        db: str, seed: int, size: int, late: bool) -> None:
    engine = make_engine(db, pool_size=2)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES}"))
    rng = random.Random(seed)
    seed_dictionaries(engine, pubkeys=40, notes=40)
    with mock.patch("libs.db.models.TOP_LIST_SIZES", {2: size, 3: size, 4: 2 * size, 5: 3 * size}):
        facts = random_facts(rng, 1500, T0, SPAN, targets=2, actors=40, notes=40)
        insert_facts(engine, facts)
        _compact(engine)
        if late:  # backdated arrivals and retractions: dirty buckets, read from raw facts
            insert_facts(engine, [dict(f, source_event_id=f"late{i:060x}") for i, f in
                                  enumerate(random_facts(rng, 40, T0, SPAN, targets=2, actors=40, notes=40))])
            delete_facts(engine, rng.sample(facts, 30))
        with engine.connect() as conn:
            windows = [(0, END), (END - 7 * DAY, END), (END - 30 * DAY - 4321, END - 17)]
            windows += [tuple(sorted(rng.sample(range(T0 - DAY, END + DAY), 2))) for _ in range(2)]
            for start, end in windows:
                target = rng.randint(1, 2)
                for dim in ("note", "counterparty"):
                    column = rng.choice(list(ENGAGEMENT_COLUMNS))
                    limit = rng.choice([1, 3, 7])
                    canonical = _pages(conn, target, start, end, dim, column, limit, False, 4)
                    legacy = _pages(conn, target, start, end, dim, column, limit, True, 4)
                    assert canonical == legacy, (target, start, end, dim, column, limit)
    engine.dispose()


def test_a_clear_leader_is_proved_from_the_lists_alone(db: str) -> None:
    """When the page stands clear of every bound, the threshold test answers without the full aggregation."""
    engine = make_engine(db, pool_size=2)
    seed_dictionaries(engine, pubkeys=40, notes=40)
    rng = random.Random(11)
    facts = random_facts(rng, 1500, T0, SPAN, targets=1, actors=40, notes=40)
    for i, f in enumerate(facts):  # two leaders: actor/note 7 (a deleted note) and 8 zap big in every 8th fact
        if i % 4 == 0:
            f.update(actor_id=7 + i % 8 // 4, note_id=7 + i % 8 // 4, fact_type=1, kind=9735,
                     msats=10**9 // (1 + i % 8 // 4), sub=0)
    with mock.patch("libs.db.models.TOP_LIST_SIZES", {3: 4, 4: 4, 5: 4}):
        insert_facts(engine, facts)
        _compact(engine)
        with engine.connect() as conn, mock.patch.object(topn, "engagement_full",
                                                         side_effect=AssertionError("fell back")):
            for dim in ("note", "counterparty"):
                for start in (0, END - 30 * DAY):
                    canonical = q.engagement(conn, 1, start, END, dim, "zaps_msats", 1, None, False, q.Execution())
                    legacy = q.engagement(conn, 1, start, END, dim, "zaps_msats", 1, None, True, q.Execution())
                    assert canonical == legacy and len(canonical) == 2
            assert canonical[0]["key"] == "07".rjust(64, "0")
            note = q.engagement(conn, 1, 0, END, "note", "zaps_msats", 1, None, False, q.Execution())
            assert note[0]["key"] == "note7" and note[0]["deleted"] is True
    engine.dispose()


def test_a_window_read_only_from_raw_facts_equals_the_legacy_scan(db: str) -> None:
    """A window shorter than a minute has no aggregate segment: the full aggregation runs on raw facts alone."""
    engine = make_engine(db, pool_size=2)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES}"))
    seed_dictionaries(engine, pubkeys=20, notes=20)
    insert_facts(engine, random_facts(random.Random(5), 400, T0, 600))
    _compact(engine)
    start, end = T0 + 120, T0 + 141  # 21 seconds inside one minute
    with engine.connect() as conn:
        for dim in ("note", "counterparty"):
            for column in ENGAGEMENT_COLUMNS:
                canonical = _pages(conn, 1, start, end, dim, column, 5, False, 3)
                assert canonical == _pages(conn, 1, start, end, dim, column, 5, True, 3), (dim, column)
    engine.dispose()


def test_drilldowns_plan_every_call_for_its_parameters_never_with_a_generic_plan(db: str) -> None:
    """After ten calls PostgreSQL may plan a prepared statement once for any parameters; for the top statement
    that estimates every CTE at one row and nests loops over them (24h: 13 -> 22 ms at 5M facts)."""
    engine = make_engine(db, pool_size=1)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES}"))
    seed_dictionaries(engine, pubkeys=20, notes=20)
    insert_facts(engine, random_facts(random.Random(3), 300, T0, SPAN))
    _compact(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SHOW plan_cache_mode")).scalar_one() == "auto"
        q.engagement(conn, 1, 0, END, "note", "zaps_msats", 5, None, False, q.Execution())
        assert conn.execute(text("SHOW plan_cache_mode")).scalar_one() == "force_custom_plan"
        conn.rollback()  # SET LOCAL: the setting ends with the request's transaction
        assert conn.execute(text("SHOW plan_cache_mode")).scalar_one() == "auto"
    engine.dispose()
