"""Completeness of a meter's load profile per site-local day: expected, actual, estimated, edited, missing.

Pure functions: the caller passes the qualities it has stored and the instants that bound what is expected
(installation, now). A local day runs from local midnight to the next local midnight, so it is 23 or 25 hours
long on daylight-saving change days: 92 or 100 intervals of 15 min instead of 96. Interval starts are the
grid slots counted from the Unix epoch (as in `openami.readings.rules`) that start within the day.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from openami.common.errors import ValidationError
from openami.readings.interfaces import Quality

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class DayCompleteness:
    """Interval counts of one site-local day. `actual + estimated + edited + missing == expected`."""

    day: date  # the site-local day
    expected: int  # intervals expected that day (92/96/100 on DST change days at 15 min)
    actual: int
    estimated: int
    edited: int
    missing: int

    @property
    def percent(self) -> float:
        """(actual + edited) / expected × 100; estimates do not count as complete.

        A day that expected nothing (before installation, in the future) is 100 %: nothing is missing.
        Check `expected == 0` to show such a day as not applicable.
        """
        if self.expected == 0:
            return 100.0
        return (self.actual + self.edited) / self.expected * 100


def site_zone(timezone: str) -> ZoneInfo:
    """The IANA time zone named `timezone`, or ValidationError naming the unknown zone."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"unknown time zone {timezone!r}", "timezone") from exc


def local_day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """The UTC span `[start, end)` of the local calendar day `day` in `timezone`.

    Where the clocks jump over midnight (spring forward at 00:00), the day starts at the first instant that
    exists, which is where the previous day ended.
    """
    zone = site_zone(timezone)
    # fold=0 reads a local midnight that does not exist with the offset in force before the jump, which is
    # exactly the instant the day begins; an ambiguous midnight maps to its first occurrence.
    start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    return start, end


def expected_interval_starts(day: date, timezone: str, interval_s: int) -> list[datetime]:
    """Every grid interval start (UTC) within the local day `day`, in time order."""
    if interval_s <= 0:
        raise ValidationError(f"interval_s must be positive, got {interval_s}", "expected_interval_starts")
    start, end = local_day_bounds(day, timezone)
    return _grid_starts(start, end, interval_s)


def completeness_grid(
    qualities: Mapping[datetime, str],
    days: Sequence[date],
    timezone: str,
    interval_s: int,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> list[DayCompleteness]:
    """One `DayCompleteness` per day of `days`, in the order given.

    `qualities` maps interval start -> "actual" / "estimated" / "edited" (`Quality` values); starts off the
    grid or outside `days` are not counted. Intervals starting before `not_before` (the installation) or at
    or after `not_after` (now) are not expected.
    """
    if interval_s <= 0:
        raise ValidationError(f"interval_s must be positive, got {interval_s}", "completeness_grid")
    known = {q.value for q in Quality}
    for interval_start, quality in qualities.items():
        _aware(interval_start, f"qualities[{interval_start.isoformat()}]")
        if quality not in known:
            raise ValidationError(
                f"unknown quality {quality!r} (expected one of {', '.join(sorted(known))})",
                f"qualities[{interval_start.isoformat()}]",
            )
    lower = _aware(not_before, "not_before") if not_before is not None else None
    upper = _aware(not_after, "not_after") if not_after is not None else None

    grid = []
    for day in days:
        start, end = local_day_bounds(day, timezone)
        if lower is not None:
            start = max(start, lower)
        if upper is not None:
            end = min(end, upper)
        counts = dict.fromkeys(known, 0)
        expected = 0
        missing = 0
        for interval_start in _grid_starts(start, end, interval_s):
            expected += 1
            # Aware datetimes hash by instant, so keys in any zone match these UTC starts.
            found = qualities.get(interval_start)
            if found is None:
                missing += 1
            else:
                counts[found] += 1
        grid.append(
            DayCompleteness(
                day=day,
                expected=expected,
                actual=counts[Quality.ACTUAL],
                estimated=counts[Quality.ESTIMATED],
                edited=counts[Quality.EDITED],
                missing=missing,
            )
        )
    return grid


def _grid_starts(start: datetime, end: datetime, interval_s: int) -> list[datetime]:
    """The grid slots (multiples of `interval_s` since the epoch) starting in `[start, end)`."""
    step = timedelta(seconds=interval_s)
    first = _EPOCH + -(-(start - _EPOCH) // step) * step  # the first slot at or after `start`
    out = []
    t = first
    while t < end:
        out.append(t)
        t += step
    return out


def _aware(instant: datetime, where: str) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValidationError(f"naive datetime {instant.isoformat()}: instants must be timezone-aware", where)
    return instant.astimezone(UTC)
