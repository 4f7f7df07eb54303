"""The jobs worker killed with SIGKILL 50 times, on real PostgreSQL, while it handles payment webhooks and sends
disconnects: no payment lost or doubled, and no command both sent and forgotten.

Each round queues more work (webhook deliveries with duplicates and failed attempts, disconnect commands and a
`relay.dispatch` event), starts the worker as a subprocess, waits until it is at work, kills it at a random moment
and restarts it next round with its clock 5 minutes on (past the dead worker's leases). The "meter" is a file:
the sender appends each command frame it is handed and fsyncs, so it remembers exactly what it received; after
each round the meters report their relays open for what they received, as real ones would. At the end one worker
runs to completion and everything is checked. Prints the kills that landed mid-payment and mid-dispatch.

Run as a script (`python -m tests.integration.test_worker_crashes URL START METER_FILE`), this module is the
worker process the test starts and kills.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from openami.billing.service import BillingService
from openami.bootstrap import bootstrap
from openami.common.clock import ManualClock
from openami.config import Settings
from openami.control.interfaces import CommandState
from openami.control.models import RelayCommand
from openami.control.service import ControlService
from openami.headend.codec import Command
from openami.ledger.interfaces import AccountPurpose, JournalKind, NewPosting
from openami.ledger.models import Journal
from openami.ledger.service import LedgerService
from openami.outbox.interfaces import EventStatus
from openami.outbox.models import OutboxEventRow
from openami.outbox.service import OutboxService
from openami.prepayment.credit import CreditRules
from openami.prepayment.payments import PaymentService
from openami.prepayment.payments_models import PaymentEventRecord, PaymentRecord
from openami.prepayment.providers import EventKind
from openami.prepayment.providers.sandbox import SandboxProvider
from openami.prepayment.wallet import WalletService
from openami.registry.service import RegistryService
from openami.security.meter_keys import MeterKeyCipher
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory, unit_of_work
from openami.worker_jobs import DISPATCH_TOPIC, WEBHOOK_TOPIC, accept_webhook, build_jobs_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SANDBOX_SECRET = "worker-crash-sandbox-secret-0042"
T0 = datetime(2026, 3, 3, 6, 0, tzinfo=UTC)  # Tuesday 09:00 in Nairobi: disconnects allowed all test long
ROUND = timedelta(minutes=5)  # more than a lease (LEASE_S) and a first retry (120 s by default)
LEASE_S = 120.0
KILLS, PAYMENTS, ACCOUNTS, METERS = 50, 200, 40, 50
SEND_DELAY_S = 0.01  # a meter link takes time: a kill can land between the commit and the frames


@dataclass(frozen=True)
class Received:
    serial: str
    command_id: int
    attempt: int


def read_meters(path: Path) -> list[Received]:
    """What the meters received, from the sender's file (one `serial request_id name` line per frame)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        serial, request_id, _name = line.split(" ")
        _, command_id, attempt = request_id.split("-")
        out.append(Received(serial, int(command_id), int(attempt)))
    return out


class FileMeters:
    """The sender of the worker under test: appends each frame to a file and fsyncs before returning."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def send_command(self, serial: str, command: Command) -> object:
        time.sleep(SEND_DELAY_S)
        os.write(self._fd, f"{serial} {command.request_id} {command.name}\n".encode())
        os.fsync(self._fd)
        return None


class RunningClock:
    """Starts at `start` and runs at the wall clock's pace (the worker's own clock, moved on each round)."""

    def __init__(self, start: datetime) -> None:
        self._start, self._t0 = start, time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._t0)


def run_worker(url: str, start: str, meter_file: str, once: bool = False) -> None:
    """The worker under test, built as `openami worker jobs` builds it, with the file as its meters."""
    settings = Settings(database_url=url, payment_sandbox_secret=SANDBOX_SECRET)
    container = bootstrap(settings, clock=RunningClock(datetime.fromisoformat(start)))
    worker = build_jobs_worker(
        container, FileMeters(Path(meter_file)), send_interval_s=0.2, batch_size=5, lease_s=LEASE_S,
        idle_wait_s=0.05,
    )  # fmt: skip
    if once:
        worker.run_once()
    else:
        worker.run_forever(threading.Event())  # until killed
    container.close()


@dataclass
class Site:
    factory: sessionmaker[Session]
    clock: ManualClock
    registry: RegistryService
    ledger: LedgerService
    payments: PaymentService
    sandbox: SandboxProvider
    wallets: WalletService
    control: ControlService
    outbox: OutboxService
    site_id: int
    accounts: list[int]
    meters: dict[str, int]  # serial -> meter id
    debts: dict[int, int]  # account id -> debt at the start, minor units


def build_site(url: str, meter_keys: MeterKeyCipher) -> Site:
    factory = make_session_factory(make_engine(url))
    clock = ManualClock(T0)
    registry = RegistryService(clock, meter_keys)
    ledger = LedgerService(clock, registry)
    sandbox = SandboxProvider(SANDBOX_SECRET.encode(), clock)
    wallets = WalletService(clock, registry, ledger, BillingService(clock, registry, ledger))
    site = Site(
        factory, clock, registry, ledger, PaymentService(clock, registry, ledger, [sandbox]), sandbox, wallets,
        ControlService(clock, registry), OutboxService(clock), 0, [], {}, {},
    )  # fmt: skip
    with unit_of_work(factory) as s:
        info = registry.create_site(
            s, code="KSM", name="Kisumu", timezone="Africa/Nairobi", currency="KES", holiday_country="KE"
        )
        site.site_id = info.id
        wallets.set_credit_rules(s, info.id, CreditRules(debt_recovery_bp=2500), actor="t", role="admin")
        revenue = ledger.open_account(s, site_id=info.id, purpose=AccountPurpose.REVENUE_ENERGY)
        for n in range(METERS):
            customer = registry.create_customer(s, site_id=info.id, reference=f"C{n}", name=f"Customer {n}")
            account = registry.create_account(
                s, site_id=info.id, customer_id=customer.id, number=f"P{n}", kind="prepaid"
            )
            point = registry.create_service_point(
                s, site_id=info.id, code=f"SP{n}", rated_current_a=40, account_id=account.id
            )
            meter = registry.create_meter(
                s, site_id=info.id, serial=f"KSM{n:04d}", model="sim", rated_current_a=60,
                auth_key=bytes([n + 1]) * 32, service_point_id=point.id,
            )  # fmt: skip
            site.meters[meter.serial] = meter.id
            if n < ACCOUNTS:
                wallet = wallets.open_wallet(
                    s, account.id, charge_from=date(2026, 3, 1), actor="t", role="admin"
                )
                site.accounts.append(account.id)
                if n % 4 == 0:  # an old debt, repaid from each top-up
                    debt = 30_000 + 1_000 * n
                    receivable = ledger.open_account(
                        s, site_id=info.id, purpose=AccountPurpose.RECEIVABLE, customer_account_id=account.id
                    )
                    ledger.post(
                        s, site_id=info.id, kind=JournalKind.ADJUSTMENT, currency="KES", occurred_at=T0,
                        postings=[NewPosting(receivable.id, debt), NewPosting(revenue.id, -debt)],
                        external_reference=f"old-debt:{wallet.account_id}", memo="arrears",
                    )  # fmt: skip
                    site.debts[account.id] = debt
    return site


def tally(site: Site) -> dict[str, int]:
    """Outbox events per (topic, state), leased ones apart, and relay commands sent or unsent."""
    with site.factory() as s:
        rows = s.execute(
            select(OutboxEventRow.topic, OutboxEventRow.status, OutboxEventRow.locked_by.is_not(None), func.count())
            .group_by(OutboxEventRow.topic, OutboxEventRow.status, OutboxEventRow.locked_by.is_not(None))
        ).all()  # fmt: skip
        attempts = s.scalar(select(func.coalesce(func.sum(RelayCommand.attempts), 0)))
    out = Counter[str]()
    for topic, status, leased, count in rows:
        out[f"{topic}:{status}{':leased' if leased and status == EventStatus.PENDING else ''}"] += count
    out["relay_attempts"] = int(attempts or 0)
    return dict(out)


def confirm_received(site: Site, received: list[Received], at: datetime) -> None:
    """The meters that received a disconnect report their relay open, as the head-end would pass it on."""
    with unit_of_work(site.factory) as s:
        for serial in sorted({r.serial for r in received}):
            site.control.on_relay_report(s, site.meters[serial], False, at)


def test_the_worker_killed_50_times_loses_and_doubles_nothing(
    pg_url: str, meter_keys: MeterKeyCipher, tmp_path: Path
) -> None:
    migrate.upgrade(pg_url)
    site = build_site(pg_url, meter_keys)
    meter_file = tmp_path / "meters.log"
    rng = random.Random(20260303)

    # 200 payments, each paid once (a few with a failed attempt first), delivered with duplicates.
    amounts: dict[str, tuple[int, int]] = {}  # reference -> (account id, amount)
    deliveries: list[bytes] = []
    for i in range(PAYMENTS):
        account_id = site.accounts[i % ACCOUNTS]
        with unit_of_work(site.factory) as s:
            started = site.payments.start_checkout(
                s, account_id=account_id, amount_minor=rng.randint(100, 90_000), provider="sandbox",
                actor="payer", role="customer",
            )  # fmt: skip
        p = started.payment
        amounts[p.reference] = (account_id, p.amount_minor)
        kinds = [EventKind.FAILED, EventKind.SUCCEEDED] if i % 7 == 0 else [EventKind.SUCCEEDED]
        for kind in kinds:
            body = site.sandbox.event_body(
                kind, p.provider_payment_id or "", p.reference, p.amount_minor, "KES", event_id=f"e{i}{kind}"
            )
            deliveries += [body] * rng.choice((1, 1, 2, 3))  # the provider re-delivers some
    rng.shuffle(deliveries)
    serials = sorted(site.meters)
    per_round = -(-len(deliveries) // KILLS)

    def queue_work(round_no: int) -> None:
        """This round's deliveries as the API would store them, a disconnect, and a dispatch request."""
        with unit_of_work(site.factory) as s:
            for body in deliveries[round_no * per_round : (round_no + 1) * per_round]:
                accept_webhook(
                    s, site.outbox, site.clock, provider="sandbox", headers=site.sandbox.sign(body), body=body,
                    known_providers={"sandbox"},
                )  # fmt: skip
            serial = serials[round_no % len(serials)]
            site.control.request(
                s, meter_id=site.meters[serial], kind="disconnect", request_key=f"cut-{round_no}",
                actor="operator", role="operator", reason="credit exhausted",
            )  # fmt: skip
            site.outbox.emit(s, topic=DISPATCH_TOPIC, key=f"round-{round_no}", payload={})

    idle_kills = mid_payment = mid_dispatch = 0
    unreceived_before: set[tuple[int, int]] = set()
    for round_no in range(KILLS):
        site.clock.set(T0 + ROUND * round_no)
        queue_work(round_no)
        before = tally(site)
        received_before = len(read_meters(meter_file))
        err = tmp_path / f"worker-{round_no}.err"
        with err.open("w") as stderr:
            worker = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.test_worker_crashes", pg_url,
                 site.clock.now().isoformat(), str(meter_file)],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
            try:
                deadline = time.monotonic() + 30
                while tally(site) == before and len(read_meters(meter_file)) == received_before:
                    assert worker.poll() is None, err.read_text()
                    assert time.monotonic() < deadline, "the worker did nothing in 30 s"
                    time.sleep(0.005)
                time.sleep(rng.uniform(0, 0.12))
                assert worker.poll() is None, err.read_text()
                worker.send_signal(signal.SIGKILL)
            finally:
                worker.wait(timeout=30)
        after = tally(site)
        payment_in_hand = sum(
            n for k, n in after.items() if k.startswith("payment.") and k.endswith(":leased")
        )
        dispatch_in_hand = after.get(f"{DISPATCH_TOPIC}:pending:leased", 0)
        received = read_meters(meter_file)
        with site.factory() as s:
            recorded = dict(s.execute(select(RelayCommand.id, RelayCommand.attempts)).all())
        delivered = {(r.command_id, r.attempt) for r in received}
        unreceived = {(c, n) for c, n in recorded.items() if n > 0 and (c, n) not in delivered}
        new_unreceived = (
            unreceived - unreceived_before
        )  # this kill fell between a dispatch's commit and its frames
        unreceived_before = unreceived
        mid_payment += payment_in_hand > 0
        mid_dispatch += dispatch_in_hand > 0 or bool(new_unreceived)
        idle_kills += (
            payment_in_hand == 0 and dispatch_in_hand == 0 and not any(k.endswith(":pending") for k in after)
        )
        # The meters answer what reached them: their relays report open.
        confirm_received(site, received[received_before:], site.clock.now() + ROUND / 2)

    # A last worker, after the last kill's leases ran out, runs to completion.
    site.clock.set(T0 + ROUND * KILLS)
    run = subprocess.run(
        [sys.executable, "-m", "tests.integration.test_worker_crashes", pg_url, site.clock.now().isoformat(),
         str(meter_file), "--once"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    received = read_meters(meter_file)
    print(
        f"\nworker crashes: {KILLS} SIGKILLs; {mid_payment} landed with payment events in hand, "
        f"{mid_dispatch} mid-dispatch (a dispatch in hand, or after its commit and before its frames), "
        f"{idle_kills} on an idle worker; {len(deliveries)} deliveries for {PAYMENTS} payments; "
        f"{len(received)} frames received by the meters"
    )

    with site.factory() as s:
        # Every delivery handled exactly once, every payment credited exactly once.
        states = dict(
            s.execute(
                select(OutboxEventRow.topic + ":" + OutboxEventRow.status, func.count())
                .group_by(OutboxEventRow.topic, OutboxEventRow.status)
            ).all()
        )  # fmt: skip
        assert states == {
            f"{WEBHOOK_TOPIC}:done": len(deliveries),
            "payment.credited:done": PAYMENTS,
            f"{DISPATCH_TOPIC}:done": KILLS,
        }
        assert s.scalar(select(func.count()).select_from(PaymentEventRecord)) == len(deliveries)
        assert s.scalar(select(func.count()).where(PaymentEventRecord.outcome == "refused")) == 0
        payments = {r.reference: r for r in s.scalars(select(PaymentRecord))}
        assert all(r.journal_id is not None and r.status == "succeeded" for r in payments.values())
        journals = Counter(
            s.scalars(select(Journal.external_reference).where(Journal.kind == JournalKind.PAYMENT.value))
        )
        assert len(journals) == PAYMENTS
        assert set(journals.values()) == {1}
        # Wallets: what was paid, less what repaid debt; the debt down by as much; the ledger balanced.
        paid = Counter[int]()
        for account_id, amount in amounts.values():
            paid[account_id] += amount
        recoveries = list(
            s.scalars(
                select(Journal.external_reference).where(Journal.external_reference.like("debt-recovery:%"))
            )
        )
        assert len(recoveries) == len(set(recoveries)) > 0
        for account_id in site.accounts:
            wallet = site.wallets.get_wallet(s, account_id)
            start_debt = site.debts.get(account_id, 0)
            recovered = start_debt - wallet.debt_minor
            assert wallet.balance_minor == paid[account_id] - recovered, account_id
            assert 0 <= recovered <= start_debt
            assert (recovered > 0) == (start_debt > 0)
        assert site.ledger.check(s).ok

        # Commands: whatever a meter received, the platform records as sent; no attempt went out twice.
        commands = {r.id: r for r in s.scalars(select(RelayCommand))}
    assert len(commands) == KILLS
    frames = Counter((r.command_id, r.attempt) for r in received)
    assert max(frames.values()) == 1, [k for k, n in frames.items() if n > 1]
    for (command_id, attempt), _ in frames.items():
        row = commands[command_id]
        assert row.state in (CommandState.SENT, CommandState.CONFIRMED, CommandState.UNCONFIRMED), row.state
        assert row.first_sent_at is not None
        assert row.attempts >= attempt, (command_id, attempt, row.attempts)
    for row in commands.values():
        # Recorded sent and never received happens (a kill between the commit and the frame): then a retry.
        assert row.state != CommandState.QUEUED, row.id
        assert row.attempts >= 1, row.id
    site.factory.kw["bind"].dispose()


if __name__ == "__main__":
    run_worker(sys.argv[1], sys.argv[2], sys.argv[3], once="--once" in sys.argv[4:])
