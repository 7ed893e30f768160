"""TRACK mode at runtime: tracked keys, the interest set that follows them, and the service key.

- `tracked_keys`: the keys canal follows on public relays (TRACK seeds it; `canal track` and
  the admin API change it at runtime). `ready_at` is set once every connected relay has
  backfilled everything the key's interest needs; until then answers for it are partial.
- `interest`: what the relay subscriptions ask for besides the tracked keys themselves,
  append-only with a sequence (`id`) so a relay can record how far it has backfilled
  (`relay_cursors.interest_mark`): note ids and addresses of tracked keys (for `#e`, `#q`,
  `#a`), authors whose contact lists and deletions can change a tracked key's numbers, and
  relays found through NIP-65.
- `service_keys`: secret keys canal signs with (NIP-42 AUTH, NIP-85 assertions), generated
  on first use unless configured.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tracked_keys",
        sa.Column("pubkey", sa.String(64), nullable=False),
        sa.Column("added_at", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(16), nullable=False, server_default="api"),
        sa.Column("label", sa.Text, nullable=False, server_default=""),
        sa.Column("first_seq", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("ready_at", sa.BigInteger),
        sa.PrimaryKeyConstraint("pubkey", name=op.f("pk_tracked_keys")),
    )
    op.create_table(
        "interest",
        sa.Column("id", sa.BigInteger, autoincrement=True, nullable=False),
        sa.Column("sort", sa.String(16), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("owner", sa.String(64), nullable=False, server_default=""),
        sa.Column("added_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_interest")),
        sa.UniqueConstraint("sort", "value", name=op.f("uq_interest_sort_value")),
    )
    op.create_table(
        "service_keys",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("secret_hex", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_service_keys")),
    )
    op.add_column("relay_cursors", sa.Column("interest_mark", sa.BigInteger, nullable=False,
                                             server_default=sa.text("0")))


def downgrade() -> None:
    op.drop_column("relay_cursors", "interest_mark")
    op.drop_table("service_keys")
    op.drop_table("interest")
    op.drop_table("tracked_keys")
