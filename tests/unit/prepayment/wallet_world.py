"""Helpers for wallet tests: prepaid customers (billing's world makes postpaid ones) and top-ups posted the
way the payments context posts them (cash debited, the prepayment ledger account credited)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy.orm import Session

from openami.ledger.interfaces import AccountPurpose, JournalKind, NewPosting
from openami.ledger.service import LedgerService
from openami.registry.interfaces import SiteInfo
from openami.registry.service import RegistryService
from tests.unit.billing.world import HOUR, Customer

JAN, FEB = date(2026, 1, 1), date(2026, 2, 1)
_keys = itertools.count(101)
_payments = itertools.count(1)


@dataclass(frozen=True)
class PrepaidSite:
    info: SiteInfo
    first: Customer
    second: Customer
    tariff_id: int


def make_prepaid_customer(
    session: Session, registry: RegistryService, site: SiteInfo, number: str
) -> Customer:
    customer = registry.create_customer(
        session, site_id=site.id, reference=f"C-{number}", name=f"Cust {number}"
    )
    account = registry.create_account(
        session, site_id=site.id, customer_id=customer.id, number=number, kind="prepaid"
    )
    point = registry.create_service_point(
        session, site_id=site.id, code=f"SP-{number}", rated_current_a=60, account_id=account.id
    )
    meter = registry.create_meter(
        session,
        site_id=site.id,
        serial=f"{site.code}-M-{number}",
        model="test",
        rated_current_a=60,
        auth_key=bytes([next(_keys) % 256]) * 32,
        load_profile_interval_s=HOUR,
        service_point_id=point.id,
        installed_at=datetime(2025, 6, 1, tzinfo=UTC),
    )
    return Customer(account, meter)


def top_up(
    session: Session, ledger: LedgerService, site: SiteInfo, account_id: int, amount_minor: int, at: datetime
) -> str:
    """Post a top-up as the payments context does; returns its reference."""
    cash = ledger.open_account(session, site_id=site.id, purpose=AccountPurpose.CASH, name="sandbox")
    prepayment = ledger.open_account(
        session, site_id=site.id, purpose=AccountPurpose.PREPAYMENT, customer_account_id=account_id
    )
    reference = f"payment:sandbox:{next(_payments)}"
    ledger.post(
        session, site_id=site.id, kind=JournalKind.PAYMENT, currency=site.currency, occurred_at=at,
        postings=[NewPosting(cash.id, amount_minor), NewPosting(prepayment.id, -amount_minor)],
        external_reference=reference,
    )  # fmt: skip
    return reference
