"""The pure core of notifications: which rules an event fires, what the message says, when it may be sent.

No session, clock or I/O: `evaluate` takes the event, the customer's preferences, the account number and the
site's zone; `release_at` and `retry_delay` take instants and counts. The service stores what these decide.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from openami.notifications.interfaces import (
    Disconnected,
    DisconnectWarning,
    Event,
    Language,
    LowBalance,
    Preferences,
    Reconnected,
    Rule,
)
from openami.notifications.templates import TEMPLATES
from openami.tariffs.model import minor_digits

# The warnings that cannot wait for the morning: a cut-off ahead, or one that has happened.
URGENT_RULES = frozenset({Rule.DISCONNECT_WARNING, Rule.DISCONNECTED})
MAX_EPISODE_CHARS = 120


@dataclass(frozen=True, slots=True)
class Notice:
    """A rule that fired for one event: what to tell the customer, before it is rendered per language."""

    rule: Rule
    account_id: int
    episode: str
    urgent: bool
    expires_at: datetime | None
    fields: dict[str, str]  # the template's fields
    data: dict[str, Any]  # the event as JSON values

    @property
    def dedupe_key(self) -> str:
        """Same rule, account and episode: one message, however often the event is reported."""
        return f"{self.rule.value}:{self.account_id}:{self.episode}"


def format_money(amount_minor: int, currency: str) -> str:
    """`1250, "KES"` -> "KES 12.50" (the currency's own number of minor digits)."""
    digits = minor_digits(currency)
    value = Decimal(amount_minor).scaleb(-digits)
    return f"{currency.upper()} {value:,.{digits}f}"


def _local(instant: datetime, zone: ZoneInfo) -> str:
    return instant.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def event_data(event: Event) -> dict[str, Any]:
    """The event as JSON values (instants as ISO 8601 UTC, Decimals as text), with its type."""
    data: dict[str, Any] = {"type": type(event).__name__}
    for item in dataclasses.fields(event):
        value = getattr(event, item.name)
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        elif isinstance(value, Decimal):
            value = str(value)
        data[item.name] = value
    return data


def episode_of(event: Event) -> str:
    if isinstance(event, LowBalance | DisconnectWarning):
        return event.episode
    if isinstance(event, Disconnected | Reconnected):
        return event.reference
    return event.payment_id


def evaluate(event: Event, preferences: Preferences, account_number: str, zone: ZoneInfo) -> list[Notice]:
    """The notices `event` fires under `preferences`: none, one, or for a low balance one per threshold
    crossed (by amount and by days left are separate rules, each deduplicated on its own)."""
    money = {"account": account_number, "balance": format_money(event.balance_minor, event.currency)}

    def notice(rule: Rule, extra: dict[str, str], expires_at: datetime | None = None) -> Notice:
        return Notice(
            rule=rule,
            account_id=event.account_id,
            episode=episode_of(event),
            urgent=rule in URGENT_RULES,
            expires_at=expires_at,
            fields={**money, **extra},
            data=event_data(event),
        )

    if isinstance(event, LowBalance):
        fired = []
        amount = preferences.low_balance_minor
        if amount is not None and event.balance_minor <= amount:
            fired.append(notice(Rule.LOW_BALANCE_AMOUNT, {"threshold": format_money(amount, event.currency)}))
        days = preferences.low_balance_days
        if days is not None and event.days_left is not None and event.days_left <= days:
            shown = max(event.days_left, Decimal(0)).quantize(Decimal("0.1"))
            fired.append(notice(Rule.LOW_BALANCE_DAYS, {"days": str(shown), "threshold": str(days)}))
        return fired
    if isinstance(event, DisconnectWarning):
        return [notice(Rule.DISCONNECT_WARNING, {"cutoff": _local(event.cutoff_at, zone)}, event.cutoff_at)]
    if isinstance(event, Disconnected):
        return [notice(Rule.DISCONNECTED, {})]
    if isinstance(event, Reconnected):
        return [notice(Rule.RECONNECTED, {})]
    return [
        notice(
            Rule.PAYMENT_RECEIVED,
            {"amount": format_money(event.amount_minor, event.currency), "payment": event.payment_id},
        )
    ]


def render(notice: Notice, language: Language) -> tuple[str, str]:
    """The notice's (subject, body) in `language`."""
    subject, body = TEMPLATES[notice.rule][language]
    return subject.format(**notice.fields), body.format(**notice.fields)


def in_quiet_hours(local: time, quiet_start: time, quiet_end: time) -> bool:
    """Whether local time `local` is in `[quiet_start, quiet_end)`, which wraps past midnight when start > end."""
    if quiet_start <= quiet_end:
        return quiet_start <= local < quiet_end
    return local >= quiet_start or local < quiet_end


def release_at(
    now: datetime, urgent: bool, quiet_start: time | None, quiet_end: time | None, zone: ZoneInfo
) -> datetime:
    """When a message created at `now` may be sent: at once when urgent or outside quiet hours, else at the
    local end of the quiet hours (the next `quiet_end` after `now`, in UTC)."""
    if urgent or quiet_start is None or quiet_end is None or quiet_start == quiet_end:
        return now
    local = now.astimezone(zone)
    if not in_quiet_hours(local.time().replace(tzinfo=None), quiet_start, quiet_end):
        return now
    day = local.date()
    if local.time().replace(tzinfo=None) >= quiet_end:
        day += timedelta(days=1)
    return datetime.combine(day, quiet_end, tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff for retryable errors: `first_delay` doubled per attempt, capped at `max_delay`;
    after `max_attempts` attempts the message fails."""

    first_delay: timedelta = timedelta(seconds=30)
    max_delay: timedelta = timedelta(hours=1)
    max_attempts: int = 8

    def delay(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th failed attempt (1 for the first)."""
        if attempts < 1:
            raise ValueError(f"attempts counts from 1, got {attempts}")
        wait: timedelta = self.first_delay * 2 ** min(attempts - 1, 30)
        return min(wait, self.max_delay)
