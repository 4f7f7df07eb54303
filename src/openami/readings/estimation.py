"""VEE estimation: pure models that fill a gap in a meter's load profile with integer Wh.

Two models, each a function named after it: `linear_interpolation` for short gaps and `like_day_profile` for
long ones; `estimate_gap` is the one dispatcher and says which model it used and why. Estimates are never
negative, and when the register delta across the gap (`total_wh`) is known they add up to exactly that, by
largest-remainder rounding, so an estimated bill still matches the meter's register.

`history` is always a mapping interval start (aware) -> energy_wh of ACTUAL values of the same meter and OBIS
code. The arithmetic is exact (fractions) until the final rounding, so results do not depend on float error.

Public holidays are not told apart from the weekday they fall on: the model takes no holiday calendar.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

from openami.common.errors import ValidationError
from openami.readings.completeness import site_zone
from openami.readings.rules import format_energy_wh, format_instant


class Method(enum.StrEnum):
    LINEAR = "linear"
    LIKE_DAY = "like_day"


@dataclass(frozen=True, slots=True)
class Estimate:
    method: Method
    values_wh: list[int]  # one per missing interval start, in the order given
    reason: str  # e.g. "linear between 120 Wh at 10:00 and 180 Wh at 11:15", "mean of 4 like days (weekdays)"


class DayType(enum.StrEnum):
    """Days that look alike in a household's load: working days, Saturdays and Sundays."""

    WEEKDAY = "weekday"
    SATURDAY = "Saturday"
    SUNDAY = "Sunday"


def day_type(day: date) -> DayType:
    """The kind of `day` (a site-local date) for like-day matching."""
    weekday = day.weekday()
    if weekday == 5:
        return DayType.SATURDAY
    if weekday == 6:
        return DayType.SUNDAY
    return DayType.WEEKDAY


def linear_interpolation(
    missing_starts: Sequence[datetime],
    before_wh: int | None,
    after_wh: int | None,
    total_wh: int | None = None,
) -> list[int]:
    """Per-interval energy (Wh) rising linearly from `before_wh` to `after_wh`, one value per missing start.

    `before_wh` is the last actual interval before the gap and `after_wh` the first after it; the k-th of n
    missing intervals (in time order) gets before + (after - before) × k / (n + 1). With one side unknown the
    estimate is flat at the other; with both unknown it is flat, which needs `total_wh`. When `total_wh` (the
    register delta across the gap) is known the values are scaled to sum to exactly `total_wh`.
    `missing_starts` is one evenly spaced gap, in any order; the values come back in the order given.
    """
    order = _time_order(missing_starts, "linear_interpolation missing_starts")
    _check_spacing(missing_starts, order)
    _check_energy(before_wh, "before_wh", "linear_interpolation")
    _check_energy(after_wh, "after_wh", "linear_interpolation")
    _check_energy(total_wh, "total_wh", "linear_interpolation")
    n = len(order)
    if n == 0:
        return _nothing_missing(total_wh, "linear_interpolation")
    if before_wh is not None and after_wh is not None:
        first, last = before_wh, after_wh
    elif before_wh is not None:
        first = last = before_wh
    elif after_wh is not None:
        first = last = after_wh
    elif total_wh is not None:
        first = last = 1  # any equal pair: the shape is flat and scaled to total_wh
    else:
        raise ValidationError(
            "cannot interpolate: no actual interval on either side of the gap and no register total",
            "linear_interpolation",
        )
    shape = [Fraction(first * (n + 1 - k) + last * k, n + 1) for k in range(1, n + 1)]
    return _in_given_order(_round_to_total(shape, total_wh), order)


def like_day_profile(
    missing_starts: Sequence[datetime],
    history: Mapping[datetime, int],
    interval_s: int,
    timezone: str,
    total_wh: int | None = None,
    max_days_back: int = 28,
) -> list[int]:
    """Mean energy (Wh) of the same local time of day on like days, one value per missing start.

    Like days share the missing day's type (weekday, Saturday, Sunday) in the site's `timezone` and lie 1 to
    `max_days_back` days before it. A slot no like day has falls back, in turn, to any day in that window, to
    any day in `history` at that time of day, and to the mean of all of `history`. Scaled to sum to exactly
    `total_wh` when known. Raises ValidationError when `history` is empty.
    """
    return _like_day(
        missing_starts, history, interval_s, timezone, total_wh=total_wh, max_days_back=max_days_back
    )[0]


def estimate_gap(
    missing_starts: Sequence[datetime],
    history: Mapping[datetime, int],
    interval_s: int,
    timezone: str,
    *,
    total_wh: int | None = None,
    short_gap_max_intervals: int = 8,
    model: Method | None = None,
    max_days_back: int = 28,
) -> Estimate:
    """Estimate one contiguous gap with the model that suits it, or with `model` when given.

    Short gaps (at most `short_gap_max_intervals`) with an actual interval on at least one side are
    interpolated linearly from their neighbours in `history`; longer gaps, or gaps with no neighbour, follow
    the like-day profile (or a flat spread of `total_wh` when there is no history either). `max_days_back`
    is the like-day window, see `like_day_profile`.
    """
    if interval_s <= 0:
        raise ValidationError(f"interval_s must be positive, got {interval_s}", "estimate_gap")
    if short_gap_max_intervals < 0:
        raise ValidationError(
            f"short_gap_max_intervals must be >= 0, got {short_gap_max_intervals}", "estimate_gap"
        )
    _check_energy(total_wh, "total_wh", "estimate_gap")
    _check_history(history)
    site_zone(timezone)  # refused here too, though only the like-day model reads it
    order = _time_order(missing_starts, "estimate_gap missing_starts")
    step = timedelta(seconds=interval_s)
    starts = [missing_starts[i].astimezone(UTC) for i in order]
    for earlier, later in itertools.pairwise(starts):
        if later - earlier != step:
            raise ValidationError(
                f"the missing intervals are not one contiguous gap of {interval_s} s intervals: "
                f"{format_instant(earlier)} is followed by {format_instant(later)}",
                "estimate_gap missing_starts",
            )
    for start in starts:
        if start in history:
            raise ValidationError(
                f"the interval starting {format_instant(start)} is not missing: history holds "
                f"{format_energy_wh(history[start])} for it",
                "estimate_gap missing_starts",
            )
    chosen = _method(model)
    if not starts:
        nothing = _nothing_missing(total_wh, "estimate_gap")
        return Estimate(chosen or Method.LINEAR, nothing, "nothing missing")

    before_at, after_at = starts[0] - step, starts[-1] + step
    before_wh, after_wh = history.get(before_at), history.get(after_at)
    if chosen is None:
        has_neighbour = before_wh is not None or after_wh is not None
        if (has_neighbour and len(starts) <= short_gap_max_intervals) or not history:
            chosen = Method.LINEAR
        else:
            chosen = Method.LIKE_DAY

    if chosen is Method.LIKE_DAY:
        values, reason = _like_day(
            missing_starts, history, interval_s, timezone, total_wh=total_wh, max_days_back=max_days_back
        )
    else:
        values = linear_interpolation(missing_starts, before_wh, after_wh, total_wh)
        reason = _linear_reason(before_wh, before_at, after_wh, after_at)
    if total_wh is not None:
        reason += f"; scaled to the register delta of {format_energy_wh(total_wh)}"
    return Estimate(chosen, values, reason)


# --- helpers ---------------------------------------------------------------------------------------------


def _like_day(
    missing_starts: Sequence[datetime],
    history: Mapping[datetime, int],
    interval_s: int,
    timezone: str,
    *,
    total_wh: int | None,
    max_days_back: int,
) -> tuple[list[int], str]:
    """The like-day profile and a sentence saying where each slot's value came from."""
    if interval_s <= 0:
        raise ValidationError(f"interval_s must be positive, got {interval_s}", "like_day_profile")
    if max_days_back < 1:
        raise ValidationError(f"max_days_back must be at least 1, got {max_days_back}", "like_day_profile")
    _check_energy(total_wh, "total_wh", "like_day_profile")
    _check_history(history)
    zone = site_zone(timezone)
    order = _time_order(missing_starts, "like_day_profile missing_starts")
    if not order:
        return _nothing_missing(total_wh, "like_day_profile"), "nothing missing"
    if not history:
        raise ValidationError("no actual history to build a like-day profile from", "like_day_profile")

    # time-of-day slot -> local day -> the values of that slot on that day (two on a clock-back day)
    by_slot: dict[int, dict[date, list[int]]] = defaultdict(lambda: defaultdict(list))
    for interval_start, energy_wh in history.items():
        local = interval_start.astimezone(zone)
        by_slot[_slot(local, interval_s)][local.date()].append(energy_wh)
    overall = Fraction(sum(history.values()), len(history))

    shape: list[Fraction] = []
    like_day_counts: list[int] = []
    like_types: set[DayType] = set()
    from_window = from_history = from_overall = 0
    for i in order:
        local = missing_starts[i].astimezone(zone)
        day, kind = local.date(), day_type(local.date())
        days = {d: Fraction(sum(v), len(v)) for d, v in by_slot.get(_slot(local, interval_s), {}).items()}
        window = {d: m for d, m in days.items() if 1 <= (day - d).days <= max_days_back}
        like = [m for d, m in window.items() if day_type(d) is kind]
        if like:
            shape.append(sum(like, Fraction(0)) / len(like))
            like_day_counts.append(len(like))
            like_types.add(kind)
        elif window:
            shape.append(sum(window.values(), Fraction(0)) / len(window))
            from_window += 1
        elif days:
            shape.append(sum(days.values(), Fraction(0)) / len(days))
            from_history += 1
        else:
            shape.append(overall)
            from_overall += 1

    parts = []
    if like_day_counts:
        plural = ", ".join(sorted(f"{t}s" for t in like_types))
        if len(like_day_counts) == len(order) and len(set(like_day_counts)) == 1:
            parts.append(f"mean of {like_day_counts[0]} like days ({plural})")
        else:
            mean_days = sum(like_day_counts) / len(like_day_counts)
            parts.append(
                f"{len(like_day_counts)} intervals from the mean of like days ({plural}), "
                f"{mean_days:.1f} days each on average"
            )
    if from_window:
        parts.append(f"{from_window} intervals from any day of the last {max_days_back} (no like day)")
    if from_history:
        parts.append(f"{from_history} intervals from the same time of day on any day of the history")
    if from_overall:
        parts.append(
            f"{from_overall} intervals from the mean of all {len(history)} history values "
            "(no day had that time of day)"
        )
    values = _in_given_order(_round_to_total(shape, total_wh), order)
    return values, "; ".join(parts)


def _slot(local: datetime, interval_s: int) -> int:
    """The wall-clock time-of-day slot of `local`, so 08:15 matches 08:15 on every day, DST or not."""
    return (local.hour * 3600 + local.minute * 60 + local.second) // interval_s


def _round_to_total(shape: Sequence[Fraction], total_wh: int | None) -> list[int]:
    """`shape` rounded to integers, or apportioned to sum to exactly `total_wh` (largest remainder).

    A shape of all zeros spreads `total_wh` evenly: the register says energy flowed, the shape not when.
    Ties between equal remainders go to the earlier interval, so the result is deterministic.
    """
    if total_wh is None:
        return [math.floor(x + Fraction(1, 2)) for x in shape]
    weight_sum = sum(shape, Fraction(0))
    weights = list(shape) if weight_sum > 0 else [Fraction(1)] * len(shape)
    weight_sum = sum(weights, Fraction(0))
    exact = [w * total_wh / weight_sum for w in weights]
    values = [math.floor(x) for x in exact]
    short_wh = total_wh - sum(values)
    by_remainder = sorted(range(len(exact)), key=lambda k: (values[k] - exact[k], k))
    for k in by_remainder[:short_wh]:
        values[k] += 1
    return values


def _linear_reason(
    before_wh: int | None, before_at: datetime, after_wh: int | None, after_at: datetime
) -> str:
    if before_wh is not None and after_wh is not None:
        return (
            f"linear between {format_energy_wh(before_wh)} at {format_instant(before_at)} "
            f"and {format_energy_wh(after_wh)} at {format_instant(after_at)}"
        )
    if before_wh is not None:
        return f"flat at {format_energy_wh(before_wh)}, the interval at {format_instant(before_at)}"
    if after_wh is not None:
        return f"flat at {format_energy_wh(after_wh)}, the interval at {format_instant(after_at)}"
    return "spread evenly: no actual interval on either side of the gap"


def _method(model: Method | str | None) -> Method | None:
    if model is None:
        return None
    try:
        return Method(model)
    except ValueError:
        raise ValidationError(
            f"unknown estimation model {model!r} (known: {', '.join(m.value for m in Method)})", "model"
        ) from None


def _time_order(starts: Sequence[datetime], where: str) -> list[int]:
    """Indices of `starts` in time order, after checking each is aware and none repeats."""
    seen: set[datetime] = set()
    for i, start in enumerate(starts):
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValidationError(
                f"naive datetime {start.isoformat()}: instants must be timezone-aware", f"{where}[{i}]"
            )
        if start in seen:
            raise ValidationError(f"{format_instant(start)} is listed twice", f"{where}[{i}]")
        seen.add(start)
    return sorted(range(len(starts)), key=lambda i: starts[i])


def _check_spacing(starts: Sequence[datetime], order: Sequence[int]) -> None:
    steps = {starts[b] - starts[a] for a, b in itertools.pairwise(order)}
    if len(steps) > 1:
        raise ValidationError(
            "the missing intervals are not evenly spaced, so they are not one gap "
            f"(steps of {', '.join(sorted(str(s) for s in steps))})",
            "linear_interpolation missing_starts",
        )


def _check_energy(energy_wh: int | None, name: str, where: str) -> None:
    if energy_wh is not None and energy_wh < 0:
        raise ValidationError(f"{name} must be >= 0 Wh, got {format_energy_wh(energy_wh)}", where)


def _check_history(history: Mapping[datetime, int]) -> None:
    for interval_start, energy_wh in history.items():
        where = f"history[{interval_start.isoformat()}]"
        if interval_start.tzinfo is None or interval_start.utcoffset() is None:
            raise ValidationError("naive datetime: instants must be timezone-aware", where)
        if energy_wh < 0:
            raise ValidationError(
                f"history holds {format_energy_wh(energy_wh)}; actual interval energy is never negative",
                where,
            )


def _nothing_missing(total_wh: int | None, where: str) -> list[int]:
    if total_wh:
        raise ValidationError(
            f"the register delta is {format_energy_wh(total_wh)} but no interval is missing to hold it", where
        )
    return []


def _in_given_order(values_in_time_order: Sequence[int], order: Sequence[int]) -> list[int]:
    out = [0] * len(order)
    for rank, index in enumerate(order):
        out[index] = values_in_time_order[rank]
    return out
