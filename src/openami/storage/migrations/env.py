"""Alembic environment: runs migrations against the URL set by openami.storage.migrate."""

from __future__ import annotations

from alembic import context

from openami.storage.all_models import metadata
from openami.storage.db import make_engine

config = context.config


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("openami.storage.migrate sets sqlalchemy.url before running migrations")
    engine = make_engine(url)
    # Disposed however the run ends: a failed migration must not leave a pooled connection open behind it
    # (on PostgreSQL it would hold the database, so that it cannot be dropped or migrated again).
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


run_migrations_online()
