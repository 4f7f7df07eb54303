"""The demo's prepaid customers: wallets charged as readings arrive, warned when credit runs low, cut off at an
allowed time when it runs out, paying in the sandbox, and reconnected.

Every step goes through the services a real site uses: `prepayment.wallet` (charges, credit rules, what is due),
`notifications` (messages, written by a console channel to `var/demo-messages.log`), `control` (relay commands,
checked against the site's safety policy, sent through the head-end and confirmed only by the meter's report),
`prepayment.payments` (a sandbox checkout and its signed webhook). The customers' behaviour is the demo's: a third
start with little credit, and a customer who is cut off pays some hours later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TextIO

from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import Clock
from openami.control.service import ControlService
from openami.headend.service import HeadEnd
from openami.notifications.channels import ConsoleChannel
from openami.notifications.interfaces import (
    ChannelKind,
    PaymentReceived,
    Preferences,
)
from openami.notifications.service import NotificationService
from openami.outbox.dispatcher import Dispatcher
from openami.outbox.service import OutboxService
from openami.prepayment.automation import CreditAutomation
from openami.prepayment.credit import CreditRules
from openami.prepayment.credited import CREDITED_TOPIC
from openami.prepayment.payments import PaymentService
from openami.prepayment.providers import EventKind
from openami.prepayment.providers.sandbox import SandboxProvider
from openami.prepayment.wallet import WalletService
from openami.registry.service import RegistryService
from openami.security.audit import AuditLog
from openami.worker_jobs import dispatch_relay_commands, top_up_handler

ACTOR, ROLE = "system:demo", "system"
LOW_START_MINOR = 15_000  # KES 150: a few days of a household's use
USUAL_START_MINOR = 500_000  # KES 5,000: more than the demo lasts
TOP_UP_MINOR = 100_000  # KES 1,000, paid some hours after a cut-off
PAYS_AFTER = timedelta(hours=5)
RULES = CreditRules(low_credit_minor=10_000, disconnect_below_minor=0, reconnect_at_minor=5_000)


@dataclass
class PrepaidCounts:
    """What happened to the prepaid customers, step by step (the demo summary prints them)."""

    prepaid_accounts: int = 0
    wallets_started_low: int = 0
    charged_total_minor: int = 0
    low_balance_warnings: int = 0
    disconnect_warnings: int = 0
    disconnects_refused_by_policy: int = 0
    disconnects_requested: int = 0
    disconnects_confirmed: int = 0
    commands_not_confirmed: int = 0
    payments_made: int = 0
    payments_credited: int = 0
    reconnects_requested: int = 0
    reconnects_confirmed: int = 0
    messages_sent: int = 0
    refusals: dict[str, int] = field(default_factory=dict)  # the safety rule that held a disconnect back


class PrepaidDemo:
    """Drives the prepaid half of the demo site; `step(at)` runs after each push round."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        clock: Clock,
        registry: RegistryService,
        payments: PaymentService,
        wallets: WalletService,
        headend: HeadEnd,
        control: ControlService,
        outbox: OutboxService,
        messages: TextIO,
    ) -> None:
        self.factory, self.clock, self.registry, self.headend, self.control = (
            factory, clock, registry, headend, control,
        )  # fmt: skip
        self.payments = payments
        self.wallets = wallets
        # The demo's own channel: every message as a line of var/demo-messages.log.
        self.notifications = NotificationService(
            clock, registry, AuditLog(clock), {ChannelKind.EMAIL: ConsoleChannel(ChannelKind.EMAIL, messages)}
        )
        self.counts = PrepaidCounts()
        self.site_id = 0
        self.currency = ""
        self.cut_at: dict[int, datetime] = {}  # accounts cut off, since when (the customer pays later)
        self.automation = CreditAutomation(registry, self.wallets, control, self.notifications)
        # The embedded mode drains the outbox in-process: here, the wallet's side of each payment credited.
        self.jobs = Dispatcher(factory, outbox, {CREDITED_TOPIC: top_up_handler(self.wallets)}, worker="demo")
        self.settled_to = clock.now()

    def setup(self, site_code: str, first_day: date) -> None:
        """Wallets for the prepaid accounts, credit rules, alert subscriptions, and each wallet's first top-up."""
        with self.factory() as session, session.begin():
            site = self.registry.site_by_code(session, site_code)
            self.site_id, self.currency = site.id, site.currency
            self.wallets.set_credit_rules(session, site.id, RULES, actor=ACTOR, role=ROLE)
            prepaid = [
                a for a in self.registry.list_accounts(session, site_id=site.id) if a.kind == "prepaid"
            ]
            self.counts.prepaid_accounts = len(prepaid)
            for n, account in enumerate(prepaid):
                self.wallets.open_wallet(session, account.id, charge_from=first_day, actor=ACTOR, role=ROLE)
                self.notifications.subscribe(
                    session, account.id, ChannelKind.EMAIL, f"{account.number.lower()}@demo.invalid",
                    actor=ACTOR, role=ROLE,
                )  # fmt: skip
                # The customer's own thresholds: tell me under KES 100, or two days before it runs out; quiet at
                # night (22:00 to 06:00) except for a cut-off warning.
                self.notifications.set_preferences(
                    session,
                    Preferences(account.id, low_balance_minor=10_000, low_balance_days=2,
                                quiet_start=time(22, 0), quiet_end=time(6, 0)),
                    actor=ACTOR, role=ROLE,
                )  # fmt: skip
                low = n % 3 == 0
                self.counts.wallets_started_low += low
                self._pay(
                    session, account.id, LOW_START_MINOR if low else USUAL_START_MINOR, self.clock.now()
                )

    def step(self, at: datetime) -> None:
        """Customers cut off long enough pay; then one automation round (charge, warn, cut off, reconnect), and
        the relay commands it asked for are sent."""
        with self.factory() as session, session.begin():
            for account_id, since in list(self.cut_at.items()):
                if at - since >= PAYS_AFTER:
                    del self.cut_at[account_id]
                    self._pay(session, account_id, TOP_UP_MINOR, at)
        self.jobs.drain()
        with self.factory() as session, session.begin():
            done = self.automation.evaluate(session, self.site_id, at)
        c = self.counts
        c.charged_total_minor += done.charged_minor
        c.low_balance_warnings += done.low_balance_warnings
        c.disconnect_warnings += done.disconnect_warnings
        c.disconnects_requested += len(done.disconnects_requested)
        c.reconnects_requested += len(done.reconnects_requested)
        for rule, n in done.disconnects_refused.items():
            c.disconnects_refused_by_policy += n
            c.refusals[rule] = c.refusals.get(rule, 0) + n
        # The commands are recorded as sent, then handed to the head-end once that is committed.
        with self.factory() as session, session.begin():
            dispatch_relay_commands(session, self.control, self.headend)

    def after_replies(self, at: datetime) -> None:
        """Once the meters' answers are in: settle the relay commands they confirmed, send the messages due."""
        with self.factory() as session, session.begin():
            settled = self.automation.settle(session, self.site_id, self.settled_to)
        self.settled_to = at + timedelta(microseconds=1)  # what finished at `at` is settled now, not again
        self.counts.disconnects_confirmed += len(settled.disconnected)
        self.counts.reconnects_confirmed += len(settled.reconnected)
        self.counts.commands_not_confirmed += len(settled.not_confirmed)
        for account_id in settled.disconnected:
            self.cut_at[account_id] = at
        report = self.notifications.deliver_due(self.factory, at)
        self.counts.messages_sent += report.sent

    def _pay(self, session: Session, account_id: int, amount_minor: int, at: datetime) -> None:
        """The customer pays in the sandbox: a checkout, then the provider's signed webhook, as the checkout page
        sends it; the wallet then records the top-up, and the customer gets a receipt."""
        started = self.payments.start_checkout(
            session, account_id=account_id, amount_minor=amount_minor, provider="sandbox",
            actor=f"customer:{account_id}", role="customer",
        )  # fmt: skip
        self.counts.payments_made += 1
        sandbox = self.payments.providers["sandbox"]
        assert isinstance(sandbox, SandboxProvider)  # noqa: S101  (bootstrap always offers the sandbox)
        payment = started.payment
        body = sandbox.event_body(
            EventKind.SUCCEEDED, payment.provider_payment_id or payment.reference, payment.reference,
            amount_minor, payment.currency,
        )  # fmt: skip
        result = self.payments.handle_webhook(session, "sandbox", sandbox.sign(body), body)
        if result.payment is None or not result.payment.credited:
            return
        self.counts.payments_credited += 1
        self.wallets.record_top_up(
            session,
            account_id,
            amount_minor=amount_minor,
            payment_reference=payment.reference,
            occurred_at=at,
        )
        balance = self.wallets.balance_minor(session, account_id)
        self.notifications.enqueue(
            session, PaymentReceived(account_id, amount_minor, balance, self.currency, payment.reference, at)
        )


def messages_file(log_dir: Path) -> TextIO:
    log_dir.mkdir(parents=True, exist_ok=True)
    return (log_dir / "demo-messages.log").open("w", encoding="utf-8")  # this run's messages only
