"""Local time of interval starts, vectorised: the date, month, minute of day and day type a tariff needs.

Pure: given arrays of UTC seconds and a zone. Offsets come from zoneinfo once per 15-minute UTC bucket (every real
zone changes its offset on a quarter hour), so a year of 15-minute intervals costs a few thousand lookups, not one
per interval. Day types: a public holiday (the `holidays` package, with observed days) is a holiday; a weekend day
the government made a working day (China's adjusted days) is a weekday; else Saturday, Sunday or weekday.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays
import numpy as np
from numpy.typing import NDArray

from openami.tariffs.model import DayType, HolidayRule

_BUCKET_S = 900
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class LocalTimes:
    """Per interval: the local day (days since 1970-01-01), minute of day, and per local day its parts."""

    day: NDArray[np.int64]  # local days since the epoch
    minute: NDArray[np.int64]  # minute of the local day, 0..1439
    days: NDArray[np.int64]  # the distinct local days, sorted
    day_of: NDArray[np.int64]  # index into `days` of each interval's day

    def dates(self) -> list[date]:
        return [date.fromordinal(int(d) + _EPOCH_ORDINAL) for d in self.days]


def local_times(start_s: NDArray[np.int64], zone: str) -> LocalTimes:
    """The local day and minute of each UTC start (seconds since the epoch) in `zone`."""
    tz = ZoneInfo(zone)
    buckets, inverse = np.unique(start_s // _BUCKET_S, return_inverse=True)
    offsets = np.fromiter(
        (_offset_s(int(b) * _BUCKET_S, tz) for b in buckets), dtype=np.int64, count=len(buckets)
    )
    local_s = start_s + offsets[inverse]
    day = local_s // 86_400
    minute = (local_s % 86_400) // 60
    days, day_of = np.unique(day, return_inverse=True)
    return LocalTimes(day, minute, days, day_of.astype(np.int64))


def _offset_s(utc_s: int, tz: ZoneInfo) -> int:
    offset = datetime.fromtimestamp(utc_s, UTC).astimezone(tz).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def day_types(
    days: list[date], rule: HolidayRule | None, extra: frozenset[date] = frozenset()
) -> NDArray[np.int64]:
    """The `DayType` of each local date; `extra` dates are holidays too."""
    calendar = None
    if rule is not None and days:
        years = range(min(days).year, max(days).year + 1)
        calendar = holidays.country_holidays(
            rule.country, subdiv=rule.subdivision, years=years, observed=rule.observed
        )
    workdays = set(getattr(calendar, "weekend_workdays", ()) or ())
    out = np.empty(len(days), dtype=np.int64)
    for i, day in enumerate(days):
        if day in extra or (calendar is not None and day in calendar):
            out[i] = DayType.HOLIDAY
        elif day in workdays:
            out[i] = DayType.WEEKDAY
        elif day.weekday() == 5:
            out[i] = DayType.SATURDAY
        elif day.weekday() == 6:
            out[i] = DayType.SUNDAY
        else:
            out[i] = DayType.WEEKDAY
    return out


def utc_seconds(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(seconds=1))
