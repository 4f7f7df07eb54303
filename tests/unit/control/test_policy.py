"""The safety policy, table-driven: night, weekends, holidays (Kenya), China's adjusted workdays, protections and
weather emergencies, with the rule and the end of each refusal."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from openami.control.policy import (
    Emergency,
    Protection,
    Rule,
    SafetyRules,
    check_disconnect,
    next_allowed,
)

KENYA = SafetyRules(timezone="Africa/Nairobi", holiday_country="KE", night_start_hour=18, night_end_hour=7)
CHINA = SafetyRules(timezone="Asia/Shanghai", holiday_country="CN", night_start_hour=18, night_end_hour=7)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("rules", "at", "rule", "until"),
    [
        # Tuesday 3 March 2026, 10:00 in Nairobi (UTC+3): allowed.
        (KENYA, utc(2026, 3, 3, 7), None, None),
        # 18:00 local is night; allowed again at 07:00 the next morning.
        (KENYA, utc(2026, 3, 3, 15), Rule.NIGHT, utc(2026, 3, 4, 4)),
        # 06:59 local is still night; 07:00 the same morning is allowed.
        (KENYA, utc(2026, 3, 4, 3, 59), Rule.NIGHT, utc(2026, 3, 4, 4)),
        # Saturday: until Monday 07:00 local (midnight first, then the night rule).
        (KENYA, utc(2026, 3, 7, 9), Rule.WEEKEND, utc(2026, 3, 9, 4)),
        # Madaraka Day, Monday 1 June 2026, a Kenyan public holiday: until Tuesday 07:00.
        (KENYA, utc(2026, 6, 1, 9), Rule.HOLIDAY, utc(2026, 6, 2, 4)),
        # Good Friday 3 April 2026 runs into the weekend and Easter Monday: next allowed Tuesday 7 April.
        (KENYA, utc(2026, 4, 3, 9), Rule.HOLIDAY, utc(2026, 4, 7, 4)),
        # China: Saturday 14 February 2026 is an adjusted workday before the Spring Festival: allowed.
        (CHINA, utc(2026, 2, 14, 2), None, None),
        # ... but an ordinary Saturday is a weekend day.
        (CHINA, utc(2026, 3, 7, 2), Rule.WEEKEND, utc(2026, 3, 8, 23)),
        # Spring Festival, Tuesday 17 February 2026: a holiday; the holiday week ends with adjusted workday
        # Saturday 28 February, so the next allowed instant is 07:00 on Tuesday 24 February (after the break).
        (CHINA, utc(2026, 2, 17, 2), Rule.HOLIDAY, None),
    ],
)
def test_calendar_rules(rules: SafetyRules, at: datetime, rule: Rule | None, until: datetime | None) -> None:
    refusal = check_disconnect(at, rules)
    if rule is None:
        assert refusal is None
        return
    assert refusal is not None
    assert refusal.rule is rule
    if until is not None:
        assert refusal.until == until
    assert refusal.until is not None
    assert refusal.until > at
    assert check_disconnect(refusal.until, rules) is None  # the refusal's end is really allowed
    assert rule.value.split("_")[0] in refusal.message or "holiday" in refusal.message


def test_china_spring_festival_ends_on_a_working_day() -> None:
    until = next_allowed(utc(2026, 2, 17, 2), CHINA)
    local = until.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai"))
    assert (local.hour, local.minute) == (7, 0)
    assert local.date().isoformat() == "2026-02-24"


def test_rules_can_be_switched_off() -> None:
    lenient = SafetyRules(
        timezone="Africa/Nairobi",
        holiday_country="KE",
        night_start_hour=0,
        night_end_hour=0,
        block_weekends=False,
        block_holidays=False,
    )
    for at in (utc(2026, 3, 3, 20), utc(2026, 3, 7, 9), utc(2026, 6, 1, 9)):
        assert check_disconnect(at, lenient) is None


def test_a_night_that_does_not_wrap_midnight() -> None:
    rules = SafetyRules(timezone="UTC", holiday_country=None, night_start_hour=0, night_end_hour=6)
    assert check_disconnect(utc(2026, 3, 3, 5, 59), rules) is not None
    assert check_disconnect(utc(2026, 3, 3, 6), rules) is None
    assert check_disconnect(utc(2026, 3, 3, 23), rules) is None


@pytest.mark.parametrize(
    ("protection", "at", "refused", "until"),
    [
        (Protection("medical", "oxygen concentrator", utc(2026, 1, 1), None), utc(2026, 3, 3, 7), True, None),
        (
            Protection("vulnerable", "elderly, lives alone", utc(2026, 1, 1), utc(2026, 4, 1)),
            utc(2026, 3, 3, 7),
            True,
            utc(2026, 4, 1),
        ),
        (
            Protection("medical", "dialysis", utc(2026, 1, 1), utc(2026, 3, 1)),
            utc(2026, 3, 3, 7),
            False,
            None,
        ),
        (Protection("medical", "dialysis", utc(2026, 4, 1), None), utc(2026, 3, 3, 7), False, None),
    ],
)
def test_protected_accounts(
    protection: Protection, at: datetime, refused: bool, until: datetime | None
) -> None:
    refusal = check_disconnect(at, KENYA, [protection])
    if not refused:
        assert refusal is None
        return
    assert refusal is not None
    assert refusal.rule is Rule.PROTECTED_ACCOUNT
    assert refusal.until == until
    assert protection.kind in refusal.message
    assert protection.reason in refusal.message


def test_weather_emergency_outranks_the_calendar_and_ends_when_declared() -> None:
    storm = Emergency("cyclone warning", utc(2026, 3, 3, 0), utc(2026, 3, 5, 0))
    refusal = check_disconnect(utc(2026, 3, 3, 15), KENYA, emergencies=[storm])  # night too
    assert refusal is not None
    assert (refusal.rule, refusal.until) == (Rule.WEATHER_EMERGENCY, utc(2026, 3, 5, 0))
    assert "cyclone warning" in refusal.message
    assert check_disconnect(utc(2026, 3, 5, 7), KENYA, emergencies=[storm]) is None


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="night_start_hour"):
        SafetyRules(timezone="UTC", holiday_country=None, night_start_hour=24)
    with pytest.raises(ValueError, match="timezone-aware"):
        check_disconnect(datetime(2026, 3, 3, 7), KENYA)  # noqa: DTZ001  (naive on purpose)
