"""Completeness per site-local day: day bounds, expected intervals on DST days, and the counting grid."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openami.common.errors import ValidationError
from openami.readings.completeness import (
    DayCompleteness,
    completeness_grid,
    expected_interval_starts,
    local_day_bounds,
)
from openami.readings.interfaces import Quality

LONDON = "Europe/London"
KOLKATA = "Asia/Kolkata"  # UTC+05:30, no daylight saving
SPRING_FORWARD = date(2026, 3, 29)  # London: 01:00 GMT -> 02:00 BST
FALL_BACK = date(2026, 10, 25)  # London: 02:00 BST -> 01:00 GMT


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- local days ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "zone", "start", "end"),
    [
        (date(2026, 1, 15), LONDON, utc(2026, 1, 15), utc(2026, 1, 16)),
        (date(2026, 7, 15), LONDON, utc(2026, 7, 14, 23), utc(2026, 7, 15, 23)),
        (SPRING_FORWARD, LONDON, utc(2026, 3, 29), utc(2026, 3, 29, 23)),
        (FALL_BACK, LONDON, utc(2026, 10, 24, 23), utc(2026, 10, 26)),
        (date(2026, 7, 15), KOLKATA, utc(2026, 7, 14, 18, 30), utc(2026, 7, 15, 18, 30)),
        # Santiago springs forward at midnight: 2026-09-06 00:00 does not exist, the day starts at 01:00 -03.
        (date(2026, 9, 6), "America/Santiago", utc(2026, 9, 6, 4), utc(2026, 9, 7, 3)),
    ],
)
def test_local_day_bounds(day: date, zone: str, start: datetime, end: datetime) -> None:
    assert local_day_bounds(day, zone) == (start, end)


def test_consecutive_local_days_tile_time() -> None:
    day = date(2026, 3, 20)
    for _ in range(30):
        assert local_day_bounds(day, LONDON)[1] == local_day_bounds(day + timedelta(days=1), LONDON)[0]
        day += timedelta(days=1)


def test_an_unknown_zone_is_named() -> None:
    with pytest.raises(ValidationError, match="unknown time zone 'Europe/Atlantis'"):
        local_day_bounds(date(2026, 1, 1), "Europe/Atlantis")


@pytest.mark.parametrize(
    ("day", "zone", "interval_s", "count"),
    [
        (date(2026, 1, 15), LONDON, 900, 96),
        (SPRING_FORWARD, LONDON, 900, 92),
        (FALL_BACK, LONDON, 900, 100),
        (SPRING_FORWARD, LONDON, 1_800, 46),
        (FALL_BACK, LONDON, 3_600, 25),
        (SPRING_FORWARD, KOLKATA, 900, 96),
        (FALL_BACK, KOLKATA, 900, 96),
        (date(2026, 1, 15), KOLKATA, 3_600, 24),
        (date(2026, 1, 15), "UTC", 300, 288),
    ],
)
def test_expected_intervals_per_day(day: date, zone: str, interval_s: int, count: int) -> None:
    expected = expected_interval_starts(day, zone, interval_s)
    assert len(expected) == count
    assert all(b - a == timedelta(seconds=interval_s) for a, b in itertools.pairwise(expected))
    assert all(t.tzinfo is UTC for t in expected)


def test_expected_intervals_are_grid_slots_within_the_day() -> None:
    # Kolkata's day starts at 18:30 UTC; hourly slots start on the hour, so the first is 19:00 UTC.
    expected = expected_interval_starts(date(2026, 1, 15), KOLKATA, 3_600)
    assert expected[0] == utc(2026, 1, 14, 19)
    assert expected[-1] == utc(2026, 1, 15, 18)
    assert expected_interval_starts(SPRING_FORWARD, LONDON, 900)[0] == utc(2026, 3, 29)
    with pytest.raises(ValidationError, match="interval_s must be positive"):
        expected_interval_starts(SPRING_FORWARD, LONDON, 0)


# --- the grid -----------------------------------------------------------------------------------------------


def test_each_quality_is_counted_and_only_actual_and_edited_are_complete() -> None:
    day = date(2026, 1, 15)
    starts = expected_interval_starts(day, LONDON, 900)
    qualities: dict[datetime, str] = dict.fromkeys(starts[:80], "actual")
    qualities |= dict.fromkeys(starts[80:88], Quality.ESTIMATED)
    qualities |= dict.fromkeys(starts[88:92], "edited")
    [row] = completeness_grid(qualities, [day], LONDON, 900)
    assert row == DayCompleteness(day=day, expected=96, actual=80, estimated=8, edited=4, missing=4)
    assert row.percent == pytest.approx(87.5)


def test_dst_days_expect_their_own_number_of_intervals() -> None:
    days = [SPRING_FORWARD, FALL_BACK]
    qualities = {t: "actual" for d in days for t in expected_interval_starts(d, LONDON, 900)}
    rows = completeness_grid(qualities, days, LONDON, 900)
    assert [(r.expected, r.actual, r.missing, r.percent) for r in rows] == [
        (92, 92, 0, 100.0),
        (100, 100, 0, 100.0),
    ]
    # The same UTC values seen from a zone without DST: the days are cut elsewhere, 96 intervals each.
    rows = completeness_grid(qualities, days, KOLKATA, 900)
    assert [r.expected for r in rows] == [96, 96]


def test_intervals_before_installation_and_from_now_on_are_not_expected() -> None:
    day = date(2026, 1, 15)
    installed = utc(2026, 1, 15, 6, 7)  # mid-interval: 06:00 is not expected, 06:15 is
    now = utc(2026, 1, 15, 18)
    qualities = {utc(2026, 1, 15, 6, 0): "actual", utc(2026, 1, 15, 6, 15): "actual"}
    [row] = completeness_grid(qualities, [day], LONDON, 900, not_before=installed, not_after=now)
    assert (row.expected, row.actual, row.missing) == (47, 1, 46)
    [before] = completeness_grid({}, [date(2026, 1, 14)], LONDON, 900, not_before=installed)
    [after] = completeness_grid({}, [date(2026, 1, 16)], LONDON, 900, not_after=now)
    assert before.expected == after.expected == 0
    assert before.percent == 100.0


def test_keys_in_any_zone_count_and_keys_off_the_grid_or_day_do_not() -> None:
    day = date(2026, 1, 15)
    plus_one = timezone(timedelta(hours=1))
    qualities = {
        utc(2026, 1, 15, 10).astimezone(plus_one): "actual",
        utc(2026, 1, 15, 10, 7): "actual",  # off the 15-min grid
        utc(2026, 1, 16, 10): "actual",  # another day
    }
    [row] = completeness_grid(qualities, [day], LONDON, 900)
    assert (row.actual, row.missing) == (1, 95)


def test_days_come_back_in_the_order_given() -> None:
    days = [date(2026, 1, 17), date(2026, 1, 15), SPRING_FORWARD]
    assert [r.day for r in completeness_grid({}, days, LONDON, 900)] == days
    assert completeness_grid({}, [], LONDON, 900) == []


def test_the_grid_refuses_bad_input() -> None:
    day = date(2026, 1, 15)
    with pytest.raises(ValidationError, match="unknown quality 'guessed'"):
        completeness_grid({utc(2026, 1, 15, 10): "guessed"}, [day], LONDON, 900)
    with pytest.raises(ValidationError, match=r"qualities\[2026-01-15T10:00:00\]"):
        completeness_grid({datetime(2026, 1, 15, 10): "actual"}, [day], LONDON, 900)  # noqa: DTZ001
    with pytest.raises(ValidationError, match="not_after"):
        completeness_grid({}, [day], LONDON, 900, not_after=datetime(2026, 1, 15))  # noqa: DTZ001
    with pytest.raises(ValidationError, match="interval_s"):
        completeness_grid({}, [day], LONDON, -1)
    with pytest.raises(ValidationError, match="unknown time zone"):
        completeness_grid({}, [day], "Nowhere/Land", 900)


@settings(max_examples=60, deadline=None)
@given(
    first_day=st.dates(min_value=date(2025, 1, 1), max_value=date(2027, 12, 1)),
    n_days=st.integers(min_value=1, max_value=5),
    zone=st.sampled_from([LONDON, KOLKATA, "America/Santiago", "Australia/Lord_Howe", "UTC"]),
    interval_s=st.sampled_from([900, 1_800, 3_600]),
    data=st.data(),
)
def test_completeness_counts_add_up(
    first_day: date, n_days: int, zone: str, interval_s: int, data: st.DataObject
) -> None:
    days = [first_day + timedelta(days=k) for k in range(n_days)]
    slots = [t for d in days for t in expected_interval_starts(d, zone, interval_s)]
    chosen = data.draw(
        st.dictionaries(
            st.sampled_from(slots), st.sampled_from([q.value for q in Quality]), max_size=len(slots)
        )
    )
    rows = completeness_grid(chosen, days, zone, interval_s)
    for row in rows:
        assert row.actual + row.estimated + row.edited + row.missing == row.expected
        assert 0.0 <= row.percent <= 100.0
    assert sum(r.expected for r in rows) == len(slots)
    assert sum(r.expected - r.missing for r in rows) == len(chosen)
    assert sum(r.actual for r in rows) == sum(1 for q in chosen.values() if q == "actual")
    assert sum(r.estimated for r in rows) == sum(1 for q in chosen.values() if q == "estimated")
