"""8-day and 64-day block tiers (aggregates.tier 4 and 5): mark every block with data dirty.

The planner treats a bucket with no dirty row and no aggregate row as empty, so a block
tier that appears on a database that already holds day rows must start dirty wherever a
day row exists; the compactor then builds each block from its days.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DAY = 86_400
BLOCKS = ((4, 8 * DAY), (5, 64 * DAY))
TABLES = ("aggregates", "note_aggregates", "actor_aggregates", "dirty_buckets", "watermarks")


def upgrade() -> None:
    for tier, size in BLOCKS:
        op.execute(
            "INSERT INTO dirty_buckets (target_id, tier, bucket_start, gen, marked_at) "
            f"SELECT DISTINCT target_id, {tier}, bucket_start - bucket_start % {size}, 1, "
            "CAST(extract(epoch FROM now()) AS bigint) FROM aggregates WHERE tier = 3 "
            "ON CONFLICT (target_id, tier, bucket_start) DO NOTHING"
        )


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DELETE FROM {table} WHERE tier IN (4, 5)")
