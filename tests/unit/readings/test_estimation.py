"""The VEE estimation models: linear interpolation, like-day profile, and the `estimate_gap` dispatcher."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openami.common.errors import ValidationError
from openami.readings.estimation import (
    DayType,
    Estimate,
    Method,
    day_type,
    estimate_gap,
    like_day_profile,
    linear_interpolation,
)

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
Q = timedelta(minutes=15)
LONDON = "Europe/London"


def at(k: int) -> datetime:
    return T0 + k * Q


def starts(first: datetime, n: int, step: timedelta = Q) -> list[datetime]:
    return [first + k * step for k in range(n)]


def daily_history(
    zone: str, first_day: date, last_day: date, energy_wh: Callable[[datetime], int], interval_s: int = 900
) -> dict[datetime, int]:
    """Every interval of the local days `first_day` ..= `last_day`, valued by `energy_wh(local start)`."""
    tz = ZoneInfo(zone)
    start = datetime.combine(first_day, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(last_day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    out = {}
    t = start
    while t < end:
        out[t] = energy_wh(t.astimezone(tz))
        t += timedelta(seconds=interval_s)
    return out


def by_day_type(local: datetime) -> int:
    return {DayType.WEEKDAY: 100, DayType.SATURDAY: 500, DayType.SUNDAY: 900}[day_type(local.date())]


# --- linear interpolation -----------------------------------------------------------------------------------


def test_linear_rises_from_the_interval_before_to_the_one_after() -> None:
    assert linear_interpolation(starts(T0, 3), 120, 180) == [135, 150, 165]
    assert linear_interpolation(starts(T0, 3), 180, 120) == [165, 150, 135]
    assert linear_interpolation(starts(T0, 1), 0, 3) == [2]  # 1.5 rounds half up


def test_linear_values_come_back_in_the_order_given() -> None:
    missing = starts(T0, 3)
    assert linear_interpolation(missing[::-1], 120, 180) == [165, 150, 135]


def test_linear_with_one_side_known_is_flat() -> None:
    assert linear_interpolation(starts(T0, 4), 70, None) == [70] * 4
    assert linear_interpolation(starts(T0, 4), None, 30) == [30] * 4


def test_linear_is_scaled_to_the_register_total_exactly() -> None:
    values = linear_interpolation(starts(T0, 3), 120, 180, total_wh=1_000)
    assert values == [300, 333, 367]
    assert sum(values) == 1_000
    assert linear_interpolation(starts(T0, 3), 0, 0, total_wh=10) == [
        4,
        3,
        3,
    ]  # a flat zero shape spreads evenly
    assert linear_interpolation(starts(T0, 3), None, None, total_wh=10) == [4, 3, 3]
    assert linear_interpolation(starts(T0, 3), 50, 90, total_wh=0) == [0, 0, 0]


def test_linear_without_any_neighbour_or_total_cannot_guess() -> None:
    with pytest.raises(ValidationError, match="no actual interval on either side"):
        linear_interpolation(starts(T0, 2), None, None)


def test_linear_of_no_missing_interval() -> None:
    assert linear_interpolation([], 10, 20) == []
    assert linear_interpolation([], 10, 20, total_wh=0) == []
    with pytest.raises(ValidationError, match="no interval is missing"):
        linear_interpolation([], 10, 20, total_wh=5)


@pytest.mark.parametrize(
    ("missing", "before", "after", "total", "message"),
    [
        ([T0], -1, 5, None, "before_wh must be >= 0"),
        ([T0], 1, -5, None, "after_wh must be >= 0"),
        ([T0], 1, 5, -2, "total_wh must be >= 0"),
        ([T0, T0], 1, 5, None, "listed twice"),
        ([at(0), at(1), at(3)], 1, 5, None, "not evenly spaced"),
        ([datetime(2026, 3, 2, 10)], 1, 5, None, "timezone-aware"),  # noqa: DTZ001
    ],
)
def test_linear_refuses_bad_input(
    missing: list[datetime], before: int, after: int, total: int | None, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        linear_interpolation(missing, before, after, total)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=60),
    before=st.none() | st.integers(min_value=0, max_value=20_000),
    after=st.none() | st.integers(min_value=0, max_value=20_000),
    total=st.integers(min_value=0, max_value=500_000),
)
def test_linear_estimates_are_non_negative_and_sum_to_the_total(
    n: int, before: int | None, after: int | None, total: int
) -> None:
    values = linear_interpolation(starts(T0, n), before, after, total)
    assert len(values) == n
    assert all(v >= 0 for v in values)
    assert sum(values) == total


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=60),
    before=st.integers(min_value=0, max_value=20_000),
    after=st.integers(min_value=0, max_value=20_000),
)
def test_linear_stays_between_its_neighbours(n: int, before: int, after: int) -> None:
    values = linear_interpolation(starts(T0, n), before, after)
    assert all(min(before, after) <= v <= max(before, after) for v in values)
    steps = [b - a for a, b in itertools.pairwise(values)]
    assert all(s >= 0 for s in steps) or all(s <= 0 for s in steps)


# --- like-day profile ---------------------------------------------------------------------------------------


def test_day_types() -> None:
    assert [day_type(date(2026, 3, d)) for d in range(2, 9)] == [DayType.WEEKDAY] * 5 + [
        DayType.SATURDAY,
        DayType.SUNDAY,
    ]


HISTORY = daily_history(LONDON, date(2026, 2, 1), date(2026, 3, 1), by_day_type)


@pytest.mark.parametrize(
    ("missing_day", "expected_wh", "reason"),
    [
        (date(2026, 3, 2), 100, "mean of 20 like days (weekdays)"),
        (date(2026, 3, 7), 500, "mean of 4 like days (Saturdays)"),
        (date(2026, 3, 8), 900, "mean of 4 like days (Sundays)"),
    ],
)
def test_like_days_share_the_day_type(missing_day: date, expected_wh: int, reason: str) -> None:
    missing = starts(datetime.combine(missing_day, time(10), tzinfo=UTC), 12)
    history = {t: e for t, e in HISTORY.items() if t.date() < missing_day}
    assert like_day_profile(missing, history, 900, LONDON) == [expected_wh] * 12
    estimate = estimate_gap(missing, history, 900, LONDON)
    assert estimate == Estimate(Method.LIKE_DAY, [expected_wh] * 12, reason)


def test_like_days_come_from_the_window_before_the_gap() -> None:
    # Saturdays are worth 500 before the window and 50 inside it: only the last 28 days count.
    def value(local: datetime) -> int:
        if day_type(local.date()) is not DayType.SATURDAY:
            return 1
        return 500 if local.date() < date(2026, 2, 5) else 50

    history = daily_history(LONDON, date(2026, 1, 1), date(2026, 3, 5), value)
    missing = starts(datetime(2026, 3, 7, 10, tzinfo=UTC), 4)
    assert like_day_profile(missing, history, 900, LONDON) == [50] * 4
    assert (
        like_day_profile(missing, history, 900, LONDON, max_days_back=70) == [300] * 4
    )  # (5 × 500 + 4 × 50) / 9


def test_a_slot_without_like_days_falls_back_to_any_recent_day() -> None:
    weekdays_only = {t: e for t, e in HISTORY.items() if day_type(t.date()) is DayType.WEEKDAY}
    missing = starts(datetime(2026, 3, 1, 10, tzinfo=UTC), 10)  # a Sunday
    estimate = estimate_gap(missing, weekdays_only, 900, LONDON)
    assert estimate.values_wh == [100] * 10
    assert estimate.reason == "10 intervals from any day of the last 28 (no like day)"


def test_a_slot_outside_the_window_falls_back_to_the_whole_history() -> None:
    old = daily_history(LONDON, date(2025, 6, 1), date(2025, 6, 7), lambda local: local.hour)
    missing = starts(datetime(2026, 3, 2, 10, tzinfo=UTC), 12)
    estimate = estimate_gap(missing, old, 900, LONDON)
    # June is BST: 10:00 UTC in March is 10:00 local, whose June values are 10 Wh.
    assert estimate.values_wh == [10] * 4 + [11] * 4 + [12] * 4
    assert estimate.reason == "12 intervals from the same time of day on any day of the history"


def test_a_time_of_day_never_seen_falls_back_to_the_mean_of_all_history() -> None:
    history = {datetime(2026, 3, 1, 3, tzinfo=UTC): 50, datetime(2026, 3, 1, 4, tzinfo=UTC): 151}
    estimate = estimate_gap(starts(T0, 9), history, 900, LONDON)
    assert estimate.values_wh == [101] * 9  # 100.5 rounds half up
    assert (
        estimate.reason == "9 intervals from the mean of all 2 history values (no day had that time of day)"
    )


def test_slots_follow_the_site_clock_across_daylight_saving() -> None:
    # In winter 08:00 in London is 08:00 UTC; in summer 08:00 BST is 07:00 UTC.
    winter = daily_history(
        LONDON, date(2026, 1, 5), date(2026, 1, 9), lambda local: 300 if local.hour == 8 else 10
    )
    summer_eight_local = starts(datetime(2026, 6, 1, 7, tzinfo=UTC), 4)
    assert like_day_profile(summer_eight_local, winter, 900, LONDON, max_days_back=200) == [300] * 4
    assert like_day_profile(summer_eight_local, winter, 900, "UTC", max_days_back=200) == [10] * 4


def test_slots_follow_a_zone_without_daylight_saving() -> None:
    kolkata = "Asia/Kolkata"  # UTC+05:30 all year
    history = daily_history(kolkata, date(2026, 2, 2), date(2026, 2, 27), lambda local: local.hour * 10)
    missing = starts(datetime(2026, 3, 2, 2, 30, tzinfo=UTC), 4)  # 08:00 local
    assert like_day_profile(missing, history, 900, kolkata) == [80] * 4


def test_the_repeated_hour_of_a_clock_back_day_is_averaged_within_the_day() -> None:
    # 2026-10-25, London: 01:15 local happens at 00:15 UTC (BST) and again at 01:15 UTC (GMT).
    history = {datetime(2026, 10, 25, 0, 15, tzinfo=UTC): 10, datetime(2026, 10, 25, 1, 15, tzinfo=UTC): 30}
    next_sunday = [datetime(2026, 11, 1, 1, 15, tzinfo=UTC)]
    estimate = estimate_gap(next_sunday, history, 900, LONDON)
    assert estimate.values_wh == [20]
    assert estimate.reason == "mean of 1 like days (Sundays)"


def test_like_day_profile_is_scaled_to_the_total_and_keeps_the_given_order() -> None:
    history = daily_history(LONDON, date(2026, 2, 2), date(2026, 3, 1), lambda local: 10 * (local.hour + 1))
    missing = starts(datetime(2026, 3, 2, 0, tzinfo=UTC), 3, timedelta(hours=1))
    assert like_day_profile(missing, history, 900, LONDON) == [10, 20, 30]
    assert like_day_profile(missing, history, 900, LONDON, total_wh=120) == [20, 40, 60]
    assert like_day_profile(missing[::-1], history, 900, LONDON, total_wh=120) == [60, 40, 20]


def test_like_day_profile_refuses_what_it_cannot_use() -> None:
    with pytest.raises(ValidationError, match="no actual history"):
        like_day_profile([T0], {}, 900, LONDON)
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        like_day_profile([T0], HISTORY, 900, "Mars/Olympus")
    with pytest.raises(ValidationError, match="never negative"):
        like_day_profile([T0], {at(-1): -4}, 900, LONDON)
    with pytest.raises(ValidationError, match=r"history\[2026-03-02T09:45:00\]"):
        like_day_profile([T0], {at(-1).replace(tzinfo=None): 4}, 900, LONDON)
    with pytest.raises(ValidationError, match="max_days_back"):
        like_day_profile([T0], HISTORY, 900, LONDON, max_days_back=0)
    with pytest.raises(ValidationError, match="interval_s"):
        like_day_profile([T0], HISTORY, 0, LONDON)
    assert like_day_profile([], {}, 900, LONDON) == []


history_strategy = st.dictionaries(
    st.integers(min_value=0, max_value=40 * 96).map(lambda k: T0 - timedelta(days=41) + k * Q),
    st.integers(min_value=0, max_value=3_000),
    min_size=1,
    max_size=300,
)


@settings(max_examples=80, deadline=None)
@given(
    history=history_strategy,
    n=st.integers(min_value=1, max_value=200),
    total=st.none() | st.integers(min_value=0, max_value=400_000),
    zone=st.sampled_from([LONDON, "Asia/Kolkata", "UTC", "America/Santiago"]),
)
def test_like_day_estimates_are_non_negative_and_sum_to_the_total(
    history: dict[datetime, int], n: int, total: int | None, zone: str
) -> None:
    values = like_day_profile(starts(T0, n), history, 900, zone, total_wh=total)
    assert len(values) == n
    assert all(v >= 0 for v in values)
    if total is not None:
        assert sum(values) == total
    else:
        assert all(v <= max(history.values()) for v in values)


# --- estimate_gap -------------------------------------------------------------------------------------------


def test_short_gaps_are_interpolated_between_their_neighbours() -> None:
    history = {at(-1): 120, at(3): 180}
    estimate = estimate_gap(starts(T0, 3), history, 900, LONDON)
    assert estimate == Estimate(
        Method.LINEAR,
        [135, 150, 165],
        "linear between 120 Wh at 2026-03-02 09:45 UTC and 180 Wh at 2026-03-02 10:45 UTC",
    )


def test_a_short_gap_with_one_neighbour_is_flat_and_scaled_to_the_register() -> None:
    estimate = estimate_gap(starts(T0, 3), {at(-1): 120}, 900, LONDON, total_wh=300)
    assert estimate == Estimate(
        Method.LINEAR,
        [100, 100, 100],
        "flat at 120 Wh, the interval at 2026-03-02 09:45 UTC; scaled to the register delta of 300 Wh",
    )


def test_the_gap_length_chooses_the_model_at_the_boundary() -> None:
    eight = HISTORY | {at(-1): 100, at(8): 100}
    nine = HISTORY | {at(-1): 100, at(9): 100}
    assert estimate_gap(starts(T0, 8), eight, 900, LONDON).method is Method.LINEAR
    assert estimate_gap(starts(T0, 9), nine, 900, LONDON).method is Method.LIKE_DAY
    assert estimate_gap(starts(T0, 9), nine, 900, LONDON, short_gap_max_intervals=9).method is Method.LINEAR


def test_the_model_can_be_chosen() -> None:
    history = dict(HISTORY)
    history[at(-1)], history[at(12)] = 10, 10
    long_gap = starts(T0, 12)
    assert estimate_gap(long_gap, history, 900, LONDON, model=Method.LINEAR).values_wh == [10] * 12
    short = estimate_gap(long_gap[:2], history | {at(2): 10}, 900, LONDON, model=Method.LIKE_DAY)
    assert short == Estimate(Method.LIKE_DAY, [100, 100], "mean of 20 like days (weekdays)")
    with pytest.raises(ValidationError, match="unknown estimation model 'spline'"):
        estimate_gap(long_gap, history, 900, LONDON, model="spline")  # type: ignore[arg-type]


def test_a_short_gap_without_neighbours_follows_the_like_days() -> None:
    estimate = estimate_gap(starts(T0, 2), HISTORY, 900, LONDON)
    assert estimate.method is Method.LIKE_DAY
    assert estimate.values_wh == [100, 100]


def test_without_history_only_the_register_total_can_be_spread() -> None:
    estimate = estimate_gap(starts(T0, 12), {}, 900, LONDON, total_wh=10)
    assert estimate == Estimate(
        Method.LINEAR,
        [1] * 10 + [0] * 2,
        "spread evenly: no actual interval on either side of the gap; scaled to the register delta of 10 Wh",
    )
    with pytest.raises(ValidationError, match="no actual interval on either side"):
        estimate_gap(starts(T0, 12), {}, 900, LONDON)
    with pytest.raises(ValidationError, match="no actual history"):
        estimate_gap(starts(T0, 12), {}, 900, LONDON, model=Method.LIKE_DAY)


def test_estimate_gap_takes_one_contiguous_gap_in_any_order() -> None:
    history = {at(-1): 120, at(3): 180}
    assert estimate_gap([at(2), at(0), at(1)], history, 900, LONDON).values_wh == [165, 135, 150]
    with pytest.raises(ValidationError, match="not one contiguous gap"):
        estimate_gap([at(0), at(2)], history, 900, LONDON)
    with pytest.raises(ValidationError, match="is not missing: history holds 120 Wh"):
        estimate_gap([at(-1), at(0)], history, 900, LONDON)
    with pytest.raises(ValidationError, match="listed twice"):
        estimate_gap([at(0), at(0)], history, 900, LONDON)
    with pytest.raises(ValidationError, match="interval_s"):
        estimate_gap([at(0)], history, -900, LONDON)
    with pytest.raises(ValidationError, match="unknown time zone"):
        estimate_gap([at(0)], history, 900, "Europe/Londres")
    with pytest.raises(ValidationError, match="short_gap_max_intervals"):
        estimate_gap([at(0)], history, 900, LONDON, short_gap_max_intervals=-1)


def test_estimate_gap_of_nothing_missing() -> None:
    assert estimate_gap([], {}, 900, LONDON) == Estimate(Method.LINEAR, [], "nothing missing")
    with pytest.raises(ValidationError, match="no interval is missing"):
        estimate_gap([], {}, 900, LONDON, total_wh=3)


@settings(max_examples=80, deadline=None)
@given(
    history=history_strategy,
    n=st.integers(min_value=1, max_value=40),
    total=st.integers(min_value=0, max_value=100_000),
)
def test_every_estimate_is_non_negative_and_sums_to_the_total(
    history: dict[datetime, int], n: int, total: int
) -> None:
    gap_start = T0 + timedelta(days=2)
    estimate = estimate_gap(starts(gap_start, n), history, 900, LONDON, total_wh=total)
    assert len(estimate.values_wh) == n
    assert all(v >= 0 for v in estimate.values_wh)
    assert sum(estimate.values_wh) == total
    assert estimate.reason
