"""The wallet service on a migrated SQLite database: the balance is the ledger's, charging is incremental and
idempotent, a cycle's prepaid charges add up to the postpaid bill of the same readings, top-ups recover debt,
and the decisions relay control and notifications act on."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from openami.billing.interfaces import Outcome
from openami.billing.service import BillingService
from openami.common.clock import ManualClock
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.ledger.interfaces import AccountPurpose, JournalKind, NewPosting
from openami.ledger.service import LedgerService
from openami.prepayment.credit import CreditAction, CreditRules, FriendlyHours
from openami.prepayment.interfaces import ChargeOutcome
from openami.prepayment.models import PrepaidCharge, PrepaidChargeLine
from openami.prepayment.wallet import WalletService
from openami.registry.models import Account
from openami.security.audit import AuditEntry
from tests.unit.billing.world import hourly_wh, household, local_midnight, write_intervals
from tests.unit.prepayment.wallet_world import FEB, JAN, PrepaidSite, make_prepaid_customer, top_up

MID_JAN = local_midnight(JAN + timedelta(days=15))
_COMPONENT_PURPOSE = {
    "energy": AccountPurpose.REVENUE_ENERGY.value,
    "fixed": AccountPurpose.REVENUE_FIXED.value,
    "export": AccountPurpose.EXPORT_CREDIT.value,
}


def _ledger_balance(db: Session, ledger: LedgerService, wallets: WalletService, account_id: int) -> int:
    return ledger.balance(db, wallets.get_wallet(db, account_id).ledger_account_id)


def test_the_balance_is_the_ledgers(
    wallet_db: Session, wallets: WalletService, wallet_ledger: LedgerService, wallet_site: PrepaidSite
) -> None:
    account = wallet_site.first.account.id
    assert wallets.balance_minor(wallet_db, account) == 0
    top_up(wallet_db, wallet_ledger, wallet_site.info, account, 2000_00, local_midnight(JAN))
    assert wallets.balance_minor(wallet_db, account) == 2000_00
    result = wallets.charge_to(wallet_db, account, MID_JAN)
    assert result.outcome is ChargeOutcome.CHARGED
    assert result.amount_minor > 0
    info = wallets.get_wallet(wallet_db, account)
    assert info.balance_minor == 2000_00 - result.amount_minor
    assert info.balance_minor == -_ledger_balance(wallet_db, wallet_ledger, wallets, account)
    assert info.charged_until == MID_JAN
    # An earlier instant of the ledger gives the balance then.
    assert wallets.balance_minor(wallet_db, account, as_of=MID_JAN - timedelta(seconds=1)) == 2000_00


def test_charging_is_incremental_and_idempotent(
    wallet_db: Session, wallets: WalletService, wallet_site: PrepaidSite
) -> None:
    account = wallet_site.first.account.id
    step = [local_midnight(JAN) + timedelta(hours=h) for h in (5, 30, 30, 200, 200, 24 * 31)]
    total = 0
    for n, until in enumerate(step):
        result = wallets.charge_to(wallet_db, account, until)
        if n and until == step[n - 1]:
            assert result.outcome is ChargeOutcome.UP_TO_DATE
            assert result.journal_ids == ()
        else:
            assert result.outcome is ChargeOutcome.CHARGED
        total += result.amount_minor
    assert wallets.balance_minor(wallet_db, account) == -total
    charges = wallet_db.scalars(select(PrepaidCharge).where(PrepaidCharge.account_id == account)).all()
    assert [c.seq for c in charges] == [1, 2, 3, 4]
    assert sum(c.amount_minor for c in charges) == total
    # Once charged to the end of January, charging January again changes nothing.
    again = wallets.charge_to(wallet_db, account, local_midnight(FEB))
    assert again.outcome is ChargeOutcome.UP_TO_DATE


def test_a_cycles_prepaid_charges_equal_the_postpaid_bill(
    wallet_db: Session,
    wallets: WalletService,
    wallet_billing: BillingService,
    wallet_site: PrepaidSite,
) -> None:
    """Charged at many instants (mid-day, mid-hour, across days), January's charges add up, per ledger account,
    to January's bill of the same readings: energy by period, the daily charge, export credit, VAT."""
    account = wallet_site.first.account.id
    instants = [local_midnight(JAN) + timedelta(hours=h, minutes=17 * (h % 3)) for h in range(7, 24 * 31, 41)]
    for until in [*instants, local_midnight(FEB)]:
        wallets.charge_to(wallet_db, account, until)
    # The same account's readings billed as a postpaid account's would be (billing runs leave prepaid ones out).
    wallet_db.execute(update(Account).where(Account.id == account).values(kind="postpaid"))
    report = wallet_billing.run_billing(wallet_db, wallet_site.info.id, JAN, FEB, account_ids={account})
    [outcome] = report.accounts
    assert outcome.outcome is Outcome.BILLED
    assert outcome.bill is not None
    billed: dict[tuple[str, str], int] = defaultdict(int)
    for line in outcome.bill.lines:
        key = (
            ("tax_payable", line.description)
            if line.component == "tax"
            else (_COMPONENT_PURPOSE[line.component], "")
        )
        billed[key] += line.amount_minor
    charged: dict[tuple[str, str], int] = defaultdict(int)
    rows = wallet_db.execute(
        select(PrepaidChargeLine.purpose, PrepaidChargeLine.name, PrepaidChargeLine.amount_minor)
        .join(PrepaidCharge, PrepaidCharge.id == PrepaidChargeLine.charge_id)
        .where(PrepaidCharge.account_id == account)
    )
    for purpose, name, amount in rows:
        charged[purpose, name] += amount
    assert set(billed) == set(charged)
    lines = len(outcome.bill.lines)
    for key, amount in billed.items():
        assert abs(charged[key] - amount) <= lines, key
    assert wallets.balance_minor(wallet_db, account) == -outcome.bill.total_minor


def test_late_readings_are_charged_by_the_next_charge(
    wallet_db: Session, wallets: WalletService, wallet_registry, wallet_site: PrepaidSite
) -> None:
    customer = make_prepaid_customer(wallet_db, wallet_registry, wallet_site.info, "P3")
    wallets.open_wallet(wallet_db, customer.account.id, charge_from=JAN, actor="test", role="admin")
    from openami.billing.models import AccountTariff

    wallet_db.add(
        AccountTariff(
            account_id=customer.account.id, tariff_id=wallet_site.tariff_id,
            effective_from=JAN, created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )  # fmt: skip
    hours = hourly_wh(JAN, FEB, household)
    write_intervals(wallet_db, customer.meter, hours[:100])
    first = wallets.charge_to(wallet_db, customer.account.id, MID_JAN)
    write_intervals(wallet_db, customer.meter, hours[100:])  # arrive late, before MID_JAN and after
    second = wallets.charge_to(wallet_db, customer.account.id, MID_JAN + timedelta(hours=1))
    assert second.amount_minor > first.amount_minor  # 260 late hours, not one
    wallets.charge_to(wallet_db, customer.account.id, local_midnight(FEB))
    same = wallets.charge_to(wallet_db, wallet_site.second.account.id, local_midnight(FEB))
    assert same.outcome is ChargeOutcome.CHARGED


def test_charge_site_charges_every_wallet_and_reports_those_it_cannot(
    wallet_db: Session, wallets: WalletService, wallet_registry, wallet_site: PrepaidSite
) -> None:
    lonely = make_prepaid_customer(wallet_db, wallet_registry, wallet_site.info, "P9")  # no tariff
    wallets.open_wallet(wallet_db, lonely.account.id, charge_from=JAN, actor="test", role="admin")
    batches = []
    report = wallets.charge_site(wallet_db, wallet_site.info.id, MID_JAN, after_batch=batches.append)
    assert report.count(ChargeOutcome.CHARGED) == 2
    [refused] = [r for r in report.results if r.outcome is ChargeOutcome.NOT_CHARGED]
    assert refused.account_id == lonely.account.id
    assert "no tariff in force" in refused.reason
    assert len(batches) == 1
    one = wallets.charge_to(wallet_db, wallet_site.first.account.id, MID_JAN)
    assert one.outcome is ChargeOutcome.UP_TO_DATE
    again = wallets.charge_site(wallet_db, wallet_site.info.id, MID_JAN)
    assert again.count(ChargeOutcome.CHARGED) == 0
    assert again.amount_minor == 0


def test_refusals(
    wallet_db: Session,
    wallets: WalletService,
    wallet_clock: ManualClock,
    wallet_registry,
    wallet_site: PrepaidSite,
) -> None:
    account = wallet_site.first.account.id
    with pytest.raises(ValidationError, match="after now"):
        wallets.charge_to(wallet_db, account, wallet_clock.now() + timedelta(seconds=1))
    with pytest.raises(ValidationError, match="timezone-aware"):
        wallets.charge_to(wallet_db, account, datetime(2026, 1, 5))  # noqa: DTZ001  (naive on purpose)
    with pytest.raises(ConflictError, match="charges from 2026-01-01"):
        wallets.open_wallet(wallet_db, account, charge_from=FEB, actor="test", role="admin")
    postpaid = wallet_registry.create_account(
        wallet_db, site_id=wallet_site.info.id, customer_id=wallet_site.first.account.customer_id,
        number="POST", kind="postpaid",
    )  # fmt: skip
    with pytest.raises(ValidationError, match="only a prepaid account has a wallet"):
        wallets.open_wallet(wallet_db, postpaid.id, charge_from=JAN, actor="test", role="admin")
    with pytest.raises(NotFoundError, match="has no wallet"):
        wallets.charge_to(wallet_db, postpaid.id, MID_JAN)


def test_top_up_recovers_a_share_of_the_debt_once(
    wallet_db: Session, wallets: WalletService, wallet_ledger: LedgerService, wallet_site: PrepaidSite
) -> None:
    site, account = wallet_site.info, wallet_site.first.account.id
    wallets.set_credit_rules(
        wallet_db, site.id, CreditRules(debt_recovery_bp=2500), actor="test", role="admin"
    )
    wallet = wallets.get_wallet(wallet_db, account)
    arrears = wallet_ledger.open_account(wallet_db, site_id=site.id, purpose=AccountPurpose.OPENING_BALANCE)
    receivable = wallet_ledger.open_account(
        wallet_db, site_id=site.id, purpose=AccountPurpose.RECEIVABLE, customer_account_id=account
    )
    wallet_ledger.post(
        wallet_db, site_id=site.id, kind=JournalKind.ADJUSTMENT, currency=site.currency, occurred_at=MID_JAN,
        postings=[NewPosting(receivable.id, 300_00), NewPosting(arrears.id, -300_00)],
    )  # fmt: skip
    reference = top_up(wallet_db, wallet_ledger, site, account, 1000_00, MID_JAN)
    result = wallets.record_top_up(
        wallet_db, account, amount_minor=1000_00, payment_reference=reference, occurred_at=MID_JAN
    )
    assert result.recovered_minor == 250_00
    assert result.balance_minor == 750_00
    again = wallets.record_top_up(
        wallet_db, account, amount_minor=1000_00, payment_reference=reference, occurred_at=MID_JAN
    )
    assert again.recovered_minor == 250_00
    assert again.recovery_journal_id == result.recovery_journal_id
    info = wallets.get_wallet(wallet_db, account)
    assert info.balance_minor == 750_00
    assert info.debt_minor == 50_00
    assert info.ledger_account_id == wallet.ledger_account_id
    second = top_up(wallet_db, wallet_ledger, site, account, 1000_00, MID_JAN)
    last = wallets.record_top_up(
        wallet_db, account, amount_minor=1000_00, payment_reference=second, occurred_at=MID_JAN
    )
    assert last.recovered_minor == 50_00  # never more than the debt
    assert wallets.get_wallet(wallet_db, account).debt_minor == 0
    assert wallet_ledger.trial_balance(wallet_db, site.id, site.currency).balanced


def test_due_actions_warn_cut_off_and_reconnect(
    wallet_db: Session,
    wallets: WalletService,
    wallet_ledger: LedgerService,
    wallet_clock: ManualClock,
    wallet_site: PrepaidSite,
) -> None:
    site = wallet_site.info
    first, second = wallet_site.first.account.id, wallet_site.second.account.id
    rules = CreditRules(
        low_credit_minor=500_00,
        emergency_credit_minor=100_00,
        friendly=FriendlyHours(daily_from=None, daily_to=None, weekdays=frozenset(), holidays=True),
    )
    wallets.set_credit_rules(wallet_db, site.id, rules, actor="test", role="admin")
    top_up(wallet_db, wallet_ledger, site, first, 100_000_00, local_midnight(JAN))
    top_up(wallet_db, wallet_ledger, site, second, 2000_00, local_midnight(JAN))
    wallets.charge_site(wallet_db, site.id, local_midnight(FEB))
    now = datetime(2026, 2, 10, 9, 0, tzinfo=UTC)  # a Tuesday at noon in Nairobi
    [due] = wallets.due_actions(wallet_db, site.id, now)
    assert due.account_id == second
    assert due.action is CreditAction.DISCONNECT_DUE
    assert due.balance_minor < -100_00
    assert due.days_left is None  # only 5 whole days of the last 14 were charged: too few to predict
    assert wallets.get_wallet(wallet_db, second).emergency_granted
    [repeat] = wallets.due_actions(wallet_db, site.id, now + timedelta(minutes=5))
    assert repeat.request_key == due.request_key  # one episode, one relay command
    wallets.record_supply(wallet_db, second, connected=False, at=now)
    assert wallets.due_actions(wallet_db, site.id, now) == []  # off, waiting for a payment
    reference = top_up(wallet_db, wallet_ledger, site, second, -due.balance_minor + 10_00, now)
    outcome = wallets.record_top_up(
        wallet_db,
        second,
        amount_minor=-due.balance_minor + 10_00,
        payment_reference=reference,
        occurred_at=now,
    )
    assert outcome.emergency_rearmed
    [back] = wallets.due_actions(wallet_db, site.id, now)
    assert back.action is CreditAction.RECONNECT_DUE
    assert back.request_key != due.request_key
    wallets.record_supply(wallet_db, second, connected=True, at=now)
    [low] = wallets.due_actions(wallet_db, site.id, now)
    assert low.action is CreditAction.WARN_LOW  # 10.00 is below the 500.00 warning line
    actions = wallet_db.scalars(select(AuditEntry.action).where(AuditEntry.site_id == site.id)).all()
    assert actions.count("prepayment.credit_rules_set") == 1
    assert actions.count("prepayment.wallet_opened") == 2


def test_days_left_from_the_recent_mean_daily_cost(
    wallet_db: Session,
    wallets: WalletService,
    wallet_ledger: LedgerService,
    wallet_site: PrepaidSite,
) -> None:
    account = wallet_site.first.account.id
    for day in range(1, 32):
        wallets.charge_to(wallet_db, account, local_midnight(JAN) + timedelta(days=day))
    spent = -wallets.balance_minor(wallet_db, account)
    top_up(wallet_db, wallet_ledger, wallet_site.info, account, spent + 1000_00, local_midnight(FEB))
    now = local_midnight(FEB) + timedelta(hours=3)
    charges = wallet_db.scalars(select(PrepaidCharge).where(PrepaidCharge.account_id == account)).all()
    last_14 = sum(c.amount_minor for c in charges[-14:])
    expected = (Decimal(1000_00) / (Decimal(last_14) / 14)).quantize(Decimal("0.1"), rounding="ROUND_DOWN")
    assert wallets.days_left(wallet_db, account, now) == expected
    assert wallets.days_left(wallet_db, account, local_midnight(JAN) + timedelta(days=5)) is None  # too new
