"""CreditAutomation: credit running out ends in a cut-off the meter confirms, a payment in a reconnection, each with
a message; a disconnect the safety policy refuses is asked for again once the refusal is over, never forgotten."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.control.interfaces import CommandKind, CommandState
from openami.control.service import ControlService
from openami.headend.codec import Command
from openami.ledger.service import LedgerService
from openami.notifications.channels import ConsoleChannel
from openami.notifications.interfaces import ChannelKind
from openami.notifications.service import NotificationService
from openami.prepayment.automation import CreditAutomation
from openami.prepayment.credit import CreditRules, FriendlyHours
from openami.prepayment.wallet import WalletService
from openami.registry.service import RegistryService
from openami.security.audit import AuditLog
from openami.worker_jobs import CreditRounds
from tests.unit.prepayment.wallet_world import PrepaidSite, top_up

NEVER_FRIENDLY = FriendlyHours(daily_from=None, daily_to=None, weekdays=frozenset(), holidays=False)


class RecordingSender:
    """A head-end stand-in: remembers what it was handed."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send_command(self, serial: str, command: Command) -> object:
        self.sent.append((serial, command.name))
        return None


class Parts:
    def __init__(
        self,
        db: Session,
        clock: ManualClock,
        registry: RegistryService,
        wallets: WalletService,
        site: PrepaidSite,
    ) -> None:
        self.db, self.clock, self.site = db, clock, site
        self.control = ControlService(clock, registry)
        self.notifications = NotificationService(
            clock, registry, AuditLog(clock), {ChannelKind.EMAIL: ConsoleChannel(ChannelKind.EMAIL)}
        )
        self.automation = CreditAutomation(registry, wallets, self.control, self.notifications)
        self.sender = RecordingSender()
        wallets.set_credit_rules(
            db,
            site.info.id,
            CreditRules(
                low_credit_minor=10_000,
                disconnect_below_minor=0,
                reconnect_at_minor=5_000,
                friendly=NEVER_FRIENDLY,
            ),
            actor="test",
            role="admin",
        )
        self.notifications.subscribe(
            db, site.first.account.id, ChannelKind.EMAIL, "p1@example.org", actor="test", role="admin"
        )
        db.commit()

    def meter_reports(self, connected: bool) -> None:
        """The head-end sends what is due, and the first customer's meter reports its relay."""
        self.control.send_due(self.db, self.sender, self.clock.now())
        self.control.on_relay_report(self.db, self.site.first.meter.id, connected, self.clock.now())


@pytest.fixture
def parts(
    wallet_db: Session,
    wallet_clock: ManualClock,
    wallet_registry: RegistryService,
    wallets: WalletService,
    wallet_site: PrepaidSite,
) -> Parts:
    return Parts(wallet_db, wallet_clock, wallet_registry, wallets, wallet_site)


def test_credit_run_out_is_cut_off_and_a_payment_reconnects(
    parts: Parts, wallets: WalletService, wallet_ledger: LedgerService
) -> None:
    db, clock, site = parts.db, parts.clock, parts.site
    account = site.first.account.id
    since = clock.now()

    first = parts.automation.evaluate(db, site.info.id, clock.now())

    assert first.charged_minor > 0
    assert wallets.balance_minor(db, account) < 0
    assert len(first.disconnects_requested) == 2  # both customers' credit is gone
    again = parts.automation.evaluate(db, site.info.id, clock.now())
    assert again.disconnects_requested == []
    assert again.charged_minor == 0
    parts.meter_reports(connected=False)
    clock.advance(timedelta(minutes=1))
    settled = parts.automation.settle(db, site.info.id, since)
    assert account in settled.disconnected
    assert (site.first.meter.serial, "disconnect") in parts.sender.sent
    assert [m.rule for m in parts.notifications.messages(db, account)] == ["disconnected"]

    top_up(db, wallet_ledger, site.info, account, 5_000_000, clock.now())
    since = clock.now()
    paid = parts.automation.evaluate(db, site.info.id, clock.now())

    assert len(paid.reconnects_requested) == 1
    (command_id,) = paid.reconnects_requested
    assert parts.control.get(db, command_id).kind is CommandKind.RECONNECT
    parts.meter_reports(connected=True)
    settled = parts.automation.settle(db, site.info.id, since)
    assert settled.reconnected == [account]
    assert [m.rule for m in parts.notifications.messages(db, account)] == ["disconnected", "reconnected"]
    # The supply's state is the wallet's now: a further round asks nothing of the relay.
    later = parts.automation.evaluate(db, site.info.id, clock.now())
    assert later.reconnects_requested == []
    assert later.disconnects_requested == []


def test_a_refused_disconnect_is_asked_for_again_once_the_refusal_is_over(parts: Parts) -> None:
    db, clock, site = parts.db, parts.clock, parts.site
    storm_ends = clock.now() + timedelta(hours=1)  # 16:00 in Nairobi, before the night rule
    parts.control.declare_emergency(
        db, site_id=site.info.id, reason="storm", starts_at=clock.now() - timedelta(hours=1),
        ends_at=storm_ends, actor="test", role="admin",
    )  # fmt: skip

    refused = parts.automation.evaluate(db, site.info.id, clock.now())
    assert refused.disconnects_requested == []
    assert sum(refused.disconnects_refused.values()) == 2
    clock.advance(timedelta(minutes=30))
    still = parts.automation.evaluate(db, site.info.id, clock.now())
    assert still.disconnects_requested == []
    assert still.disconnects_refused == {}

    clock.advance(timedelta(minutes=31))
    after = parts.automation.evaluate(db, site.info.id, clock.now())

    assert len(after.disconnects_requested) == 2
    commands = [parts.control.get(db, i) for i in after.disconnects_requested]
    assert {c.state for c in commands} == {CommandState.QUEUED}
    assert all(c.request_key.endswith(":disconnect:1") for c in commands)


def test_the_workers_credit_rounds_evaluate_every_site_in_its_own_transaction(
    parts: Parts, wallet_factory: sessionmaker[Session]
) -> None:
    rounds = CreditRounds(parts.clock, parts.automation, parts.notifications)

    assert rounds.run(wallet_factory) == 1

    with wallet_factory() as session:
        queued = [
            c
            for m in (parts.site.first.meter.id, parts.site.second.meter.id)
            for c in parts.control.commands_for_meter(session, m)
        ]
    assert [(c.kind, c.state) for c in queued] == [(CommandKind.DISCONNECT, CommandState.QUEUED)] * 2
    assert rounds.run(wallet_factory) == 1  # again: nothing new
    with wallet_factory() as session:
        assert len(parts.control.commands_for_meter(session, parts.site.first.meter.id)) == 1
