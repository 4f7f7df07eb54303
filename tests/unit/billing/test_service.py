"""Billing runs on SQLite: bills agree with the pricing core, post balanced journals, run once, are corrected by
reversal, and refuse (report, write nothing for) accounts without a tariff or with missing intervals."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from openami.billing.interfaces import BillStatus, Outcome
from openami.billing.models import BillLineRecord, BillRecord
from openami.billing.service import BillingService
from openami.common.clock import ManualClock
from openami.common.errors import ConflictError, ValidationError
from openami.common.obis import ACTIVE_EXPORT_INTERVAL, ACTIVE_IMPORT_INTERVAL
from openami.ledger.interfaces import AccountPurpose
from openami.ledger.models import Journal, LedgerAccount
from openami.ledger.service import LedgerService
from openami.readings.models import IntervalReading
from openami.registry.service import RegistryService
from openami.tariffs.native import parse_tariff
from openami.tariffs.pricing import bill_periods
from tests.unit.billing.conftest import FEB, JAN, Site
from tests.unit.billing.world import (
    FLAT,
    TOU,
    hourly_wh,
    household,
    load_of,
    local_midnight,
    make_customer,
    solar,
    write_intervals,
)


def _minor(amount: Decimal) -> int:
    return int(amount * 100)


def _count(db: Session, model: type) -> int:
    return int(db.scalar(select(func.count()).select_from(model)) or 0)


def _receivable(db: Session, ledger: LedgerService, site: Site, account_id: int) -> int:
    found = db.scalar(
        select(LedgerAccount.id).where(
            LedgerAccount.purpose == AccountPurpose.RECEIVABLE.value,
            LedgerAccount.customer_account_id == account_id,
        )
    )
    assert found is not None
    return ledger.balance(db, found)


def test_bills_agree_with_the_pricing_core_on_the_same_load(
    db: Session, billing: BillingService, site: Site
) -> None:
    report = billing.run_billing(db, site.info.id, JAN, FEB)
    db.commit()

    assert [(a.account_number, a.outcome) for a in report.accounts] == [
        ("A1", Outcome.BILLED),
        ("A2", Outcome.BILLED),
    ]
    tariff = parse_tariff(TOU)
    loads = {
        "A1": load_of(hourly_wh(JAN, FEB, household)),
        "A2": load_of(hourly_wh(JAN, FEB, lambda n: household(n + 3)), hourly_wh(JAN, FEB, solar)),
    }
    for outcome in report.accounts:
        bill = outcome.bill
        assert bill is not None
        (expected,) = bill_periods(tariff, loads[outcome.account_number], [(JAN, FEB)])
        assert [
            (ln.component, ln.description, ln.quantity, ln.unit_price, ln.amount_minor) for ln in bill.lines
        ] == [
            (ln.component.value, ln.description, ln.quantity, ln.unit_price, _minor(ln.amount))
            for ln in expected.lines
        ]
        assert bill.total_minor == _minor(expected.total())
        assert bill.import_wh == int(expected.import_kwh * 1000)
        assert (bill.period_start, bill.period_end, bill.currency, bill.status) == (
            JAN,
            FEB,
            "KES",
            BillStatus.ISSUED,
        )
        assert billing.get_bill(db, bill.id) == bill  # what was stored reads back exactly
    sunny = report.accounts[1].bill
    assert sunny is not None
    assert sunny.export_wh == 31 * 6 * 800
    assert any(ln.component == "export" and ln.amount_minor < 0 for ln in sunny.lines)


def test_the_ledger_balances_and_the_receivable_is_the_bill_total(
    db: Session, billing: BillingService, ledger: LedgerService, site: Site
) -> None:
    report = billing.run_billing(db, site.info.id, JAN, FEB)
    db.commit()

    assert ledger.trial_balance(db, site.info.id).balanced
    assert ledger.check(db).ok
    for outcome in report.accounts:
        bill = outcome.bill
        assert bill is not None
        assert bill.journal_id is not None
        assert _receivable(db, ledger, site, outcome.account_id) == bill.total_minor
        journal = ledger.get_journal(db, bill.journal_id)
        assert journal.external_reference == f"bill:{outcome.account_id}:2026-01-01"
    balances = {a.code: ledger.balance(db, a.id) for a in ledger.list_accounts(db, site.info.id)}
    lines = [ln for o in report.accounts if o.bill for ln in o.bill.lines]
    assert balances["revenue.energy"] == -sum(ln.amount_minor for ln in lines if ln.component == "energy")
    assert balances["revenue.fixed"] == -sum(ln.amount_minor for ln in lines if ln.component == "fixed")
    assert (
        balances["revenue.export_credit"]
        == -sum(ln.amount_minor for ln in lines if ln.component == "export")
        > 0
    )
    assert balances["tax_payable/VAT"] == -sum(ln.amount_minor for ln in lines if ln.component == "tax") < 0


def test_running_twice_bills_once(db: Session, billing: BillingService, site: Site) -> None:
    billing.run_billing(db, site.info.id, JAN, FEB)
    db.commit()
    counts = (_count(db, BillRecord), _count(db, BillLineRecord), _count(db, Journal))

    again = billing.run_billing(db, site.info.id, JAN, FEB)
    db.commit()

    assert [a.outcome for a in again.accounts] == [Outcome.ALREADY_BILLED] * 2
    assert (_count(db, BillRecord), _count(db, BillLineRecord), _count(db, Journal)) == counts


def test_an_overlapping_period_is_reported_not_billed(
    db: Session, billing: BillingService, site: Site
) -> None:
    billing.run_billing(db, site.info.id, JAN, FEB)
    report = billing.run_billing(db, site.info.id, date(2026, 1, 15), date(2026, 2, 5))
    assert {a.outcome for a in report.accounts} == {Outcome.NOT_BILLED}
    assert "overlaps bill" in report.accounts[0].reason


def test_rebill_reverses_and_bills_again_from_the_readings_of_now(
    db: Session, billing: BillingService, ledger: LedgerService, site: Site, clock: ManualClock
) -> None:
    first = billing.run_billing(db, site.info.id, JAN, FEB).accounts[0].bill
    db.commit()
    assert first is not None
    # A reading was wrong: an operator edits one evening hour from 1.3 kWh to 10.3 kWh.
    hour = local_midnight(date(2026, 1, 5)) + timedelta(hours=19)
    db.execute(
        update(IntervalReading)
        .where(IntervalReading.meter_id == site.home.meter.id, IntervalReading.interval_start == hour)
        .values(energy_wh=IntervalReading.energy_wh + 9000, quality="edited")
    )
    clock.advance(timedelta(days=1))

    second = billing.rebill(db, first.id, "meter read corrected")
    db.commit()

    old = billing.get_bill(db, first.id)
    assert old.status is BillStatus.REVERSED
    assert second.replaces_bill_id == first.id
    assert second.status is BillStatus.ISSUED
    assert second.import_wh == first.import_wh + 9000
    # 9 kWh more at the weekday peak price (Monday 5 January, 19:00), plus 16 % VAT on it.
    assert second.total_minor - first.total_minor == pytest.approx(9 * 2550 * 1.16, abs=1)
    assert _receivable(db, ledger, site, site.home.account.id) == second.total_minor
    assert first.journal_id is not None
    reversal = db.scalar(select(Journal).where(Journal.reverses_journal_id == first.journal_id))
    assert reversal is not None
    assert "meter read corrected" in reversal.memo
    assert ledger.check(db).ok
    assert ledger.trial_balance(db, site.info.id).balanced
    # The corrected bill is the one a new run finds; a reversed bill cannot be corrected twice.
    again = billing.run_billing(db, site.info.id, JAN, FEB)
    assert again.accounts[0].outcome is Outcome.ALREADY_BILLED
    assert again.accounts[0].reason == f"bill {second.id}"
    with pytest.raises(ConflictError, match="already reversed"):
        billing.rebill(db, first.id, "again")


def test_rebill_that_cannot_bill_the_period_now_changes_nothing(
    db: Session, billing: BillingService, site: Site
) -> None:
    bill = billing.run_billing(db, site.info.id, JAN, FEB).accounts[0].bill
    db.commit()
    assert bill is not None
    db.execute(
        delete(IntervalReading).where(
            IntervalReading.meter_id == site.home.meter.id,
            IntervalReading.interval_start == local_midnight(JAN),
        )
    )
    journals = _count(db, Journal)
    with pytest.raises(ValidationError, match="lacks 1 of 744 import intervals"):
        billing.rebill(db, bill.id, "re-read")
    assert billing.get_bill(db, bill.id).status is BillStatus.ISSUED
    assert _count(db, Journal) == journals


def test_an_account_without_a_tariff_is_reported_and_gets_nothing(
    db: Session, billing: BillingService, registry: RegistryService, ledger: LedgerService, site: Site
) -> None:
    stray = make_customer(db, registry, site.info, "A3")
    write_intervals(db, stray.meter, hourly_wh(JAN, FEB, household))

    report = billing.run_billing(db, site.info.id, JAN, FEB)
    db.commit()

    outcome = report.accounts[2]
    assert (outcome.account_number, outcome.outcome) == ("A3", Outcome.NOT_BILLED)
    assert outcome.reason == "no tariff in force on 2026-01-01"
    assert billing.bills_for_account(db, stray.account.id) == []
    assert (
        db.scalar(select(LedgerAccount).where(LedgerAccount.customer_account_id == stray.account.id)) is None
    )
    assert report.count(Outcome.BILLED) == 2


def test_a_tariff_from_later_in_the_period_is_not_in_force(
    db: Session, billing: BillingService, registry: RegistryService, site: Site
) -> None:
    late = make_customer(db, registry, site.info, "A3")
    write_intervals(db, late.meter, hourly_wh(JAN, FEB, household))
    billing.assign_tariff(
        db, account_id=late.account.id, tariff_id=site.tariff_id, effective_from=date(2026, 1, 10)
    )
    report = billing.run_billing(db, site.info.id, JAN, FEB)
    assert (
        report.accounts[2].reason == "no tariff in force on 2026-01-01 (its first tariff starts 2026-01-10)"
    )


def test_missing_intervals_are_reported_and_nothing_is_written(
    db: Session, billing: BillingService, ledger: LedgerService, site: Site
) -> None:
    gap = local_midnight(date(2026, 1, 20)) + timedelta(hours=3)
    db.execute(
        delete(IntervalReading).where(
            IntervalReading.meter_id == site.solar.meter.id,
            IntervalReading.obis == ACTIVE_IMPORT_INTERVAL,
            IntervalReading.interval_start >= gap,
            IntervalReading.interval_start < gap + timedelta(hours=2),
        )
    )
    report = billing.run_billing(db, site.info.id, JAN, FEB)

    outcome = report.accounts[1]
    assert outcome.outcome is Outcome.NOT_BILLED
    assert outcome.reason.startswith(
        f"meter KSM-M-A2 lacks 2 of 744 import intervals in the period (the first at {gap.isoformat()})"
    )
    assert billing.bills_for_account(db, site.solar.account.id) == []
    assert report.accounts[0].outcome is Outcome.BILLED


def test_missing_export_intervals_count_once_the_meter_reports_export(
    db: Session, billing: BillingService, site: Site
) -> None:
    db.execute(
        delete(IntervalReading).where(
            IntervalReading.meter_id == site.solar.meter.id,
            IntervalReading.obis == ACTIVE_EXPORT_INTERVAL,
            IntervalReading.interval_start == local_midnight(date(2026, 1, 31)),
        )
    )
    report = billing.run_billing(db, site.info.id, JAN, FEB)
    assert "lacks 1 of 744 export intervals" in report.accounts[1].reason


def test_estimated_intervals_are_counted_and_said_on_the_lines(
    db: Session, billing: BillingService, site: Site
) -> None:
    first = local_midnight(date(2026, 1, 7))
    db.execute(
        update(IntervalReading)
        .where(
            IntervalReading.meter_id == site.home.meter.id,
            IntervalReading.interval_start >= first,
            IntervalReading.interval_start < first + timedelta(hours=5),
        )
        .values(quality="estimated")
    )
    bills = billing.run_billing(db, site.info.id, JAN, FEB).accounts
    home, sunny = bills[0].bill, bills[1].bill
    assert home is not None
    assert sunny is not None
    assert (home.intervals_estimated, sunny.intervals_estimated) == (5, 0)
    energy = [ln for ln in home.lines if ln.component == "energy"]
    assert energy
    assert all(ln.description.endswith("(includes 5 estimated intervals)") for ln in energy)
    assert not any("estimated" in ln.description for ln in home.lines if ln.component in ("fixed", "tax"))
    assert not any("estimated" in ln.description for ln in sunny.lines)


def test_a_tariff_change_inside_the_period_prices_each_part_with_its_own(
    db: Session, billing: BillingService, site: Site
) -> None:
    flat = billing.store_tariff(db, site_id=site.info.id, code="FLAT", document=FLAT)
    billing.assign_tariff(
        db, account_id=site.home.account.id, tariff_id=flat.id, effective_from=date(2026, 1, 16)
    )
    bill = billing.run_billing(db, site.info.id, JAN, FEB).accounts[0].bill
    assert bill is not None

    load = load_of(hourly_wh(JAN, FEB, household))
    (first,) = bill_periods(parse_tariff(TOU), load, [(JAN, date(2026, 1, 16))])
    (second,) = bill_periods(parse_tariff(FLAT), load, [(date(2026, 1, 16), FEB)])
    assert [ln.description for ln in bill.lines] == [ln.description for ln in first.lines + second.lines]
    assert bill.total_minor == _minor(first.total() + second.total())


def test_a_period_not_over_yet_or_empty_is_refused(db: Session, billing: BillingService, site: Site) -> None:
    with pytest.raises(ValidationError, match="not over yet"):
        billing.run_billing(db, site.info.id, FEB, date(2026, 3, 1))
    with pytest.raises(ValidationError, match="must end after it starts"):
        billing.run_billing(db, site.info.id, FEB, FEB)
    assert _count(db, BillRecord) == 0


def test_tariffs_are_checked_against_the_site_and_never_change(
    db: Session, billing: BillingService, site: Site
) -> None:
    with pytest.raises(ValidationError, match=r"tariff 'USD'.currency: the tariff is in USD"):
        billing.store_tariff(db, site_id=site.info.id, code="USD", document={**FLAT, "currency": "USD"})
    with pytest.raises(ValidationError, match=r"tariff 'NY'.timezone"):
        billing.store_tariff(
            db, site_id=site.info.id, code="NY", document={**FLAT, "timezone": "America/New_York"}
        )
    with pytest.raises(ValidationError, match=r"tariff 'BAD'.energy: no price for all_year/any"):
        billing.store_tariff(db, site_id=site.info.id, code="BAD", document={**FLAT, "energy": {}})
    assert billing.store_tariff(db, site_id=site.info.id, code="TOU", document=TOU).id == site.tariff_id
    with pytest.raises(ConflictError, match="never changes"):
        billing.store_tariff(db, site_id=site.info.id, code="TOU", document=FLAT)
    with pytest.raises(ValidationError, match="tariff code"):
        billing.store_tariff(db, site_id=site.info.id, code="bad code", document=FLAT)


def test_assignments_and_cycles_are_checked(
    db: Session, billing: BillingService, registry: RegistryService, site: Site
) -> None:
    other = registry.create_site(
        db, code="OTH", name="Other", timezone="Africa/Nairobi", currency="KES", holiday_country="KE"
    )
    foreign = billing.store_tariff(db, site_id=other.id, code="TOU", document=TOU)
    account = site.home.account.id
    with pytest.raises(ValidationError, match=f"no tariff with id {foreign.id} in site {site.info.id}"):
        billing.assign_tariff(db, account_id=account, tariff_id=foreign.id, effective_from=JAN)
    billing.assign_tariff(
        db, account_id=account, tariff_id=site.tariff_id, effective_from=date(2025, 12, 1)
    )  # again
    flat = billing.store_tariff(db, site_id=site.info.id, code="FLAT", document=FLAT)
    with pytest.raises(ConflictError, match="already on tariff"):
        billing.assign_tariff(db, account_id=account, tariff_id=flat.id, effective_from=date(2025, 12, 1))
    for bad in (0, 29, True):
        with pytest.raises(ValidationError, match="cycle_day"):
            billing.set_bill_cycle(db, account_id=account, cycle_day=bad)
    assert billing.cycle_day(db, account) == 1
    billing.set_bill_cycle(db, account_id=account, cycle_day=15)
    assert billing.cycle_day(db, account) == 15
