"""The credit rules, pure: decisions as a table, friendly hours over a public holiday, emergency credit once per
top-up, debt recovery shares, and the days-of-credit-left prediction."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from openami.common.errors import ValidationError
from openami.prepayment.credit import (
    CreditAction,
    CreditRules,
    FriendlyHours,
    days_of_credit_left,
    debt_recovery_minor,
    decide,
    emergency_rearmed,
    friendly_until,
    is_friendly,
    public_holidays,
)

ZONE = "Africa/Nairobi"  # UTC+3 all year
NAIROBI = ZoneInfo(ZONE)
KE = public_holidays("KE", None, [2026])
RULES = CreditRules(low_credit_minor=50_00, disconnect_below_minor=0, emergency_credit_minor=20_00)
TUESDAY_10 = datetime(2026, 6, 2, 7, 0, tzinfo=UTC)  # 10:00 local, an ordinary working day
TUESDAY_20 = datetime(2026, 6, 2, 17, 0, tzinfo=UTC)  # 20:00 local: inside the 16:00-08:00 window
SATURDAY_10 = datetime(2026, 6, 6, 7, 0, tzinfo=UTC)


def _decide(balance: int, now: datetime, *, connected: bool = True, granted: bool = False) -> CreditAction:
    decision = decide(
        balance, now, RULES, timezone=ZONE, holiday_dates=KE, connected=connected, emergency_granted=granted
    )
    return decision.action


@pytest.mark.parametrize(
    ("balance", "now", "connected", "granted", "expected"),
    [
        (100_00, TUESDAY_10, True, False, CreditAction.OK),
        (50_00, TUESDAY_10, True, False, CreditAction.OK),  # at the warning line is not below it
        (49_99, TUESDAY_10, True, False, CreditAction.WARN_LOW),
        (0, TUESDAY_10, True, False, CreditAction.WARN_LOW),
        (-1, TUESDAY_10, True, False, CreditAction.WARN_LOW),  # emergency credit is granted now
        (-20_00, TUESDAY_10, True, True, CreditAction.WARN_LOW),  # at the floor, not below it
        (-20_01, TUESDAY_10, True, True, CreditAction.DISCONNECT_DUE),
        (-20_01, TUESDAY_10, True, False, CreditAction.DISCONNECT_DUE),  # falls straight through the floor
        (-20_01, TUESDAY_20, True, True, CreditAction.WARN_LOW),  # friendly evening: no cut-off
        (-20_01, SATURDAY_10, True, True, CreditAction.WARN_LOW),  # friendly weekend
        (-5_00, TUESDAY_10, False, True, CreditAction.AWAITING_PAYMENT),  # off: emergency never reconnects
        (0, TUESDAY_10, False, True, CreditAction.RECONNECT_DUE),
        (0, TUESDAY_20, False, False, CreditAction.RECONNECT_DUE),  # reconnection at any hour
    ],
)
def test_decision_table(
    balance: int, now: datetime, connected: bool, granted: bool, expected: CreditAction
) -> None:
    assert _decide(balance, now, connected=connected, granted=granted) is expected


def test_emergency_credit_is_granted_once_then_rearmed_only_by_a_repaying_top_up() -> None:
    first = decide(
        -1, TUESDAY_10, RULES, timezone=ZONE, holiday_dates=KE, connected=True, emergency_granted=False
    )
    assert first.emergency_granted
    assert first.floor_minor == -20_00
    no_emergency = CreditRules(low_credit_minor=50_00)
    plain = decide(
        -1, TUESDAY_10, no_emergency, timezone=ZONE, holiday_dates=KE, connected=True, emergency_granted=False
    )
    assert plain.action is CreditAction.DISCONNECT_DUE
    assert not plain.emergency_granted
    assert not emergency_rearmed(-1, RULES)  # a top-up that leaves the credit below zero does not repay it
    assert emergency_rearmed(0, RULES)


def test_friendly_hours_over_a_public_holiday() -> None:
    madaraka_day = date(2026, 6, 1)  # a Monday, a public holiday in Kenya
    assert madaraka_day in KE
    holiday_10 = datetime(2026, 6, 1, 7, 0, tzinfo=UTC)
    assert is_friendly(holiday_10.astimezone(NAIROBI), RULES.friendly, KE)
    decision = decide(
        -30_00, holiday_10, RULES, timezone=ZONE, holiday_dates=KE, connected=True, emergency_granted=True
    )
    assert decision.action is CreditAction.WARN_LOW
    # The weekend and the holiday run into Tuesday's 08:00, when the evening window is also over.
    assert decision.friendly_until == datetime(2026, 6, 2, 5, 0, tzinfo=UTC)
    saturday = datetime(2026, 5, 30, 12, 0, tzinfo=UTC)
    assert friendly_until(saturday, RULES.friendly, ZONE, KE) == datetime(2026, 6, 2, 5, 0, tzinfo=UTC)
    # Without holidays in the rules, the holiday is an ordinary Monday.
    no_holidays = CreditRules(
        low_credit_minor=50_00, emergency_credit_minor=20_00, friendly=FriendlyHours(holidays=False)
    )
    plain = decide(
        -30_00,
        holiday_10,
        no_holidays,
        timezone=ZONE,
        holiday_dates=KE,
        connected=True,
        emergency_granted=True,
    )
    assert plain.action is CreditAction.DISCONNECT_DUE
    assert decide(-30_00, TUESDAY_10, RULES, timezone=ZONE, holiday_dates=KE, connected=True,
                  emergency_granted=True).action is CreditAction.DISCONNECT_DUE  # fmt: skip


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        (datetime(2026, 6, 3, 7, 59, tzinfo=NAIROBI), True),
        (datetime(2026, 6, 3, 8, 0, tzinfo=NAIROBI), False),
        (datetime(2026, 6, 3, 15, 59, tzinfo=NAIROBI), False),
        (datetime(2026, 6, 3, 16, 0, tzinfo=NAIROBI), True),
        (datetime(2026, 6, 3, 23, 59, tzinfo=NAIROBI), True),
    ],
)
def test_the_daily_window_crosses_midnight(local: datetime, expected: bool) -> None:
    assert is_friendly(local, FriendlyHours(), frozenset()) is expected


def test_a_daytime_window_and_no_window() -> None:
    lunch = FriendlyHours(daily_from=time(12, 0), daily_to=time(14, 0), weekdays=frozenset(), holidays=False)
    assert is_friendly(datetime(2026, 6, 3, 13, 0, tzinfo=NAIROBI), lunch, frozenset())
    assert not is_friendly(datetime(2026, 6, 3, 14, 0, tzinfo=NAIROBI), lunch, frozenset())
    never = FriendlyHours(daily_from=None, daily_to=None, weekdays=frozenset(), holidays=False)
    assert not is_friendly(datetime(2026, 6, 6, 3, 0, tzinfo=NAIROBI), never, frozenset())
    assert friendly_until(SATURDAY_10, never, ZONE, KE) is None


@pytest.mark.parametrize(
    ("top_up", "debt", "bp", "expected"),
    [
        (1000_00, 0, 2500, 0),
        (1000_00, 5000_00, 2500, 250_00),
        (1000_00, 100_00, 2500, 100_00),  # never more than the debt
        (333, 5000_00, 2500, 83),  # rounded down: 83.25
        (1000_00, 5000_00, 0, 0),
        (1000_00, 5000_00, 10_000, 1000_00),
        (1000_00, -50_00, 2500, 0),  # a receivable in credit is no debt
    ],
)
def test_debt_recovery_share(top_up: int, debt: int, bp: int, expected: int) -> None:
    assert debt_recovery_minor(top_up, debt, bp) == expected


def test_days_of_credit_left() -> None:
    assert days_of_credit_left(700_00, [100_00] * 6) is None  # fewer than 7 days known
    assert days_of_credit_left(700_00, [100_00] * 7) == Decimal("7.0")
    # Only the 14 most recent days count: 30 days of 1000 then 14 of 100.
    assert days_of_credit_left(700_00, [1000_00] * 30 + [100_00] * 14) == Decimal("7.0")
    assert days_of_credit_left(1000, [Decimal(300)] * 7) == Decimal("3.3")  # rounded down
    assert days_of_credit_left(-5, [100] * 7) == Decimal("0.0")
    assert days_of_credit_left(1000, [0] * 10) is None  # nothing spent: it does not run out


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({"low_credit_minor": -1}, "credit_rules.low_credit_minor"),
        ({"emergency_credit_minor": -1}, "credit_rules.emergency_credit_minor"),
        ({"debt_recovery_bp": 10_001}, "credit_rules.debt_recovery_bp"),
        ({"reconnect_at_minor": -1}, "credit_rules.reconnect_at_minor"),
        ({"low_credit_minor": Decimal(5)}, "credit_rules.low_credit_minor"),
    ],
)
def test_bad_rules_are_refused_saying_where(kwargs: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CreditRules(**kwargs)  # type: ignore[arg-type]
    assert caught.value.location == where


def test_bad_friendly_hours_are_refused() -> None:
    with pytest.raises(ValidationError, match="both ends"):
        FriendlyHours(daily_from=time(16, 0), daily_to=None)
    with pytest.raises(ValidationError, match="0 \\(Monday\\) to 6"):
        FriendlyHours(weekdays=frozenset({7}))
    with pytest.raises(ValidationError, match="timezone-aware"):
        decide(0, datetime(2026, 6, 2, 10, 0), RULES,  # noqa: DTZ001  (naive on purpose)
               timezone=ZONE, holiday_dates=KE, connected=True,
               emergency_granted=False)  # fmt: skip
