"""The activity calendar (rates by local time, seasons, daylight saving) and the register bank."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from openami.device import (
    ActivityCalendar,
    DayProfile,
    Season,
    WeekProfile,
    default_calendar,
    tariff_rate_window,
)
from openami.device.registers import RegisterBank

BERLIN = ZoneInfo("Europe/Berlin")


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("hour", "minute", "rate"),
    [
        (0, 0, 1),
        (6, 59, 1),
        (7, 0, 2),
        (16, 59, 2),
        (17, 0, 3),
        (19, 59, 3),
        (20, 0, 2),
        (22, 59, 2),
        (23, 0, 1),
    ],
)
def test_default_calendar_on_a_weekday(hour: int, minute: int, rate: int) -> None:
    assert default_calendar().rate_at(local(date(2026, 3, 4), hour, minute)) == rate  # a Wednesday


@pytest.mark.parametrize(("hour", "rate"), [(0, 1), (7, 1), (8, 2), (17, 2), (19, 2), (22, 2), (23, 1)])
def test_default_calendar_at_the_weekend(hour: int, rate: int) -> None:
    calendar = default_calendar()
    assert calendar.rate_at(local(date(2026, 3, 7), hour)) == rate  # Saturday
    assert calendar.rate_at(local(date(2026, 3, 8), hour)) == rate  # Sunday


def two_season_calendar() -> ActivityCalendar:
    flat = DayProfile("flat", [(time(0), 1)])
    summer_peak = DayProfile("summer", [(time(0), 2), (time(14), 4), (time(18), 2)])
    return ActivityCalendar(
        "two seasons",
        seasons=[Season("summer", 6, 1, "summer week"), Season("winter", 10, 1, "winter week")],
        week_profiles=[WeekProfile("summer week", ["summer"] * 7), WeekProfile("winter week", ["flat"] * 7)],
        day_profiles=[flat, summer_peak],
    )


def test_seasons_choose_the_week_profile_and_wrap_over_new_year() -> None:
    calendar = two_season_calendar()
    assert calendar.rate_at(datetime(2026, 7, 1, 15, 0)) == 4  # noqa: DTZ001 - local wall time
    assert calendar.rate_at(datetime(2026, 7, 1, 9, 0)) == 2  # noqa: DTZ001
    assert calendar.rate_at(datetime(2026, 5, 31, 15, 0)) == 1  # noqa: DTZ001 - winter runs on past new year
    assert calendar.rate_at(datetime(2026, 1, 15, 15, 0)) == 1  # noqa: DTZ001
    assert calendar.rate_at(datetime(2026, 10, 1, 15, 0)) == 1  # noqa: DTZ001


def test_rate_window_gives_the_next_switch_in_local_wall_time() -> None:
    rate, next_wall = default_calendar().rate_window(datetime(2026, 3, 4, 16, 30))  # noqa: DTZ001
    assert (rate, next_wall) == (2, datetime(2026, 3, 4, 17, 0))  # noqa: DTZ001
    rate, next_wall = default_calendar().rate_window(datetime(2026, 3, 4, 23, 30))  # noqa: DTZ001
    assert (rate, next_wall) == (1, datetime(2026, 3, 5, 0, 0))  # noqa: DTZ001


def test_tariff_rate_window_in_utc_follows_the_local_offset() -> None:
    # Wednesday 16:30 CET is 15:30 UTC; peak starts at 17:00 CET = 16:00 UTC.
    rate, until = tariff_rate_window(
        default_calendar(), BERLIN, datetime(2026, 3, 4, 15, 30, tzinfo=UTC).timestamp()
    )
    assert rate == 2
    assert until == datetime(2026, 3, 4, 16, 0, tzinfo=UTC).timestamp()
    # The same wall time in summer (CEST, UTC+2) is an hour earlier in UTC.
    rate, until = tariff_rate_window(
        default_calendar(), BERLIN, datetime(2026, 7, 1, 14, 30, tzinfo=UTC).timestamp()
    )
    assert (rate, until) == (2, datetime(2026, 7, 1, 15, 0, tzinfo=UTC).timestamp())


def test_a_switch_inside_the_spring_forward_gap_happens_at_the_transition() -> None:
    # 02:30 does not exist in Berlin on 29 March 2026 (02:00 CET jumps to 03:00 CEST, at 01:00 UTC).
    day = DayProfile("night switch", [(time(0), 1), (time(2, 30), 3)])
    calendar = ActivityCalendar(
        "gap", [Season("all", 1, 1, "w")], [WeekProfile("w", ["night switch"] * 7)], [day]
    )
    rate, until = tariff_rate_window(calendar, BERLIN, datetime(2026, 3, 29, 0, 30, tzinfo=UTC).timestamp())
    assert rate == 1
    assert until == datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp()
    rate, _ = tariff_rate_window(calendar, BERLIN, until)
    assert rate == 3


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: DayProfile("d", []), "at least one"),
        (lambda: DayProfile("d", [(time(1), 1)]), "00:00"),
        (lambda: DayProfile("d", [(time(0), 1), (time(9), 2), (time(8), 1)]), "not after"),
        (lambda: DayProfile("d", [(time(0), 5)]), "rate must be one of"),
        (lambda: DayProfile("d", [(time(0, tzinfo=UTC), 1)]), "naive local"),
        (lambda: WeekProfile("w", ["d"] * 6), "7 day profiles"),
        (lambda: Season("s", 2, 29, "w"), "month/day"),
        (lambda: Season("s", 13, 1, "w"), "month/day"),
        (
            lambda: ActivityCalendar(
                "c",
                [Season("s", 1, 1, "w")],
                [WeekProfile("w", ["missing"] * 7)],
                [DayProfile("d", [(time(0), 1)])],
            ),
            "unknown day profile 'missing'",
        ),
        (
            lambda: ActivityCalendar(
                "c",
                [Season("s", 1, 1, "nope")],
                [WeekProfile("w", ["d"] * 7)],
                [DayProfile("d", [(time(0), 1)])],
            ),
            "unknown week profile 'nope'",
        ),
        (lambda: ActivityCalendar("c", [], [], []), "at least one season"),
    ],
)
def test_a_bad_calendar_is_refused_saying_where(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_register_bank_books_to_total_and_one_rate() -> None:
    bank = RegisterBank()
    bank.add(2, 150)
    bank.add(3, 50)
    bank.add(1, 7, export=True)
    readings = bank.readings()
    assert readings["1-0:1.8.0"] == 200
    assert (readings["1-0:1.8.2"], readings["1-0:1.8.3"]) == (150, 50)
    assert readings["1-0:2.8.0"] == readings["1-0:2.8.1"] == 7
    assert len(readings) == 10
    with pytest.raises(ValueError, match="rate"):
        bank.add(0, 1)
    with pytest.raises(ValueError, match="never decrease"):
        bank.add(1, -1)
