"""Lean storage: two facts indexes instead of six, no minute drilldown rows, int4 drilldown counts.

- facts: the key becomes (created_at, source_event_id, target_id, fact_type). created_at is the source
  event's time, the same for every fact of a source, so derivation finds a source's facts by
  (created_at, id) and retention deletes by time through the key: the `source_event_id` and
  `created_at` indexes go. The `(target, note, time)` / `(target, actor, time)` indexes go too: only
  the legacy raw scan could use them. The key and the hash-ordered `source_event_id` index took every
  new fact at a random place: at millions of facts, a cold page and a full-page WAL image per fact,
  which is what made ingest slow down as the table grew. Both remaining indexes are written where
  recent time is.
- note/actor aggregates: no minute rows (one per fact, the raw facts again); drilldowns read sub-hour
  edges from facts and the hour tier is rolled up from facts (`libs.db.models.DRILLDOWN_MIN_TIER`).
- note/actor aggregates: counts as int4 (zaps_msats stays int8): 24 bytes less per row.
- note/actor aggregates: no (tier, bucket_start) index (only retention used it; it now goes by target).
- top lists of 2,048 entries from the day up (256 for days, 1,024 for blocks before) and of 256 for
  hours (none before), rebuilt here.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from alembic import op

from libs.db.migrations.top_lists import build_top_lists

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COUNTS = ("zaps_count", "reactions_count", "reposts_count", "replies_count", "quotes_count")
DRILLDOWNS = (("note_aggregates", "note_id"), ("actor_aggregates", "actor_id"))
# libs.metrics.ENGAGEMENT_COLUMNS when this revision was written (for the downgrade's minute rows).
ENGAGEMENT = {
    "zaps_count": "count(*) FILTER (WHERE fact_type = 1)",
    "zaps_msats": "coalesce(sum(msats) FILTER (WHERE fact_type = 1), 0)",
    "reactions_count": "count(*) FILTER (WHERE fact_type = 2)",
    "reposts_count": "count(*) FILTER (WHERE fact_type = 3)",
    "replies_count": "count(*) FILTER (WHERE fact_type = 4)",
    "quotes_count": "count(*) FILTER (WHERE fact_type = 5)",
}
SIZES = {2: 256, 3: 2048, 4: 2048, 5: 2048}  # libs.db.models.TOP_LIST_SIZES when this revision was written
OLD_SIZES = {3: 256, 4: 1024, 5: 1024}


def _rebuild_top_lists(sizes: dict[int, int]) -> None:
    op.execute("DELETE FROM top_lists")
    build_top_lists(sizes)


def upgrade() -> None:
    op.drop_index("ix_facts_target_id_note_id_created_at", table_name="facts")
    op.drop_index("ix_facts_target_id_actor_id_created_at", table_name="facts")
    op.drop_index("ix_facts_source_event_id", table_name="facts")
    op.drop_index("ix_facts_created_at", table_name="facts")
    op.execute("ALTER TABLE facts DROP CONSTRAINT pk_facts")
    op.execute("ALTER TABLE facts ADD CONSTRAINT pk_facts PRIMARY KEY (created_at, source_event_id, target_id, fact_type)")
    for table, _ in DRILLDOWNS:
        op.drop_index(f"ix_{table}_tier_bucket_start", table_name=table)
        op.execute(f"DELETE FROM {table} WHERE tier = 1")
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"ALTER COLUMN {c} TYPE integer" for c in COUNTS))
    _rebuild_top_lists(SIZES)


def downgrade() -> None:
    _rebuild_top_lists(OLD_SIZES)
    for table, key in DRILLDOWNS:
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"ALTER COLUMN {c} TYPE bigint" for c in COUNTS))
        op.create_index(f"ix_{table}_tier_bucket_start", table, ["tier", "bucket_start"])
        # The minute rows back, from the facts of every minute bucket that has an aggregates row.
        op.execute(
            f"INSERT INTO {table} (target_id, tier, bucket_start, {key}, {', '.join(ENGAGEMENT)}) "
            f"SELECT a.target_id, 1, a.bucket_start, f.{key}, {', '.join(ENGAGEMENT.values())} "
            "FROM aggregates a JOIN facts f ON f.target_id = a.target_id AND f.created_at >= a.bucket_start "
            f"AND f.created_at < a.bucket_start + 60 WHERE a.tier = 1 AND f.{key} IS NOT NULL "
            f"AND f.fact_type IN (1, 2, 3, 4, 5) GROUP BY a.target_id, a.bucket_start, f.{key}"
        )
    op.execute("ALTER TABLE facts DROP CONSTRAINT pk_facts")
    op.execute("ALTER TABLE facts ADD CONSTRAINT pk_facts PRIMARY KEY (target_id, source_event_id, fact_type)")
    op.create_index("ix_facts_source_event_id", "facts", ["source_event_id"])
    op.create_index("ix_facts_created_at", "facts", ["created_at"])
    op.create_index("ix_facts_target_id_actor_id_created_at", "facts", ["target_id", "actor_id", "created_at"])
    op.create_index("ix_facts_target_id_note_id_created_at", "facts", ["target_id", "note_id", "created_at"])
