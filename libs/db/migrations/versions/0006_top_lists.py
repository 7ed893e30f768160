"""Top lists for exact top-N note and counterparty drilldowns (`top_lists`), built for existing rows.

Per target, day/8-day/64-day bucket with more facts than its tier's list size (256 for days, 1,024
for blocks), drilldown and sort column: that many keys with the largest positive values and a bound on every other key's value in that bucket. The
query merges them with a threshold test and reads only the keys that can reach the page.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

from libs.db.migrations.top_lists import build_top_lists

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SIZES = {3: 256, 4: 1024, 5: 1024}  # libs.db.models.TOP_LIST_SIZES when this revision was written


def upgrade() -> None:
    op.create_table(
        "top_lists",
        sa.Column("target_id", sa.Integer, nullable=False),
        sa.Column("tier", sa.SmallInteger, nullable=False),
        sa.Column("bucket_start", sa.BigInteger, nullable=False),
        sa.Column("dim", sa.String(16), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("keys", ARRAY(sa.Integer), nullable=False),
        sa.Column("vals", ARRAY(sa.BigInteger), nullable=False),
        sa.Column("bound", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("target_id", "tier", "bucket_start", "dim", "metric", name=op.f("pk_top_lists")),
    )
    build_top_lists(SIZES)


def downgrade() -> None:
    op.drop_table("top_lists")
