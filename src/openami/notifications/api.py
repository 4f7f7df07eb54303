"""Notification settings and the messages sent, over HTTP under /api/v1, per account: what a customer sets on
their phone (thresholds, quiet hours, language), where alerts go (subscriptions), and the delivery log.

`notifications:read` / `notifications:write` (a customer: their own accounts'; staff: their sites' accounts).
NotificationService writes every change to the operation log (a subscription's address only as its SHA-256), in
the route's transaction, committed here. A webhook's signing secret is taken, never shown again.
"""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from openami.api.auth import Access, require
from openami.api.deps import ContainerDep, RowId, SessionDep
from openami.bootstrap import Container
from openami.common.errors import NotFoundError, ValidationError
from openami.notifications.interfaces import (
    ChannelKind,
    DeliveryAttemptInfo,
    Language,
    MessageInfo,
    MessageStatus,
    Outcome,
    Preferences,
    Rule,
    SubscriptionInfo,
)
from openami.notifications.models import NotificationSubscription
from openami.prepayment.payments import money
from openami.registry.interfaces import AccountInfo
from openami.security.permissions import Permission
from openami.tariffs.model import minor_digits

router = APIRouter(prefix="/api/v1", tags=["notifications"])
NotificationsRead = Annotated[Access, require(Permission.NOTIFICATIONS_READ)]
NotificationsWrite = Annotated[Access, require(Permission.NOTIFICATIONS_WRITE)]


class PreferencesIn(BaseModel):
    """All of the account's choices (quiet hours left out: none)."""

    model_config = ConfigDict(extra="forbid")
    language: Language
    low_balance: Decimal | None = Field(
        ge=0, allow_inf_nan=False, description="warn below this balance; null: no such warning"
    )
    low_balance_days: int | None = Field(
        ge=0, le=365, description="warn when credit lasts fewer days; null: no such warning"
    )
    quiet_start: time | None = Field(default=None, description="local time; non-urgent alerts wait")
    quiet_end: time | None = None


class PreferencesOut(BaseModel):
    account_id: int
    currency: str
    language: Language
    low_balance: Decimal | None
    low_balance_days: int | None
    quiet_start: time | None
    quiet_end: time | None


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: ChannelKind
    address: str = Field(
        min_length=1,
        max_length=4000,
        description="web_push: the browser's PushSubscription JSON; email: an address; apprise: an apprise "
        "URL; webhook: an https URL",
    )
    secret: str | None = Field(
        default=None, max_length=200, description="webhooks only: the key signing each body"
    )


class SubscriptionOut(BaseModel):
    id: int
    account_id: int
    channel: ChannelKind
    address: str
    active: bool
    created_at: datetime


class DeliveryOut(BaseModel):
    attempt: int
    started_at: datetime
    finished_at: datetime | None
    outcome: Outcome | None = Field(description="null while sending")
    error: str | None
    provider_reference: str | None


class MessageOut(BaseModel):
    id: int
    account_id: int
    subscription_id: int
    channel: ChannelKind
    rule: Rule
    urgent: bool
    language: Language
    subject: str
    body: str
    status: MessageStatus
    attempts: int
    not_before: datetime = Field(description="held until then by quiet hours")
    expires_at: datetime | None
    sent_at: datetime | None
    last_error: str | None
    created_at: datetime
    deliveries: list[DeliveryOut]


def _account(session: Session, container: Container, access: Access, account_id: int) -> AccountInfo:
    try:
        account = container.registry.get_account(session, account_id)
    except NotFoundError:
        account = None
    if account is None or not access.sees_account(account.site_id, account.id):
        raise NotFoundError(f"no account with id {account_id}")
    return account


def _currency(session: Session, container: Container, account: AccountInfo) -> str:
    return container.registry.get_site(session, account.site_id).currency


def _preferences_out(p: Preferences, currency: str) -> PreferencesOut:
    return PreferencesOut(
        account_id=p.account_id,
        currency=currency,
        language=p.language,
        low_balance=None if p.low_balance_minor is None else money(p.low_balance_minor, currency),
        low_balance_days=p.low_balance_days,
        quiet_start=p.quiet_start,
        quiet_end=p.quiet_end,
    )


def _subscription_out(s: SubscriptionInfo) -> SubscriptionOut:
    return SubscriptionOut(
        id=s.id,
        account_id=s.account_id,
        channel=s.channel,
        address=s.address,
        active=s.active,
        created_at=s.created_at,
    )


def _delivery_out(d: DeliveryAttemptInfo) -> DeliveryOut:
    return DeliveryOut(
        attempt=d.attempt,
        started_at=d.started_at,
        finished_at=d.finished_at,
        outcome=d.outcome,
        error=d.error,
        provider_reference=d.provider_reference,
    )


def _message_out(m: MessageInfo, deliveries: list[DeliveryAttemptInfo]) -> MessageOut:
    return MessageOut(
        id=m.id,
        account_id=m.account_id,
        subscription_id=m.subscription_id,
        channel=m.channel,
        rule=m.rule,
        urgent=m.urgent,
        language=m.language,
        subject=m.subject,
        body=m.body,
        status=m.status,
        attempts=m.attempts,
        not_before=m.not_before,
        expires_at=m.expires_at,
        sent_at=m.sent_at,
        last_error=m.last_error,
        created_at=m.created_at,
        deliveries=[_delivery_out(d) for d in deliveries],
    )


def _minor(amount: Decimal, currency: str, where: str) -> int:
    try:
        scaled = amount.scaleb(minor_digits(currency))
        if scaled != scaled.to_integral_value():
            raise ValidationError(f"{amount} has more decimals than {currency} has", where)
        return int(scaled)
    except InvalidOperation as exc:
        raise ValidationError(f"not an amount: {amount}", where) from exc


@router.get("/accounts/{account_id}/notification-preferences", response_model=PreferencesOut)
def get_preferences(
    account_id: RowId, access: NotificationsRead, session: SessionDep, container: ContainerDep
) -> Any:
    """The account's alert thresholds, quiet hours and language (the defaults until set)."""
    account = _account(session, container, access, account_id)
    preferences = container.notifications.preferences(session, account.id)
    return _preferences_out(preferences, _currency(session, container, account))


@router.put("/accounts/{account_id}/notification-preferences", response_model=PreferencesOut)
def set_preferences(
    account_id: RowId,
    body: PreferencesIn,
    access: NotificationsWrite,
    session: SessionDep,
    container: ContainerDep,
) -> Any:
    """Replace the account's alert thresholds, quiet hours and language."""
    account = _account(session, container, access, account_id)
    currency = _currency(session, container, account)
    preferences = Preferences(
        account_id=account.id,
        language=body.language,
        low_balance_minor=None
        if body.low_balance is None
        else _minor(body.low_balance, currency, "low_balance"),
        low_balance_days=body.low_balance_days,
        quiet_start=body.quiet_start,
        quiet_end=body.quiet_end,
    )
    stored = container.notifications.set_preferences(
        session, preferences, actor=access.actor, role=access.role
    )
    session.commit()
    return _preferences_out(stored, currency)


@router.get("/accounts/{account_id}/subscriptions", response_model=list[SubscriptionOut])
def list_subscriptions(
    account_id: RowId,
    access: NotificationsRead,
    session: SessionDep,
    container: ContainerDep,
    include_inactive: bool = False,
) -> Any:
    """Where the account's alerts go (the active ones, unless `include_inactive`)."""
    account = _account(session, container, access, account_id)
    found = container.notifications.subscriptions(session, account.id, active_only=not include_inactive)
    return [_subscription_out(s) for s in found]


@router.post("/accounts/{account_id}/subscriptions", response_model=SubscriptionOut, status_code=201)
def subscribe(
    account_id: RowId,
    body: SubscriptionIn,
    access: NotificationsWrite,
    session: SessionDep,
    container: ContainerDep,
) -> Any:
    """Send the account's alerts to this address too (subscribing one again reactivates it)."""
    account = _account(session, container, access, account_id)
    offered = container.notifications.channels
    if body.channel not in offered:
        raise ValidationError(
            f"this installation does not send {body.channel.value}; it offers "
            f"{sorted(kind.value for kind in offered)}",
            "channel",
        )
    subscription = container.notifications.subscribe(
        session,
        account.id,
        body.channel,
        body.address,
        secret=body.secret,
        actor=access.actor,
        role=access.role,
    )
    session.commit()
    return _subscription_out(subscription)


@router.delete("/subscriptions/{subscription_id}", response_model=SubscriptionOut)
def unsubscribe(
    subscription_id: RowId, access: NotificationsWrite, session: SessionDep, container: ContainerDep
) -> Any:
    """Stop sending alerts to this address; messages queued for it are not sent."""
    row = session.get(NotificationSubscription, subscription_id)
    try:
        account = None if row is None else container.registry.get_account(session, row.account_id)
    except NotFoundError:
        account = None
    if account is None or not access.sees_account(account.site_id, account.id):
        raise NotFoundError(f"no subscription with id {subscription_id}")
    subscription = container.notifications.unsubscribe(
        session, subscription_id, actor=access.actor, role=access.role
    )
    session.commit()
    return _subscription_out(subscription)


@router.get("/accounts/{account_id}/messages", response_model=list[MessageOut])
def messages(
    account_id: RowId,
    access: NotificationsRead,
    session: SessionDep,
    container: ContainerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Any:
    """The delivery log: the account's newest messages first, each with its attempts."""
    account = _account(session, container, access, account_id)
    service = container.notifications
    newest = service.messages(session, account.id)[::-1][:limit]
    return [_message_out(m, service.deliveries(session, m.id)) for m in newest]
