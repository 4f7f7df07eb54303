"""Billing tests run on a SQLite database built by the migrations (the ledger's own guards in force), with a
clock in February 2026 and January 2026's readings of a small site."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from openami.billing.service import BillingService
from openami.common.clock import ManualClock
from openami.common.obis import ACTIVE_EXPORT_INTERVAL
from openami.ledger.service import LedgerService
from openami.registry.interfaces import SiteInfo
from openami.registry.service import RegistryService
from openami.security.meter_keys import MeterKeyCipher
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory
from tests.unit.billing.world import (
    TOU,
    Customer,
    hourly_wh,
    household,
    make_customer,
    make_site,
    solar,
    write_intervals,
)

JAN, FEB = date(2026, 1, 1), date(2026, 2, 1)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 2, 10, 12, 0, tzinfo=UTC))


@pytest.fixture
def billing_engine(sqlite_url: str) -> Iterator[Engine]:
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(billing_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(billing_engine)


@pytest.fixture
def db(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session:
        yield session


@pytest.fixture
def registry(clock: ManualClock, meter_keys: MeterKeyCipher) -> RegistryService:
    return RegistryService(clock, meter_keys)


@pytest.fixture
def ledger(clock: ManualClock, registry: RegistryService) -> LedgerService:
    return LedgerService(clock, registry)


@pytest.fixture
def billing(clock: ManualClock, registry: RegistryService, ledger: LedgerService) -> BillingService:
    return BillingService(clock, registry, ledger)


@dataclass(frozen=True)
class Site:
    info: SiteInfo
    home: Customer  # imports only
    solar: Customer  # imports and exports
    tariff_id: int


@pytest.fixture
def site(db: Session, registry: RegistryService, billing: BillingService) -> Site:
    """Two accounts on the time-of-use tariff from 2025-12-01, with January's readings; the second exports."""
    info = make_site(db, registry)
    home = make_customer(db, registry, info, "A1")
    sunny = make_customer(db, registry, info, "A2")
    tariff = billing.store_tariff(db, site_id=info.id, code="TOU", document=TOU)
    for customer in (home, sunny):
        billing.assign_tariff(
            db, account_id=customer.account.id, tariff_id=tariff.id, effective_from=date(2025, 12, 1)
        )
    write_intervals(db, home.meter, hourly_wh(JAN, FEB, household))
    write_intervals(db, sunny.meter, hourly_wh(JAN, FEB, lambda n: household(n + 3)))
    write_intervals(db, sunny.meter, hourly_wh(JAN, FEB, solar), obis=ACTIVE_EXPORT_INTERVAL)
    db.commit()
    return Site(info, home, sunny, tariff.id)
