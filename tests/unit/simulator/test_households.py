"""Households: deterministic per seed, plausible magnitudes, solar by daylight, weekly and seasonal cycles."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from openami.simulator.households import (
    SECONDS_PER_DAY,
    Climate,
    Habit,
    Household,
    solar_elevation_sin,
)

LONDON = Climate(51.5, -0.1, weather_seed=1)
NAIROBI = Climate(-1.3, 36.8, weather_seed=1)
SPRING = datetime(2026, 4, 6, tzinfo=UTC).timestamp()  # a Monday


def _day_kwh(household: Household, day_start_s: float, step_s: int = 300) -> tuple[float, float]:
    imp, exp = household.day_power_w(day_start_s, step_s)
    return float(imp.sum() * step_s / 3.6e6), float(exp.sum() * step_s / 3.6e6)


def test_same_seed_gives_the_same_household_and_the_same_watts() -> None:
    a = Household.draw(42, LONDON, solar_share=0.5)
    b = Household.draw(42, LONDON, solar_share=0.5)
    assert a == b
    for day in range(3):
        imp_a, exp_a = a.day_power_w(SPRING + day * SECONDS_PER_DAY)
        imp_b, exp_b = b.day_power_w(SPRING + day * SECONDS_PER_DAY)
        np.testing.assert_array_equal(imp_a, imp_b)
        np.testing.assert_array_equal(exp_a, exp_b)


def test_days_can_be_generated_in_any_order() -> None:
    household = Household.draw(7, LONDON)
    later_first = household.day_power_w(SPRING + 5 * SECONDS_PER_DAY)[0]
    household.day_power_w(SPRING)
    again = Household.draw(7, LONDON).day_power_w(SPRING + 5 * SECONDS_PER_DAY)[0]
    np.testing.assert_array_equal(later_first, again)


def test_different_seeds_give_different_households() -> None:
    profiles = {Household.draw(seed, LONDON).day_power_w(SPRING)[0].tobytes() for seed in range(20)}
    assert len(profiles) == 20


def test_daily_energy_and_peaks_are_those_of_real_households() -> None:
    daily_kwh = []
    for seed in range(150):
        household = Household.draw(seed, LONDON, solar_share=0.0)
        for day in range(7):
            imp, _ = household.day_power_w(SPRING + day * SECONDS_PER_DAY, 300)
            assert imp.max() < household.max_power_w
            daily_kwh.append(float(imp.sum() * 300 / 3.6e6))
    kwh = np.array(daily_kwh)
    assert 5.0 <= float(np.median(kwh)) <= 15.0
    assert float(np.percentile(kwh, 10)) > 2.0
    assert float(np.percentile(kwh, 90)) < 30.0
    assert kwh.min() > 1.0  # the fridge and standby alone exceed 1 kWh/day


def test_kettle_spikes_reach_kilowatts() -> None:
    peaks = [Household.draw(seed, LONDON).day_power_w(SPRING, 60)[0].max() for seed in range(30)]
    assert float(np.median(peaks)) > 2000.0


def test_load_never_exceeds_the_service_rating() -> None:
    small_service_w = 230.0 * 10
    for seed in range(30):
        household = Household.draw(seed, LONDON, max_power_w=small_service_w)
        for day in range(3):
            imp, _ = household.day_power_w(SPRING + day * SECONDS_PER_DAY, 60)
            assert imp.max() <= 0.95 * small_service_w + 1e-9


def test_solar_exports_only_in_daylight() -> None:
    with_pv = [h for h in (Household.draw(s, LONDON, solar_share=1.0) for s in range(10)) if h.pv_kwp]
    assert len(with_pv) == 10
    instants = SPRING + np.arange(0, 3 * SECONDS_PER_DAY, 120, dtype=np.float64)
    sun = solar_elevation_sin(instants, LONDON.latitude_deg, LONDON.longitude_deg)
    exported_some = False
    for household in with_pv:
        _, exp = household.power_w(instants)
        assert np.all(exp[sun <= 0] == 0)
        exported_some |= bool(np.any(exp > 0))
    assert exported_some


def test_no_solar_no_export() -> None:
    household = Household.draw(3, LONDON, solar_share=0.0)
    assert household.pv_kwp == 0
    _, exp = household.day_power_w(SPRING)
    assert not np.any(exp)


def test_solar_share_is_respected() -> None:
    with_pv = sum(bool(Household.draw(s, LONDON, solar_share=0.2).pv_kwp) for s in range(1000))
    assert 150 <= with_pv <= 250


def test_solar_noon_is_where_the_longitude_says() -> None:
    instants = SPRING + np.arange(0, SECONDS_PER_DAY, 60, dtype=np.float64)
    greenwich = instants[np.argmax(solar_elevation_sin(instants, 51.5, 0.0))]
    nairobi = instants[np.argmax(solar_elevation_sin(instants, -1.3, 36.8))]
    assert abs((greenwich - SPRING) / 3600 - 12.0) < 0.05
    assert abs((nairobi - SPRING) / 3600 - (12.0 - 36.8 / 15)) < 0.05


def test_weekends_differ_from_weekdays() -> None:
    """Working households are home in the daytime at weekends and get up later."""
    workers = [
        h
        for h in (Household.draw(s, NAIROBI, solar_share=0.0) for s in range(200))
        if h.habit == Habit.STANDARD
    ]
    daytime = slice(10 * 12, 16 * 12)  # 10:00 to 16:00 in 5-min steps (UTC offset 0 here)
    weekday_w: list[float] = []
    weekend_w: list[float] = []
    for household in workers[:40]:
        for day in range(14):
            imp, _ = household.day_power_w(SPRING + day * SECONDS_PER_DAY, 300)
            (weekend_w if day % 7 >= 5 else weekday_w).append(float(imp[daytime].mean()))
    assert np.mean(weekend_w) > 1.3 * np.mean(weekday_w)


def test_winter_and_summer_follow_the_hemisphere() -> None:
    north, south = Climate(50.0, 0.0, 1), Climate(-50.0, 0.0, 1)
    january = datetime(2026, 1, 12, tzinfo=UTC).timestamp()
    july = datetime(2026, 7, 13, tzinfo=UTC).timestamp()
    assert north.daily_mean_temperature_c(int(january // SECONDS_PER_DAY)) < north.daily_mean_temperature_c(
        int(july // SECONDS_PER_DAY)
    )
    assert south.daily_mean_temperature_c(int(january // SECONDS_PER_DAY)) > south.daily_mean_temperature_c(
        int(july // SECONDS_PER_DAY)
    )

    def week_kwh(climate: Climate, start_s: float) -> float:
        heated = [h for h in (Household.draw(s, climate) for s in range(200)) if h.heating_w][:10]
        assert heated
        return sum(_day_kwh(h, start_s + d * SECONDS_PER_DAY)[0] for h in heated for d in range(7))

    assert week_kwh(north, january) > 1.5 * week_kwh(north, july)
    assert week_kwh(south, july) > 1.5 * week_kwh(south, january)


def test_air_conditioning_runs_in_summer() -> None:
    climate = Climate(35.0, 0.0, 1)
    cooled = [h for h in (Household.draw(s, climate) for s in range(300)) if h.ac_w and not h.heating_w][:10]
    assert cooled
    january = datetime(2026, 1, 12, tzinfo=UTC).timestamp()
    july = datetime(2026, 7, 13, tzinfo=UTC).timestamp()

    def afternoon_w(start_s: float) -> float:
        # 13:00 to 19:00 at longitude 0, the hottest hours, when the sun keeps the lights off all year.
        return sum(
            float(h.mean_power_w(start_s + d * SECONDS_PER_DAY + 13 * 3600, 72, 300)[0].mean())
            for h in cooled
            for d in range(7)
        )

    assert afternoon_w(july) > 1.5 * afternoon_w(january)


def test_solar_yields_more_in_summer() -> None:
    household = next(h for h in (Household.draw(s, LONDON, solar_share=1.0) for s in range(5)) if h.pv_kwp)
    june = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    december = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    june_export = sum(_day_kwh(household, june + d * SECONDS_PER_DAY)[1] for d in range(14))
    december_export = sum(_day_kwh(household, december + d * SECONDS_PER_DAY)[1] for d in range(14))
    assert june_export > 2 * december_export


def test_away_households_draw_only_their_base_load() -> None:
    year_start = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()) // SECONDS_PER_DAY
    for seed in range(50):
        household = Household.draw(seed, NAIROBI, solar_share=0.0)
        away = [d for d in range(year_start, year_start + 365) if household.is_away(d)]
        if away:
            break
    else:
        pytest.fail("no household of 50 took a vacation")
    imp, _ = household.day_power_w(float(away[1] * SECONDS_PER_DAY), 300)
    np.testing.assert_allclose(imp, household.base_load_w)
    # Trips last 3 to 14 days.
    assert 3 <= len(away) <= 28


def test_appliance_energy_does_not_depend_on_the_step_length() -> None:
    for seed in range(10):
        household = Household.draw(seed, LONDON, solar_share=0.0)  # PV would net out within longer steps
        fine, _ = _day_kwh(household, SPRING, 60)
        coarse, _ = _day_kwh(household, SPRING, 900)
        assert coarse == pytest.approx(fine, rel=0.02)


def test_mean_power_follows_the_utc_offset() -> None:
    """The same local morning, seen from a site two hours ahead of UTC, happens two hours earlier in UTC."""
    household = Household.draw(11, NAIROBI, solar_share=0.0)
    local_midnight = SPRING - 2 * 3600
    shifted, _ = household.mean_power_w(local_midnight, 288, 300, utc_offset_s=2 * 3600)
    unshifted, _ = household.mean_power_w(SPRING, 288, 300, utc_offset_s=0)
    # Only the lighting, which follows the real sun, may differ.
    assert np.abs(shifted - unshifted).max() < household.lighting_w * 1.2 + 1e-9
    assert np.corrcoef(shifted, unshifted)[0, 1] > 0.9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"solar_share": 1.5}, "solar_share"), ({"max_power_w": 500.0}, "max_power_w")],
)
def test_bad_household_arguments_are_named(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Household.draw(1, LONDON, **kwargs)


def test_bad_climate_is_named() -> None:
    with pytest.raises(ValueError, match="latitude_deg"):
        Climate(80.0, 0.0)
    with pytest.raises(ValueError, match="longitude_deg"):
        Climate(10.0, 200.0)


def test_bad_steps_are_named() -> None:
    household = Household.draw(1, LONDON)
    with pytest.raises(ValueError, match="n_steps"):
        household.mean_power_w(SPRING, 0, 300)
    with pytest.raises(ValueError, match="step_s"):
        household.day_power_w(SPRING, 7)
