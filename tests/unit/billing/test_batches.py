"""A billing run reads, prices and writes accounts in batches: the outcome is the same as one account at a time,
in the same order, and the number of statements does not grow with the number of accounts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import pytest
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session

from openami.billing import service as billing_service
from openami.billing.interfaces import AccountOutcome, Outcome
from openami.billing.service import BillingService
from openami.ledger.service import LedgerService
from openami.readings.models import IntervalReading
from openami.registry.service import RegistryService
from tests.sql_statements import statements
from tests.unit.billing.conftest import FEB, JAN
from tests.unit.billing.world import (
    TOU,
    Customer,
    hourly_wh,
    household,
    make_customer,
    make_site,
    write_intervals,
)


def _world(
    db: Session, registry: RegistryService, billing: BillingService, accounts: int, code: str = "BAT"
) -> list[Customer]:
    site = make_site(db, registry, code)
    tariff = billing.store_tariff(db, site_id=site.id, code="TOU", document=TOU)
    out = []
    for n in range(accounts):
        customer = make_customer(db, registry, site, f"{code}{n:02d}")
        billing.assign_tariff(
            db, account_id=customer.account.id, tariff_id=tariff.id, effective_from=date(2025, 12, 1)
        )
        write_intervals(db, customer.meter, hourly_wh(JAN, FEB, lambda h, n=n: household(h + n)))
        out.append(customer)
    db.commit()
    return out


def test_batches_bill_as_one_account_at_a_time_would_in_the_same_order(
    db: Session,
    registry: RegistryService,
    billing: BillingService,
    ledger: LedgerService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    customers = _world(db, registry, billing, 7)
    site_id = customers[0].account.site_id
    # One account billed before the run (already billed), one without readings (not billed), in other batches.
    billing.run_billing(db, site_id, JAN, FEB, account_ids={customers[4].account.id})
    db.execute(delete(IntervalReading).where(IntervalReading.meter_id == customers[1].meter.id))
    one_by_one = {}
    for customer in customers:
        if customer is customers[4]:
            continue
        monkeypatch.setattr(billing_service, "_BATCH", 1)
        nested = db.begin_nested()
        report = billing.run_billing(db, site_id, JAN, FEB, account_ids={customer.account.id})
        (outcome,) = report.accounts
        one_by_one[customer.account.id] = (outcome.outcome, outcome.bill and outcome.bill.lines)
        nested.rollback()

    monkeypatch.setattr(billing_service, "_BATCH", 3)
    report = billing.run_billing(db, site_id, JAN, FEB)

    assert [a.account_id for a in report.accounts] == [c.account.id for c in customers]
    assert [a.outcome for a in report.accounts] == [
        Outcome.BILLED,
        Outcome.NOT_BILLED,
        Outcome.BILLED,
        Outcome.BILLED,
        Outcome.ALREADY_BILLED,
        Outcome.BILLED,
        Outcome.BILLED,
    ]
    for outcome in report.accounts:
        if outcome.account_id in one_by_one:
            assert (outcome.outcome, outcome.bill and outcome.bill.lines) == one_by_one[outcome.account_id]
    # What the run returns is what it stored, and every bill has its own journal on the account's receivable.
    for outcome in report.accounts:
        if outcome.bill is not None:
            assert billing.get_bill(db, outcome.bill.id) == outcome.bill
            journal = ledger.get_journal(db, outcome.bill.journal_id)
            assert journal.external_reference == f"bill:{outcome.account_id}:{JAN.isoformat()}"
    assert ledger.check(db).ok


def test_the_statements_of_a_run_do_not_grow_with_its_accounts(
    db: Session, registry: RegistryService, billing: BillingService, billing_engine: Engine
) -> None:
    few = _world(db, registry, billing, 2, "FEW")
    many = _world(db, registry, billing, 12, "MNY")

    with statements(billing_engine) as for_few:
        assert {a.outcome for a in billing.run_billing(db, few[0].account.site_id, JAN, FEB).accounts} == {
            Outcome.BILLED
        }
    with statements(billing_engine) as for_many:
        assert {a.outcome for a in billing.run_billing(db, many[0].account.site_id, JAN, FEB).accounts} == {
            Outcome.BILLED
        }

    assert len(for_many) == len(for_few), "\n".join(s.split("\n")[0][:90] for s in for_many)


def test_a_run_committed_per_batch_and_broken_off_is_finished_by_running_it_again(
    db: Session,
    registry: RegistryService,
    billing: BillingService,
    ledger: LedgerService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    customers = _world(db, registry, billing, 5)
    site_id = customers[0].account.site_id
    monkeypatch.setattr(billing_service, "_BATCH", 2)
    batches: list[list[Outcome]] = []

    def commit_then_fail_on_the_second(outcomes: Sequence[AccountOutcome]) -> None:
        batches.append([o.outcome for o in outcomes])
        db.commit()
        if len(batches) == 2:
            raise RuntimeError("the process was stopped")

    with pytest.raises(RuntimeError):
        billing.run_billing(db, site_id, JAN, FEB, after_batch=commit_then_fail_on_the_second)
    db.rollback()
    assert batches == [[Outcome.BILLED] * 2] * 2

    report = billing.run_billing(db, site_id, JAN, FEB, after_batch=lambda _: db.commit())

    assert [a.outcome for a in report.accounts] == [Outcome.ALREADY_BILLED] * 4 + [Outcome.BILLED]
    assert all(billing.bills_for_account(db, c.account.id) for c in customers)
    assert ledger.check(db).ok
