from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, insert, select
from sqlalchemy.exc import StatementError

from openami.storage.base import UTCDateTime
from openami.storage.db import make_engine, normalise_url

# A table of its own metadata, so the project's metadata (and the migration check) never sees it.
_metadata = MetaData()
_stamp = Table("test_stamp", _metadata, Column("id", Integer, primary_key=True), Column("at", UTCDateTime()))


@pytest.fixture
def engine(sqlite_url: str) -> Engine:
    engine = make_engine(sqlite_url)
    _metadata.create_all(engine)
    return engine


def test_instants_come_back_aware_utc_on_sqlite(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(_stamp), {"id": 1, "at": datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))}
        )
        got = conn.scalar(select(_stamp.c.at))
    assert got == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    assert got.utcoffset() == timedelta(0)


def test_naive_instants_are_refused(engine: Engine) -> None:
    with engine.begin() as conn, pytest.raises(StatementError, match="naive"):
        conn.execute(insert(_stamp), {"id": 2, "at": datetime(2026, 6, 1)})  # noqa: DTZ001


def test_postgres_urls_use_psycopg3() -> None:
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"
