"""The safety policy for cutting supply: pure, given plain values and the instant to judge.

A disconnect is refused, in this order of precedence, for an account under a supply protection (medical
priority, vulnerable customer) valid at the instant, during a declared weather emergency of the site, at night
(local hours of the site), on a weekend day and on a national legal holiday (the `holidays` package with the
site's country and subdivision, as tariffs/calendar.py uses it). A weekend day the government made a working day
(China's adjusted workdays) is a working day. Reconnecting is always allowed: restoring supply is never unsafe.

Each refusal names its rule and the first instant when that refusal no longer holds (None: no end known), so an
operator or the prepayment engine knows when to try again.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays

from openami.common.clock import ensure_aware

_MAX_STEPS = (
    800  # enough to walk past any run of nights, weekends and holidays (China's October week and more)
)


class Rule(enum.StrEnum):
    """Why a disconnect is refused; stable codes for logs, the API and the operation log."""

    PROTECTED_ACCOUNT = "protected_account"
    WEATHER_EMERGENCY = "weather_emergency"
    NIGHT = "night"
    WEEKEND = "weekend"
    HOLIDAY = "holiday"


@dataclass(frozen=True, slots=True)
class SafetyRules:
    """A site's rules for when supply may be cut. Hours are local hours of `timezone`, 0..23.

    Night is `[night_start_hour, night_end_hour)` wrapping midnight when start > end (20, 6: 20:00 to 06:00);
    start == end means no night rule.
    """

    timezone: str
    holiday_country: str | None
    holiday_subdivision: str | None = None
    night_start_hour: int = 17
    night_end_hour: int = 8
    block_weekends: bool = True
    block_holidays: bool = True

    def __post_init__(self) -> None:
        for name in ("night_start_hour", "night_end_hour"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 23:
                raise ValueError(f"{name} must be a whole hour 0..23, got {value!r}")
        ZoneInfo(self.timezone)  # raises for an unknown zone


@dataclass(frozen=True, slots=True)
class Protection:
    """A supply protection of the account: `kind` ("medical" or "vulnerable"), valid in [valid_from, valid_until)."""

    kind: str
    reason: str
    valid_from: datetime
    valid_until: datetime | None  # None: until revoked


@dataclass(frozen=True, slots=True)
class Emergency:
    """A weather emergency declared for the site, in force in [starts_at, ends_at)."""

    reason: str
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a disconnect may not happen at the instant judged, and until when (UTC; None: no end known)."""

    rule: Rule
    until: datetime | None
    message: str


def check_disconnect(
    at: datetime,
    rules: SafetyRules,
    protections: list[Protection] | tuple[Protection, ...] = (),
    emergencies: list[Emergency] | tuple[Emergency, ...] = (),
) -> Refusal | None:
    """The refusal of a disconnect at `at`, or None when it is allowed. Protections and emergencies first
    (they outrank the calendar), then night, weekend and holiday."""
    at = ensure_aware(at, "at")
    for p in protections:
        if p.valid_from <= at and (p.valid_until is None or at < p.valid_until):
            ends = f"until {_iso(p.valid_until)}" if p.valid_until else "until it is revoked"
            return Refusal(
                Rule.PROTECTED_ACCOUNT,
                p.valid_until,
                f"the account is protected ({p.kind}: {p.reason}) {ends}",
            )
    for e in emergencies:
        if e.starts_at <= at < e.ends_at:
            return Refusal(
                Rule.WEATHER_EMERGENCY,
                e.ends_at,
                f"a weather emergency is declared ({e.reason}) until {_iso(e.ends_at)}",
            )
    rule = calendar_rule(at, rules)
    if rule is None:
        return None
    until = next_allowed(at, rules)
    local = at.astimezone(ZoneInfo(rules.timezone))
    if rule is Rule.NIGHT:
        what = (
            f"it is night at the site ({local:%H:%M} local; no disconnects "
            f"{rules.night_start_hour:02d}:00-{rules.night_end_hour:02d}:00)"
        )
    elif rule is Rule.WEEKEND:
        what = f"{local:%A} {local.date()} is a weekend day at the site"
    else:
        what = f"{local.date()} is a legal holiday in {_region(rules)} ({_holiday_name(local.date(), rules)})"
    return Refusal(rule, until, f"{what}; next allowed {_iso(until)}")


def calendar_rule(at: datetime, rules: SafetyRules) -> Rule | None:
    """Which of the calendar rules (holiday, weekend, night) forbids a disconnect at `at`, if any."""
    local = ensure_aware(at, "at").astimezone(ZoneInfo(rules.timezone))
    day = local.date()
    if rules.block_holidays and rules.holiday_country and day in _calendar(rules):
        return Rule.HOLIDAY
    if rules.block_weekends and _is_weekend(day, rules):
        return Rule.WEEKEND
    if _is_night(local.hour, rules):
        return Rule.NIGHT
    return None


def next_allowed(at: datetime, rules: SafetyRules) -> datetime:
    """The first instant at or after `at` when no calendar rule forbids a disconnect (UTC)."""
    zone = ZoneInfo(rules.timezone)
    moment = ensure_aware(at, "at")
    for _ in range(_MAX_STEPS):
        rule = calendar_rule(moment, rules)
        if rule is None:
            return moment
        local = moment.astimezone(zone)
        if rule is Rule.NIGHT:
            end_day = local.date() if local.hour < rules.night_end_hour else local.date() + timedelta(days=1)
            moment = _local_instant(end_day, rules.night_end_hour, zone)
        else:
            moment = _local_instant(local.date() + timedelta(days=1), 0, zone)
    raise ValueError(
        f"no instant allows a disconnect within {_MAX_STEPS} steps after {_iso(at)}: check the rules"
    )


def _is_night(hour: int, rules: SafetyRules) -> bool:
    start, end = rules.night_start_hour, rules.night_end_hour
    if start == end:
        return False
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end


def _is_weekend(day: date, rules: SafetyRules) -> bool:
    if rules.holiday_country:
        calendar = _calendar(rules)
        if day in (getattr(calendar, "weekend_workdays", None) or ()):
            return False
        weekend = getattr(calendar, "weekend", None) or {5, 6}
    else:
        weekend = {5, 6}
    return day.weekday() in weekend


def _local_instant(day: date, hour: int, zone: ZoneInfo) -> datetime:
    """`hour`:00 local on `day` as UTC; a wall time skipped by a DST jump resolves forward, as zoneinfo does."""
    return datetime.combine(day, time(hour), tzinfo=zone).astimezone(UTC)


@functools.lru_cache(maxsize=64)
def _calendar_for(country: str, subdivision: str | None) -> Any:
    # expand=True (the default) adds years as they are asked for.
    return holidays.country_holidays(country, subdiv=subdivision)


def _calendar(rules: SafetyRules) -> Any:
    return _calendar_for(rules.holiday_country or "", rules.holiday_subdivision)


def _holiday_name(day: date, rules: SafetyRules) -> str:
    return str(_calendar(rules).get(day, "holiday"))


def _region(rules: SafetyRules) -> str:
    return (
        f"{rules.holiday_country}-{rules.holiday_subdivision}"
        if rules.holiday_subdivision
        else str(rules.holiday_country)
    )


def _iso(instant: datetime | None) -> str:
    if instant is None:
        return "-"
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
