"""The ledger on real PostgreSQL, built by the migrations: the deferred constraint triggers refuse unbalanced and
altered journals at commit, append-only guards refuse changes, and concurrent writers of one external reference,
one reversal or one account end with exactly one row."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TypeVar

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from openami.cli.ledger import app
from openami.common.clock import ManualClock
from openami.common.errors import ConflictError
from openami.ledger.guards import remove_guards
from openami.ledger.interfaces import JournalInfo, NewPosting
from openami.ledger.models import Journal, LedgerAccount
from openami.ledger.service import LedgerService
from openami.registry.service import RegistryService
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory, unit_of_work
from tests.unit.ledger.helpers import (
    Books,
    Raw,
    execute_all,
    open_books,
    post_bill,
    post_payment,
    raw_attempts,
    raw_journal,
    raw_posting,
    row_counts,
)
from tests.unit.ledger.test_service import T0

pytestmark = pytest.mark.integration

T = TypeVar("T")

PG_REFUSALS = {
    "unbalanced": r"ledger: unbalanced journal \d+: its postings sum to 150 minor units, not 0",
    "one posting": "ck_journal_at_least_two_postings",
    "no postings": r"ledger: journal \d+ declares 2 postings but has 0",
    "fewer postings than declared": r"ledger: journal \d+ declares 3 postings but has 2",
    "journal before its postings": r"ledger: journal \d+ is closed once written",
    "balanced pair added to a written journal": r"ledger: journal \d+ is closed once written",
    "postings without a journal": "fk_posting_journal_id_journal|was never written",
    "mixed currencies": "fk_posting_journal_id_journal|outside its site or currency",
    "posting in another currency than its account": "fk_posting_ledger_account_id_ledger_account",
    "zero posting": "ck_posting_amount_not_zero",
    "update a posting": "ledger postings are append-only: UPDATE refused",
    "delete a posting": "ledger postings are append-only: DELETE refused",
    "update a journal": "ledger journals are append-only: UPDATE refused",
    "delete a journal": "ledger journals are append-only: DELETE refused",
    "update an account": "ledger accounts are append-only: UPDATE refused",
    "delete an account": "ledger accounts are append-only: DELETE refused",
    "truncate postings": "ledger postings are append-only: TRUNCATE refused",
    "truncate journals": "ledger journals are append-only: TRUNCATE refused",
    "truncate accounts": "ledger accounts are append-only: TRUNCATE refused",
}


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def ledger(clock: ManualClock) -> LedgerService:
    return LedgerService(clock, RegistryService(clock))


@pytest.fixture
def books(factory: sessionmaker[Session], ledger: LedgerService) -> Books:
    with unit_of_work(factory) as session:
        assert isinstance(ledger.directory, RegistryService)
        return open_books(session, ledger.directory, ledger)


def _attempts(books: Books, next_id: int, usd: int) -> dict[str, list[Raw]]:
    return {
        **raw_attempts(books, next_id, usd),
        "truncate postings": [("TRUNCATE posting", {})],
        "truncate journals": [("TRUNCATE journal CASCADE", {})],
        "truncate accounts": [("TRUNCATE ledger_account CASCADE", {})],
    }


@pytest.mark.parametrize("attempt", sorted(PG_REFUSALS))
def test_raw_sql_is_refused_at_commit_and_changes_nothing(
    engine: Engine, factory: sessionmaker[Session], ledger: LedgerService, books: Books, attempt: str
) -> None:
    with unit_of_work(factory) as session:
        usd = ledger.open_account(
            session, site_id=books.site_id, purpose="cash", name="stripe", currency="USD"
        )
        bill = post_bill(ledger, session, books, T0, energy=1_000)
    with factory() as session:
        before = (row_counts(session), ledger.balances(session, books.site_id))
    with pytest.raises(DBAPIError, match=PG_REFUSALS[attempt]):
        execute_all(engine, _attempts(books, bill.id + 1, usd.id)[attempt])
    with factory() as session:
        assert (row_counts(session), ledger.balances(session, books.site_id)) == before
        assert ledger.check(session).ok


def test_without_the_guards_the_damage_goes_through_and_check_names_it(
    engine: Engine, factory: sessionmaker[Session], ledger: LedgerService, books: Books, pg_url: str
) -> None:
    with unit_of_work(factory) as session:
        bill = post_bill(ledger, session, books, T0, energy=1_000)
    with engine.begin() as conn:
        remove_guards(conn)
    execute_all(engine, raw_attempts(books, bill.id + 1, books.cash)["unbalanced"])
    result = CliRunner().invoke(app, ["check", "--database-url", pg_url])
    assert result.exit_code == 1
    assert f"journal {bill.id + 1} is unbalanced: its postings sum to 150 minor units, not 0" in result.output


def test_a_posting_slipped_into_another_transactions_journal_is_caught_at_commit(
    engine: Engine, factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    """The posting's own deferred check (not only the journal's) counts the journal's postings at commit."""
    with unit_of_work(factory) as session:
        bill = post_bill(ledger, session, books, T0, energy=1_000)
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER posting_closed_journal ON posting"))
    slipped = [
        raw_posting(books, bill.id, books.receivable, 500),
        raw_posting(books, bill.id, books.energy, -500),
    ]
    with pytest.raises(DBAPIError, match=f"journal {bill.id} declares 2 postings but has 4"):
        execute_all(engine, slipped)


def _in_a_savepoint(factory: sessionmaker[Session], statements: list[Raw]) -> None:
    with unit_of_work(factory) as session, session.begin_nested():
        for sql, params in statements:
            session.execute(text(sql), params)


def test_journals_written_inside_a_savepoint_are_checked_too(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    with unit_of_work(factory) as session:
        with session.begin_nested():
            kept = post_bill(ledger, session, books, T0, energy=1_000)
        savepoint = session.begin_nested()
        post_payment(ledger, session, books, T0, 50)
        savepoint.rollback()  # only the savepoint: the bill stays
    next_id = kept.id + 10
    unbalanced = [
        raw_posting(books, next_id, books.cash, 70),
        raw_posting(books, next_id, books.receivable, -60),
        raw_journal(books, next_id, 2),
    ]
    with pytest.raises(DBAPIError, match="unbalanced journal"):
        _in_a_savepoint(factory, unbalanced)
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Journal)) == 1
        assert ledger.check(session).ok


def test_service_round_trip_and_cli_check(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books, clock: ManualClock, pg_url: str
) -> None:
    with unit_of_work(factory) as session:
        bill = post_bill(ledger, session, books, T0, energy=8_000, fixed=1_000, export=500, vat=1_360)
        post_payment(ledger, session, books, T0 + timedelta(days=2), 9_860, reference="mpesa:PG1")
        clock.advance(timedelta(days=5))
        ledger.reverse(session, bill.id)
    with factory() as session:
        assert ledger.balance(session, books.receivable) == -9_860  # paid, then the bill was withdrawn
        assert ledger.balance(session, books.receivable, as_of=T0 + timedelta(days=3)) == 0
        assert ledger.trial_balance(session, books.site_id).balanced
        report = ledger.check(session)
        assert (report.ok, report.journals, report.postings) == (True, 3, 12)
    result = CliRunner().invoke(app, ["check", "--database-url", pg_url])
    assert result.exit_code == 0, result.output
    assert "3 journals, 12 postings: every journal balances" in result.output


def _race(workers: int, work: Callable[[int], T]) -> tuple[list[T], list[BaseException]]:
    """Run `work(i)` in `workers` threads released together; what they returned, and what they raised."""
    start = threading.Barrier(workers)
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        try:
            start.wait()
            value = work(i)
        except BaseException as exc:  # collected for the assertions
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(value)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_concurrent_posts_of_one_reference_write_one_journal(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    for round_number in range(5):
        reference = f"stripe:pi_{round_number}"

        def pay(_: int, reference: str = reference) -> JournalInfo:
            with unit_of_work(factory) as session:
                return post_payment(ledger, session, books, T0, 1_250, prepaid=True, reference=reference)

        results, errors = _race(4, pay)
        assert errors == []
        assert len({journal.id for journal in results}) == 1
        with factory() as session:
            count = select(func.count()).select_from(Journal).where(Journal.external_reference == reference)
            assert session.scalar(count) == 1
    with factory() as session:
        assert ledger.balance(session, books.cash) == 5 * 1_250
        assert ledger.check(session).ok


def test_concurrent_reversals_of_one_journal_write_one(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    with unit_of_work(factory) as session:
        bill = post_bill(ledger, session, books, T0, energy=3_000)

    def reverse(_: int) -> JournalInfo:
        with unit_of_work(factory) as session:
            return ledger.reverse(session, bill.id)

    results, errors = _race(3, reverse)
    assert len(results) == 1
    assert len(errors) == 2
    assert all(isinstance(e, ConflictError) and "was already reversed" in str(e) for e in errors)
    with factory() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(Journal).where(Journal.reverses_journal_id == bill.id)
            )
            == 1
        )
        assert ledger.balance(session, books.receivable) == 0


def test_concurrent_openings_of_one_account_open_one(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    def open_cash(_: int) -> int:
        with unit_of_work(factory) as session:
            return ledger.open_account(session, site_id=books.site_id, purpose="cash", name="airtel").id

    results, errors = _race(4, open_cash)
    assert errors == []
    assert len(set(results)) == 1
    with factory() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(LedgerAccount).where(LedgerAccount.code == "cash/airtel")
            )
            == 1
        )


def test_reference_and_postings_round_trip_as_written(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    with unit_of_work(factory) as session:
        written = ledger.post(
            session,
            site_id=books.site_id,
            kind="adjustment",
            currency="KES",
            occurred_at=T0,
            postings=[NewPosting(books.bad_debt, 10**15), NewPosting(books.receivable, -(10**15))],
            external_reference="write-off/ünïcode ✓",
            memo="largest amounts",
        )
    with factory() as session:
        assert ledger.get_journal(session, written.id) == written
        assert ledger.balance(session, books.bad_debt) == 10**15


# -- bulk writes: open_accounts and post_many ---------------------------------------------------------------------
# (imported in each test, so that the head of this file is left as it was)


def _run_books(factory: sessionmaker[Session], ledger: LedgerService, books: Books, count: int) -> list[int]:
    """`count` customer accounts of the books' site with their receivables opened, the receivables' ids."""
    from tests.unit.ledger.test_bulk import customer_accounts

    with unit_of_work(factory) as session:
        assert isinstance(ledger.directory, RegistryService)
        ids = customer_accounts(session, ledger.directory, books, count)
        opened = ledger.open_accounts(
            session, site_id=books.site_id, purpose="receivable", customer_account_ids=ids
        )
        return [a.id for a in opened.values()]


def test_post_many_writes_what_post_writes_and_again_nothing(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    from dataclasses import replace

    from tests.unit.ledger.test_bulk import post_run, run_journals

    journals = run_journals(books, _run_books(factory, ledger, books, 20))
    with factory() as session:  # rolled back: the sequence moves on, so only the ids differ
        one_by_one = [
            ledger.post(
                session,
                site_id=books.site_id,
                kind="bill",
                currency="KES",
                occurred_at=T0,
                postings=j.postings,
                external_reference=j.external_reference,
                memo=j.memo,
            )
            for j in journals
        ]
    with unit_of_work(factory) as session:
        batch = post_run(ledger, session, books, journals)

    def without_ids(journal: JournalInfo) -> JournalInfo:
        return replace(journal, id=0, postings=tuple(replace(p, id=0) for p in journal.postings))

    assert [without_ids(j) for j in batch] == [without_ids(j) for j in one_by_one]
    assert [j.id for j in batch] == sorted(j.id for j in batch)
    posting_ids = [p.id for j in batch for p in j.postings]
    assert posting_ids == sorted(posting_ids)  # in the order given
    with unit_of_work(factory) as session:
        before = row_counts(session)
        assert post_run(ledger, session, books, journals) == batch
        assert row_counts(session) == before
    with factory() as session:
        assert [ledger.get_journal(session, j.id) for j in batch] == batch
        assert ledger.trial_balance(session, books.site_id).balanced
        assert ledger.check(session).ok


def test_post_many_is_all_or_nothing_and_keeps_references_once(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    from openami.common.errors import ValidationError
    from openami.ledger.interfaces import NewJournal
    from tests.unit.ledger.test_bulk import post_run, run_journals

    receivables = _run_books(factory, ledger, books, 6)
    journals = run_journals(books, receivables)
    with unit_of_work(factory) as session:
        earlier = post_run(ledger, session, books, [journals[4]])[0]
    unbalanced = NewJournal((NewPosting(books.receivable, 100), NewPosting(books.energy, -90)), "bill:bad")
    changed = NewJournal(
        (NewPosting(books.receivable, 5), NewPosting(books.energy, -5)), earlier.external_reference
    )
    with factory() as session:
        before = row_counts(session)
        with pytest.raises(ValidationError, match="journal 'bill:bad': unbalanced"):
            post_run(ledger, session, books, [*journals[:2], unbalanced, *journals[2:]])
        with pytest.raises(ValidationError, match=r"journals\[3\]: external_reference: .* journals\[0\]"):
            post_run(ledger, session, books, [*journals[:3], journals[0]])
        with pytest.raises(ConflictError, match=f"by journal {earlier.id}, whose postings differ"):
            post_run(ledger, session, books, [*journals[:4], changed])
        assert row_counts(session) == before
    with unit_of_work(factory) as session:
        written = post_run(ledger, session, books, journals)
    assert written[4] == earlier
    with factory() as session:
        assert row_counts(session)[1:] == (before[1] + 5, before[2] + 15)
        assert ledger.check(session).ok


def test_post_many_takes_the_same_few_statements_for_30_or_300_journals(
    engine: Engine, factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    from tests.unit.ledger.test_bulk import post_run, run_journals, statements

    journals = run_journals(books, _run_books(factory, ledger, books, 330))
    counted = []
    for batch in (journals[:30], journals[30:]):
        with unit_of_work(factory) as session, statements(engine) as seen:
            assert len(post_run(ledger, session, books, batch)) == len(batch)
        counted.append(len(seen))
    # The accounts, the references, their locks, the references again, the ids, the postings, the journal rows.
    assert counted[0] == counted[1] <= 8, counted
    with factory() as session:
        assert ledger.trial_balance(session, books.site_id).balanced
        assert ledger.check(session).ok


def test_concurrent_open_accounts_of_the_same_customers_open_one_each(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    from tests.unit.ledger.test_bulk import customer_accounts

    with unit_of_work(factory) as session:
        assert isinstance(ledger.directory, RegistryService)
        ids = customer_accounts(session, ledger.directory, books, 200)

    def open_all(worker: int) -> dict[int, int]:
        order = ids if worker % 2 else ids[::-1]  # the locks are sorted: no order of the ids deadlocks
        with unit_of_work(factory) as session:
            opened = ledger.open_accounts(
                session, site_id=books.site_id, purpose="prepayment", customer_account_ids=order
            )
            return {c: a.id for c, a in opened.items()}

    results, errors = _race(4, open_all)
    assert errors == []
    assert len(results) == 4
    assert all(r == results[0] for r in results)
    with factory() as session:
        codes = session.scalars(select(LedgerAccount.code).where(LedgerAccount.purpose == "prepayment")).all()
        assert sorted(codes) == sorted(f"prepayment/account-{i}" for i in [books.customer_account_id, *ids])


def test_concurrent_post_many_of_the_same_references_write_each_once(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    from tests.unit.ledger.test_bulk import post_run, run_journals

    journals = run_journals(books, _run_books(factory, ledger, books, 100))

    def post_all(worker: int) -> list[int]:
        order = journals if worker % 2 else journals[::-1]
        with unit_of_work(factory) as session:
            return sorted(j.id for j in post_run(ledger, session, books, order))

    results, errors = _race(4, post_all)
    assert errors == []
    assert len(results) == 4
    assert all(r == results[0] for r in results)
    with factory() as session:
        assert row_counts(session)[1:] == (100, 300)
        assert ledger.check(session).ok


def test_the_deferred_guards_refuse_raw_sql_beside_post_many(
    factory: sessionmaker[Session], ledger: LedgerService, books: Books
) -> None:
    """post_many's journals and a raw journal in one transaction: the commit refuses the raw one, and so all."""
    from tests.unit.ledger.test_bulk import post_run, run_journals

    journals = run_journals(books, _run_books(factory, ledger, books, 10))

    def post_and_slip(attempt: str, offset: int) -> None:
        with unit_of_work(factory) as session:
            written = post_run(ledger, session, books, journals)
            for sql, params in raw_attempts(books, written[-1].id + offset, books.cash)[attempt]:
                session.execute(text(sql), params)

    with factory() as session:
        before = row_counts(session)
    with pytest.raises(
        DBAPIError, match=r"ledger: unbalanced journal \d+: its postings sum to 150 minor units"
    ):
        post_and_slip("unbalanced", 1_000)
    with pytest.raises(DBAPIError, match=r"ledger: journal \d+ is closed once written"):
        post_and_slip(
            "balanced pair added to a written journal", 1
        )  # raw_attempts' "old" journal: the last one
    with factory() as session:
        assert row_counts(session) == before
        assert ledger.check(session).ok
