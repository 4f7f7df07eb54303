"""What `openami worker jobs` runs: the outbox handlers that connect payments, wallets and relay control, and the
periodic relay dispatch, written so that a worker killed at any instant loses and doubles nothing.

Topics and their handlers (`job_handlers`):

- `payment.webhook` (a provider's delivery, stored by the API with `accept_webhook` in the request's transaction,
  which answers 200 at once): `PaymentService.handle_webhook`. Database only, so exactly once: the delivery's
  record, the payment's credit journal and the operation log commit with the event's completion, or none does.
  The provider's replay window is checked against the instant the API received the delivery, not the instant
  the worker gets to it, so a delivery waiting out a crashed worker's lease is not refused as stale.
- `payment.credited` (emitted by `PaymentCreditedEmitter`, a PaymentObserver, in the transaction that posts the
  credit): `WalletService.record_top_up` (debt recovery, emergency credit re-armed). Database only: exactly once
  (and record_top_up is itself idempotent per payment reference).
- `relay.dispatch` (emitted by whoever queues relay commands and wants them out now; the worker also dispatches
  every `send_interval_s` without it): `ControlService.send_due`. This one has an outside effect, the command
  frame to the meter, so the frames are held back and handed to the head-end only after the transaction that
  records them as sent has committed (`HeldCommands`). A crash before the commit sends nothing and records
  nothing; a crash after it leaves a command recorded as sent that the meter may not have received, which the
  control service's retry (a new attempt, a new request id) or its deadline (`unconfirmed`) resolves. A meter
  never holds a command the platform records as unsent, and the same attempt is never sent twice.

See docs/operations.md, "The worker and crashes".
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from openami.bootstrap import Container
from openami.common.clock import Clock
from openami.common.errors import NotFoundError, ValidationError
from openami.control.interfaces import CommandSender, DispatchResult
from openami.control.service import ControlService
from openami.headend.codec import Command
from openami.notifications.service import NotificationService
from openami.outbox.dispatcher import Dispatcher, DispatchReport, Handler
from openami.outbox.interfaces import OutboxEvent
from openami.outbox.service import OutboxService
from openami.prepayment.automation import CreditAutomation
from openami.prepayment.credited import CREDITED_TOPIC
from openami.prepayment.payments import PaymentService
from openami.prepayment.wallet import WalletService
from openami.storage.db import unit_of_work

log = structlog.get_logger(__name__)

CREDIT_LOCK_CLASS = 0x43524544  # "CRED": one worker at a time evaluates a site's prepaid credit
WEBHOOK_TOPIC = "payment.webhook"
DISPATCH_TOPIC = "relay.dispatch"
MAX_WEBHOOK_BODY_BYTES = 256 * 1024  # providers' notifications are a few kB; the body is stored in the event
# Any fixed 64-bit number: held (per transaction) by the one worker running send_due at a time on PostgreSQL.
RELAY_DISPATCH_LOCK = 0x6F70656E616D6931


# --- payment.webhook -------------------------------------------------------------------------------------------


def accept_webhook(
    session: Session,
    outbox: OutboxService,
    clock: Clock,
    *,
    provider: str,
    headers: Mapping[str, str],
    body: bytes,
    known_providers: Collection[str],
) -> int:
    """Store one webhook delivery of `provider` for the worker, in the caller's transaction; returns the event id.

    The route commits and answers 200 at once: the worker verifies and applies it (`job_handlers`). Every
    delivery is a new event, duplicates included, because the payment service records each delivery and
    applies each payment fact once. Raises NotFoundError for a provider not in `known_providers` (answer 404:
    nothing is stored) and ValidationError for a body over MAX_WEBHOOK_BODY_BYTES (answer 413).
    """
    if provider not in known_providers:
        known = ", ".join(sorted(known_providers)) or "none"
        raise NotFoundError(f"no payment provider {provider!r} (configured: {known})")
    if len(body) > MAX_WEBHOOK_BODY_BYTES:
        raise ValidationError(
            f"{len(body)} bytes, more than the {MAX_WEBHOOK_BODY_BYTES} a webhook may have",
            f"webhook body of {provider}",
        )
    payload = {
        "provider": provider,
        # Names lower-cased: providers look headers up case-insensitively (providers.header).
        "headers": {str(name).lower(): str(value) for name, value in headers.items()},
        "body_b64": base64.b64encode(body).decode("ascii"),
        "received_at": clock.now().isoformat(),
    }
    event_id = outbox.emit(
        session, topic=WEBHOOK_TOPIC, key=f"{provider}:{uuid.uuid4().hex}", payload=payload
    )
    if event_id is None:  # a random key never repeats; a None here means the outbox changed its contract
        raise ValidationError("the outbox refused a new webhook delivery as a duplicate", "accept_webhook")
    return event_id


def webhook_handler(payments: PaymentService) -> Handler:
    """Applies a stored delivery with `payments`, its signature's timestamp judged at the delivery's arrival
    (`received_at` in the event), not now."""

    def handle_payment_webhook(session: Session, event: OutboxEvent) -> None:
        payload = event.payload
        where = f"outbox event {event.id} ({WEBHOOK_TOPIC})"
        try:
            received_at = datetime.fromisoformat(payload["received_at"])
            body = base64.b64decode(payload["body_b64"], validate=True)
            provider, headers = str(payload["provider"]), dict(payload["headers"])
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ValidationError(f"not a stored webhook delivery: {exc!r}", where) from exc
        result = payments.handle_webhook(session, provider, headers, body, received_at=received_at)
        log.info(
            "worker.webhook_handled",
            event_id=event.id,
            provider=provider,
            outcome=result.outcome,
            reason=result.reason,
            payment=None if result.payment is None else result.payment.reference,
        )

    return handle_payment_webhook


# --- payment.credited ------------------------------------------------------------------------------------------


def top_up_handler(wallets: WalletService) -> Handler:
    def handle_payment_credited(session: Session, event: OutboxEvent) -> None:
        payload = event.payload
        account_id = int(payload["account_id"])
        try:
            wallets.get_wallet(session, account_id)
        except NotFoundError:
            # A payment toward an account without a wallet (postpaid): the credit journal is all there is.
            log.info("worker.top_up_without_wallet", event_id=event.id, account_id=account_id)
            return
        result = wallets.record_top_up(
            session,
            account_id,
            amount_minor=int(payload["amount_minor"]),
            payment_reference=str(payload["reference"]),
            occurred_at=datetime.fromisoformat(payload["succeeded_at"]),
        )
        log.info(
            "worker.top_up_recorded",
            event_id=event.id,
            account_id=account_id,
            recovered_minor=result.recovered_minor,
            balance_minor=result.balance_minor,
        )

    return handle_payment_credited


# --- relay.dispatch --------------------------------------------------------------------------------------------


@dataclass
class HeldCommands:
    """A CommandSender for `ControlService.send_due` that only holds the commands; `send_after_commit` hands
    them to the real sender once the session's transaction has committed, and drops them if it rolls back."""

    held: list[tuple[str, Command]] = field(default_factory=list)

    def send_command(self, serial: str, command: Command) -> object:
        self.held.append((serial, command))
        return None

    def send_after_commit(self, session: Session, sender: CommandSender) -> None:
        def on_commit(_session: Session) -> None:
            commands, self.held = self.held, []
            for serial, command in commands:
                try:
                    sender.send_command(serial, command)
                except Exception:  # recorded as sent: the retry or the deadline settles it; send the rest
                    log.exception("worker.command_not_sent", serial=serial, request_id=command.request_id)

        def on_rollback(_session: Session) -> None:
            self.held = []

        sa_event.listen(session, "after_commit", on_commit, once=True)
        sa_event.listen(session, "after_rollback", on_rollback, once=True)


def dispatch_relay_commands(
    session: Session, control: ControlService, sender: CommandSender, *, limit: int = 200
) -> DispatchResult:
    """One `send_due` step in the caller's transaction; the frames go out after it commits (see HeldCommands).

    On PostgreSQL a transaction-scoped advisory lock makes concurrent workers take turns: send_due reads the
    due commands, then writes their attempts, and two workers interleaving would send one attempt twice.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": RELAY_DISPATCH_LOCK})
    held = HeldCommands()
    result = control.send_due(session, held, limit=limit)
    held.send_after_commit(session, sender)
    return result


def relay_dispatch_handler(control: ControlService, sender: CommandSender) -> Handler:
    def handle_relay_dispatch(session: Session, event: OutboxEvent) -> None:
        result = dispatch_relay_commands(session, control, sender)
        log.info("worker.relay_dispatched", event_id=event.id, sent=result.sent, retried=result.retried)

    return handle_relay_dispatch


def job_handlers(
    *,
    payments: PaymentService,
    wallets: WalletService,
    control: ControlService,
    sender: CommandSender,
) -> dict[str, Handler]:
    """The handler table: which topic does what."""
    return {
        WEBHOOK_TOPIC: webhook_handler(payments),
        CREDITED_TOPIC: top_up_handler(wallets),
        DISPATCH_TOPIC: relay_dispatch_handler(control, sender),
    }


# --- the worker loop -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobsReport:
    events: DispatchReport
    relay: DispatchResult
    credit_rounds: int = 0  # sites whose prepaid credit was evaluated (CreditAutomation)


class JobsWorker:
    """Runs the outbox handlers and, every `send_interval_s`, a relay dispatch step. Stateless: run several,
    in several processes; the outbox's leases and the dispatch lock split the work between them."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        outbox: OutboxService,
        handlers: Mapping[str, Handler],
        *,
        control: ControlService,
        sender: CommandSender,
        send_interval_s: float = 5.0,
        batch_size: int = 50,
        lease_s: float = 300.0,
        idle_wait_s: float = 1.0,
        worker: str | None = None,
        credit: CreditRounds | None = None,
        credit_interval_s: float = 300.0,
    ) -> None:
        if send_interval_s <= 0:
            raise ValidationError(f"must be positive, got {send_interval_s}", "send_interval_s")
        self._factory = factory
        self._control = control
        self._sender = sender
        self._send_interval_s = send_interval_s
        self._idle_wait_s = idle_wait_s
        self._credit = credit
        self._credit_interval_s = credit_interval_s
        self.dispatcher = Dispatcher(
            factory,
            outbox,
            handlers,
            worker=worker,
            batch_size=batch_size,
            lease_s=lease_s,
            idle_wait_s=idle_wait_s,
        )

    def send_due(self) -> DispatchResult:
        """One relay dispatch step in a transaction of its own."""
        with unit_of_work(self._factory) as session:
            return dispatch_relay_commands(session, self._control, self._sender)

    def run_once(self, max_batches: int = 1000) -> JobsReport:
        """Handle every event that is due, run a credit round, then dispatch relay commands once (`openami worker
        jobs --once`)."""
        events = self.dispatcher.drain(max_batches)
        rounds = self._credit.run(self._factory) if self._credit is not None else 0
        return JobsReport(events, self.send_due(), rounds)

    def run_forever(self, stop: threading.Event) -> None:
        """Until `stop` is set. A database error is logged and the loop goes on after `idle_wait_s`."""
        log.info("worker.jobs_started", worker=self.dispatcher.worker)
        next_send = next_credit = time.monotonic()
        while not stop.is_set():
            claimed = 0
            try:
                claimed = self.dispatcher.run_once(stop).claimed
                if self._credit is not None and time.monotonic() >= next_credit:
                    self._credit.run(self._factory)
                    next_credit = time.monotonic() + self._credit_interval_s
                if time.monotonic() >= next_send:
                    self.send_due()
                    next_send = time.monotonic() + self._send_interval_s
            except SQLAlchemyError:
                log.exception("worker.database_error", worker=self.dispatcher.worker)
            if claimed == 0:
                stop.wait(max(0.0, min(self._idle_wait_s, next_send - time.monotonic())))
        log.info("worker.jobs_stopped", worker=self.dispatcher.worker)


class CreditRounds:
    """Every prepaid site's credit round (`prepayment.automation.CreditAutomation`): settle the relay commands the
    meters confirmed in the last `settle_window` (settling again changes nothing), evaluate each site in a
    transaction of its own (on PostgreSQL one worker at a time per site), then send the messages due."""

    def __init__(
        self,
        clock: Clock,
        automation: CreditAutomation,
        notifications: NotificationService,
        settle_window: timedelta = timedelta(days=1),
    ) -> None:
        self._clock = clock
        self._automation = automation
        self._notifications = notifications
        self._settle_window = settle_window

    def run(self, factory: sessionmaker[Session]) -> int:
        with unit_of_work(factory) as session:
            sites = [site.id for site in self._automation.registry.list_sites(session)]
        for site_id in sites:
            with unit_of_work(factory) as session:
                if session.get_bind().dialect.name == "postgresql":
                    session.execute(
                        text("SELECT pg_advisory_xact_lock(:cls, :site)"),
                        {"cls": CREDIT_LOCK_CLASS, "site": site_id},
                    )
                now = self._clock.now()
                self._automation.settle(session, site_id, now - self._settle_window)
                self._automation.evaluate(session, site_id, now)
        self._notifications.deliver_due(factory, self._clock.now())
        return len(sites)


def build_jobs_worker(container: Container, sender: CommandSender, **options: Any) -> JobsWorker:
    """The jobs worker of `container`'s system, sending relay commands through `sender` (the head-end).

    The handlers use the container's services; `options` are JobsWorker's keywords.
    Webhooks are applied by the container's payment service, each judged at its arrival (`received_at`). When
    the API and the worker are separate processes, the sandbox's secret must be configured
    (OPENAMI_PAYMENT_SANDBOX_SECRET), or each would make its own and the worker would refuse the API's deliveries.
    """
    wallets, control, notifications = container.wallets, container.control, container.notifications
    handlers = job_handlers(payments=container.payments, wallets=wallets, control=control, sender=sender)
    automation = CreditAutomation(container.registry, wallets, control, notifications)
    options.setdefault("credit", CreditRounds(container.clock, automation, notifications))
    return JobsWorker(
        container.session_factory, container.outbox, handlers, control=control, sender=sender, **options
    )
