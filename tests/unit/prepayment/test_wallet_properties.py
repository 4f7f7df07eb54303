"""Property: after any sequence of top-ups (with debt recovery), charges to rising instants and repeated
charges, the ledger balances, every journal balances, and the wallet's balance is exactly the top-ups less the
debt recovered less what the charges reported."""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openami.billing.service import BillingService
from openami.common.clock import ManualClock
from openami.ledger.interfaces import AccountPurpose, JournalKind, NewPosting
from openami.ledger.service import LedgerService
from openami.prepayment.credit import CreditRules
from openami.prepayment.wallet import WalletService
from openami.registry.service import RegistryService
from openami.security.audit import AuditLog
from openami.security.meter_keys import MeterKeyCipher
from openami.storage.all_models import metadata
from openami.storage.db import make_engine, make_session_factory
from tests.conftest import TEST_MASTER_KEY
from tests.unit.billing.world import TOU, hourly_wh, household, local_midnight, make_site, write_intervals
from tests.unit.prepayment.wallet_world import FEB, JAN, make_prepaid_customer, top_up

_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("top_up"), st.integers(1, 500_000)),
        st.tuples(st.just("charge"), st.integers(0, 80)),  # hours after the last instant charged to
    ),
    max_size=12,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_STEPS, share_bp=st.integers(0, 10_000), debt=st.integers(0, 300_000))
def test_the_ledger_balances_after_any_sequence(
    steps: list[tuple[str, int]], share_bp: int, debt: int
) -> None:
    clock = ManualClock(datetime(2026, 2, 10, tzinfo=UTC))
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'w.db'}")
        metadata.create_all(engine)
        try:
            registry = RegistryService(clock, MeterKeyCipher([TEST_MASTER_KEY]))
            ledger = LedgerService(clock, registry)
            billing = BillingService(clock, registry, ledger)
            wallets = WalletService(clock, registry, ledger, billing, AuditLog(clock))
            with make_session_factory(engine)() as db:
                site = make_site(db, registry)
                tariff = billing.store_tariff(db, site_id=site.id, code="TOU", document=TOU)
                customer = make_prepaid_customer(db, registry, site, "P1")
                account = customer.account.id
                billing.assign_tariff(
                    db, account_id=account, tariff_id=tariff.id, effective_from=date(2025, 12, 1)
                )
                write_intervals(db, customer.meter, hourly_wh(JAN, FEB, household))
                wallets.open_wallet(db, account, charge_from=JAN, actor="test", role="admin")
                wallets.set_credit_rules(
                    db, site.id, CreditRules(debt_recovery_bp=share_bp), actor="test", role="admin"
                )
                if debt:
                    opening = ledger.open_account(db, site_id=site.id, purpose=AccountPurpose.OPENING_BALANCE)
                    receivable = wallets.get_wallet(db, account)
                    ledger.post(
                        db, site_id=site.id, kind=JournalKind.ADJUSTMENT, currency=site.currency,
                        occurred_at=local_midnight(JAN),
                        postings=[NewPosting(ledger.open_account(db, site_id=site.id, purpose=AccountPurpose.RECEIVABLE,
                                                                 customer_account_id=receivable.account_id).id, debt),
                                  NewPosting(opening.id, -debt)],
                    )  # fmt: skip
                at = local_midnight(JAN)
                paid = recovered = charged = 0
                for what, value in steps:
                    if what == "top_up":
                        reference = top_up(db, ledger, site, account, value, at)
                        result = wallets.record_top_up(
                            db, account, amount_minor=value, payment_reference=reference, occurred_at=at
                        )
                        paid += value
                        recovered += result.recovered_minor
                    else:
                        at = min(at + timedelta(hours=value), local_midnight(FEB) + timedelta(days=3))
                        charged += wallets.charge_to(db, account, at).amount_minor
                        assert wallets.charge_to(db, account, at).journal_ids == ()
                    assert wallets.balance_minor(db, account) == paid - recovered - charged
                assert recovered <= debt
                assert wallets.get_wallet(db, account).debt_minor == debt - recovered
                assert ledger.trial_balance(db, site.id, site.currency).balanced
                assert ledger.check(db).ok
        finally:
            engine.dispose()
