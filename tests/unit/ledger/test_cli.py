"""`openami ledger check`: says the ledger balances, or names the first journal that does not, and exits 1."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from openami.cli.ledger import app
from openami.ledger.guards import remove_guards
from openami.ledger.service import LedgerService
from openami.registry.service import RegistryService
from openami.storage.db import unit_of_work
from tests.unit.ledger.helpers import (
    Books,
    execute_all,
    open_books,
    post_bill,
    post_payment,
    raw_journal,
    raw_posting,
)
from tests.unit.ledger.test_service import T0


def _history(
    factory: sessionmaker[Session], registry: RegistryService, ledger: LedgerService
) -> tuple[Books, int]:
    """Books with a bill, a payment and the bill's reversal; returns them and the bill's id."""
    with unit_of_work(factory) as session:
        books = open_books(session, registry, ledger)
        bill = post_bill(ledger, session, books, T0, energy=2_000, vat=320)
        post_payment(ledger, session, books, T0 + timedelta(days=1), 2_320, reference="mpesa:1")
        ledger.reverse(session, bill.id)
    return books, bill.id


def test_check_passes_on_a_balanced_ledger(
    sqlite_url: str, factory: sessionmaker[Session], registry: RegistryService, ledger: LedgerService
) -> None:
    _history(factory, registry, ledger)
    result = CliRunner().invoke(app, ["check", "--database-url", sqlite_url])
    assert result.exit_code == 0, result.output
    assert (
        "3 journals, 8 postings: every journal balances; the trial balance is zero in 1 site-currency pair(s)"
        in (result.output)
    )


def test_check_names_the_first_unbalanced_journal(
    sqlite_url: str,
    ledger_engine: Engine,
    factory: sessionmaker[Session],
    registry: RegistryService,
    ledger: LedgerService,
) -> None:
    books, _ = _history(factory, registry, ledger)
    with ledger_engine.begin() as conn:
        remove_guards(conn)  # what only someone with the database owner's rights could do
    for journal_id, amount in ((10, 99), (11, 5)):
        execute_all(
            ledger_engine,
            [
                raw_posting(books, journal_id, books.receivable, amount),
                raw_posting(books, journal_id, books.energy, -1),
                raw_journal(books, journal_id, 2),
            ],
        )
    result = CliRunner().invoke(app, ["check", "--database-url", sqlite_url])
    assert result.exit_code == 1
    assert (
        "ledger out of balance: journal 10 is unbalanced: its postings sum to 98 minor units, not 0"
        in result.output
    )


def test_check_finds_a_reversal_that_does_not_negate_its_journal(
    sqlite_url: str,
    ledger_engine: Engine,
    factory: sessionmaker[Session],
    registry: RegistryService,
    ledger: LedgerService,
) -> None:
    with unit_of_work(factory) as session:
        books = open_books(session, registry, ledger)
        bill = post_bill(ledger, session, books, T0, energy=2_000)
    execute_all(
        ledger_engine,
        [
            raw_posting(books, 5, books.receivable, -1_500),
            raw_posting(books, 5, books.energy, 1_500),
            raw_journal(books, 5, 2, reverses=bill.id),
        ],
    )
    result = CliRunner().invoke(app, ["check", "--database-url", sqlite_url])
    assert result.exit_code == 1
    assert (
        f"journal 5, the reversal of journal {bill.id}, does not negate every posting of the journal it reverses"
        in result.output
    )


def test_check_finds_postings_whose_journal_was_never_written(
    sqlite_url: str,
    ledger_engine: Engine,
    factory: sessionmaker[Session],
    registry: RegistryService,
    ledger: LedgerService,
) -> None:
    books, _ = _history(factory, registry, ledger)
    with ledger_engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # outside a transaction, as SQLite requires
        for sql, params in (
            raw_posting(books, 40, books.cash, 10),
            raw_posting(books, 40, books.receivable, -10),
        ):
            conn.execute(text(sql), params)
        conn.commit()
    result = CliRunner().invoke(app, ["check", "--database-url", sqlite_url])
    assert result.exit_code == 1
    assert "ledger out of balance: journal 40 was never written, yet postings name it" in result.output


def test_check_without_a_ledger_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["check", "--database-url", f"sqlite:///{tmp_path / 'empty.db'}"])
    assert result.exit_code == 2
    assert "cannot use the ledger's database" in result.output
    assert "openami db upgrade" in result.output
