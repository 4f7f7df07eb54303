"""Migrations build the whole schema on both databases, and the models have not drifted from them."""

import pytest
from sqlalchemy import inspect

from openami.storage import migrate
from openami.storage.all_models import metadata
from openami.storage.db import make_engine


def _upgrade_and_check(url: str) -> None:
    migrate.upgrade(url)
    migrate.check(url)  # raises ConfigurationError on drift
    engine = make_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(metadata.tables) <= tables


def test_sqlite_migrates_to_head_without_drift(sqlite_url: str) -> None:
    _upgrade_and_check(sqlite_url)


@pytest.mark.integration
def test_postgres_migrates_to_head_without_drift(pg_url: str) -> None:
    _upgrade_and_check(pg_url)
