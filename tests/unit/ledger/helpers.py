"""Factories for ledger tests: a site with one customer account and its chart of accounts, and the journals of
bills, payments and refunds as the billing and prepayment contexts will post them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from openami.ledger.interfaces import AccountPurpose, JournalInfo, JournalKind, NewPosting
from openami.ledger.models import Journal, LedgerAccount, Posting
from openami.ledger.service import LedgerService
from openami.registry.service import RegistryService


@dataclass(frozen=True)
class Books:
    """One site's ledger accounts for one customer account, by purpose."""

    site_id: int
    currency: str
    customer_account_id: int
    receivable: int
    prepayment: int
    energy: int
    fixed: int
    export_credit: int
    vat: int
    cash: int
    bad_debt: int

    @property
    def account_ids(self) -> tuple[int, ...]:
        return (
            self.receivable,
            self.prepayment,
            self.energy,
            self.fixed,
            self.export_credit,
            self.vat,
            self.cash,
            self.bad_debt,
        )


def open_books(
    session: Session,
    registry: RegistryService,
    ledger: LedgerService,
    code: str = "KSM",
    currency: str = "KES",
) -> Books:
    site = registry.create_site(
        session,
        code=code,
        name=f"Site {code}",
        timezone="Africa/Nairobi",
        currency=currency,
        holiday_country="KE",
    )
    customer = registry.create_customer(session, site_id=site.id, reference=f"{code}-C1", name="Achieng")
    account = registry.create_account(
        session, site_id=site.id, customer_id=customer.id, number=f"{code}-A1", kind="postpaid"
    )

    def opened(
        purpose: AccountPurpose, customer_account_id: int | None = None, name: str | None = None
    ) -> int:
        return ledger.open_account(
            session, site_id=site.id, purpose=purpose, customer_account_id=customer_account_id, name=name
        ).id

    return Books(
        site_id=site.id,
        currency=currency,
        customer_account_id=account.id,
        receivable=opened(AccountPurpose.RECEIVABLE, customer_account_id=account.id),
        prepayment=opened(AccountPurpose.PREPAYMENT, customer_account_id=account.id),
        energy=opened(AccountPurpose.REVENUE_ENERGY),
        fixed=opened(AccountPurpose.REVENUE_FIXED),
        export_credit=opened(AccountPurpose.EXPORT_CREDIT),
        vat=opened(AccountPurpose.TAX_PAYABLE, name="VAT"),
        cash=opened(AccountPurpose.CASH, name="mpesa"),
        bad_debt=opened(AccountPurpose.BAD_DEBT),
    )


def bill_postings(books: Books, energy: int, fixed: int, export: int, vat: int) -> list[NewPosting]:
    """A bill: the customer owes energy + fixed + VAT - export credit (all amounts >= 0, energy > 0)."""
    lines = [
        NewPosting(books.receivable, energy + fixed + vat - export),
        NewPosting(books.energy, -energy),
    ]
    if fixed:
        lines.append(NewPosting(books.fixed, -fixed))
    if export:
        lines.append(NewPosting(books.export_credit, export))  # contra-revenue: debited
    if vat:
        lines.append(NewPosting(books.vat, -vat))
    return [p for p in lines if p.amount_minor != 0]


def post_bill(
    ledger: LedgerService,
    session: Session,
    books: Books,
    at: datetime,
    energy: int,
    fixed: int = 0,
    export: int = 0,
    vat: int = 0,
    reference: str | None = None,
) -> JournalInfo:
    return ledger.post(
        session,
        site_id=books.site_id,
        kind=JournalKind.BILL,
        currency=books.currency,
        occurred_at=at,
        postings=bill_postings(books, energy, fixed, export, vat),
        external_reference=reference,
        memo="bill",
    )


def post_payment(
    ledger: LedgerService,
    session: Session,
    books: Books,
    at: datetime,
    amount_minor: int,
    *,
    prepaid: bool = False,
    reference: str | None = None,
) -> JournalInfo:
    """Money received through the provider: settles the receivable, or credits the prepayment (a top-up)."""
    credited = books.prepayment if prepaid else books.receivable
    return ledger.post(
        session,
        site_id=books.site_id,
        kind=JournalKind.PAYMENT,
        currency=books.currency,
        occurred_at=at,
        postings=[NewPosting(books.cash, amount_minor), NewPosting(credited, -amount_minor)],
        external_reference=reference,
    )


def post_refund(
    ledger: LedgerService, session: Session, books: Books, at: datetime, amount_minor: int
) -> JournalInfo:
    """Prepaid credit paid back to the customer."""
    return ledger.post(
        session,
        site_id=books.site_id,
        kind=JournalKind.REFUND,
        currency=books.currency,
        occurred_at=at,
        postings=[NewPosting(books.prepayment, amount_minor), NewPosting(books.cash, -amount_minor)],
    )


def row_counts(session: Session) -> tuple[int, int, int]:
    """(ledger accounts, journals, postings) as `session`'s transaction sees them."""
    return (
        session.scalar(select(func.count()).select_from(LedgerAccount)) or 0,
        session.scalar(select(func.count()).select_from(Journal)) or 0,
        session.scalar(select(func.count()).select_from(Posting)) or 0,
    )


# -- raw SQL, as someone with a database session (not the service) would write it --------------------------------

Raw = tuple[str, dict[str, object]]  # a statement and its parameters

# An instant as text both databases read: PostgreSQL parses the offset, SQLAlchemy reads SQLite's text back.
_AT = "2026-03-01 00:00:00+00:00"
_JOURNAL = (
    "INSERT INTO journal (id, site_id, currency, kind, occurred_at, recorded_at, memo, posting_count, "
    "reverses_journal_id) VALUES (:id, :site_id, :currency, :kind, :at, :at, 'raw', :posting_count, :reverses)"
)
_POSTING = (
    "INSERT INTO posting (journal_id, ledger_account_id, site_id, currency, amount_minor) "
    "VALUES (:journal_id, :account_id, :site_id, :currency, :amount_minor)"
)


def raw_journal(
    books: Books,
    journal_id: int,
    posting_count: int,
    *,
    reverses: int | None = None,
    currency: str | None = None,
) -> Raw:
    return _JOURNAL, {
        "id": journal_id,
        "site_id": books.site_id,
        "currency": currency or books.currency,
        "kind": "bill" if reverses is None else "reversal",
        "at": _AT,
        "posting_count": posting_count,
        "reverses": reverses,
    }


def raw_posting(
    books: Books, journal_id: int, account_id: int, amount_minor: int, currency: str | None = None
) -> Raw:
    return _POSTING, {
        "journal_id": journal_id,
        "account_id": account_id,
        "site_id": books.site_id,
        "currency": currency or books.currency,
        "amount_minor": amount_minor,
    }


def execute_all(engine: Engine, statements: list[Raw]) -> None:
    """Run `statements` in one transaction, committed at the end (where PostgreSQL runs its deferred checks)."""
    with engine.begin() as conn:
        for sql, params in statements:
            conn.execute(text(sql), params)


def raw_attempts(books: Books, journal_id: int, usd_account_id: int) -> dict[str, list[Raw]]:
    """Statements that must each be refused, as one transaction, by name. `journal_id` is not yet used, the
    journal `journal_id - 1` exists (balanced), `usd_account_id` is a USD account of the books' site."""
    j, old = journal_id, journal_id - 1
    return {
        "unbalanced": [
            raw_posting(books, j, books.receivable, 1_000),
            raw_posting(books, j, books.energy, -850),
            raw_journal(books, j, 2),
        ],
        "one posting": [raw_posting(books, j, books.receivable, 1_000), raw_journal(books, j, 1)],
        "no postings": [raw_journal(books, j, 2)],
        "fewer postings than declared": [
            raw_posting(books, j, books.receivable, 500),
            raw_posting(books, j, books.energy, -500),
            raw_journal(books, j, 3),
        ],
        "journal before its postings": [
            raw_journal(books, j, 2),
            raw_posting(books, j, books.receivable, 500),
            raw_posting(books, j, books.energy, -500),
        ],
        "balanced pair added to a written journal": [
            raw_posting(books, old, books.receivable, 500),
            raw_posting(books, old, books.energy, -500),
        ],
        "postings without a journal": [
            raw_posting(books, j, books.receivable, 500),
            raw_posting(books, j, books.energy, -500),
        ],
        "mixed currencies": [
            raw_posting(books, j, books.receivable, 500),
            raw_posting(books, j, usd_account_id, -500, currency="USD"),
            raw_journal(books, j, 2),
        ],
        "posting in another currency than its account": [
            raw_posting(books, j, books.receivable, 500),
            raw_posting(books, j, books.energy, -500, currency="USD"),
            raw_journal(books, j, 2),
        ],
        "zero posting": [
            raw_posting(books, j, books.receivable, 0),
            raw_posting(books, j, books.energy, 0),
            raw_journal(books, j, 2),
        ],
        "update a posting": [
            ("UPDATE posting SET amount_minor = amount_minor * 2 WHERE journal_id = :j", {"j": old})
        ],
        "delete a posting": [("DELETE FROM posting WHERE journal_id = :j", {"j": old})],
        "update a journal": [("UPDATE journal SET occurred_at = recorded_at WHERE id = :j", {"j": old})],
        "delete a journal": [("DELETE FROM journal WHERE id = :j", {"j": old})],
        "update an account": [
            ("UPDATE ledger_account SET currency = 'USD' WHERE id = :a", {"a": books.cash})
        ],
        "delete an account": [("DELETE FROM ledger_account WHERE id = :a", {"a": usd_account_id})],
    }
