"""A billing run on real PostgreSQL, built by the migrations (the ledger's deferred guards check each journal at
commit): bills agree with the pricing core, the ledger balances, a second run bills nothing, a rebill reverses."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from openami.billing.interfaces import BillStatus, Outcome
from openami.billing.models import BillRecord
from openami.billing.service import BillingService
from openami.common.clock import ManualClock
from openami.ledger.service import LedgerService
from openami.registry.service import RegistryService
from openami.security.meter_keys import MeterKeyCipher
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory, unit_of_work
from openami.tariffs.native import parse_tariff
from openami.tariffs.pricing import bill_periods
from tests.unit.billing.world import (
    TOU,
    hourly_wh,
    household,
    load_of,
    make_customer,
    make_site,
    write_intervals,
)

pytestmark = pytest.mark.integration

JAN, FEB = date(2026, 1, 1), date(2026, 2, 1)


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


def test_a_billing_run_on_postgres(engine: Engine, meter_keys: MeterKeyCipher) -> None:
    clock = ManualClock(datetime(2026, 2, 10, tzinfo=UTC))
    registry = RegistryService(clock, meter_keys)
    ledger = LedgerService(clock, registry)
    billing = BillingService(clock, registry, ledger)
    factory: sessionmaker[Session] = make_session_factory(engine)
    with unit_of_work(factory) as session:
        site = make_site(session, registry)
        customers = [make_customer(session, registry, site, n) for n in ("A1", "A2", "A3")]
        tariff = billing.store_tariff(session, site_id=site.id, code="TOU", document=TOU)
        for customer in customers:
            write_intervals(session, customer.meter, hourly_wh(JAN, FEB, household))
        for customer in customers[:2]:
            billing.assign_tariff(
                session, account_id=customer.account.id, tariff_id=tariff.id, effective_from=JAN
            )

    with unit_of_work(factory) as session:
        report = billing.run_billing(session, site.id, JAN, FEB)
    with unit_of_work(factory) as session:
        again = billing.run_billing(session, site.id, JAN, FEB)

    assert [o.outcome for o in report.accounts] == [Outcome.BILLED, Outcome.BILLED, Outcome.NOT_BILLED]
    assert [o.outcome for o in again.accounts] == [
        Outcome.ALREADY_BILLED,
        Outcome.ALREADY_BILLED,
        Outcome.NOT_BILLED,
    ]
    (expected,) = bill_periods(parse_tariff(TOU), load_of(hourly_wh(JAN, FEB, household)), [(JAN, FEB)])
    first = report.accounts[0].bill
    assert first is not None
    assert first.total_minor == int(expected.total() * 100)

    with unit_of_work(factory) as session:
        second = billing.rebill(session, first.id, "tariff applied twice in error")
    with factory() as session:
        assert ledger.check(session).ok
        assert ledger.trial_balance(session, site.id).balanced
        assert billing.get_bill(session, first.id).status is BillStatus.REVERSED
        assert second.total_minor == first.total_minor  # the same readings: the same bill again
        assert session.scalar(select(func.count()).select_from(BillRecord)) == 3
        receivables = {
            a.customer_account_id: ledger.balance(session, a.id)
            for a in ledger.list_accounts(session, site.id)
            if a.purpose == "receivable"
        }
        assert receivables == {c.account.id: first.total_minor for c in customers[:2]}
