"""Payment webhooks on PostgreSQL: 1,000 deliveries for 200 payments from 16 threads at once, with duplicates,
replays and reordering (refunds before their success, failures after it), each verified, recorded and applied in a
transaction of its own; against the floor of the same number of one-row transactions from the same threads.

`run` also checks the outcome and raises unless every balance is right to the minor unit, the ledger balances and
each payment was credited once (tests/integration/test_payments_postgres.py runs it at test size)."""

from __future__ import annotations

import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select, text
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
from openami.storage.db import make_session_factory, unit_of_work

ACCOUNTS = 40


@dataclass(frozen=True)
class WebhookFigures:
    deliveries: int
    payments: int
    threads: int
    seconds: float
    floor_seconds: float  # the same number of one-row transactions from the same threads
    outcomes: dict[str, int]
    retries: dict[
        str, int
    ]  # deliveries the database made retry (a deadlock or a raced append), as a provider would

    @property
    def per_s(self) -> float:
        return self.deliveries / self.seconds

    @property
    def floor_per_s(self) -> float:
        return self.deliveries / self.floor_seconds


def plan(
    payments: list[PaymentInfo], deliveries: int, rng: random.Random
) -> tuple[list[tuple[int, EventKind]], dict[int, bool]]:
    """Each payment's deliveries (payment index, kind) and whether it must end credited."""
    out: list[tuple[int, EventKind]] = []
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
        out += [(i, kind) for kind in events]
    while len(out) < deliveries:  # duplicates and replays of what each payment's provider sends
        out.append(rng.choice(out))
    rng.shuffle(out)
    return out, credited


def run(
    engine: Engine,
    meter_keys: MeterKeyCipher,
    *,
    deliveries: int = 1_000,
    payments: int = 200,
    threads: int = 16,
) -> WebhookFigures:
    """Set up a site with `payments` sandbox checkouts on the migrated database of `engine` (its pool at least
    `threads` wide), deliver, check, and measure the floor."""
    rng = random.Random(5)
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    registry = RegistryService(clock, meter_keys)
    ledger = LedgerService(clock, registry)
    sandbox = SandboxProvider(b"bench-sandbox-secret-0123456789", clock)
    service = PaymentService(clock, registry, ledger, [sandbox])
    factory: sessionmaker[Session] = make_session_factory(engine)

    with unit_of_work(factory) as session:
        site = registry.create_site(
            session,
            code="PAY",
            name="Payments",
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
    started: list[PaymentInfo] = []
    for i in range(payments):
        with unit_of_work(factory) as session:
            started.append(
                service.start_checkout(
                    session, account_id=account_ids[i % ACCOUNTS], amount_minor=rng.randint(1, 500_000),
                    provider="sandbox", actor="bench", role="customer",
                ).payment
            )  # fmt: skip
    schedule, credited = plan(started, deliveries, rng)
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
        for i, p in enumerate(started)
        for kind in EventKind
    }
    retries = Counter[str]()

    def deliver(item: tuple[int, EventKind]) -> str:
        body = bodies[item]
        for _ in range(20):
            try:
                with unit_of_work(factory) as session:
                    return service.handle_webhook(session, "sandbox", sandbox.sign(body), body).outcome
            except (ConflictError, OperationalError) as exc:  # the provider delivers again
                retries[type(exc).__name__] += 1
        raise RuntimeError(f"delivery {item} failed 20 times")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        outcomes = Counter(pool.map(deliver, schedule))
    seconds = time.perf_counter() - t0
    _check(factory, ledger, site.id, account_ids, started, credited, outcomes, deliveries)
    floor = _floor(engine, [bodies[item] for item in schedule], threads)
    return WebhookFigures(deliveries, payments, threads, seconds, floor, dict(outcomes), dict(retries))


def _check(
    factory: sessionmaker[Session],
    ledger: LedgerService,
    site_id: int,
    account_ids: list[int],
    payments: list[PaymentInfo],
    credited: dict[int, bool],
    outcomes: Counter[str],
    deliveries: int,
) -> None:
    """Raise unless every balance is right to the minor unit, the ledger balances and each payment was credited
    once (or, refunded or charged back, credited and reversed once)."""
    problems = []
    if outcomes["refused"]:
        problems.append(f"{outcomes['refused']} deliveries refused")
    with factory() as session:
        expected: Counter[int] = Counter()
        for i, p in enumerate(payments):
            if credited[i]:
                expected[p.account_id] += p.amount_minor
        for account_id in account_ids:
            prepayment = ledger.open_account(
                session, site_id=site_id, purpose=AccountPurpose.PREPAYMENT, customer_account_id=account_id
            )
            if ledger.balance(session, prepayment.id) != -expected[account_id]:
                problems.append(f"account {account_id}: balance {-ledger.balance(session, prepayment.id)}")
        cash = ledger.open_account(session, site_id=site_id, purpose=AccountPurpose.CASH, name="sandbox")
        if ledger.balance(session, cash.id) != sum(expected.values()):
            problems.append("cash is not the sum of the credits")
        if not ledger.check(session).ok:
            problems.append("the ledger does not balance")
        rows = {r.reference: r for r in session.scalars(select(PaymentRecord))}
        for i, p in enumerate(payments):
            row = rows[p.reference]
            if (row.journal_id is not None and row.reversal_journal_id is None) != credited[i]:
                problems.append(f"payment {p.reference} credited wrongly")
        kinds = dict(session.execute(select(Journal.kind, func.count()).group_by(Journal.kind)).all())
        wanted = {
            "payment": sum(1 for i in range(len(payments)) if i % 10 != 0),
            "reversal": sum(1 for i in range(len(payments)) if i % 10 in (1, 2)),
        }
        if kinds != wanted:
            problems.append(f"journals {kinds}, wanted {wanted}")
        recorded = session.scalar(select(func.count()).select_from(PaymentEventRecord))
        if recorded != deliveries:
            problems.append(f"{recorded} deliveries recorded of {deliveries}")
    if problems:
        raise RuntimeError("payments webhooks: " + "; ".join(problems[:10]))


def _floor(engine: Engine, bodies: list[bytes], threads: int) -> float:
    """The same deliveries each stored as one row in a transaction of its own, from the same threads."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_delivery (id bigserial PRIMARY KEY, body bytea NOT NULL)"))

    def store(body: bytes) -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO bench_delivery (body) VALUES (:b)"), {"b": body})

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(store, bodies))
    seconds = time.perf_counter() - t0
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE bench_delivery"))
    return seconds
