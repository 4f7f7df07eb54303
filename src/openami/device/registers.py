"""Energy registers per tariff rate, and the activity calendar that chooses the rate.

The calendar follows DLMS "activity calendar" (IC 20): day profiles switch the rate at local times of day, a
week profile names the day profile of each weekday, and seasons (from a month/day on) choose the week profile.
It works in the site's local time, read from the meter's own clock.

Registers are integer Wh. Index 0 of `RegisterBank.import_wh` is the total (OBIS x.8.0), 1..4 the rates
(x.8.1..4); every Wh goes to the total and to exactly one rate, so the rates always add up to the total.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from openami.common import obis

RATES = (1, 2, 3, 4)
SECONDS_PER_DAY = 86_400
IMPORT_REGISTERS = (obis.ACTIVE_IMPORT_TOTAL, "1-0:1.8.1", "1-0:1.8.2", "1-0:1.8.3", "1-0:1.8.4")
EXPORT_REGISTERS = (obis.ACTIVE_EXPORT_TOTAL, "1-0:2.8.1", "1-0:2.8.2", "1-0:2.8.3", "1-0:2.8.4")


def _second_of_day(at: time) -> int:
    return at.hour * 3600 + at.minute * 60 + at.second


@dataclass(frozen=True, slots=True)
class DayProfile:
    """The rate switches of one day: `(local time of day, rate 1..4)`, the first at 00:00, times rising.
    A rate holds from its time until the next switch (or midnight)."""

    name: str
    switches: Sequence[tuple[time, int]]
    _seconds: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _rates: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        switches = tuple((at, rate) for at, rate in self.switches)
        where = f"day profile {self.name!r}"
        if not switches:
            raise ValueError(f"{where}: needs at least one (time, rate) switch")
        seconds: list[int] = []
        for i, (at, rate) in enumerate(switches):
            if not isinstance(at, time) or at.tzinfo is not None:
                raise ValueError(
                    f"{where}, switch {i}: the time must be a naive local datetime.time, got {at!r}"
                )
            if at.microsecond:
                raise ValueError(f"{where}, switch {i}: times are whole seconds, got {at.isoformat()}")
            if rate not in RATES:
                raise ValueError(f"{where}, switch {i}: rate must be one of {RATES}, got {rate!r}")
            second = _second_of_day(at)
            if i == 0 and second != 0:
                raise ValueError(f"{where}: the first switch must be at 00:00 so every moment has a rate")
            if seconds and second <= seconds[-1]:
                raise ValueError(f"{where}, switch {i}: {at.isoformat()} is not after the switch before it")
            seconds.append(second)
        object.__setattr__(self, "switches", switches)
        object.__setattr__(self, "_seconds", tuple(seconds))
        object.__setattr__(self, "_rates", tuple(rate for _, rate in switches))

    def rate_window(self, second_of_day: float) -> tuple[int, int]:
        """The rate at `second_of_day` and the second of the day of the next switch (86400 = midnight)."""
        i = bisect.bisect_right(self._seconds, second_of_day) - 1
        following = self._seconds[i + 1] if i + 1 < len(self._seconds) else SECONDS_PER_DAY
        return self._rates[i], following


@dataclass(frozen=True, slots=True)
class WeekProfile:
    """The day profile (by name) of each weekday, Monday first."""

    name: str
    days: Sequence[str]

    def __post_init__(self) -> None:
        days = tuple(self.days)
        if len(days) != 7:
            raise ValueError(f"week profile {self.name!r}: needs 7 day profiles (Monday..Sunday), got {days}")
        object.__setattr__(self, "days", days)


@dataclass(frozen=True, slots=True)
class Season:
    """From `start_month`/`start_day` (local date) until the next season starts, `week_profile` applies."""

    name: str
    start_month: int
    start_day: int
    week_profile: str

    def __post_init__(self) -> None:
        try:
            date(
                2023, self.start_month, self.start_day
            )  # a common year: a season cannot start on 29 February
        except (TypeError, ValueError):
            raise ValueError(
                f"season {self.name!r}: start {self.start_month}/{self.start_day} "
                f"is not a month/day of every year"
            ) from None


@dataclass(frozen=True)
class ActivityCalendar:
    """A tariff-rate switching table: seasons -> week profiles -> day profiles, in the site's local time."""

    name: str
    seasons: Sequence[Season]
    week_profiles: Sequence[WeekProfile]
    day_profiles: Sequence[DayProfile]
    # Season starts as month*100+day, rising, and the resolved Monday..Sunday day profiles of each season.
    _season_keys: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _season_weeks: tuple[tuple[DayProfile, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"activity calendar {self.name!r}"
        days = {d.name: d for d in self.day_profiles}
        weeks = {w.name: w for w in self.week_profiles}
        if len(days) != len(self.day_profiles) or len(weeks) != len(self.week_profiles):
            raise ValueError(f"{where}: day and week profile names must be unique")
        if not self.seasons:
            raise ValueError(f"{where}: needs at least one season")
        for week in self.week_profiles:
            for day_name in week.days:
                if day_name not in days:
                    raise ValueError(
                        f"{where}: week profile {week.name!r} names unknown day profile {day_name!r}"
                    )
        seasons = sorted(self.seasons, key=lambda s: (s.start_month, s.start_day))
        keys = tuple(s.start_month * 100 + s.start_day for s in seasons)
        if len(set(keys)) != len(keys):
            raise ValueError(f"{where}: two seasons start on the same day")
        for season in seasons:
            if season.week_profile not in weeks:
                raise ValueError(
                    f"{where}: season {season.name!r} names unknown week profile {season.week_profile!r}"
                )
        object.__setattr__(self, "seasons", tuple(seasons))
        object.__setattr__(self, "week_profiles", tuple(self.week_profiles))
        object.__setattr__(self, "day_profiles", tuple(self.day_profiles))
        object.__setattr__(self, "_season_keys", keys)
        resolved = tuple(tuple(days[name] for name in weeks[s.week_profile].days) for s in seasons)
        object.__setattr__(self, "_season_weeks", resolved)

    def day_profile_on(self, local_day: date) -> DayProfile:
        """The day profile in force on a local date."""
        # Before the first season start of the year, the last season of the year before still runs.
        i = bisect.bisect_right(self._season_keys, local_day.month * 100 + local_day.day) - 1
        return self._season_weeks[i][local_day.weekday()]

    def rate_at(self, local: datetime) -> int:
        """The rate 1..4 at a local wall time (naive, or aware in the site's zone)."""
        second = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        return self.day_profile_on(local.date()).rate_window(second)[0]

    def rate_window(self, local: datetime) -> tuple[int, datetime]:
        """The rate at local wall time `local` and the naive local wall time at which it may next change."""
        second = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        rate, following = self.day_profile_on(local.date()).rate_window(second)
        midnight = datetime(local.year, local.month, local.day)  # noqa: DTZ001 - a local wall time, on purpose
        return rate, midnight + timedelta(seconds=following)


def default_calendar() -> ActivityCalendar:
    """Rate 1 off-peak, 2 standard, 3 peak. Weekdays: 1 from 23:00 to 07:00, 2 from 07:00 to 17:00 and 20:00
    to 23:00, 3 from 17:00 to 20:00. Weekends: 1 from 23:00 to 08:00, 2 otherwise. Rate 4 is unused."""
    weekday = DayProfile("weekday", [(time(0), 1), (time(7), 2), (time(17), 3), (time(20), 2), (time(23), 1)])
    weekend = DayProfile("weekend", [(time(0), 1), (time(8), 2), (time(23), 1)])
    week = WeekProfile("standard", ("weekday",) * 5 + ("weekend",) * 2)
    return ActivityCalendar("default", [Season("all year", 1, 1, "standard")], [week], [weekday, weekend])


def _offset_s(zone: tzinfo, epoch_s: float) -> float:
    offset = datetime.fromtimestamp(epoch_s, zone).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


def tariff_rate_window(calendar: ActivityCalendar, zone: tzinfo, epoch_s: float) -> tuple[int, float]:
    """The rate in force at `epoch_s` (UTC epoch seconds, read from the meter's clock) in the site's `zone`,
    and the epoch second until which it surely holds: the next switch of the day profile, or a change of UTC
    offset (daylight saving) before it, whichever comes first. The caller may reuse the rate for any instant
    before that."""
    local = datetime.fromtimestamp(epoch_s, zone)
    rate, next_wall = calendar.rate_window(local)
    offset = _offset_s(zone, epoch_s)
    until = next_wall.replace(tzinfo=UTC).timestamp() - offset  # the wall time under today's offset
    if _offset_s(zone, until) != offset:
        # The offset changes first: find the second it does (zones change offset on whole seconds).
        low, high = math.floor(epoch_s), math.ceil(until)
        while high - low > 1:
            middle = (low + high) // 2
            if _offset_s(zone, middle) == offset:
                low = middle
            else:
                high = middle
        until = float(high)
    return rate, until


class RegisterBank:
    """Cumulative energy registers, integer Wh. Index 0 is the total, 1..4 the tariff rates."""

    __slots__ = ("export_wh", "import_wh")

    def __init__(self) -> None:
        self.import_wh = [0] * 5
        self.export_wh = [0] * 5

    def add(self, rate: int, energy_wh: int, *, export: bool = False) -> None:
        """Add whole Wh to the total and to one rate."""
        if rate not in RATES:
            raise ValueError(f"rate must be one of {RATES}, got {rate!r}")
        if energy_wh < 0:
            raise ValueError(f"registers never decrease: cannot add {energy_wh} Wh")
        registers = self.export_wh if export else self.import_wh
        registers[0] += energy_wh
        registers[rate] += energy_wh

    def readings(self) -> dict[str, int]:
        """OBIS code -> Wh for the ten energy registers."""
        out = dict(zip(IMPORT_REGISTERS, self.import_wh, strict=True))
        out.update(zip(EXPORT_REGISTERS, self.export_wh, strict=True))
        return out
