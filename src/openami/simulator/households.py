"""Simulated households: what a meter's customer draws (and exports) over time, deterministic per seed.

Pure numpy: no clock, no I/O. Every random choice is drawn from a generator seeded by (household seed, local
day) or (weather seed, local day), so any day can be generated alone, in any order, and gives the same watts.

The load of one household is the sum of
- a base load (fridge, standby) in W, always on;
- activity (cooking, TV, computers) and lighting following the household's habits: morning and evening peaks,
  a daytime level for home workers and weekends, more lighting when the sun is down;
- appliances as rectangles of power: kettle (2–3 kW for a few minutes), oven, washing machine, water heater;
- space heating (heat pump or heaters) or air conditioning driven by the outdoor temperature, which follows
  the season (day of year, latitude and hemisphere), the time of day and the weather of the day;
- nothing but the base load while the household is away on vacation.
A household with rooftop PV (kWp) produces by the sun's elevation and the day's clearness; the meter sees the
net: import when the load exceeds PV, export otherwise. The load never exceeds the service rating (the breaker
would trip).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

SECONDS_PER_DAY = 86_400
SECONDS_PER_HOUR = 3_600
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)
_PV_SYSTEM_EFFICIENCY = 0.82  # inverter, wiring, soiling and temperature losses of a rooftop system
_LOAD_LIMIT_SHARE = 0.95  # households stay below the breaker rating
_DIURNAL_SWING_C = 6.0  # outdoor temperature ± around the daily mean, warmest at 15:00 local
_COOLING_SET_POINT_C = 24.0


class Habit(enum.StrEnum):
    """When a household is at home and awake."""

    EARLY_BIRD = "early bird"
    STANDARD = "standard"
    NIGHT_OWL = "night owl"
    HOME_WORKER = "home worker"


# Habit -> (morning peak local hour, evening peak local hour, daytime occupancy 0..1 on working days)
_HABIT_HOURS: dict[Habit, tuple[float, float, float]] = {
    Habit.EARLY_BIRD: (6.0, 19.0, 0.12),
    Habit.STANDARD: (7.0, 19.5, 0.15),
    Habit.NIGHT_OWL: (9.0, 21.5, 0.25),
    Habit.HOME_WORKER: (7.5, 19.5, 0.70),
}
_HABIT_WEIGHTS = {Habit.EARLY_BIRD: 0.2, Habit.STANDARD: 0.45, Habit.NIGHT_OWL: 0.15, Habit.HOME_WORKER: 0.2}
_PEOPLE_WEIGHTS = (0.28, 0.34, 0.16, 0.14, 0.06, 0.02)  # 1..6 people, roughly a European census split


@dataclass(frozen=True, slots=True)
class Climate:
    """Where the households are: latitude and longitude in degrees (south, west negative), and whose weather.

    Households sharing a `weather_seed` see the same clouds and temperatures on the same day, as neighbours
    do.
    """

    latitude_deg: float
    longitude_deg: float
    weather_seed: int = 0

    def __post_init__(self) -> None:
        if not -66.0 <= self.latitude_deg <= 66.0:
            raise ValueError(f"latitude_deg must be within ±66 (no polar sites), got {self.latitude_deg}")
        if not -180.0 <= self.longitude_deg <= 180.0:
            raise ValueError(f"longitude_deg must be within ±180, got {self.longitude_deg}")

    @property
    def annual_mean_temperature_c(self) -> float:
        return 27.0 - 0.33 * abs(self.latitude_deg)

    @property
    def seasonal_swing_c(self) -> float:
        """Half the difference between the warmest and the coldest month, °C."""
        return 0.22 * abs(self.latitude_deg)

    def summerness(self, day_of_year: int) -> float:
        """+1 in the warmest part of the year, -1 in the coldest; the warmest day lags the solstice."""
        warmest_doy = 196 if self.latitude_deg >= 0 else 14
        return math.cos(2 * math.pi * (day_of_year - warmest_doy) / 365.25)

    def daily_mean_temperature_c(self, local_day: int) -> float:
        doy = _day_of_year(local_day)
        anomaly_c, _, _ = _weather(self.weather_seed, local_day)
        return self.annual_mean_temperature_c + self.seasonal_swing_c * self.summerness(doy) + anomaly_c

    def clearness(self, local_day: int) -> float:
        """Share of clear-sky sunshine that reaches the ground today, 0..1."""
        return _weather(self.weather_seed, local_day)[1]


@lru_cache(maxsize=4096)
def _weather(weather_seed: int, local_day: int) -> tuple[float, float, tuple[float, ...]]:
    """(temperature anomaly °C, clearness 0..1, cloud flicker phases) of one day, alike for neighbours."""
    rng = np.random.default_rng([weather_seed, local_day, 7])
    anomaly_c = float(rng.normal(0.0, 2.5))
    sky = rng.random()
    if sky < 0.5:
        clearness = float(rng.uniform(0.85, 1.0))
    elif sky < 0.8:
        clearness = float(rng.uniform(0.4, 0.8))
    else:
        clearness = float(rng.uniform(0.08, 0.3))
    phases = tuple(float(p) for p in rng.uniform(0.0, 2 * math.pi, 3))
    return anomaly_c, clearness, phases


def _day_of_year(local_day: int) -> int:
    return date.fromordinal(_EPOCH_ORDINAL + local_day).timetuple().tm_yday


def solar_elevation_sin(epoch_s: FloatArray, latitude_deg: float, longitude_deg: float) -> FloatArray:
    """Sine of the sun's elevation at UTC instants `epoch_s` (s since the epoch); negative at night.

    Cooper's declination and the hour angle from mean solar time (the equation of time, at most ±16 min, is
    ignored).
    """
    epoch_s = np.asarray(epoch_s, dtype=np.float64)
    day = np.floor(epoch_s / SECONDS_PER_DAY)
    doy = (day - _days_to_year_start(day)) + 1
    declination = np.radians(23.44) * np.sin(2 * np.pi * (284 + doy) / 365.0)
    utc_hour = (epoch_s - day * SECONDS_PER_DAY) / SECONDS_PER_HOUR
    hour_angle = np.radians(15.0 * (utc_hour + longitude_deg / 15.0 - 12.0))
    lat = math.radians(latitude_deg)
    return np.asarray(
        math.sin(lat) * np.sin(declination) + math.cos(lat) * np.cos(declination) * np.cos(hour_angle),
        dtype=np.float64,
    )


def _days_to_year_start(day: FloatArray) -> FloatArray:
    """For each day since the epoch, the day number of 1 January of its year (vectorised, Gregorian)."""
    years = (day / 365.2425 + 1970).astype(np.int64)
    starts = np.array(
        [date(int(y), 1, 1).toordinal() - _EPOCH_ORDINAL for y in range(years.min(), years.max() + 2)]
    )
    idx = np.searchsorted(starts, day, side="right") - 1
    return np.asarray(starts[idx], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class _DaySchedule:
    """What one household does on one local day: peak hours, occupancy and appliance runs (local seconds)."""

    away: bool
    morning_h: float
    evening_h: float
    daytime_level: float
    activity_scale: float
    run_start_s: FloatArray  # local seconds since the epoch
    run_end_s: FloatArray
    run_power_w: FloatArray


@dataclass(frozen=True, slots=True)
class Household:
    """One customer's household, drawn with `Household.draw`; each field is a physical parameter."""

    seed: int
    climate: Climate
    people: int
    habit: Habit
    base_load_w: float
    activity_w: float  # cooking, TV, computers at full activity
    lighting_w: float  # lights on when awake after dark
    kettle_w: float
    oven_w: float
    washer_w: float  # heating phase of the washing machine
    water_heater_w: float  # 0 without an electric water heater
    heating_w: float  # 0 without electric space heating; otherwise the heaters' maximum
    heating_w_per_k: float  # electric W per K below the set point (heat loss / heat-pump COP)
    ac_w: float  # 0 without air conditioning; otherwise its maximum electric power
    ac_w_per_k: float
    pv_kwp: float  # 0 without rooftop PV
    power_factor: float
    max_power_w: float  # the service rating: phases × nominal voltage × rated current
    vacation_share: float  # probability of going away in a given year

    @classmethod
    def draw(
        cls,
        seed: int,
        climate: Climate,
        *,
        max_power_w: float = 230.0 * 60,
        solar_share: float = 0.2,
    ) -> Household:
        """A household drawn from `seed`: the same seed and arguments always give the same household."""
        if not 0.0 <= solar_share <= 1.0:
            raise ValueError(f"solar_share must be within 0..1, got {solar_share}")
        if max_power_w < 2_000:
            raise ValueError(f"max_power_w must be at least 2000 W for a household, got {max_power_w}")
        rng = np.random.default_rng([seed, 1])
        people = int(rng.choice(6, p=_PEOPLE_WEIGHTS)) + 1
        habit = Habit(rng.choice(list(_HABIT_WEIGHTS), p=list(_HABIT_WEIGHTS.values())))
        cold_climate = climate.annual_mean_temperature_c - climate.seasonal_swing_c < 14.0
        hot_climate = climate.annual_mean_temperature_c + climate.seasonal_swing_c > 21.0
        has_heating = cold_climate and rng.random() < 0.25
        has_ac = hot_climate and rng.random() < 0.3
        has_pv = rng.random() < solar_share
        pv_kwp = round(float(rng.uniform(1.5, 3.0) + 0.5 * people), 1) if has_pv else 0.0
        # The inverter may not push more than the service carries.
        pv_kwp = min(pv_kwp, round(0.9 * max_power_w / 1000 / _PV_SYSTEM_EFFICIENCY, 1))
        return cls(
            seed=seed,
            climate=climate,
            people=people,
            habit=habit,
            base_load_w=float(rng.uniform(50, 120) + 20 * people),
            activity_w=float(rng.uniform(120, 220) + 80 * people),
            lighting_w=float(rng.uniform(60, 150) + 25 * people),
            kettle_w=float(rng.uniform(2000, 3000)),
            oven_w=float(rng.uniform(2000, 3500)),
            washer_w=float(rng.uniform(1800, 2300)),
            water_heater_w=float(rng.uniform(1500, 3000)) if rng.random() < 0.4 else 0.0,
            heating_w=float(rng.uniform(2000, 4000)) if has_heating else 0.0,
            heating_w_per_k=float(rng.uniform(20, 50)) if has_heating else 0.0,
            ac_w=float(rng.uniform(900, 2200)) if has_ac else 0.0,
            ac_w_per_k=float(rng.uniform(80, 180)) if has_ac else 0.0,
            pv_kwp=pv_kwp,
            power_factor=float(rng.uniform(0.92, 0.99)),
            max_power_w=float(max_power_w),
            vacation_share=float(rng.uniform(0.3, 0.7)),
        )

    def summary(self) -> str:
        """One line a person can read: who lives there and what they run."""
        parts = [f"{self.people} {'person' if self.people == 1 else 'people'}", self.habit.value]
        if self.water_heater_w:
            parts.append("water heater")
        if self.heating_w:
            parts.append("electric heating")
        if self.ac_w:
            parts.append("AC")
        if self.pv_kwp:
            parts.append(f"PV {self.pv_kwp:.1f} kWp")
        return ", ".join(parts)

    def is_away(self, local_day: int) -> bool:
        """True on the local days (since the epoch) the household is on vacation."""
        year = date.fromordinal(_EPOCH_ORDINAL + local_day).year
        # A trip that starts late in December ends in the next year.
        return any(local_day in _vacation_days(self.seed, y, self.vacation_share) for y in (year, year - 1))

    def mean_power_w(
        self,
        start_epoch_s: float,
        n_steps: int,
        step_s: float,
        utc_offset_s: float | FloatArray = 0.0,
    ) -> tuple[FloatArray, FloatArray]:
        """Average (import W, export W) in each step `[start + k·step_s, start + (k+1)·step_s)`, k < n_steps.

        `start_epoch_s` is UTC seconds since the epoch; `utc_offset_s` the site's offset from UTC in s, one
        value or one per step (so a day crossing a DST change stays right). Appliance runs count by their
        exact overlap with each step, so the energy of a 3-minute kettle is kept at any step length.
        """
        if n_steps <= 0 or step_s <= 0:
            raise ValueError(f"n_steps and step_s must be positive, got n_steps={n_steps}, step_s={step_s}")
        edges = start_epoch_s + step_s * np.arange(n_steps + 1, dtype=np.float64)
        offsets = np.broadcast_to(np.asarray(utc_offset_s, dtype=np.float64), (n_steps,))
        mid = edges[:-1] + step_s / 2
        load_w = self._smooth_load_w(mid, mid + offsets)
        starts, ends, powers = self._runs_around(mid + offsets)
        if starts.size:
            lo = (edges[:-1] + offsets)[:, None]
            hi = (edges[1:] + offsets)[:, None]
            overlap_s = np.clip(np.minimum(hi, ends[None, :]) - np.maximum(lo, starts[None, :]), 0.0, None)
            load_w = load_w + overlap_s @ powers / step_s
        return self._net(load_w, self._pv_w(mid, mid + offsets))

    def power_w(
        self, epoch_s: FloatArray, utc_offset_s: float | FloatArray = 0.0
    ) -> tuple[FloatArray, FloatArray]:
        """(import W, export W) at the UTC instants `epoch_s` (seconds since the epoch), vectorised."""
        epoch_s = np.asarray(epoch_s, dtype=np.float64)
        local_s = epoch_s + np.broadcast_to(np.asarray(utc_offset_s, dtype=np.float64), epoch_s.shape)
        load_w = self._smooth_load_w(epoch_s, local_s)
        starts, ends, powers = self._runs_around(local_s)
        if starts.size:
            running = (local_s[:, None] >= starts[None, :]) & (local_s[:, None] < ends[None, :])
            load_w = load_w + running @ powers
        return self._net(load_w, self._pv_w(epoch_s, local_s))

    def day_power_w(
        self, local_day_start_epoch_s: float, step_s: int = 300, utc_offset_s: float | FloatArray = 0.0
    ) -> tuple[FloatArray, FloatArray]:
        """A whole day of average (import W, export W), one value per `step_s`, from the given UTC instant."""
        if SECONDS_PER_DAY % step_s:
            raise ValueError(f"step_s must divide a day (86400 s), got {step_s}")
        return self.mean_power_w(local_day_start_epoch_s, SECONDS_PER_DAY // step_s, step_s, utc_offset_s)

    def _net(self, load_w: FloatArray, pv_w: FloatArray) -> tuple[FloatArray, FloatArray]:
        load_w = np.minimum(load_w, _LOAD_LIMIT_SHARE * self.max_power_w)
        net_w = load_w - pv_w
        return np.maximum(net_w, 0.0), np.maximum(-net_w, 0.0)

    def _pv_w(self, epoch_s: FloatArray, local_s: FloatArray) -> FloatArray:
        if not self.pv_kwp:
            return np.zeros_like(epoch_s)
        sin_elev = np.clip(
            solar_elevation_sin(epoch_s, self.climate.latitude_deg, self.climate.longitude_deg), 0, 1
        )
        days = np.floor(local_s / SECONDS_PER_DAY).astype(np.int64)
        clearness = np.empty_like(epoch_s)
        for day in np.unique(days):
            sel = days == day
            _, clear, phases = _weather(self.climate.weather_seed, int(day))
            hour = (local_s[sel] - day * SECONDS_PER_DAY) / SECONDS_PER_HOUR
            # Passing clouds: the less clear the day, the more the sunshine flickers around its mean.
            periods_h = (0.7, 1.3, 2.9)
            flicker = sum(np.sin(2 * np.pi * hour / p + ph) for p, ph in zip(periods_h, phases, strict=True))
            clearness[sel] = np.clip(clear * (1 + 0.12 * (1 - clear) * flicker), 0.02, 1.0)
        # A tilted panel catches low sun better than a flat one: sin^0.8 instead of sin.
        return np.asarray(
            self.pv_kwp * 1000 * _PV_SYSTEM_EFFICIENCY * clearness * sin_elev**0.8, dtype=np.float64
        )

    def _smooth_load_w(self, epoch_s: FloatArray, local_s: FloatArray) -> FloatArray:
        """Base load, activity, lighting, heating and cooling: everything that varies slowly over minutes."""
        days = np.floor(local_s / SECONDS_PER_DAY).astype(np.int64)
        load_w = np.full(epoch_s.shape, self.base_load_w)
        sin_elev = solar_elevation_sin(epoch_s, self.climate.latitude_deg, self.climate.longitude_deg)
        darkness = np.clip(1.0 - 6.0 * sin_elev, 0.1, 1.0)  # lights go on as the sun sinks below ~10°
        for day in np.unique(days):
            sel = days == day
            sched = self._schedule(int(day))
            hour = (local_s[sel] - day * SECONDS_PER_DAY) / SECONDS_PER_HOUR
            temperature_c = self.climate.daily_mean_temperature_c(int(day)) + _DIURNAL_SWING_C * np.cos(
                2 * np.pi * (hour - 15.0) / 24.0
            )
            if sched.away:
                occupied = np.zeros_like(hour)
                setpoint_c = np.full_like(hour, 8.0)  # frost protection only
            else:
                occupied = _occupancy(hour, sched)
                setpoint_c = 17.0 + 3.0 * np.minimum(occupied / 0.3, 1.0)
                load_w[sel] += (
                    sched.activity_scale * (self.activity_w + self.lighting_w * darkness[sel]) * occupied
                )
            if self.heating_w:
                load_w[sel] += np.clip(
                    self.heating_w_per_k * (setpoint_c - temperature_c), 0.0, self.heating_w
                )
            if self.ac_w and not sched.away:
                in_use = 0.4 + 0.6 * np.minimum(occupied / 0.3, 1.0)
                load_w[sel] += (
                    np.clip(self.ac_w_per_k * (temperature_c - _COOLING_SET_POINT_C), 0.0, self.ac_w) * in_use
                )
        return load_w

    def _runs_around(self, local_s: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Appliance runs of the local days covering `local_s`, and of the day before (runs cross midnight)"""
        days = np.floor(local_s / SECONDS_PER_DAY).astype(np.int64)
        wanted = sorted({int(d) for d in np.unique(days)} | {int(days.min()) - 1})
        scheds = [self._schedule(d) for d in wanted]
        return (
            np.concatenate([s.run_start_s for s in scheds]),
            np.concatenate([s.run_end_s for s in scheds]),
            np.concatenate([s.run_power_w for s in scheds]),
        )

    def _schedule(self, local_day: int) -> _DaySchedule:
        return _day_schedule(self, local_day)


def _occupancy(hour: FloatArray, sched: _DaySchedule) -> FloatArray:
    """How much of the household is at home and awake, 0..1, by local hour."""
    morning = 0.8 * np.exp(-0.5 * ((hour - sched.morning_h) / 0.8) ** 2)
    evening = np.exp(-0.5 * ((hour - sched.evening_h) / 1.8) ** 2)
    # Daytime plateau between breakfast and dinner, with soft edges.
    plateau = sched.daytime_level / (
        (1 + np.exp(-(hour - sched.morning_h - 1.0) * 3)) * (1 + np.exp((hour - sched.evening_h + 1.0) * 3))
    )
    return np.asarray(np.minimum(morning + evening + plateau + 0.03, 1.0), dtype=np.float64)


@lru_cache(maxsize=8192)
def _day_schedule(household: Household, local_day: int) -> _DaySchedule:
    rng = np.random.default_rng([household.seed, local_day, 2])
    weekend = (local_day + _EPOCH_WEEKDAY) % 7 >= 5
    morning_h, evening_h, daytime_level = _HABIT_HOURS[household.habit]
    if weekend:
        morning_h += 1.5
        daytime_level = max(daytime_level, 0.6)
    morning_h += float(rng.normal(0, 0.3))
    evening_h += float(rng.normal(0, 0.4))
    empty = np.zeros(0)
    if household.is_away(local_day):
        return _DaySchedule(True, morning_h, evening_h, 0.0, 0.0, empty, empty, empty)

    starts: list[float] = []
    lengths: list[float] = []
    powers: list[float] = []

    def run(start_h: float, length_s: float, power_w: float) -> None:
        starts.append(float(np.clip(start_h, 0.0, 23.9)) * SECONDS_PER_HOUR)
        lengths.append(length_s)
        powers.append(power_w)

    people = household.people
    for _ in range(int(rng.poisson(0.6 * people + 0.6) * (1.3 if weekend else 1.0))):
        pick = rng.random()
        if pick < 0.4:
            hour = rng.normal(morning_h + 0.2, 0.4)
        elif pick < 0.8 or daytime_level < 0.3:
            hour = rng.normal(evening_h - 1.0, 1.2)
        else:
            hour = rng.uniform(morning_h + 2, evening_h - 2)
        run(hour, rng.uniform(150, 300), household.kettle_w)
    if rng.random() < min(0.3 + 0.07 * people + (0.2 if weekend else 0.0), 0.95):
        hour = evening_h - 1.5 + rng.normal(0, 0.4)
        preheat_s = rng.uniform(600, 900)
        run(hour, preheat_s, household.oven_w)
        # After preheating the thermostat cycles; at 5-min resolution that is its mean duty.
        run(hour + preheat_s / SECONDS_PER_HOUR, rng.uniform(1200, 4200), 0.5 * household.oven_w)
    washes_per_week = min(1.0 + 0.8 * people, 7.0)
    if rng.random() < washes_per_week / 7 * (1.4 if weekend else 0.85):
        hour = rng.uniform(max(morning_h + 1, 8.0), 20.0)
        heat_s = rng.uniform(900, 1300)
        run(hour, heat_s, household.washer_w)
        run(hour + heat_s / SECONDS_PER_HOUR, rng.uniform(2400, 4200), 250.0)
    if household.water_heater_w:
        run(morning_h - 0.5, (900 + 500 * people**0.7) * rng.uniform(0.8, 1.2), household.water_heater_w)
        run(evening_h + 1.0, (600 + 300 * people**0.7) * rng.uniform(0.8, 1.2), household.water_heater_w)

    day_start_s = float(local_day * SECONDS_PER_DAY)
    start_s = day_start_s + np.asarray(starts, dtype=np.float64)
    return _DaySchedule(
        away=False,
        morning_h=morning_h,
        evening_h=evening_h,
        daytime_level=daytime_level,
        activity_scale=float(rng.uniform(0.8, 1.2)),
        run_start_s=start_s,
        run_end_s=start_s + np.asarray(lengths, dtype=np.float64),
        run_power_w=np.asarray(powers, dtype=np.float64),
    )


@lru_cache(maxsize=4096)
def _vacation_days(seed: int, year: int, vacation_share: float) -> frozenset[int]:
    """Local days (since the epoch) a household is away in `year`: up to two trips of 3 to 14 days."""
    rng = np.random.default_rng([seed, year, 3])
    first = date(year, 1, 1).toordinal() - _EPOCH_ORDINAL
    length_days = date(year + 1, 1, 1).toordinal() - _EPOCH_ORDINAL - first
    days: set[int] = set()
    for _ in range(2):
        if rng.random() < vacation_share:
            start = first + int(rng.integers(0, length_days))
            days.update(range(start, start + int(rng.integers(3, 15))))
    return frozenset(days)
