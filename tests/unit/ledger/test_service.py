"""LedgerService on SQLite (migrated, guards in force): accounts, posting, idempotency, reversals, balances."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.ledger.interfaces import AccountKind, AccountPurpose, JournalKind, NewPosting
from openami.ledger.service import LedgerService
from openami.registry.service import RegistryService
from openami.storage.db import unit_of_work
from tests.unit.ledger.helpers import Books, open_books, post_bill, post_payment, post_refund, row_counts

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def books(factory: sessionmaker[Session], registry: RegistryService, ledger: LedgerService) -> Books:
    with unit_of_work(factory) as session:
        return open_books(session, registry, ledger)


def test_open_account_is_idempotent_and_takes_the_site_currency(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books, clock: ManualClock
) -> None:
    with unit_of_work(factory) as session:
        before = row_counts(session)
        again = ledger.open_account(
            session,
            site_id=books.site_id,
            purpose="receivable",
            customer_account_id=books.customer_account_id,
        )
        assert again.id == books.receivable
        assert row_counts(session) == before
        cash = ledger.get_account(session, books.cash)
        assert (cash.code, cash.kind, cash.currency, cash.name, cash.opened_at) == (
            "cash/mpesa",
            AccountKind.ASSET,
            "KES",
            "mpesa",
            clock.now(),
        )
        usd = ledger.open_account(
            session, site_id=books.site_id, purpose=AccountPurpose.CASH, name="mpesa", currency="USD"
        )
        assert usd.id != books.cash
        assert (usd.code, usd.currency) == ("cash/mpesa", "USD")
        codes = [a.code for a in ledger.list_accounts(session, books.site_id, "KES")]
        assert codes == sorted(codes)
        assert len(codes) == 8


def test_open_account_refuses_unknown_site_foreign_customer_account_and_bad_qualifiers(
    factory: sessionmaker[Session], registry: RegistryService, ledger: LedgerService, books: Books
) -> None:
    with unit_of_work(factory) as session:
        other = open_books(session, registry, ledger, code="MSA")
    with factory() as session:
        before = row_counts(session)
        with pytest.raises(ValidationError, match="site_id: no site with id 999"):
            ledger.open_account(session, site_id=999, purpose="revenue.energy")
        with pytest.raises(
            ValidationError,
            match=f"customer_account_id: no account with id {other.customer_account_id} in site {books.site_id}",
        ):
            ledger.open_account(
                session,
                site_id=books.site_id,
                purpose="prepayment",
                customer_account_id=other.customer_account_id,
            )
        with pytest.raises(ValidationError, match="customer_account_id: no account with id 4242"):
            ledger.open_account(
                session, site_id=books.site_id, purpose="prepayment", customer_account_id=4242
            )
        with pytest.raises(ValidationError, match="purpose: 'till' is not a ledger account purpose"):
            ledger.open_account(session, site_id=books.site_id, purpose="till")
        with pytest.raises(ValidationError, match="name: 'V A T': a tax_payable account's name"):
            ledger.open_account(session, site_id=books.site_id, purpose="tax_payable", name="V A T")
        with pytest.raises(ValidationError, match="currency: 'usd' is not an ISO 4217 currency code"):
            ledger.open_account(session, site_id=books.site_id, purpose="revenue.fixed", currency="usd")
        assert row_counts(session) == before


def test_post_writes_a_journal_and_balances_follow(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books, clock: ManualClock
) -> None:
    with unit_of_work(factory) as session:
        bill = post_bill(ledger, session, books, T0, energy=10_000, fixed=500, export=1_200, vat=1_496)
        payment = post_payment(ledger, session, books, T0 + timedelta(days=3), 5_000)
    assert bill.kind is JournalKind.BILL
    assert bill.recorded_at == clock.now()
    assert [(p.ledger_account_id, p.amount_minor) for p in bill.postings] == [
        (books.receivable, 10_796),
        (books.energy, -10_000),
        (books.fixed, -500),
        (books.export_credit, 1_200),
        (books.vat, -1_496),
    ]
    with factory() as session:
        assert ledger.get_journal(session, bill.id) == bill
        assert ledger.get_journal(session, payment.id) == payment
        assert ledger.balance(session, books.receivable) == 5_796
        assert ledger.balance(session, books.cash) == 5_000
        assert ledger.balance(session, books.receivable, as_of=T0 + timedelta(days=1)) == 10_796
        assert ledger.balance(session, books.receivable, as_of=T0 - timedelta(seconds=1)) == 0
        assert ledger.balance(session, books.receivable, as_of=T0) == 10_796  # at or before `as_of`
        every = ledger.balances(session, books.site_id)
        assert every[books.prepayment] == 0
        assert every[books.export_credit] == 1_200
        assert sum(every.values()) == 0
        trial = ledger.trial_balance(session, books.site_id)
        assert trial.currency == "KES"
        assert trial.balanced
        assert (trial.total_debit_minor, trial.total_credit_minor) == (
            10_796 + 1_200 + 5_000,
            -(10_000 + 500 + 1_496 + 5_000),
        )
        receivable = next(line for line in trial.lines if line.account.id == books.receivable)
        assert (receivable.debit_minor, receivable.credit_minor, receivable.balance_minor) == (
            10_796,
            -5_000,
            5_796,
        )
        early = ledger.trial_balance(session, books.site_id, as_of=T0 + timedelta(days=1))
        assert early.balanced
        assert early.total_debit_minor == 10_796 + 1_200
        assert ledger.check(session).ok
        with pytest.raises(NotFoundError, match="no ledger account with id 999"):
            ledger.balance(session, 999)
        with pytest.raises(NotFoundError, match="no journal with id 999"):
            ledger.get_journal(session, 999)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda b: {"postings": [(b.receivable, 100), (b.cash, -90)]},
            "journal: unbalanced: the postings sum to 10 minor units, not 0",
        ),
        (
            lambda b: {"postings": [(b.receivable, 100)]},
            "journal: a journal needs at least two postings, got 1",
        ),
        (
            lambda b: {"postings": [(b.receivable, 100), (999, -100)]},
            "journal, posting 2: no ledger account with id 999 in site",
        ),
        (
            lambda b: {"currency": "USD"},
            r"journal, posting 1: ledger account \d+ \(receivable/account-\d+\) is in KES, the journal in USD",
        ),
        (lambda b: {"currency": "Kes"}, "journal: currency: 'Kes' is not an ISO 4217 currency code"),
        (
            lambda b: {"kind": "invoice"},
            r"journal: kind: 'invoice' is not a journal kind \(one of: bill, payment",
        ),
        (lambda b: {"kind": JournalKind.REVERSAL}, "kind: a reversal is made by LedgerService.reverse"),
        (
            lambda b: {"occurred_at": datetime(2026, 3, 1)},  # noqa: DTZ001  (naive on purpose)
            "journal: occurred_at: must be a timezone-aware datetime",
        ),
        (lambda b: {"memo": "x" * 501}, "journal: memo: longer than 500 characters"),
        (lambda b: {"external_reference": ""}, "journal '': external_reference: must not be empty"),
        (lambda b: {"external_reference": "p\x00"}, "external_reference: contains a NUL character"),
    ],
)
def test_post_refuses_bad_journals_before_writing_anything(
    factory: sessionmaker[Session],
    ledger: LedgerService,
    books: Books,
    change: Callable[[Books], dict[str, object]],
    message: str,
) -> None:
    args: dict[str, object] = {
        "site_id": books.site_id,
        "kind": JournalKind.PAYMENT,
        "currency": "KES",
        "occurred_at": T0,
        "postings": [NewPosting(books.receivable, 100), NewPosting(books.cash, -100)],
    }
    args.update(change(books))
    with factory() as session:
        before = row_counts(session)
        with pytest.raises(ValidationError, match=message):
            ledger.post(session, **args)  # type: ignore[arg-type]
        assert row_counts(session) == before


def test_mixed_currency_journal_is_refused(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    with unit_of_work(factory) as session:
        usd_cash = ledger.open_account(
            session, site_id=books.site_id, purpose="cash", name="stripe", currency="USD"
        )
    with factory() as session:
        before = row_counts(session)
        with pytest.raises(
            ValidationError,
            match=r"posting 2: ledger account \d+ \(cash/stripe\) is in USD, the journal in KES",
        ):
            ledger.post(
                session,
                site_id=books.site_id,
                kind="payment",
                currency="KES",
                occurred_at=T0,
                postings=[(books.receivable, -100), (usd_cash.id, 100)],
            )
        assert row_counts(session) == before


def test_journal_of_another_site_is_refused(
    factory: sessionmaker[Session], registry: RegistryService, ledger: LedgerService, books: Books
) -> None:
    with unit_of_work(factory) as session:
        other = open_books(session, registry, ledger, code="MSA")
    with (
        factory() as session,
        pytest.raises(
            ValidationError,
            match=f"posting 2: no ledger account with id {other.cash} in site {books.site_id}",
        ),
    ):
        ledger.post(
            session,
            site_id=books.site_id,
            kind="payment",
            currency="KES",
            occurred_at=T0,
            postings=[(books.receivable, -100), (other.cash, 100)],
        )


def test_same_external_reference_returns_the_first_journal_and_writes_nothing(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    with unit_of_work(factory) as session:
        first = post_payment(ledger, session, books, T0, 2_500, prepaid=True, reference="mpesa:QK71XZ")
    with unit_of_work(factory) as session:
        before = row_counts(session)
        # The provider's webhook comes again, later, with the postings in another order.
        again = ledger.post(
            session,
            site_id=books.site_id,
            kind="payment",
            currency="KES",
            occurred_at=T0 + timedelta(minutes=5),
            postings=[NewPosting(books.prepayment, -2_500), NewPosting(books.cash, 2_500)],
            external_reference="mpesa:QK71XZ",
        )
        assert again == first
        assert row_counts(session) == before
        with pytest.raises(
            ConflictError,
            match=f"'mpesa:QK71XZ' was already used in site {books.site_id} by journal {first.id}, whose kind, postings differ",
        ):
            ledger.post(
                session,
                site_id=books.site_id,
                kind="refund",
                currency="KES",
                occurred_at=T0,
                postings=[NewPosting(books.prepayment, 2_000), NewPosting(books.cash, -2_000)],
                external_reference="mpesa:QK71XZ",
            )
        assert row_counts(session) == before
        assert ledger.journal_by_reference(session, books.site_id, "mpesa:QK71XZ") == first
        assert ledger.journal_by_reference(session, books.site_id, "mpesa:other") is None


def test_reference_is_unique_per_site_not_across_sites(
    factory: sessionmaker[Session], registry: RegistryService, ledger: LedgerService, books: Books
) -> None:
    with unit_of_work(factory) as session:
        other = open_books(session, registry, ledger, code="MSA")
        a = post_payment(ledger, session, books, T0, 100, reference="P-1")
        b = post_payment(ledger, session, other, T0, 100, reference="P-1")
    assert a.id != b.id


def test_reversal_negates_every_posting_and_restores_balances(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books, clock: ManualClock
) -> None:
    with unit_of_work(factory) as session:
        post_payment(ledger, session, books, T0, 9_000, prepaid=True)
        bill = post_bill(ledger, session, books, T0 + timedelta(days=1), energy=4_000, fixed=300, vat=688)
    with factory() as session:
        after_bill = ledger.balances(session, books.site_id)
    clock.advance(timedelta(days=2))
    with unit_of_work(factory) as session:
        before = ledger.balances(session, books.site_id)
        reversal = ledger.reverse(session, bill.id, memo="meter misread")
        assert reversal.kind is JournalKind.REVERSAL
        assert reversal.reverses_journal_id == bill.id
        assert reversal.occurred_at == clock.now()
        assert reversal.memo == "meter misread"
        assert [(p.ledger_account_id, p.amount_minor) for p in reversal.postings] == [
            (p.ledger_account_id, -p.amount_minor) for p in bill.postings
        ]
        after = ledger.balances(session, books.site_id)
        assert before == after_bill
        for account_id, balance in after.items():
            billed = sum(p.amount_minor for p in bill.postings if p.ledger_account_id == account_id)
            assert balance == before[account_id] - billed
        assert after[books.receivable] == 0
        assert after[books.energy] == 0
        assert after[books.cash] == 9_000
        # As of before the reversal, the bill still stands.
        assert ledger.balance(session, books.receivable, as_of=clock.now() - timedelta(seconds=1)) == 4_988
    with factory() as session:
        assert ledger.check(session).ok


def test_reversing_twice_or_reversing_a_reversal_is_refused(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    with unit_of_work(factory) as session:
        bill = post_bill(ledger, session, books, T0, energy=1_000)
        reversal = ledger.reverse(session, bill.id, external_reference="credit-note-7")
    with unit_of_work(factory) as session:
        before = row_counts(session)
        with pytest.raises(
            ConflictError, match=f"journal {bill.id} was already reversed by journal {reversal.id}"
        ):
            ledger.reverse(session, bill.id)
        with pytest.raises(
            ConflictError, match=f"journal {reversal.id} is itself the reversal of journal {bill.id}"
        ):
            ledger.reverse(session, reversal.id)
        with pytest.raises(NotFoundError, match="no journal with id 999"):
            ledger.reverse(session, 999)
        # The same request again (same reference) is answered with the reversal already made.
        assert ledger.reverse(session, bill.id, external_reference="credit-note-7") == reversal
        with pytest.raises(ConflictError, match="was already reversed"):
            ledger.reverse(session, bill.id, external_reference="credit-note-8")
        assert row_counts(session) == before


def test_refund_and_trial_balance_in_another_currency(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    with unit_of_work(factory) as session:
        post_payment(ledger, session, books, T0, 3_000, prepaid=True)
        post_refund(ledger, session, books, T0 + timedelta(hours=1), 1_000)
        usd_cash = ledger.open_account(
            session, site_id=books.site_id, purpose="cash", name="stripe", currency="USD"
        )
        usd_opening = ledger.open_account(
            session, site_id=books.site_id, purpose="opening_balance", currency="USD"
        )
        ledger.post(
            session,
            site_id=books.site_id,
            kind="adjustment",
            currency="USD",
            occurred_at=T0,
            postings=[(usd_cash.id, 40), (usd_opening.id, -40)],
        )
    with factory() as session:
        assert ledger.balance(session, books.prepayment) == -2_000  # a liability: a credit balance
        assert ledger.balance(session, books.cash) == 2_000
        usd = ledger.trial_balance(session, books.site_id, "USD")
        assert [(line.account.code, line.balance_minor) for line in usd.lines] == [
            ("cash/stripe", 40),
            ("opening_balance", -40),
        ]
        assert usd.balanced
        assert set(ledger.balances(session, books.site_id, "USD")) == {usd_cash.id, usd_opening.id}
        report = ledger.check(session)
        assert report.ok
        assert (report.journals, report.postings) == (3, 6)
        assert report.trial_balances == ((books.site_id, "KES", 0), (books.site_id, "USD", 0))
        with pytest.raises(ValidationError, match="site_id: no site with id 999"):
            ledger.trial_balance(session, 999)
