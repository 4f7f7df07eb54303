"""Shared fixtures: databases (SQLite file per test, one real PostgreSQL database per run), clocks, factories."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.security.meter_keys import MasterKey, MeterKeyCipher
from openami.storage.all_models import metadata
from openami.storage.db import make_engine, make_session_factory

PG_ADMIN_DSN = os.environ.get("OPENAMI_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


# The master key every test runs with (a fixed value, so failures reproduce).
TEST_MASTER_KEY = MasterKey("test-1", bytes(range(32, 64)))


@pytest.fixture(autouse=True, scope="session")
def _test_master_key() -> Iterator[None]:
    """Configure TEST_MASTER_KEY the way an operator would, for this process and the ones tests start.

    Services built from the environment's settings then seal meter keys with it, and no test (nor a module- or
    session-scoped fixture: hence the scope) writes the embedded default `var/master.key` into the working
    tree. Tests of that default remove the variable with their own `monkeypatch`.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAMI_MASTER_KEYS", TEST_MASTER_KEY.entry())
        patch.delenv("OPENAMI_MASTER_KEY_FILE", raising=False)
        yield


@pytest.fixture
def meter_keys() -> MeterKeyCipher:
    """The cipher of TEST_MASTER_KEY: what bootstrap() builds in tests."""
    return MeterKeyCipher([TEST_MASTER_KEY])


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 3, 2, 0, 0, tzinfo=UTC))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'openami.db'}"


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(sqlite_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(sqlite_engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as s:
        yield s


def _create_pg_database() -> str:
    name = f"openami_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base}/{name}"


def _drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the real server, dropped afterwards."""
    url = _create_pg_database()
    yield url
    _drop_pg_database(url)


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()
