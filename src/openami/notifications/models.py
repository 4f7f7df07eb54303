"""Notification tables: preferences and subscriptions per account, events (the dedupe keys), messages, and the
delivery log (one row per attempt).

`notification_event.dedupe_key` is unique: the same rule, account and episode is stored once, however often it is
reported. A message is one event to one subscription (unique together); its `idempotency_key` is fixed at
enqueue and sent with every attempt. A delivery row is written, and committed, in state "sending" before the
send, so a worker that dies mid-send leaves a visible trace (see service.py).
"""

from __future__ import annotations

from datetime import datetime, time

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Time,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from openami.storage.base import Base, UTCDateTime

BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class NotificationPreference(Base):
    """A customer's choices for one account; an account without a row has `interfaces.Preferences`' defaults."""

    __tablename__ = "notification_preference"
    __table_args__ = (
        CheckConstraint("language IN ('en', 'zh-Hans')", name="language"),
        CheckConstraint("low_balance_minor IS NULL OR low_balance_minor >= 0", name="amount_non_negative"),
        CheckConstraint("low_balance_days IS NULL OR low_balance_days BETWEEN 0 AND 365", name="days_range"),
        CheckConstraint("(quiet_start IS NULL) = (quiet_end IS NULL)", name="quiet_both_or_neither"),
    )

    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), primary_key=True)
    language: Mapped[str] = mapped_column(String(8))
    low_balance_minor: Mapped[int | None] = mapped_column(BigInteger)
    low_balance_days: Mapped[int | None] = mapped_column(Integer)
    quiet_start: Mapped[time | None] = mapped_column(Time())  # local time of the site
    quiet_end: Mapped[time | None] = mapped_column(Time())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class NotificationSubscription(Base):
    """A channel address a customer asked alerts for one account to go to."""

    __tablename__ = "notification_subscription"
    __table_args__ = (
        UniqueConstraint("account_id", "channel", "address_hash"),
        CheckConstraint("channel IN ('web_push', 'email', 'apprise', 'webhook')", name="channel"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(Text)  # a push subscription's JSON can be long
    address_hash: Mapped[str] = mapped_column(String(64))  # SHA-256 of the address, hex: unique per channel
    secret: Mapped[str | None] = mapped_column(String(200))  # a webhook's signing secret
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class NotificationEvent(Base):
    """One rule fired for one account and episode: the dedupe key, stored once."""

    __tablename__ = "notification_event"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    rule: Mapped[str] = mapped_column(String(32))
    data: Mapped[str] = mapped_column(Text)  # the event as JSON
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class NotificationMessage(Base):
    """One event rendered for one subscription, and where its delivery stands."""

    __tablename__ = "notification_message"
    __table_args__ = (
        UniqueConstraint("event_id", "subscription_id"),
        CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'failed', 'expired', 'unconfirmed')", name="status"
        ),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        # What `deliver_due` scans: pending messages by due time, and stale claims.
        Index("ix_notification_message_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    event_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("notification_event.id"))
    subscription_id: Mapped[int] = mapped_column(ForeignKey("notification_subscription.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    channel: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(32))
    urgent: Mapped[bool] = mapped_column(Boolean)
    language: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12))
    attempts: Mapped[int] = mapped_column(Integer)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())  # the end of quiet hours, or creation
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())  # due time; while sending: lease end
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class NotificationDelivery(Base):
    """One attempt to send a message: written as "sending" before the send, finished after it."""

    __tablename__ = "notification_delivery"
    __table_args__ = (
        UniqueConstraint("message_id", "attempt"),
        CheckConstraint(
            "outcome IS NULL OR outcome IN ('ok', 'retryable', 'permanent', 'interrupted')", name="outcome"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    message_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("notification_message.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(String(12))
    error: Mapped[str | None] = mapped_column(String(500))
    provider_reference: Mapped[str | None] = mapped_column(String(200))
