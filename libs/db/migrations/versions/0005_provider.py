"""NIP-85 provider: what was last published per assertion (`provider_assertions`).

One row per addressable assertion (kind 30382/30383/30384, `d`): the value tags, the signed
event that carried them and the relays that acknowledged it, so a run signs a new event only
when a value changed and re-sends the same event to relays that missed it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_assertions",
        sa.Column("kind", sa.Integer, nullable=False),
        sa.Column("d", sa.Text, nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("window", sa.String(8), nullable=False),
        sa.Column("tags", JSONB, nullable=False),
        sa.Column("event", JSONB, nullable=False),
        sa.Column("relays", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("kind", "d", name=op.f("pk_provider_assertions")),
    )
    op.create_index(op.f("ix_provider_assertions_subject"), "provider_assertions", ["subject"])


def downgrade() -> None:
    op.drop_index(op.f("ix_provider_assertions_subject"), table_name="provider_assertions")
    op.drop_table("provider_assertions")
