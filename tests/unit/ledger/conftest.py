"""Ledger tests run on a SQLite database built by the migrations, so the database's own guards are in force."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.ledger.service import LedgerService
from openami.registry.service import RegistryService
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory


@pytest.fixture
def ledger_engine(sqlite_url: str) -> Iterator[Engine]:
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(ledger_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(ledger_engine)


@pytest.fixture
def registry(clock: ManualClock) -> RegistryService:
    return RegistryService(clock)


@pytest.fixture
def ledger(clock: ManualClock, registry: RegistryService) -> LedgerService:
    return LedgerService(clock, registry)
