"""Properties of the ledger on SQLite (migrated, guards in force), over any sequence of bills, payments, refunds,
replayed payment notices and reversals:
- every account's balance is what the sequence says, every site's trial balance is zero and `check` passes;
- balances as of any instant count exactly the journals that occurred by then;
- a reversal restores every balance;
- unbalanced and mixed-currency journals are refused before anything is written.

Each example works in a site of its own, in one database migrated once per module (the ledger is append-only:
nothing can be cleaned up between examples, and nothing needs to be).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.common.errors import ConflictError, ValidationError
from openami.ledger.interfaces import JournalInfo, JournalKind, NewPosting
from openami.ledger.service import LedgerService
from openami.registry.service import RegistryService
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory, unit_of_work
from tests.unit.ledger.helpers import Books, open_books, post_bill, post_payment, post_refund, row_counts

_sites = itertools.count(1)


@dataclass
class World:
    factory: sessionmaker[Session]
    clock: ManualClock
    registry: RegistryService
    ledger: LedgerService

    def new_books(self) -> Books:
        with unit_of_work(self.factory) as session:
            return open_books(session, self.registry, self.ledger, code=f"P{next(_sites)}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('ledger')) / 'properties.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    registry = RegistryService(clock)
    yield World(make_session_factory(engine), clock, registry, LedgerService(clock, registry))
    engine.dispose()


amounts = st.integers(min_value=1, max_value=10**9)
small = st.integers(min_value=0, max_value=10**6)
operations = st.one_of(
    st.tuples(st.just("bill"), amounts, small, small, small),
    st.tuples(st.just("pay"), amounts, st.booleans()),
    st.tuples(st.just("refund"), amounts),
    st.tuples(st.just("reverse"), st.integers(min_value=0, max_value=10**6)),
    st.tuples(st.just("replay"), st.integers(min_value=0, max_value=10**6)),
)


@dataclass
class Expected:
    """What the ledger must hold, kept by the test alongside it."""

    journals: list[JournalInfo] = field(default_factory=list)
    reversed_ids: set[int] = field(default_factory=set)

    def balances(self, books: Books, as_of: datetime | None = None) -> dict[int, int]:
        out = dict.fromkeys(books.account_ids, 0)
        for journal in self.journals:
            if as_of is None or journal.occurred_at <= as_of:
                for p in journal.postings:
                    out[p.ledger_account_id] += p.amount_minor
        return out


def _apply(world: World, books: Books, expected: Expected, number: int, op: tuple[object, ...]) -> None:
    ledger, at = world.ledger, world.clock.advance(timedelta(hours=1))
    with unit_of_work(world.factory) as session:
        match op:
            case ("bill", int(energy), int(fixed), int(export), int(vat)):
                expected.journals.append(post_bill(ledger, session, books, at, energy, fixed, export, vat))
            case ("pay", int(amount), bool(prepaid)):
                paid = post_payment(
                    ledger, session, books, at, amount, prepaid=prepaid, reference=f"pay-{number}"
                )
                expected.journals.append(paid)
            case ("refund", int(amount)):
                expected.journals.append(post_refund(ledger, session, books, at, amount))
            case ("reverse", int(index)) if expected.journals:
                target = expected.journals[index % len(expected.journals)]
                if target.kind is JournalKind.REVERSAL or target.id in expected.reversed_ids:
                    before = row_counts(session)
                    with pytest.raises(ConflictError):
                        ledger.reverse(session, target.id)
                    assert row_counts(session) == before
                else:
                    expected.journals.append(ledger.reverse(session, target.id))
                    expected.reversed_ids.add(target.id)
            case ("replay", int(index)) if expected.journals:
                # The payment provider sends the same notice again: the ledger answers with the journal it wrote.
                target = expected.journals[index % len(expected.journals)]
                if target.external_reference is not None:
                    before = row_counts(session)
                    again = ledger.post(
                        session,
                        site_id=books.site_id,
                        kind=target.kind,
                        currency=target.currency,
                        occurred_at=at,
                        postings=[NewPosting(p.ledger_account_id, p.amount_minor) for p in target.postings],
                        external_reference=target.external_reference,
                    )
                    assert again == target
                    assert row_counts(session) == before
            case _:
                pass


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(operations, min_size=1, max_size=20), as_of_step=st.integers(min_value=0, max_value=20))
def test_the_ledger_balances_after_any_sequence(
    world: World, ops: list[tuple[object, ...]], as_of_step: int
) -> None:
    books = world.new_books()
    start = world.clock.now()
    expected = Expected()
    for number, op in enumerate(ops):
        _apply(world, books, expected, number, op)
    ledger = world.ledger
    with world.factory() as session:
        assert ledger.balances(session, books.site_id) == expected.balances(books)
        trial = ledger.trial_balance(session, books.site_id)
        assert trial.balanced
        assert trial.total_debit_minor == sum(
            p.amount_minor for j in expected.journals for p in j.postings if p.amount_minor > 0
        )
        as_of = start + timedelta(hours=as_of_step)
        assert ledger.balances(session, books.site_id, as_of=as_of) == expected.balances(books, as_of)
        assert ledger.trial_balance(session, books.site_id, as_of=as_of).balanced
        report = ledger.check(session)
        assert report.ok, report.problem


@settings(max_examples=30, deadline=None)
@given(
    history=st.lists(operations, max_size=8),
    energy=amounts,
    fixed=small,
    export=small,
    vat=small,
    payment=st.booleans(),
)
def test_a_reversal_restores_every_balance(
    world: World,
    history: list[tuple[object, ...]],
    energy: int,
    fixed: int,
    export: int,
    vat: int,
    payment: bool,
) -> None:
    books = world.new_books()
    expected = Expected()
    for number, op in enumerate(history):
        _apply(world, books, expected, number, op)
    ledger, at = world.ledger, world.clock.advance(timedelta(hours=1))
    with unit_of_work(world.factory) as session:
        before = ledger.balances(session, books.site_id)
        if payment:
            journal = post_payment(ledger, session, books, at, energy, prepaid=bool(fixed % 2))
        else:
            journal = post_bill(ledger, session, books, at, energy, fixed, export, vat)
        assert ledger.balances(session, books.site_id) != before
        ledger.reverse(session, journal.id)
        assert ledger.balances(session, books.site_id) == before


@settings(max_examples=40, deadline=None)
@given(
    lines=st.lists(
        st.tuples(st.integers(min_value=0, max_value=7), st.integers(min_value=-(10**9), max_value=10**9)),
        min_size=2,
        max_size=8,
    ).filter(lambda lines: all(a for _, a in lines) and sum(a for _, a in lines) != 0)
)
def test_unbalanced_journals_are_refused_before_anything_is_written(
    world: World, lines: list[tuple[int, int]]
) -> None:
    books = world.new_books()
    postings = [NewPosting(books.account_ids[i], amount) for i, amount in lines]
    with world.factory() as session:
        before = row_counts(session)
        with pytest.raises(
            ValidationError, match=f"unbalanced: the postings sum to {sum(a for _, a in lines)} "
        ):
            world.ledger.post(
                session,
                site_id=books.site_id,
                kind="adjustment",
                currency=books.currency,
                occurred_at=world.clock.now(),
                postings=postings,
            )
        assert row_counts(session) == before


@settings(max_examples=25, deadline=None)
@given(
    lines=st.lists(
        st.tuples(st.integers(min_value=0, max_value=7), amounts, st.booleans()), min_size=1, max_size=6
    ).filter(lambda lines: any(usd for *_, usd in lines) and not all(usd for *_, usd in lines))
)
def test_mixed_currency_journals_are_refused_before_anything_is_written(
    world: World, lines: list[tuple[int, int, bool]]
) -> None:
    books = world.new_books()
    with unit_of_work(world.factory) as session:
        usd = world.ledger.open_account(
            session, site_id=books.site_id, purpose="cash", name="stripe", currency="USD"
        ).id
    # Each line debits an account, in KES or the USD one, and one KES line credits the total: balanced.
    postings = [NewPosting(usd if in_usd else books.account_ids[i], amount) for i, amount, in_usd in lines]
    postings.append(NewPosting(books.cash, -sum(p.amount_minor for p in postings)))
    with world.factory() as session:
        before = row_counts(session)
        with pytest.raises(
            ValidationError, match=r"is in USD, the journal in KES: a journal's postings are all in"
        ):
            world.ledger.post(
                session,
                site_id=books.site_id,
                kind="adjustment",
                currency="KES",
                occurred_at=world.clock.now(),
                postings=postings,
            )
        assert row_counts(session) == before
