"""Alembic environment: the URL comes from the config that libs.db.migrate builds (or settings)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from libs.config import get_settings
from libs.db.engine import normalize_url
from libs.db.models import Base

config = context.config
if not config.get_main_option("sqlalchemy.url"):
    url = get_settings().database_url
    if not url:
        raise SystemExit("DATABASE_URL is not set: run `canal migrate` or set DATABASE_URL")
    config.set_main_option("sqlalchemy.url", normalize_url(url))

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                     poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
