"""The notification service: preferences, subscriptions, `enqueue` (in the caller's transaction) and
`deliver_due` (the worker's loop, one short transaction per step).

Exactly-once as far as it can be had (docs/notifications.md):
- `enqueue` stores the event's dedupe key (unique) and one message per active subscription in the caller's
  transaction, so a message exists if and only if the domain change that caused it was committed; a repeated
  event stores nothing new.
- `deliver_due` claims one message at a time in its own committed transaction (status "sending", attempt count
  up, a delivery row without outcome, a lease until `now + lease`), sends outside any transaction, then records
  the outcome in another. A worker that dies between the send and the record leaves the message "sending"; once
  the lease has passed, the next `deliver_due` marks that attempt "interrupted" and then resends it only on a
  channel whose receiver honours the message's idempotency key (webhook, web push); on any other channel the
  message ends "unconfirmed" and is never sent twice.
Methods taking a `Session` never commit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import Clock, ensure_aware
from openami.common.errors import NotFoundError, ValidationError
from openami.notifications.channels import Channel, validate_address
from openami.notifications.interfaces import (
    ChannelKind,
    DeliveryAttemptInfo,
    DeliveryReport,
    DeliveryResult,
    Disconnected,
    DisconnectWarning,
    EnqueueResult,
    Event,
    Language,
    LowBalance,
    MessageInfo,
    MessageStatus,
    Outcome,
    OutgoingMessage,
    PaymentReceived,
    Preferences,
    Recipient,
    Reconnected,
    Rule,
    SubscriptionInfo,
)
from openami.notifications.models import (
    NotificationDelivery,
    NotificationEvent,
    NotificationMessage,
    NotificationPreference,
    NotificationSubscription,
)
from openami.notifications.rules import (
    MAX_EPISODE_CHARS,
    RetryPolicy,
    episode_of,
    evaluate,
    release_at,
    render,
)
from openami.registry.service import RegistryService
from openami.security.audit import AuditLog
from openami.storage.db import unit_of_work


@dataclass(frozen=True, slots=True)
class Claim:
    """A message claimed for one attempt: what the channel needs, and which delivery row to finish."""

    message_id: int
    attempt: int
    channel: ChannelKind
    subscription_id: int
    recipient: Recipient
    message: OutgoingMessage


def _message_info(row: NotificationMessage) -> MessageInfo:
    return MessageInfo(
        id=row.id,
        account_id=row.account_id,
        subscription_id=row.subscription_id,
        channel=ChannelKind(row.channel),
        rule=Rule(row.rule),
        dedupe_key="",  # filled by callers that joined the event
        urgent=row.urgent,
        language=Language(row.language),
        subject=row.subject,
        body=row.body,
        status=MessageStatus(row.status),
        attempts=row.attempts,
        not_before=row.not_before,
        next_attempt_at=row.next_attempt_at,
        expires_at=row.expires_at,
        sent_at=row.sent_at,
        last_error=row.last_error,
        created_at=row.created_at,
    )


def _subscription_info(row: NotificationSubscription) -> SubscriptionInfo:
    return SubscriptionInfo(
        row.id, row.account_id, ChannelKind(row.channel), row.address, row.active, row.created_at
    )


def _check_event(event: Event) -> None:
    where = f"{type(event).__name__} event"
    if not isinstance(event, LowBalance | DisconnectWarning | Disconnected | Reconnected | PaymentReceived):
        raise ValidationError(f"not a notification event: {type(event).__name__}", "event")
    try:
        ensure_aware(event.occurred_at, "occurred_at")
        if isinstance(event, DisconnectWarning):
            ensure_aware(event.cutoff_at, "cutoff_at")
    except ValueError as exc:
        raise ValidationError(str(exc), where) from exc
    if not isinstance(event.currency, str) or len(event.currency) != 3 or not event.currency.isalpha():
        raise ValidationError(f"currency must be an ISO 4217 code, got {event.currency!r}", where)
    amounts = [event.balance_minor] + ([event.amount_minor] if isinstance(event, PaymentReceived) else [])
    if any(isinstance(a, bool) or not isinstance(a, int) for a in amounts):
        raise ValidationError("amounts must be integer minor units", where)
    if isinstance(event, PaymentReceived) and event.amount_minor <= 0:
        raise ValidationError(f"a payment must be positive, got {event.amount_minor}", where)
    episode = episode_of(event)
    if not isinstance(episode, str) or not episode.strip() or len(episode) > MAX_EPISODE_CHARS:
        raise ValidationError(f"episode must be 1 to {MAX_EPISODE_CHARS} characters, got {episode!r}", where)


class NotificationService:
    """Turns domain events into logged messages and sends them through the configured channels."""

    def __init__(
        self,
        clock: Clock,
        registry: RegistryService,
        audit: AuditLog,
        channels: Mapping[ChannelKind, Channel] | None = None,
        *,
        retry: RetryPolicy | None = None,
        lease: timedelta = timedelta(minutes=5),
    ) -> None:
        self.clock = clock
        self.registry = registry
        self.audit = audit
        self.channels: dict[ChannelKind, Channel] = dict(channels or {})
        for kind, channel in self.channels.items():
            if channel.kind is not kind:
                raise ValidationError(f"channel for {kind.value} says it is {channel.kind.value}", "channels")
        self.retry = retry or RetryPolicy()
        self.lease = lease

    # -- preferences and subscriptions -----------------------------------------------------------------------

    def preferences(self, session: Session, account_id: int) -> Preferences:
        """The account's stored preferences, or the defaults of `Preferences` when none were set."""
        self.registry.get_account(session, account_id)
        row = session.get(NotificationPreference, account_id)
        if row is None:
            return Preferences(account_id)
        return Preferences(
            account_id,
            Language(row.language),
            row.low_balance_minor,
            row.low_balance_days,
            row.quiet_start,
            row.quiet_end,
        )

    def set_preferences(
        self, session: Session, preferences: Preferences, *, actor: str, role: str
    ) -> Preferences:
        """Store a customer's thresholds, language and quiet hours for one account (replacing earlier ones)."""
        where = f"notification preferences of account {preferences.account_id}"
        try:
            language = Language(preferences.language)
        except ValueError as exc:
            raise ValidationError(f"language must be one of {[x.value for x in Language]}", where) from exc
        amount, days = preferences.low_balance_minor, preferences.low_balance_days
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int) or amount < 0):
            raise ValidationError(f"low_balance_minor must be minor units >= 0, got {amount!r}", where)
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 365):
            raise ValidationError(f"low_balance_days must be 0 to 365, got {days!r}", where)
        start, end = preferences.quiet_start, preferences.quiet_end
        if (start is None) != (end is None):
            raise ValidationError("give both quiet_start and quiet_end, or neither", where)
        if start is not None and end is not None:
            if not isinstance(start, time) or not isinstance(end, time) or start.tzinfo or end.tzinfo:
                raise ValidationError("quiet hours are local times of day without a zone", where)
            if start == end:
                raise ValidationError("quiet_start equals quiet_end; give neither for no quiet hours", where)
        before = self.preferences(session, preferences.account_id)
        account = self.registry.get_account(session, preferences.account_id)
        row = session.get(NotificationPreference, preferences.account_id)
        if row is None:
            row = NotificationPreference(account_id=preferences.account_id)
            session.add(row)
        row.language = language.value
        row.low_balance_minor, row.low_balance_days = amount, days
        row.quiet_start, row.quiet_end = start, end
        row.updated_at = self.clock.now()
        session.flush()
        after = self.preferences(session, preferences.account_id)
        self.audit.append(
            session,
            actor=actor,
            role=role,
            action="notifications.set_preferences",
            object_type="account",
            object_id=str(account.id),
            before=_preferences_json(before),
            after=_preferences_json(after),
            site_id=account.site_id,
        )
        return after

    def subscribe(
        self,
        session: Session,
        account_id: int,
        channel: ChannelKind | str,
        address: str,
        *,
        secret: str | None = None,
        actor: str,
        role: str,
    ) -> SubscriptionInfo:
        """Send the account's alerts to `address` on `channel` too. Subscribing an address again reactivates it
        (and replaces a webhook's secret)."""
        try:
            kind = ChannelKind(channel)
        except ValueError as exc:
            raise ValidationError(f"unknown channel {channel!r}", "subscription channel") from exc
        address = validate_address(kind, address, secret)
        account = self.registry.get_account(session, account_id)
        address_hash = hashlib.sha256(address.encode()).hexdigest()
        row = session.scalars(
            select(NotificationSubscription).where(
                NotificationSubscription.account_id == account_id,
                NotificationSubscription.channel == kind.value,
                NotificationSubscription.address_hash == address_hash,
            )
        ).one_or_none()
        if row is None:
            row = NotificationSubscription(
                account_id=account_id,
                channel=kind.value,
                address=address,
                address_hash=address_hash,
                created_at=self.clock.now(),
            )
            session.add(row)
        row.secret, row.active, row.deactivated_at = secret, True, None
        session.flush()
        self.audit.append(
            session,
            actor=actor,
            role=role,
            action="notifications.subscribe",
            object_type="notification_subscription",
            object_id=str(row.id),
            after={"account_id": account_id, "channel": kind.value, "address_sha256": address_hash},
            site_id=account.site_id,
        )
        return _subscription_info(row)

    def unsubscribe(
        self, session: Session, subscription_id: int, *, actor: str, role: str
    ) -> SubscriptionInfo:
        """Stop sending to the subscription; messages already queued for it are not sent."""
        row = session.get(NotificationSubscription, subscription_id)
        if row is None:
            raise NotFoundError(f"notification subscription {subscription_id} does not exist")
        account = self.registry.get_account(session, row.account_id)
        self._deactivate(session, row)
        self.audit.append(
            session,
            actor=actor,
            role=role,
            action="notifications.unsubscribe",
            object_type="notification_subscription",
            object_id=str(row.id),
            before={"active": True},
            after={"active": False},
            site_id=account.site_id,
        )
        return _subscription_info(row)

    def _deactivate(self, session: Session, row: NotificationSubscription) -> None:
        if row.active:
            row.active, row.deactivated_at = False, self.clock.now()
        session.flush()

    def subscriptions(
        self, session: Session, account_id: int, *, active_only: bool = True
    ) -> list[SubscriptionInfo]:
        stmt = select(NotificationSubscription).where(NotificationSubscription.account_id == account_id)
        if active_only:
            stmt = stmt.where(NotificationSubscription.active.is_(True))
        return [_subscription_info(r) for r in session.scalars(stmt.order_by(NotificationSubscription.id))]

    # -- enqueue ---------------------------------------------------------------------------------------------

    def enqueue(self, session: Session, event: Event) -> EnqueueResult:
        """Store the messages `event` calls for, in the caller's transaction. Each rule that fires stores its
        dedupe key (rule, account, episode) once; a key already stored is a duplicate and stores nothing. Non-
        urgent messages created in the customer's quiet hours wait until the quiet hours end."""
        _check_event(event)
        account = self.registry.get_account(session, event.account_id)
        zone = ZoneInfo(self.registry.get_site(session, account.site_id).timezone)
        preferences = self.preferences(session, account.id)
        notices = evaluate(event, preferences, account.number, zone)
        if not notices:
            return EnqueueResult((), (), ())
        now = ensure_aware(self.clock.now(), "clock")
        subscriptions = session.scalars(
            select(NotificationSubscription)
            .where(
                NotificationSubscription.account_id == account.id, NotificationSubscription.active.is_(True)
            )
            .order_by(NotificationSubscription.id)
        ).all()
        fired, duplicate, messages = [], [], []
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        for notice in notices:
            # ON CONFLICT DO NOTHING: a concurrent enqueue of the same episode neither fails nor doubles.
            event_id = session.scalar(
                insert(NotificationEvent)
                .values(
                    dedupe_key=notice.dedupe_key,
                    account_id=account.id,
                    rule=notice.rule.value,
                    data=json.dumps(notice.data, sort_keys=True, ensure_ascii=False),
                    occurred_at=event.occurred_at,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["dedupe_key"])
                .returning(NotificationEvent.id)
            )
            if event_id is None:
                duplicate.append(notice.rule)
                continue
            fired.append(notice.rule)
            due = release_at(now, notice.urgent, preferences.quiet_start, preferences.quiet_end, zone)
            subject, body = render(notice, preferences.language)
            for subscription in subscriptions:
                key = hashlib.sha256(f"{notice.dedupe_key}|{subscription.id}".encode()).hexdigest()[:32]
                row = NotificationMessage(
                    event_id=event_id,
                    subscription_id=subscription.id,
                    account_id=account.id,
                    idempotency_key=key,
                    channel=subscription.channel,
                    rule=notice.rule.value,
                    urgent=notice.urgent,
                    language=preferences.language.value,
                    subject=subject[:300],
                    body=body,
                    status=MessageStatus.PENDING.value,
                    attempts=0,
                    not_before=due,
                    next_attempt_at=due,
                    expires_at=notice.expires_at,
                    created_at=now,
                )
                session.add(row)
                messages.append((row, notice.dedupe_key))
        session.flush()
        infos = tuple(_with_key(_message_info(row), key) for row, key in messages)
        return EnqueueResult(tuple(fired), tuple(duplicate), infos)

    # -- delivery --------------------------------------------------------------------------------------------

    def recover_stale(self, session: Session, now: datetime) -> tuple[int, int]:
        """Close attempts whose worker died mid-send (status "sending" past its lease): each is logged
        "interrupted"; the message goes back to pending on a resend-safe channel, else ends "unconfirmed".
        Returns (resumed, unconfirmed)."""
        stale = session.scalars(
            select(NotificationMessage)
            .where(NotificationMessage.status == MessageStatus.SENDING.value)
            .where(NotificationMessage.next_attempt_at <= now)
            .order_by(NotificationMessage.id)
            .with_for_update(skip_locked=True)
        ).all()
        resumed = unconfirmed = 0
        for row in stale:
            session.execute(
                update(NotificationDelivery)
                .where(
                    NotificationDelivery.message_id == row.id, NotificationDelivery.attempt == row.attempts
                )
                .where(NotificationDelivery.outcome.is_(None))
                .values(
                    outcome=Outcome.INTERRUPTED.value,
                    finished_at=now,
                    error="the worker stopped before recording the result; the send may have happened",
                )
            )
            channel = self.channels.get(ChannelKind(row.channel))
            if channel is not None and channel.resend_safe:
                row.status, row.next_attempt_at = MessageStatus.PENDING.value, now
                resumed += 1
            else:
                row.status = MessageStatus.UNCONFIRMED.value
                row.last_error = "interrupted mid-send; not resent, as this channel could show it twice"
                unconfirmed += 1
        session.flush()
        return resumed, unconfirmed

    def claim_next(self, session: Session, now: datetime) -> Claim | MessageStatus | None:
        """Claim the most urgent due message for one attempt (the caller commits before sending). Returns the
        claim, `MessageStatus.EXPIRED` when the message found was past its expiry (marked so, nothing to send),
        or None when nothing is due on a configured channel."""
        configured = [kind.value for kind in self.channels]
        row = session.scalars(
            select(NotificationMessage)
            .where(NotificationMessage.status == MessageStatus.PENDING.value)
            .where(NotificationMessage.next_attempt_at <= now)
            .where(NotificationMessage.channel.in_(configured))
            .order_by(
                NotificationMessage.urgent.desc(), NotificationMessage.next_attempt_at, NotificationMessage.id
            )
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if row is None:
            return None
        if row.expires_at is not None and row.expires_at <= now:
            row.status, row.last_error = (
                MessageStatus.EXPIRED.value,
                f"expired at {row.expires_at.isoformat()}",
            )
            session.flush()
            return MessageStatus.EXPIRED
        subscription = session.get(NotificationSubscription, row.subscription_id)
        if subscription is None or not subscription.active:
            row.status, row.last_error = MessageStatus.FAILED.value, "the subscription was cancelled"
            session.flush()
            return MessageStatus.FAILED
        event = session.get(NotificationEvent, row.event_id)
        if event is None:  # the foreign key makes this impossible; said plainly if a database lost it
            raise NotFoundError(f"notification event {row.event_id} of message {row.id} does not exist")
        attempt = row.attempts + 1
        # Compare-and-set on status: a second worker that read the same row (no SKIP LOCKED on SQLite) loses.
        claimed = session.execute(
            update(NotificationMessage)
            .where(
                NotificationMessage.id == row.id, NotificationMessage.status == MessageStatus.PENDING.value
            )
            .values(status=MessageStatus.SENDING.value, attempts=attempt, next_attempt_at=now + self.lease)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return None
        session.add(NotificationDelivery(message_id=row.id, attempt=attempt, started_at=now))
        session.flush()
        data: dict[str, Any] = json.loads(event.data)
        outgoing = OutgoingMessage(
            idempotency_key=row.idempotency_key,
            rule=Rule(row.rule),
            account_id=row.account_id,
            language=Language(row.language),
            subject=row.subject,
            body=row.body,
            urgent=row.urgent,
            data=data,
            created_at=row.created_at,
        )
        return Claim(
            row.id,
            attempt,
            ChannelKind(row.channel),
            subscription.id,
            Recipient(subscription.address, subscription.secret),
            outgoing,
        )

    def record(
        self, session: Session, claim: Claim, result: DeliveryResult, finished_at: datetime
    ) -> MessageStatus:
        """Record the outcome of a claimed attempt: sent; pending again after a backoff; or failed (permanent, or
        retries exhausted; a subscription whose address is gone is deactivated)."""
        session.execute(
            update(NotificationDelivery)
            .where(
                NotificationDelivery.message_id == claim.message_id,
                NotificationDelivery.attempt == claim.attempt,
            )
            .values(
                outcome=result.outcome.value,
                finished_at=finished_at,
                error=None if result.error is None else result.error[:500],
                provider_reference=None
                if result.provider_reference is None
                else result.provider_reference[:200],
            )
            .execution_options(synchronize_session=False)
        )
        row = session.get(NotificationMessage, claim.message_id, populate_existing=True)
        if row is None or row.attempts != claim.attempt:  # a later attempt owns the message now
            return MessageStatus(row.status) if row is not None else MessageStatus.FAILED
        if result.outcome is Outcome.OK:
            # Also from "unconfirmed" (the lease ran out before the send came back): now it is known to be sent.
            row.status, row.sent_at, row.last_error = MessageStatus.SENT.value, finished_at, None
        elif row.status != MessageStatus.SENDING.value:
            pass  # recover_stale already decided; a failure does not overrule it
        elif result.outcome is Outcome.RETRYABLE and claim.attempt < self.retry.max_attempts:
            row.status = MessageStatus.PENDING.value
            row.next_attempt_at = finished_at + self.retry.delay(claim.attempt)
            row.last_error = (result.error or "retryable error")[:500]
        else:
            row.status = MessageStatus.FAILED.value
            row.last_error = (result.error or result.outcome.value)[:500]
            if result.gone:
                subscription = session.get(NotificationSubscription, claim.subscription_id)
                if subscription is not None:
                    self._deactivate(session, subscription)
        session.flush()
        return MessageStatus(row.status)

    def deliver_due(
        self, factory: sessionmaker[Session], now: datetime | None = None, *, limit: int = 100
    ) -> DeliveryReport:
        """Send up to `limit` due messages, each claimed, sent and recorded in its own steps (see the module's
        docstring); first recover attempts a dead worker left. Takes a session factory, not a session, because
        the "sending" mark must be committed before the send for a crash to be detectable afterwards."""
        now = ensure_aware(now if now is not None else self.clock.now(), "now")
        with unit_of_work(factory) as session:
            resumed, unconfirmed = self.recover_stale(session, now)
        counts = dict.fromkeys(MessageStatus, 0)
        errors: list[str] = []
        for _ in range(limit):
            with unit_of_work(factory) as session:
                claim = self.claim_next(session, now)
            if claim is None:
                break
            if isinstance(claim, MessageStatus):
                counts[claim] += 1
                continue
            try:
                result = self.channels[claim.channel].send(claim.message, claim.recipient)
            except Exception as exc:  # a channel's bug must not strand the message in "sending"
                result = DeliveryResult.retryable(
                    f"{type(exc).__name__} in the {claim.channel.value} channel: {exc}"
                )
            if result.outcome is not Outcome.OK and result.error:
                errors.append(f"message {claim.message_id}: {result.error}")
            with unit_of_work(factory) as session:
                status = self.record(session, claim, result, ensure_aware(self.clock.now(), "clock"))
            counts[status] += 1
        return DeliveryReport(
            sent=counts[MessageStatus.SENT],
            retrying=counts[MessageStatus.PENDING],
            failed=counts[MessageStatus.FAILED],
            expired=counts[MessageStatus.EXPIRED],
            unconfirmed=unconfirmed,
            resumed=resumed,
            errors=tuple(errors),
        )

    # -- reading ---------------------------------------------------------------------------------------------

    def messages(self, session: Session, account_id: int) -> list[MessageInfo]:
        rows = session.execute(
            select(NotificationMessage, NotificationEvent.dedupe_key)
            .join(NotificationEvent, NotificationEvent.id == NotificationMessage.event_id)
            .where(NotificationMessage.account_id == account_id)
            .order_by(NotificationMessage.id)
        ).all()
        return [_with_key(_message_info(row), key) for row, key in rows]

    def deliveries(self, session: Session, message_id: int) -> list[DeliveryAttemptInfo]:
        """The delivery log of one message: one entry per attempt, oldest first."""
        rows = session.scalars(
            select(NotificationDelivery)
            .where(NotificationDelivery.message_id == message_id)
            .order_by(NotificationDelivery.attempt)
        )
        return [
            DeliveryAttemptInfo(
                r.message_id,
                r.attempt,
                r.started_at,
                r.finished_at,
                None if r.outcome is None else Outcome(r.outcome),
                r.error,
                r.provider_reference,
            )
            for r in rows
        ]


def _with_key(info: MessageInfo, dedupe_key: str) -> MessageInfo:
    return replace(info, dedupe_key=dedupe_key)


def _preferences_json(p: Preferences) -> dict[str, Any]:
    return {
        "language": p.language.value,
        "low_balance_minor": p.low_balance_minor,
        "low_balance_days": p.low_balance_days,
        "quiet_start": None if p.quiet_start is None else p.quiet_start.isoformat(),
        "quiet_end": None if p.quiet_end is None else p.quiet_end.isoformat(),
    }
