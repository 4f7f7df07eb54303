"""The service on a migrated SQLite database: preferences, subscriptions, dedupe, quiet hours, delivery with
retries and backoff, expiry, gone addresses, and what happens when a worker dies mid-send."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.common.errors import NotFoundError, ValidationError
from openami.notifications.interfaces import (
    ChannelKind,
    DeliveryResult,
    Disconnected,
    DisconnectWarning,
    Language,
    LowBalance,
    MessageStatus,
    Outcome,
    PaymentReceived,
    Preferences,
    Rule,
)
from openami.notifications.models import NotificationDelivery, NotificationEvent
from openami.notifications.service import Claim, NotificationService
from openami.registry.interfaces import AccountInfo
from openami.security.audit import AuditEntry
from openami.storage.db import unit_of_work
from tests.unit.notifications.conftest import ScriptedChannel

SECRET = "whsec-0123456789abcdef"


def subscribe_both(
    factory: sessionmaker[Session], service: NotificationService, account: AccountInfo
) -> None:
    with unit_of_work(factory) as s:
        service.subscribe(s, account.id, "email", "wanjiru@example.com", actor="wanjiru", role="customer")
        service.subscribe(
            s,
            account.id,
            ChannelKind.WEBHOOK,
            "https://h.example/hook",
            secret=SECRET,
            actor="wanjiru",
            role="customer",
        )


def payment(account: AccountInfo, clock: ManualClock, payment_id: str = "pi_1") -> PaymentReceived:
    return PaymentReceived(account.id, 500_00, 520_00, "KES", payment_id, clock.now())


def test_an_event_becomes_one_message_per_subscription_and_a_repeat_changes_nothing(
    factory: sessionmaker[Session], service: NotificationService, account: AccountInfo, clock: ManualClock
) -> None:
    subscribe_both(factory, service, account)
    with unit_of_work(factory) as s:
        first = service.enqueue(s, payment(account, clock))
    with unit_of_work(factory) as s:
        again = service.enqueue(s, payment(account, clock))
    assert first.rules == (Rule.PAYMENT_RECEIVED,)
    assert again.duplicate == (Rule.PAYMENT_RECEIVED,)
    assert [m.channel for m in first.messages] == [ChannelKind.EMAIL, ChannelKind.WEBHOOK]
    assert {m.dedupe_key for m in first.messages} == {f"payment_received:{account.id}:pi_1"}
    assert again.messages == ()
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(NotificationEvent)) == 1
        assert len(service.messages(s, account.id)) == 2


def test_a_rolled_back_enqueue_leaves_nothing(
    factory: sessionmaker[Session], service: NotificationService, account: AccountInfo, clock: ManualClock
) -> None:
    subscribe_both(factory, service, account)

    def pay_then_fail() -> None:
        with unit_of_work(factory) as s:
            service.enqueue(s, payment(account, clock))
            raise RuntimeError("the payment's own transaction failed")

    with pytest.raises(RuntimeError):
        pay_then_fail()
    with factory() as s:
        assert service.messages(s, account.id) == []


def test_thresholds_language_and_quiet_hours_come_from_the_customers_preferences(
    factory: sessionmaker[Session], service: NotificationService, account: AccountInfo, clock: ManualClock
) -> None:
    subscribe_both(factory, service, account)
    clock.set(datetime(2026, 3, 2, 20, 0, tzinfo=UTC))  # 23:00 in Nairobi
    with unit_of_work(factory) as s:
        service.set_preferences(
            s,
            Preferences(account.id, Language.SIMPLIFIED_CHINESE, 100_00, None, time(22), time(6, 30)),
            actor="wanjiru",
            role="customer",
        )
        low = service.enqueue(s, LowBalance(account.id, 99_00, "KES", Decimal("1.5"), "topup-1", clock.now()))
        warn = service.enqueue(
            s,
            DisconnectWarning(
                account.id, 99_00, "KES", clock.now() + timedelta(hours=4), "plan-1", clock.now()
            ),
        )
        audit = s.scalars(
            select(AuditEntry).where(AuditEntry.action == "notifications.set_preferences")
        ).all()
    assert low.rules == (Rule.LOW_BALANCE_AMOUNT,)  # days rule off
    morning = datetime(2026, 3, 3, 3, 30, tzinfo=UTC)  # 06:30 local
    assert {m.not_before for m in low.messages} == {morning}
    assert low.messages[0].subject == "账户 A1 余额不足"
    assert {m.not_before for m in warn.messages} == {clock.now()}  # urgent: not held
    assert len(audit) == 1
    assert audit[0].object_id == str(account.id)

    report = service.deliver_due(factory)
    assert report.sent == 2  # only the urgent warning, on both channels
    clock.set(morning)
    assert service.deliver_due(factory).sent == 2


def test_a_retryable_error_backs_off_then_fails_after_the_last_attempt(
    factory: sessionmaker[Session],
    service: NotificationService,
    account: AccountInfo,
    clock: ManualClock,
    email: ScriptedChannel,
) -> None:
    with unit_of_work(factory) as s:
        service.subscribe(s, account.id, "email", "wanjiru@example.com", actor="wanjiru", role="customer")
        service.enqueue(s, payment(account, clock))
    email.outcomes = [DeliveryResult.retryable("451 busy")] * 3
    assert service.deliver_due(factory).retrying == 1
    assert service.deliver_due(factory).sent == 0  # not due yet: backoff of 30 s
    clock.advance(timedelta(seconds=30))
    assert service.deliver_due(factory).retrying == 1
    clock.advance(timedelta(seconds=59))
    assert service.deliver_due(factory).retrying == 0
    clock.advance(timedelta(seconds=1))
    assert service.deliver_due(factory).failed == 1
    with factory() as s:
        (message,) = service.messages(s, account.id)
        log = service.deliveries(s, message.id)
    assert (message.status, message.attempts, message.last_error) == (MessageStatus.FAILED, 3, "451 busy")
    assert [(a.attempt, a.outcome) for a in log] == [(n, Outcome.RETRYABLE) for n in (1, 2, 3)]
    assert [a.started_at for a in log] == [
        datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        datetime(2026, 3, 2, 9, 0, 30, tzinfo=UTC),
        datetime(2026, 3, 2, 9, 1, 30, tzinfo=UTC),
    ]
    assert len(email.sent) == 3


def test_a_gone_address_fails_and_deactivates_its_subscription(
    factory: sessionmaker[Session],
    service: NotificationService,
    account: AccountInfo,
    clock: ManualClock,
    webhook: ScriptedChannel,
) -> None:
    subscribe_both(factory, service, account)
    webhook.outcomes = [DeliveryResult.permanent("HTTP 410", gone=True)]
    with unit_of_work(factory) as s:
        service.enqueue(s, payment(account, clock))
    report = service.deliver_due(factory)
    assert (report.sent, report.failed) == (1, 1)
    with unit_of_work(factory) as s:
        assert [sub.channel for sub in service.subscriptions(s, account.id)] == [ChannelKind.EMAIL]
        assert len(service.enqueue(s, payment(account, clock, "pi_2")).messages) == 1


def test_a_warning_whose_cutoff_passed_expires_unsent(
    factory: sessionmaker[Session],
    service: NotificationService,
    account: AccountInfo,
    clock: ManualClock,
    email: ScriptedChannel,
) -> None:
    with unit_of_work(factory) as s:
        service.subscribe(s, account.id, "email", "wanjiru@example.com", actor="wanjiru", role="customer")
        service.enqueue(
            s,
            DisconnectWarning(
                account.id, 0, "KES", clock.now() + timedelta(minutes=5), "plan-1", clock.now()
            ),
        )
    clock.advance(timedelta(minutes=5))
    assert service.deliver_due(factory).expired == 1
    assert email.sent == []


def test_a_worker_that_dies_mid_send_never_doubles_a_message(
    factory: sessionmaker[Session],
    service: NotificationService,
    account: AccountInfo,
    clock: ManualClock,
    email: ScriptedChannel,
    webhook: ScriptedChannel,
) -> None:
    """Claim (committed), send, then die before recording: after the lease, e-mail ends unconfirmed and is not
    sent again; the webhook is resent with the same idempotency key, which its receiver dedupes."""
    subscribe_both(factory, service, account)
    with unit_of_work(factory) as s:
        service.enqueue(s, payment(account, clock))
    claims: list[Claim] = []
    for _ in range(2):
        with unit_of_work(factory) as s:
            claim = service.claim_next(s, clock.now())
        assert isinstance(claim, Claim)
        service.channels[claim.channel].send(claim.message, claim.recipient)  # ... and the process dies here
        claims.append(claim)
    assert service.deliver_due(factory).sent == 0  # within the lease: nobody touches them
    clock.advance(service.lease)
    report = service.deliver_due(factory)
    assert (report.unconfirmed, report.resumed, report.sent) == (1, 1, 1)
    assert len(email.sent) == 1
    assert len(webhook.sent) == 2
    assert webhook.sent[0][0].idempotency_key == webhook.sent[1][0].idempotency_key
    clock.advance(timedelta(hours=1))
    assert service.deliver_due(factory) == type(report)()  # nothing left to do
    with factory() as s:
        by_channel = {m.channel: m for m in service.messages(s, account.id)}
        email_log = service.deliveries(s, by_channel[ChannelKind.EMAIL].id)
        webhook_log = service.deliveries(s, by_channel[ChannelKind.WEBHOOK].id)
    assert by_channel[ChannelKind.EMAIL].status is MessageStatus.UNCONFIRMED
    assert by_channel[ChannelKind.WEBHOOK].status is MessageStatus.SENT
    assert [a.outcome for a in email_log] == [Outcome.INTERRUPTED]
    assert [a.outcome for a in webhook_log] == [Outcome.INTERRUPTED, Outcome.OK]


def test_a_late_success_after_the_lease_still_counts_as_sent(
    factory: sessionmaker[Session], service: NotificationService, account: AccountInfo, clock: ManualClock
) -> None:
    with unit_of_work(factory) as s:
        service.subscribe(s, account.id, "email", "wanjiru@example.com", actor="wanjiru", role="customer")
        service.enqueue(s, Disconnected(account.id, -1, "KES", "cmd-1", clock.now()))
    with unit_of_work(factory) as s:
        claim = service.claim_next(s, clock.now())
    assert isinstance(claim, Claim)
    clock.advance(service.lease)
    assert service.deliver_due(factory).unconfirmed == 1  # another worker gave up on it
    with unit_of_work(factory) as s:
        assert service.record(s, claim, DeliveryResult.ok(), clock.now()) is MessageStatus.SENT
        assert s.scalar(select(func.count()).select_from(NotificationDelivery)) == 1


def test_bad_input_is_refused_with_where(
    factory: sessionmaker[Session], service: NotificationService, account: AccountInfo, clock: ManualClock
) -> None:
    with unit_of_work(factory) as s:
        with pytest.raises(ValidationError, match="currency must be an ISO 4217 code"):
            service.enqueue(s, PaymentReceived(account.id, 1, 1, "shilling", "p", clock.now()))
        with pytest.raises(ValidationError, match="must be timezone-aware"):
            service.enqueue(s, PaymentReceived(account.id, 1, 1, "KES", "p", datetime(2026, 3, 2)))  # noqa: DTZ001
        with pytest.raises(ValidationError, match="a payment must be positive"):
            service.enqueue(s, PaymentReceived(account.id, 0, 1, "KES", "p", clock.now()))
        with pytest.raises(ValidationError, match="episode must be"):
            service.enqueue(s, LowBalance(account.id, 0, "KES", None, "", clock.now()))
        with pytest.raises(NotFoundError):
            service.enqueue(s, payment(AccountInfo(999, 1, 1, "X", "prepaid"), clock))
        with pytest.raises(ValidationError, match="quiet_start equals quiet_end"):
            service.set_preferences(
                s, Preferences(account.id, quiet_start=time(1), quiet_end=time(1)), actor="a", role="customer"
            )
        with pytest.raises(ValidationError, match="low_balance_days must be 0 to 365"):
            service.set_preferences(
                s, Preferences(account.id, low_balance_days=400), actor="a", role="customer"
            )
        with pytest.raises(ValidationError, match="unknown channel"):
            service.subscribe(s, account.id, "fax", "123", actor="a", role="customer")
        with pytest.raises(NotFoundError):
            service.unsubscribe(s, 12345, actor="a", role="customer")
