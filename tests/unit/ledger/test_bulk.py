"""LedgerService.open_accounts and post_many on SQLite (migrated, guards in force): the answers of open_account and
post one by one, all or nothing, in a number of statements that does not grow with the batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.common.errors import ConflictError, ValidationError
from openami.ledger.interfaces import (
    AccountKind,
    AccountPurpose,
    JournalInfo,
    JournalKind,
    NewJournal,
    NewPosting,
)
from openami.ledger.service import LedgerService
from openami.registry.service import RegistryService
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory, unit_of_work
from tests.sql_statements import statements
from tests.unit.ledger.helpers import Books, open_books, row_counts
from tests.unit.ledger.test_service import T0

# -- factories (the PostgreSQL tests use them too) ----------------------------------------------------------------


def customer_accounts(session: Session, registry: RegistryService, books: Books, count: int) -> list[int]:
    """`count` more customer accounts in the books' site, as a billing run finds them."""
    ids = []
    for n in range(count):
        customer = registry.create_customer(
            session, site_id=books.site_id, reference=f"RUN-C{n}", name=f"Customer {n}"
        )
        account = registry.create_account(
            session, site_id=books.site_id, customer_id=customer.id, number=f"RUN-A{n}", kind="postpaid"
        )
        ids.append(account.id)
    return ids


def run_journals(books: Books, receivables: Sequence[int]) -> list[NewJournal]:
    """A billing run's journals: one bill of three postings (energy, VAT) per receivable, each referenced."""
    return [
        NewJournal(
            (
                NewPosting(receivable, 1_160 + n),
                NewPosting(books.energy, -1_000 - n),
                NewPosting(books.vat, -160),
            ),
            f"bill:{receivable}:2026-02",
            f"bill {n}",
        )
        for n, receivable in enumerate(receivables)
    ]


def post_run(
    ledger: LedgerService, session: Session, books: Books, journals: Sequence[NewJournal]
) -> list[JournalInfo]:
    """`journals` as bills of the books' site, occurred at T0."""
    return ledger.post_many(
        session, site_id=books.site_id, kind="bill", currency="KES", occurred_at=T0, journals=journals
    )


# -- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture
def books(factory: sessionmaker[Session], registry: RegistryService, ledger: LedgerService) -> Books:
    with unit_of_work(factory) as session:
        return open_books(session, registry, ledger)


@pytest.fixture
def run(factory: sessionmaker[Session], registry: RegistryService, books: Books) -> list[int]:
    """Five customer accounts besides the books' own."""
    with unit_of_work(factory) as session:
        return customer_accounts(session, registry, books, 5)


@pytest.fixture
def other_factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A second ledger database, to post the same journals another way."""
    url = f"sqlite:///{tmp_path / 'other.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


# -- open_accounts ------------------------------------------------------------------------------------------------


def test_open_accounts_opens_the_missing_returns_the_open_and_answers_as_open_account(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books, run: list[int], clock: ManualClock
) -> None:
    with unit_of_work(factory) as session:
        earlier = ledger.open_account(
            session, site_id=books.site_id, purpose="receivable", customer_account_id=run[2]
        )
        wanted = [run[3], books.customer_account_id, run[0], run[2], run[1], run[0]]
        opened = ledger.open_accounts(
            session, site_id=books.site_id, purpose=AccountPurpose.RECEIVABLE, customer_account_ids=wanted
        )
        assert list(opened) == [run[3], books.customer_account_id, run[0], run[2], run[1]]
        assert opened[books.customer_account_id].id == books.receivable
        assert opened[run[2]] == earlier
        for customer_account_id, account in opened.items():
            assert (account.site_id, account.code, account.purpose, account.kind, account.currency) == (
                books.site_id,
                f"receivable/account-{customer_account_id}",
                AccountPurpose.RECEIVABLE,
                AccountKind.ASSET,
                "KES",
            )
            assert (account.customer_account_id, account.name) == (customer_account_id, None)
            assert account.opened_at in (clock.now(), earlier.opened_at)
    with unit_of_work(factory) as session:
        before = row_counts(session)
        again = ledger.open_accounts(
            session, site_id=books.site_id, purpose="receivable", customer_account_ids=wanted
        )
        assert again == opened
        assert row_counts(session) == before
        for customer_account_id, account in opened.items():
            assert account == ledger.get_account(session, account.id)
            one = ledger.open_account(
                session, site_id=books.site_id, purpose="receivable", customer_account_id=customer_account_id
            )
            assert one == account
        assert row_counts(session) == before
        usd = ledger.open_accounts(
            session, site_id=books.site_id, purpose="prepayment", customer_account_ids=run[:2], currency="USD"
        )
        assert [(a.code, a.currency, a.kind) for a in usd.values()] == [
            (f"prepayment/account-{run[0]}", "USD", AccountKind.LIABILITY),
            (f"prepayment/account-{run[1]}", "USD", AccountKind.LIABILITY),
        ]
        assert (
            ledger.open_accounts(
                session, site_id=books.site_id, purpose="receivable", customer_account_ids=[]
            )
            == {}
        )
        assert row_counts(session)[0] == before[0] + 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b, o: {"purpose": "till"}, "purpose: 'till' is not a ledger account purpose"),
        (
            lambda b, o: {"purpose": "revenue.energy"},
            "purpose: a revenue.energy account is not kept per customer account",
        ),
        (lambda b, o: {"site_id": 999}, "site_id: no site with id 999"),
        (lambda b, o: {"currency": "usd"}, "currency: 'usd' is not an ISO 4217 currency code"),
        (
            lambda b, o: {"customer_account_ids": [b.customer_account_id, o.customer_account_id]},
            r"customer_account_ids\[1\]: no account with id {other} in site {site}",
        ),
        (
            lambda b, o: {"customer_account_ids": [b.customer_account_id, 1, 4242]},
            r"customer_account_ids\[2\]: no account with id 4242 in site {site}",
        ),
        (
            lambda b, o: {"customer_account_ids": [b.customer_account_id, True]},
            r"customer_account_ids\[1\]: a receivable account is kept per customer account: give its id, got True",
        ),
        (
            lambda b, o: {"customer_account_ids": "17"},
            "customer_account_ids: must be a list of customer account ids",
        ),
    ],
)
def test_open_accounts_refuses_bad_input_naming_it_and_opens_nothing(
    factory: sessionmaker[Session],
    registry: RegistryService,
    ledger: LedgerService,
    books: Books,
    run: list[int],
    change: Callable[[Books, Books], dict[str, object]],
    message: str,
) -> None:
    with unit_of_work(factory) as session:
        other = open_books(session, registry, ledger, code="MSA")
    args: dict[str, object] = {
        "site_id": books.site_id,
        "purpose": "receivable",
        "customer_account_ids": run,
    }
    args.update(change(books, other))
    with factory() as session:
        before = row_counts(session)
        with pytest.raises(
            ValidationError, match=message.format(other=other.customer_account_id, site=books.site_id)
        ):
            ledger.open_accounts(session, **args)  # type: ignore[arg-type]
        assert row_counts(session) == before


def test_open_accounts_takes_the_same_few_statements_for_30_or_300_customers(
    factory: sessionmaker[Session],
    ledger_engine: Engine,
    registry: RegistryService,
    ledger: LedgerService,
    books: Books,
) -> None:
    with unit_of_work(factory) as session:
        ids = customer_accounts(session, registry, books, 330)
    counted = []
    for batch in (ids[:30], ids[30:]):
        with unit_of_work(factory) as session, statements(ledger_engine) as seen:
            opened = ledger.open_accounts(
                session, site_id=books.site_id, purpose="receivable", customer_account_ids=batch
            )
        assert len(opened) == len(batch)
        counted.append(len(seen))
    assert counted[0] == counted[1] <= 8, counted
    with factory() as session, statements(ledger_engine) as seen:
        ledger.open_accounts(session, site_id=books.site_id, purpose="receivable", customer_account_ids=ids)
    assert len(seen) <= 4, seen  # the site, the customer accounts, the ledger accounts: nothing to open


# -- post_many ----------------------------------------------------------------------------------------------------


def _mixed_journals(books: Books, receivables: Sequence[int]) -> list[NewJournal]:
    """Referenced and unreferenced journals of two to four postings."""
    journals = run_journals(books, receivables)
    journals.insert(1, NewJournal((NewPosting(books.receivable, 700), NewPosting(books.fixed, -700))))
    journals.append(
        NewJournal(
            (
                NewPosting(books.receivable, 2_000),
                NewPosting(books.export_credit, 300),
                NewPosting(books.energy, -2_000),
                NewPosting(books.vat, -300),
            ),
            memo="four postings, no reference",
        )
    )
    return journals


def _same_world(
    factory: sessionmaker[Session], registry: RegistryService, ledger: LedgerService
) -> tuple[Books, list[int]]:
    with unit_of_work(factory) as session:
        books = open_books(session, registry, ledger)
        run = customer_accounts(session, registry, books, 5)
        receivables = ledger.open_accounts(
            session, site_id=books.site_id, purpose="receivable", customer_account_ids=run
        )
        return books, [a.id for a in receivables.values()]


def test_post_many_writes_what_posting_one_by_one_writes(
    factory: sessionmaker[Session],
    other_factory: sessionmaker[Session],
    registry: RegistryService,
    ledger: LedgerService,
) -> None:
    books, receivables = _same_world(factory, registry, ledger)
    assert _same_world(other_factory, registry, ledger) == (books, receivables)
    journals = _mixed_journals(books, receivables)
    with unit_of_work(factory) as session:
        batch = post_run(ledger, session, books, journals)
    with unit_of_work(other_factory) as session:
        one_by_one = [
            ledger.post(
                session,
                site_id=books.site_id,
                kind=JournalKind.BILL,
                currency="KES",
                occurred_at=T0,
                postings=j.postings,
                external_reference=j.external_reference,
                memo=j.memo,
            )
            for j in journals
        ]
    assert batch == one_by_one
    assert [j.id for j in batch] == sorted(j.id for j in batch)
    assert [(j.external_reference, j.memo) for j in batch] == [
        (j.external_reference, j.memo) for j in journals
    ]
    for written in (factory, other_factory):
        with written() as session:
            assert [ledger.get_journal(session, j.id) for j in batch] == batch
            assert ledger.trial_balance(session, books.site_id).balanced
            assert ledger.check(session).ok
            assert ledger.balance(session, books.vat) == -160 * len(receivables) - 300


def test_post_many_again_returns_the_same_journals_and_writes_nothing(
    factory: sessionmaker[Session], ledger_engine: Engine, ledger: LedgerService, books: Books, run: list[int]
) -> None:
    with unit_of_work(factory) as session:
        receivables = ledger.open_accounts(
            session, site_id=books.site_id, purpose="receivable", customer_account_ids=run
        )
        journals = run_journals(books, [a.id for a in receivables.values()])
        first = post_run(ledger, session, books, journals)
    with unit_of_work(factory) as session, statements(ledger_engine) as seen:
        before = row_counts(session)
        again = post_run(ledger, session, books, journals)
        assert row_counts(session) == before
    assert again == first
    assert not [s for s in seen if s.lstrip().upper().startswith("INSERT")]
    with factory() as session:
        assert ledger.trial_balance(session, books.site_id).balanced
        assert post_run(ledger, session, books, []) == []


def test_post_many_answers_used_references_with_their_journals_and_writes_the_rest(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books, run: list[int]
) -> None:
    with unit_of_work(factory) as session:
        receivables = ledger.open_accounts(
            session, site_id=books.site_id, purpose="receivable", customer_account_ids=run
        )
        journals = run_journals(books, [a.id for a in receivables.values()])
        used = post_run(ledger, session, books, [journals[1], journals[3]])
    with unit_of_work(factory) as session:
        before = row_counts(session)
        written = post_run(ledger, session, books, journals)
        assert (written[1], written[3]) == tuple(used)
        assert row_counts(session)[1:] == (before[1] + 3, before[2] + 9)
    assert [j.external_reference for j in written] == [j.external_reference for j in journals]


def test_post_many_refuses_a_used_reference_whose_journal_differs_and_writes_nothing(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books, run: list[int]
) -> None:
    with unit_of_work(factory) as session:
        receivables = ledger.open_accounts(
            session, site_id=books.site_id, purpose="receivable", customer_account_ids=run
        )
        journals = run_journals(books, [a.id for a in receivables.values()])
        earlier = post_run(ledger, session, books, [journals[2]])[0]
    changed = NewJournal(
        (NewPosting(journals[2].postings[0].ledger_account_id, 5), NewPosting(books.energy, -5)),
        journals[2].external_reference,
    )
    with factory() as session:
        before = row_counts(session)
        with pytest.raises(
            ConflictError,
            match=(
                f"external reference '{journals[2].external_reference}' was already used in site "
                f"{books.site_id} by journal {earlier.id}, whose postings differ"
            ),
        ):
            post_run(ledger, session, books, [journals[0], journals[1], changed, journals[3]])
        with pytest.raises(ConflictError, match="whose kind differ"):
            ledger.post_many(
                session,
                site_id=books.site_id,
                kind="adjustment",
                currency="KES",
                occurred_at=T0,
                journals=[journals[2]],
            )
        assert row_counts(session) == before


def test_post_many_refuses_one_reference_twice_in_a_call(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    twice = [
        NewJournal((NewPosting(books.cash, 100), NewPosting(books.receivable, -100)), "mpesa:A"),
        NewJournal((NewPosting(books.cash, 200), NewPosting(books.receivable, -200)), "mpesa:B"),
        NewJournal((NewPosting(books.cash, 100), NewPosting(books.receivable, -100)), "mpesa:A"),
    ]
    with factory() as session:
        before = row_counts(session)
        with pytest.raises(
            ValidationError,
            match=r"journals\[2\]: external_reference: external reference 'mpesa:A' is also that of journals\[0\]",
        ):
            ledger.post_many(
                session, site_id=books.site_id, kind="payment", currency="KES", occurred_at=T0, journals=twice
            )
        assert row_counts(session) == before


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            lambda b, usd: NewJournal((NewPosting(b.receivable, 100), NewPosting(b.energy, -90)), "bill:bad"),
            "journal 'bill:bad': unbalanced: the postings sum to 10 minor units, not 0",
        ),
        (
            lambda b, usd: NewJournal((NewPosting(b.receivable, 100), NewPosting(999, -100)), "bill:bad"),
            "journal 'bill:bad', posting 2: no ledger account with id 999 in site",
        ),
        (
            lambda b, usd: NewJournal((NewPosting(usd, 100), NewPosting(b.energy, -100)), "bill:bad"),
            r"journal 'bill:bad', posting 1: ledger account \d+ \(cash/stripe\) is in USD, the journal in KES",
        ),
        (
            lambda b, usd: NewJournal((NewPosting(b.receivable, 0), NewPosting(b.energy, 0))),
            r"journals\[1\], posting 1: amount is zero",
        ),
        (
            lambda b, usd: NewJournal((NewPosting(b.receivable, 100),)),
            r"journals\[1\]: a journal needs at least two postings, got 1",
        ),
        (
            lambda b, usd: NewJournal(
                (NewPosting(b.receivable, 100), NewPosting(b.energy, -100)), "bill:bad", "x" * 501
            ),
            "journal 'bill:bad': memo: longer than 500 characters",
        ),
        (
            lambda b, usd: NewJournal((NewPosting(b.receivable, 100), NewPosting(b.energy, -100)), ""),
            "journal '': external_reference: must not be empty",
        ),
        (
            lambda b, usd: (NewPosting(b.receivable, 100), NewPosting(b.energy, -100)),
            r"journals\[1\]: expected a NewJournal",
        ),
    ],
)
def test_a_bad_journal_in_the_middle_is_named_and_none_is_written(
    factory: sessionmaker[Session],
    ledger: LedgerService,
    books: Books,
    bad: Callable[[Books, int], NewJournal],
    message: str,
) -> None:
    with unit_of_work(factory) as session:
        usd = ledger.open_account(
            session, site_id=books.site_id, purpose="cash", name="stripe", currency="USD"
        ).id
    good = run_journals(books, [books.receivable, books.receivable])
    good = [NewJournal(good[0].postings, "bill:first"), NewJournal(good[1].postings, "bill:last")]
    with factory() as session:
        before = row_counts(session)
        with pytest.raises(ValidationError, match=message):
            post_run(ledger, session, books, [good[0], bad(books, usd), good[1]])
        assert row_counts(session) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda: {"kind": "reversal"}, "kind: a reversal is made by LedgerService.reverse"),
        (lambda: {"kind": "invoice"}, "kind: 'invoice' is not a journal kind"),
        (lambda: {"currency": "Kes"}, "currency: 'Kes' is not an ISO 4217 currency code"),
        (
            lambda: {"occurred_at": datetime(2026, 3, 1)},  # noqa: DTZ001  (naive on purpose)
            "occurred_at: must be a timezone-aware datetime",
        ),
        (lambda: {"journals": "bills"}, "journals: must be a list of NewJournal"),
    ],
)
def test_post_many_refuses_a_bad_call(
    factory: sessionmaker[Session],
    ledger: LedgerService,
    books: Books,
    change: Callable[[], dict[str, object]],
    message: str,
) -> None:
    args: dict[str, object] = {
        "site_id": books.site_id,
        "kind": "bill",
        "currency": "KES",
        "occurred_at": T0,
        "journals": run_journals(books, [books.receivable]),
    }
    args.update(change())
    with factory() as session:
        with pytest.raises(ValidationError, match=message):
            ledger.post_many(session, **args)  # type: ignore[arg-type]
        assert row_counts(session)[1:] == (0, 0)


def test_post_many_takes_the_same_few_statements_for_30_or_300_journals(
    factory: sessionmaker[Session],
    ledger_engine: Engine,
    registry: RegistryService,
    ledger: LedgerService,
    books: Books,
) -> None:
    with unit_of_work(factory) as session:
        ids = customer_accounts(session, registry, books, 330)
        receivables = ledger.open_accounts(
            session, site_id=books.site_id, purpose="receivable", customer_account_ids=ids
        )
    journals = run_journals(books, [a.id for a in receivables.values()])
    counted = []
    for batch in (journals[:30], journals[30:]):
        with unit_of_work(factory) as session, statements(ledger_engine) as seen:
            written = post_run(ledger, session, books, batch)
        assert len(written) == len(batch)
        counted.append(len(seen))
    # The accounts, the references (twice), the journal and posting ids, the postings, the journal rows.
    assert counted[0] == counted[1] <= 8, counted
    with factory() as session:
        assert row_counts(session)[1:] == (330, 990)
        assert ledger.trial_balance(session, books.site_id).balanced
        assert ledger.check(session).ok
