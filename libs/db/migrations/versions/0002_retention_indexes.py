"""Retention deletes by tier and bucket_start on every aggregate table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("aggregates", "note_aggregates", "actor_aggregates")


def upgrade() -> None:
    for table in TABLES:
        op.create_index(op.f(f"ix_{table}_tier_bucket_start"), table, ["tier", "bucket_start"])


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(op.f(f"ix_{table}_tier_bucket_start"), table_name=table)
