"""Helpers for wallet tests: prepaid customers (billing's world makes postpaid ones) and top-ups posted the
way the payments context posts them (cash debited, the prepayment ledger account credited)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.orm import Session

from openami.ledger.interfaces import AccountPurpose, JournalKind, NewPosting
from openami.ledger.service import LedgerService
from openami.registry.interfaces import SiteInfo
from openami.registry.service import RegistryService
from tests.unit.billing.world import Customer, make_customer

JAN, FEB = date(2026, 1, 1), date(2026, 2, 1)
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
    return make_customer(session, registry, site, number, kind="prepaid")


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
