"""Wallet tests run on a SQLite database built by the migrations (the ledger's guards in force), with a clock
in February 2026, a small site on billing's time-of-use tariff and prepaid accounts with January's readings.

Fixture names start with `wallet_`: the payments and tokens tests in this folder keep the shared `clock`,
`db` and `registry` of tests/conftest.py or their own."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from openami.billing.service import BillingService
from openami.common.clock import ManualClock
from openami.ledger.service import LedgerService
from openami.prepayment.wallet import WalletService
from openami.registry.service import RegistryService
from openami.security.audit import AuditLog
from openami.security.meter_keys import MeterKeyCipher
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory
from tests.unit.billing.world import TOU, hourly_wh, household, make_site, write_intervals
from tests.unit.prepayment.wallet_world import FEB, JAN, PrepaidSite, make_prepaid_customer


@pytest.fixture
def wallet_clock() -> ManualClock:
    return ManualClock(datetime(2026, 2, 10, 12, 0, tzinfo=UTC))


@pytest.fixture
def wallet_engine(sqlite_url: str) -> Iterator[Engine]:
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def wallet_factory(wallet_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(wallet_engine)


@pytest.fixture
def wallet_db(wallet_factory: sessionmaker[Session]) -> Iterator[Session]:
    with wallet_factory() as session:
        yield session


@pytest.fixture
def wallet_registry(wallet_clock: ManualClock, meter_keys: MeterKeyCipher) -> RegistryService:
    return RegistryService(wallet_clock, meter_keys)


@pytest.fixture
def wallet_ledger(wallet_clock: ManualClock, wallet_registry: RegistryService) -> LedgerService:
    return LedgerService(wallet_clock, wallet_registry)


@pytest.fixture
def wallet_billing(
    wallet_clock: ManualClock, wallet_registry: RegistryService, wallet_ledger: LedgerService
) -> BillingService:
    return BillingService(wallet_clock, wallet_registry, wallet_ledger)


@pytest.fixture
def wallets(
    wallet_clock: ManualClock,
    wallet_registry: RegistryService,
    wallet_ledger: LedgerService,
    wallet_billing: BillingService,
) -> WalletService:
    return WalletService(wallet_clock, wallet_registry, wallet_ledger, wallet_billing, AuditLog(wallet_clock))


@pytest.fixture
def wallet_site(
    wallet_db: Session,
    wallet_registry: RegistryService,
    wallet_billing: BillingService,
    wallets: WalletService,
) -> PrepaidSite:
    """Two prepaid accounts with wallets charging from 1 January on the time-of-use tariff (a daily charge, an
    export credit, VAT), with January's hourly readings."""
    db = wallet_db
    info = make_site(db, wallet_registry)
    tariff = wallet_billing.store_tariff(db, site_id=info.id, code="TOU", document=TOU)
    customers = []
    for n, number in enumerate(("P1", "P2")):
        customer = make_prepaid_customer(db, wallet_registry, info, number)
        wallet_billing.assign_tariff(
            db, account_id=customer.account.id, tariff_id=tariff.id, effective_from=date(2025, 12, 1)
        )
        write_intervals(db, customer.meter, hourly_wh(JAN, FEB, lambda h, n=n: household(h + 5 * n)))
        wallets.open_wallet(db, customer.account.id, charge_from=JAN, actor="test", role="admin")
        customers.append(customer)
    db.commit()
    return PrepaidSite(info, customers[0], customers[1], tariff.id)
