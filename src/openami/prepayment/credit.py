"""Credit rules of prepaid accounts, pure: when to warn, when a cut-off is due, when supply comes back, how much
of a top-up repays old debt, and how many days the credit will last.

No session, clock or I/O: the wallet service passes the balance (integer minor units), the instant (aware UTC),
the site's time zone and its public holidays. The rules:

- **Low credit**: a balance below `low_credit_minor` is warned about.
- **Disconnect threshold**: a balance below `disconnect_below_minor` (0 by default) means the credit is
  exhausted. **Emergency credit** lowers that floor by `emergency_credit_minor` once: it is granted the first
  time the balance falls below the threshold and stays granted until a top-up brings the balance back to the
  threshold, so it is available once per top-up and a cut-off customer cannot borrow it twice.
- **Friendly credit**: inside friendly hours (a daily local window, whole weekdays, public holidays) nobody is
  cut off; an exhausted account is warned instead, and the cut-off becomes due when the friendly period ends.
- **Reconnection**: an account whose supply is off is reconnected once its balance is at least
  `reconnect_at_minor` (the disconnect threshold by default). Emergency credit never reconnects anyone.
- **Debt recovery**: `debt_recovery_bp` basis points (1/100 of a percent) of each top-up repay the account's
  debt (its receivable), never more than the debt.
"""

from __future__ import annotations

import enum
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal
from zoneinfo import ZoneInfo

import holidays

from openami.common.errors import ValidationError

BASIS_POINTS = 10_000  # debt_recovery_bp of 10,000: the whole top-up
MIN_HISTORY_DAYS = 7  # days of consumption a prediction of days left needs at least
MAX_HISTORY_DAYS = 14  # and uses at most (the most recent)
_FRIENDLY_SEARCH_DAYS = 366  # a friendly period longer than a year is treated as never ending


class CreditAction(enum.StrEnum):
    """What an account's credit calls for now."""

    OK = "ok"  # enough credit, supply on: nothing to do
    WARN_LOW = "warn_low"  # supply on, credit low, in emergency credit, or exhausted inside friendly hours
    DISCONNECT_DUE = "disconnect_due"  # supply on, credit exhausted outside friendly hours
    RECONNECT_DUE = "reconnect_due"  # supply off, credit back at the reconnect threshold
    AWAITING_PAYMENT = (
        "awaiting_payment"  # supply off, not enough credit to reconnect: nothing to do but wait
    )


@dataclass(frozen=True, slots=True)
class FriendlyHours:
    """When nobody is cut off, in the site's local time: every day from `daily_from` to `daily_to` (a window
    that may cross midnight, e.g. 16:00 to 08:00; none when both are None), whole `weekdays` (0 Monday ... 6
    Sunday), and public holidays when `holidays` is true."""

    daily_from: time | None = time(16, 0)
    daily_to: time | None = time(8, 0)
    weekdays: frozenset[int] = frozenset({5, 6})
    holidays: bool = True

    def __post_init__(self) -> None:
        if (self.daily_from is None) != (self.daily_to is None):
            raise ValidationError("give both ends of the daily window, or neither", "friendly_hours.daily")
        if self.daily_from is not None and self.daily_from == self.daily_to:
            raise ValidationError(
                f"the daily window starts and ends at {self.daily_from.isoformat()}: give a window, or none",
                "friendly_hours.daily",
            )
        for moment in (self.daily_from, self.daily_to):
            if moment is not None and moment.tzinfo is not None:
                raise ValidationError(f"must be a local time of day, got {moment!r}", "friendly_hours.daily")
        bad = sorted(d for d in self.weekdays if not isinstance(d, int) or not 0 <= d <= 6)
        if bad:
            raise ValidationError(
                f"weekdays are 0 (Monday) to 6 (Sunday), got {bad}", "friendly_hours.weekdays"
            )


@dataclass(frozen=True, slots=True)
class CreditRules:
    """A site's credit rules; amounts in the site currency's minor units."""

    low_credit_minor: int = 0
    disconnect_below_minor: int = 0
    reconnect_at_minor: int | None = None  # None: the disconnect threshold
    emergency_credit_minor: int = 0
    debt_recovery_bp: int = 0  # share of each top-up that repays debt, in 1/10,000
    friendly: FriendlyHours = field(default_factory=FriendlyHours)

    def __post_init__(self) -> None:
        for name in (
            "low_credit_minor",
            "disconnect_below_minor",
            "emergency_credit_minor",
            "debt_recovery_bp",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValidationError(f"must be an integer, got {value!r}", f"credit_rules.{name}")
        reconnect = self.reconnect_at_minor
        if reconnect is not None and (isinstance(reconnect, bool) or not isinstance(reconnect, int)):
            raise ValidationError(f"must be an integer, got {reconnect!r}", "credit_rules.reconnect_at_minor")
        if self.emergency_credit_minor < 0:
            raise ValidationError(
                f"must not be negative, got {self.emergency_credit_minor}",
                "credit_rules.emergency_credit_minor",
            )
        if not 0 <= self.debt_recovery_bp <= BASIS_POINTS:
            raise ValidationError(
                f"must be 0 to {BASIS_POINTS} basis points, got {self.debt_recovery_bp}",
                "credit_rules.debt_recovery_bp",
            )
        if self.low_credit_minor < self.disconnect_below_minor:
            raise ValidationError(
                f"the low-credit warning ({self.low_credit_minor}) must not be below the disconnect threshold "
                f"({self.disconnect_below_minor}): customers are warned before they are cut off",
                "credit_rules.low_credit_minor",
            )
        if self.reconnect_minor < self.disconnect_below_minor:
            raise ValidationError(
                f"the reconnect threshold ({reconnect}) must not be below the disconnect threshold "
                f"({self.disconnect_below_minor}), or supply would flap",
                "credit_rules.reconnect_at_minor",
            )

    @property
    def reconnect_minor(self) -> int:
        return self.disconnect_below_minor if self.reconnect_at_minor is None else self.reconnect_at_minor


@dataclass(frozen=True, slots=True)
class CreditDecision:
    action: CreditAction
    reason: str
    emergency_granted: bool  # emergency credit is in use after this decision (a new grant is to be recorded)
    floor_minor: int  # the balance below which a cut-off is due, emergency credit included
    friendly_until: datetime | None  # UTC end of the friendly period the instant is in, if it is in one


def public_holidays(country: str, subdivision: str | None, years: Sequence[int]) -> frozenset[date]:
    """The public holidays (observed days included) of a country in `years`, from the `holidays` package."""
    try:
        calendar = holidays.country_holidays(country, subdiv=subdivision, years=list(years))
    except NotImplementedError as exc:
        raise ValidationError(
            f"the holidays package knows no country {country!r}: {exc}", "holiday_country"
        ) from exc
    return frozenset(calendar)


def is_friendly(local: datetime, friendly: FriendlyHours, holiday_dates: Container[date]) -> bool:
    """Whether a local wall-clock instant is in friendly hours."""
    day = local.date()
    if day.weekday() in friendly.weekdays or (friendly.holidays and day in holiday_dates):
        return True
    if friendly.daily_from is None or friendly.daily_to is None:
        return False
    clock = local.time().replace(tzinfo=None)
    start, end = friendly.daily_from, friendly.daily_to
    if start < end:
        return start <= clock < end
    return clock >= start or clock < end  # the window crosses midnight


def friendly_until(
    now: datetime, friendly: FriendlyHours, timezone: str, holiday_dates: Container[date]
) -> datetime | None:
    """The UTC instant the friendly period holding `now` ends; None when `now` is not in friendly hours.

    Friendly status changes only at local midnights and at the ends of the daily window, so those are the only
    instants tried, in order."""
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    if not is_friendly(local, friendly, holiday_dates):
        return None
    day = local.date()
    for offset in range(_FRIENDLY_SEARCH_DAYS):
        candidate_day = day + timedelta(days=offset)
        edges = [time(0)] + [t for t in (friendly.daily_from, friendly.daily_to) if t is not None]
        for edge in sorted(edges):
            moment = datetime.combine(candidate_day, edge, tzinfo=zone).astimezone(UTC)
            if moment > now and not is_friendly(moment.astimezone(zone), friendly, holiday_dates):
                return moment
    return now + timedelta(days=_FRIENDLY_SEARCH_DAYS)


def decide(
    balance_minor: int,
    now: datetime,
    rules: CreditRules,
    *,
    timezone: str,
    holiday_dates: Container[date],
    connected: bool,
    emergency_granted: bool,
) -> CreditDecision:
    """What an account's credit calls for at `now` (aware): see the module's docstring for the rules.

    `connected`: the supply is on (as last confirmed by relay control). `emergency_granted`: emergency credit
    was granted since the last top-up that repaid it. The decision's `emergency_granted` says whether it is in
    use afterwards: a new grant, when the balance has just fallen below the threshold, is for the caller to
    record."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValidationError(f"must be timezone-aware, got {now.isoformat()}", "now")
    threshold = rules.disconnect_below_minor
    if not connected:
        floor = threshold - rules.emergency_credit_minor if emergency_granted else threshold
        if balance_minor >= rules.reconnect_minor:
            reason = (
                f"supply is off and the balance {balance_minor} is back at {rules.reconnect_minor} or more"
            )
            return CreditDecision(CreditAction.RECONNECT_DUE, reason, emergency_granted, floor, None)
        reason = f"supply is off until the balance {balance_minor} reaches {rules.reconnect_minor}"
        return CreditDecision(CreditAction.AWAITING_PAYMENT, reason, emergency_granted, floor, None)
    granted = emergency_granted or (rules.emergency_credit_minor > 0 and balance_minor < threshold)
    floor = threshold - rules.emergency_credit_minor if granted else threshold
    if balance_minor < floor:
        ends = friendly_until(now, rules.friendly, timezone, holiday_dates)
        if ends is not None:
            reason = (
                f"credit exhausted (balance {balance_minor}, floor {floor}) in friendly hours: no cut-off "
                f"before {ends.isoformat()}"
            )
            return CreditDecision(CreditAction.WARN_LOW, reason, granted, floor, ends)
        reason = f"credit exhausted: balance {balance_minor} is below {floor} outside friendly hours"
        return CreditDecision(CreditAction.DISCONNECT_DUE, reason, granted, floor, None)
    if balance_minor < threshold:
        reason = (
            f"in emergency credit: balance {balance_minor}, cut-off below {floor} "
            f"({rules.emergency_credit_minor} of emergency credit)"
        )
        return CreditDecision(CreditAction.WARN_LOW, reason, granted, floor, None)
    if balance_minor < rules.low_credit_minor:
        reason = f"low credit: balance {balance_minor} is below {rules.low_credit_minor}"
        return CreditDecision(CreditAction.WARN_LOW, reason, granted, floor, None)
    return CreditDecision(CreditAction.OK, f"balance {balance_minor}", granted, floor, None)


def emergency_rearmed(balance_after_top_up_minor: int, rules: CreditRules) -> bool:
    """Whether a top-up that left this balance repaid the emergency credit, so it may be granted again."""
    return balance_after_top_up_minor >= rules.disconnect_below_minor


def debt_recovery_minor(top_up_minor: int, debt_minor: int, debt_recovery_bp: int) -> int:
    """The part of a top-up that repays debt: its share (rounded down to the minor unit, so the customer never
    gives more than the share), at most the debt. Nothing when there is no debt."""
    if top_up_minor <= 0 or debt_minor <= 0 or debt_recovery_bp <= 0:
        return 0
    return min(debt_minor, top_up_minor * debt_recovery_bp // BASIS_POINTS)


def days_of_credit_left(balance_minor: int, daily_cost_minor: Sequence[Decimal | int]) -> Decimal | None:
    """Days the balance lasts at the mean daily cost of the most recent days (at most 14, oldest first in
    `daily_cost_minor`), to a tenth of a day rounded down. None when fewer than 7 days are known or nothing is
    being spent (the credit does not run out); 0 when the balance is 0 or less."""
    recent = [Decimal(c) for c in daily_cost_minor[-MAX_HISTORY_DAYS:]]
    if len(recent) < MIN_HISTORY_DAYS:
        return None
    mean = sum(recent, Decimal(0)) / len(recent)
    if mean <= 0:
        return None
    if balance_minor <= 0:
        return Decimal("0.0")
    return (Decimal(balance_minor) / mean).quantize(Decimal("0.1"), rounding=ROUND_DOWN)
