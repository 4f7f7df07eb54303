"""On SQLite, the database itself refuses raw SQL that would unbalance the ledger or change what it holds."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from openami.ledger.guards import remove_guards
from openami.ledger.service import LedgerService
from openami.registry.service import RegistryService
from openami.storage.db import unit_of_work
from tests.unit.ledger.helpers import (
    Books,
    execute_all,
    open_books,
    post_bill,
    raw_attempts,
    raw_journal,
    raw_posting,
    row_counts,
)
from tests.unit.ledger.test_service import T0

SQLITE_REFUSALS = {
    "unbalanced": "ledger: unbalanced journal: its postings do not sum to zero",
    "one posting": "ledger: unbalanced journal",
    "no postings": "ledger: a journal must have exactly posting_count postings",
    "fewer postings than declared": "ledger: a journal must have exactly posting_count postings",
    "journal before its postings": "ledger: a journal must have exactly posting_count postings",
    "balanced pair added to a written journal": "ledger: a journal is closed once written",
    "postings without a journal": "FOREIGN KEY constraint failed",
    "mixed currencies": "ledger: a journal's postings must be in its site and currency",
    "posting in another currency than its account": "FOREIGN KEY constraint failed",
    "zero posting": "CHECK constraint failed: ck_posting_amount_not_zero",
    "update a posting": "ledger postings are append-only: UPDATE refused",
    "delete a posting": "ledger postings are append-only: DELETE refused",
    "update a journal": "ledger journals are append-only: UPDATE refused",
    "delete a journal": "ledger journals are append-only: DELETE refused",
    "update an account": "ledger accounts are append-only: UPDATE refused",
    "delete an account": "ledger accounts are append-only: DELETE refused",
}


def _books_with_one_bill(
    factory: sessionmaker[Session], registry: RegistryService, ledger: LedgerService
) -> tuple[Books, int, int]:
    """Books with one bill written; returns them, the next journal id, and a USD cash account."""
    with unit_of_work(factory) as session:
        books = open_books(session, registry, ledger)
        usd = ledger.open_account(
            session, site_id=books.site_id, purpose="cash", name="stripe", currency="USD"
        )
        bill = post_bill(ledger, session, books, T0, energy=1_000)
    return books, bill.id + 1, usd.id


@pytest.mark.parametrize("attempt", sorted(SQLITE_REFUSALS))
def test_raw_sql_is_refused_and_changes_nothing(
    ledger_engine: Engine,
    factory: sessionmaker[Session],
    registry: RegistryService,
    ledger: LedgerService,
    attempt: str,
) -> None:
    books, next_id, usd = _books_with_one_bill(factory, registry, ledger)
    with factory() as session:
        before = (row_counts(session), ledger.balances(session, books.site_id))
    statements = raw_attempts(books, next_id, usd)[attempt]
    with pytest.raises(DBAPIError, match=SQLITE_REFUSALS[attempt]):
        execute_all(ledger_engine, statements)
    with factory() as session:
        assert (row_counts(session), ledger.balances(session, books.site_id)) == before
        assert ledger.check(session).ok


def test_every_refusal_is_the_guards_doing(
    ledger_engine: Engine, factory: sessionmaker[Session], registry: RegistryService, ledger: LedgerService
) -> None:
    """Without the triggers, the statements the triggers refuse go through (and `check` sees the damage)."""
    books, next_id, usd = _books_with_one_bill(factory, registry, ledger)
    with ledger_engine.begin() as conn:
        remove_guards(conn)
    execute_all(ledger_engine, raw_attempts(books, next_id, usd)["unbalanced"])
    with factory() as session:
        report = ledger.check(session)
        assert not report.ok
        assert report.first_bad_journal_id == next_id
        assert (
            report.problem == f"journal {next_id} is unbalanced: its postings sum to 150 minor units, not 0"
        )
    execute_all(
        ledger_engine,
        [
            ("DELETE FROM posting WHERE journal_id = :j", {"j": next_id}),
            ("DELETE FROM journal WHERE id = :j", {"j": next_id}),
        ],
    )
    with factory() as session:
        assert ledger.check(session).ok


def test_balanced_raw_sql_written_in_order_is_accepted(
    ledger_engine: Engine, factory: sessionmaker[Session], registry: RegistryService, ledger: LedgerService
) -> None:
    """The guards refuse what is wrong, not raw SQL as such: postings first, then their journal, balanced."""
    books, next_id, _ = _books_with_one_bill(factory, registry, ledger)
    execute_all(
        ledger_engine,
        [
            raw_posting(books, next_id, books.cash, 700),
            raw_posting(books, next_id, books.receivable, -700),
            raw_journal(books, next_id, 2),
        ],
    )
    with factory() as session:
        assert len(ledger.get_journal(session, next_id).postings) == 2
        assert ledger.balance(session, books.receivable) == 300
        assert ledger.check(session).ok
