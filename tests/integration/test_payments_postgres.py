"""1,000 webhook deliveries for 200 payments, on real PostgreSQL, from 16 threads at once, with duplicates,
replays and reordering (refunds before their success, failures after it): every balance right to the minor unit,
the ledger balanced, each payment credited once. Prints deliveries per second (not asserted)."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.common.errors import ConflictError
from openami.ledger.interfaces import AccountPurpose
from openami.ledger.models import Journal
from openami.ledger.service import LedgerService
from openami.prepayment.payments import PaymentInfo, PaymentService
from openami.prepayment.payments_models import PaymentEventRecord, PaymentRecord
from openami.prepayment.providers import EventKind
from openami.prepayment.providers.sandbox import SandboxProvider
from openami.registry.service import RegistryService
from openami.security.meter_keys import MeterKeyCipher
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory, unit_of_work

pytestmark = pytest.mark.integration

PAYMENTS, DELIVERIES, THREADS, ACCOUNTS = 200, 1_000, 16, 40


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url, pool_size=THREADS, max_overflow=4)
    yield engine
    engine.dispose()


def _plan(
    payments: list[PaymentInfo], rng: random.Random
) -> tuple[list[tuple[int, EventKind]], dict[int, bool]]:
    """Each payment's deliveries (payment index, kind) and whether it must end credited."""
    deliveries: list[tuple[int, EventKind]] = []
    credited: dict[int, bool] = {}
    for i in range(len(payments)):
        fate = i % 10
        if fate == 0:  # only ever fails
            events = [EventKind.FAILED]
            credited[i] = False
        elif fate == 1:  # refunded, the refund possibly first
            events = [EventKind.SUCCEEDED, EventKind.REFUNDED]
            credited[i] = False
        elif fate == 2:  # charged back
            events = [EventKind.SUCCEEDED, EventKind.CHARGEBACK]
            credited[i] = False
        else:  # succeeds, with a failed attempt before or after it
            events = [EventKind.SUCCEEDED, EventKind.FAILED]
            credited[i] = True
        deliveries += [(i, kind) for kind in events]
    while len(deliveries) < DELIVERIES:  # duplicates and replays of what each payment's provider sends
        deliveries.append(rng.choice(deliveries))
    rng.shuffle(deliveries)
    return deliveries, credited


def test_a_thousand_concurrent_deliveries(engine: Engine, meter_keys: MeterKeyCipher) -> None:
    rng = random.Random(5)
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    registry = RegistryService(clock, meter_keys)
    ledger = LedgerService(clock, registry)
    sandbox = SandboxProvider(b"integration-sandbox-secret-42", clock)
    service = PaymentService(clock, registry, ledger, [sandbox])
    factory: sessionmaker[Session] = make_session_factory(engine)

    with unit_of_work(factory) as session:
        site = registry.create_site(
            session,
            code="KSM",
            name="Site KSM",
            timezone="Africa/Nairobi",
            currency="KES",
            holiday_country="KE",
        )
        account_ids = []
        for n in range(ACCOUNTS):
            customer = registry.create_customer(
                session, site_id=site.id, reference=f"C-{n}", name=f"Cust {n}"
            )
            account = registry.create_account(
                session, site_id=site.id, customer_id=customer.id, number=f"P-{n}", kind="prepaid"
            )
            account_ids.append(account.id)
    payments = []
    for i in range(PAYMENTS):
        with unit_of_work(factory) as session:
            started = service.start_checkout(
                session,
                account_id=account_ids[i % ACCOUNTS],
                amount_minor=rng.randint(1, 500_000),
                provider="sandbox",
                actor="bench",
                role="customer",
            )
        payments.append(started.payment)
    deliveries, credited = _plan(payments, rng)
    # Each kind of each payment is one provider event: a duplicate is the same body, byte for byte.
    bodies = {
        (i, kind): sandbox.event_body(
            kind,
            p.provider_payment_id or "",
            p.reference,
            p.amount_minor,
            "KES",
            event_id=f"evt-{i}-{kind.value}",
        )
        for i, p in enumerate(payments)
        for kind in EventKind
    }
    retries = Counter[str]()

    def deliver(item: tuple[int, EventKind]) -> str:
        body = bodies[item]
        for _ in range(20):
            try:
                with unit_of_work(factory) as session:
                    return service.handle_webhook(session, "sandbox", sandbox.sign(body), body).outcome
            except (
                ConflictError,
                OperationalError,
            ) as exc:  # a deadlock or a raced append: the provider retries
                retries[type(exc).__name__] += 1
        raise AssertionError(f"delivery {item} failed 20 times")

    started_at = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = Counter(pool.map(deliver, deliveries))
    elapsed = time.perf_counter() - started_at
    print(
        f"\npayments webhooks: {DELIVERIES} deliveries for {PAYMENTS} payments from {THREADS} threads in "
        f"{elapsed:.2f} s: {DELIVERIES / elapsed:.0f} deliveries/s; outcomes {dict(outcomes)}; retries {dict(retries)}"
    )

    assert outcomes["refused"] == 0
    with factory() as session:
        expected: Counter[int] = Counter()
        for i, p in enumerate(payments):
            if credited[i]:
                expected[p.account_id] += p.amount_minor
        for account_id in account_ids:
            prepayment = ledger.open_account(
                session, site_id=site.id, purpose=AccountPurpose.PREPAYMENT, customer_account_id=account_id
            )
            assert ledger.balance(session, prepayment.id) == -expected[account_id], account_id
        cash = ledger.open_account(session, site_id=site.id, purpose=AccountPurpose.CASH, name="sandbox")
        assert ledger.balance(session, cash.id) == sum(expected.values())
        assert ledger.check(session).ok
        rows = {r.reference: r for r in session.scalars(select(PaymentRecord))}
        for i, p in enumerate(payments):
            row = rows[p.reference]
            assert (row.journal_id is not None and row.reversal_journal_id is None) == credited[i], (
                p.reference
            )
        succeeded = sum(1 for i in range(PAYMENTS) if i % 10 != 0)
        kinds = dict(session.execute(select(Journal.kind, func.count()).group_by(Journal.kind)).all())
        assert kinds == {
            "payment": succeeded,
            "reversal": sum(1 for i in range(PAYMENTS) if i % 10 in (1, 2)),
        }
        assert session.scalar(select(func.count()).select_from(PaymentEventRecord)) == DELIVERIES
