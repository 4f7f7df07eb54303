"""What other contexts hand to notifications and learn back: domain events in, plain values out, never tables.

Money is integer minor units of `currency` (`*_minor`); every instant is timezone-aware UTC. Each event names
its **episode**: the thing that makes a repeat of the same rule for the same account a new message rather than a
duplicate (a run-down of credit since a top-up, one planned cut-off, one relay command, one payment).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, time
from decimal import Decimal
from typing import Any


class ChannelKind(enum.StrEnum):
    WEB_PUSH = (
        "web_push"  # address: the browser's PushSubscription as JSON (endpoint, keys.p256dh, keys.auth)
    )
    EMAIL = "email"  # address: an e-mail address
    APPRISE = "apprise"  # address: an apprise URL (SMS gateways, Telegram, WeCom, ...)
    WEBHOOK = "webhook"  # address: an https URL; the subscription's secret signs each body


class Rule(enum.StrEnum):
    LOW_BALANCE_AMOUNT = "low_balance_amount"
    LOW_BALANCE_DAYS = "low_balance_days"
    DISCONNECT_WARNING = "disconnect_warning"
    DISCONNECTED = "disconnected"
    RECONNECTED = "reconnected"
    PAYMENT_RECEIVED = "payment_received"


class Language(enum.StrEnum):
    ENGLISH = "en"
    SIMPLIFIED_CHINESE = "zh-Hans"


class MessageStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for `not_before` (quiet hours) or `next_attempt_at` (a retry)
    SENDING = "sending"  # claimed by a worker, committed before the send: an unfinished send is visible
    SENT = "sent"
    FAILED = "failed"  # a permanent error, or retries exhausted
    EXPIRED = "expired"  # no longer worth sending (a warning for a cut-off time already passed)
    UNCONFIRMED = "unconfirmed"  # a worker died mid-send on a channel that cannot be resent safely


class Outcome(enum.StrEnum):
    OK = "ok"
    RETRYABLE = "retryable"  # try again later: network, timeout, 429, 5xx, SMTP 4xx
    PERMANENT = "permanent"  # will never succeed as addressed: bad address, 4xx, SMTP 5xx
    INTERRUPTED = "interrupted"  # logged for an attempt whose worker died before recording its result


# -- domain events -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LowBalance:
    """An account's prepaid balance, as the prepayment context last computed it. Emit it whenever the balance
    or the prediction changes: the rules compare it with the customer's thresholds and stay silent above them.
    `episode` is one run-down of credit, e.g. the id of the last top-up (a new top-up starts a new episode)."""

    account_id: int
    balance_minor: int
    currency: str
    days_left: Decimal | None  # predicted days of credit at recent consumption; None when not predictable
    episode: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class DisconnectWarning:
    """Supply will be cut at `cutoff_at` unless the account is topped up. Urgent: quiet hours do not hold it,
    and it expires (is not sent) once `cutoff_at` has passed."""

    account_id: int
    balance_minor: int
    currency: str
    cutoff_at: datetime
    episode: str  # one planned cut-off, e.g. the planned time or the plan's id
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Disconnected:
    account_id: int
    balance_minor: int
    currency: str
    reference: str  # the relay command's request key: one message per cut-off
    occurred_at: datetime  # when the meter confirmed the relay open


@dataclass(frozen=True, slots=True)
class Reconnected:
    account_id: int
    balance_minor: int
    currency: str
    reference: str  # the relay command's request key
    occurred_at: datetime  # when the meter confirmed the relay closed


@dataclass(frozen=True, slots=True)
class PaymentReceived:
    account_id: int
    amount_minor: int
    balance_minor: int  # the balance after the payment
    currency: str
    payment_id: str  # the provider's payment id: one receipt per payment
    occurred_at: datetime


Event = LowBalance | DisconnectWarning | Disconnected | Reconnected | PaymentReceived


# -- plain values back ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preferences:
    """A customer's choices for one account. A threshold of None turns its rule off. Quiet hours are local
    times in the site's zone, `[quiet_start, quiet_end)`, wrapping past midnight when start > end; both None
    means no quiet hours."""

    account_id: int
    language: Language = Language.ENGLISH
    low_balance_minor: int | None = None
    low_balance_days: int | None = 3
    quiet_start: time | None = None
    quiet_end: time | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    id: int
    account_id: int
    channel: ChannelKind
    address: str
    active: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MessageInfo:
    id: int
    account_id: int
    subscription_id: int
    channel: ChannelKind
    rule: Rule
    dedupe_key: str
    urgent: bool
    language: Language
    subject: str
    body: str
    status: MessageStatus
    attempts: int
    not_before: datetime
    next_attempt_at: datetime
    expires_at: datetime | None
    sent_at: datetime | None
    last_error: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryAttemptInfo:
    message_id: int
    attempt: int
    started_at: datetime
    finished_at: datetime | None  # None while sending
    outcome: Outcome | None  # None while sending
    error: str | None
    provider_reference: str | None


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """What `enqueue` stored for one event: `duplicate` when the same rule, account and episode was already
    enqueued (nothing new stored), `messages` one per rule that fired and active subscription."""

    rules: tuple[Rule, ...]
    duplicate: tuple[Rule, ...]
    messages: tuple[MessageInfo, ...]


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    expired: int = 0
    unconfirmed: int = 0  # stale "sending" claims on channels that cannot be resent safely
    resumed: int = 0  # stale "sending" claims on idempotent channels, sent again with the same key
    errors: tuple[str, ...] = field(default=())


# -- what channels receive and return ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message as a channel sends it. `idempotency_key` is the same on every attempt of the message, so a
    receiver that honours it (webhooks, web push's Topic and notification tag) never shows it twice."""

    idempotency_key: str
    rule: Rule
    account_id: int
    language: Language
    subject: str
    body: str
    urgent: bool
    data: dict[str, Any]  # the event as JSON values, for machine receivers (webhooks, push payloads)
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Recipient:
    address: str
    secret: str | None = None  # a webhook's signing secret


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    outcome: Outcome
    error: str | None = None
    provider_reference: str | None = None  # e.g. the SMTP queue id or push service's message location
    gone: bool = False  # the address no longer exists (web push 404/410): the subscription is deactivated

    @classmethod
    def ok(cls, provider_reference: str | None = None) -> DeliveryResult:
        return cls(Outcome.OK, None, provider_reference)

    @classmethod
    def retryable(cls, error: str) -> DeliveryResult:
        return cls(Outcome.RETRYABLE, error)

    @classmethod
    def permanent(cls, error: str, *, gone: bool = False) -> DeliveryResult:
        return cls(Outcome.PERMANENT, error, gone=gone)
