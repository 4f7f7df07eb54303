"""VEE validation rules: pure checks of one meter's interval and register values.

Each rule is a function named after what it detects. It takes plain values (no session, clock or I/O),
ignores the order of its input, accepts empty input, and returns one `Flag` per problem, whose reason
carries the numbers and units. `validate` is the one dispatcher; `RULES` is the table of rules.

Export intervals (1-0:2.29.0) get every check that import intervals get except the zero run: exporting
nothing all day is what a house without solar panels does, so 0 Wh of export says nothing about the meter.

Interval starts live on the grid of `interval_s`-long intervals counted from the Unix epoch (UTC midnight),
the grid of `openami.common.units.floor_to_interval`. A value whose start is off that grid fills no grid
slot, so the slot it should have filled is reported as a gap.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from openami.common.errors import ValidationError
from openami.common.obis import (
    ACTIVE_EXPORT_INTERVAL,
    ACTIVE_EXPORT_TOTAL,
    ACTIVE_IMPORT_INTERVAL,
    ACTIVE_IMPORT_TOTAL,
    CLOCK,
)
from openami.readings.interfaces import IntervalValue, RegisterValue

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

# The load-profile quantity whose intervals add up to each cumulative register; per-rate registers
# (1-0:1.8.1 ...) have none, because the load profile does not split energy by tariff rate.
INTERVAL_OBIS_OF_REGISTER: Mapping[str, str] = MappingProxyType(
    {ACTIVE_IMPORT_TOTAL: ACTIVE_IMPORT_INTERVAL, ACTIVE_EXPORT_TOTAL: ACTIVE_EXPORT_INTERVAL}
)
# Interval quantities for which long runs of 0 Wh are normal (see the module docstring).
ZERO_RUN_EXEMPT: frozenset[str] = frozenset({ACTIVE_EXPORT_INTERVAL})


class Rule(enum.StrEnum):
    GAP = "gap"
    SPIKE = "spike"
    NEGATIVE = "negative"
    REGISTER_MISMATCH = "register_mismatch"
    CLOCK_DRIFT = "clock_drift"
    ZERO_RUN = "zero_run"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class Flag:
    """One problem a rule found: the rule, the quantity, the affected span `[start, end)` (UTC) and why."""

    rule: Rule
    obis: str
    start: datetime  # first affected instant or interval start (aware UTC)
    end: datetime  # end of the affected span, exclusive (== start for an instant)
    reason: str  # human readable, with the numbers and units


@dataclass(frozen=True, slots=True)
class ValidationContext:
    """What the rules need to know about the meter: its load-profile interval and its limits."""

    interval_s: int  # load-profile interval length, seconds
    max_power_w: float  # service rating (MeterInfo.max_power_w), W
    max_clock_drift_s: float = 60.0  # largest allowed |meter clock - head-end clock|, seconds
    max_zero_run_intervals: int = 96  # a whole day of zeros at 15 min is suspicious
    register_tolerance_wh: int = 1  # allowed |register delta - sum of intervals| (rounding in the meter), Wh

    def __post_init__(self) -> None:
        _require_positive_power(self.max_power_w, "ValidationContext")
        limits = {
            "interval_s": (self.interval_s, 1),
            "max_clock_drift_s": (self.max_clock_drift_s, 0),
            "max_zero_run_intervals": (self.max_zero_run_intervals, 0),
            "register_tolerance_wh": (self.register_tolerance_wh, 0),
        }
        for name, (value, lowest) in limits.items():
            _require(
                math.isfinite(value) and value >= lowest,
                f"{name} must be a finite number >= {lowest}, got {value}",
                "ValidationContext",
            )


# --- formatting shared by the reasons of rules and estimates ----------------------------------------------


def format_number(value: float) -> str:
    """`13648` -> "13 648", `13800.4` -> "13 800.4": spaces between thousands, a decimal if not whole."""
    if isinstance(value, int) or value.is_integer():
        return f"{int(value):,}".replace(",", " ")
    return f"{value:,.1f}".replace(",", " ")


def format_energy_wh(energy_wh: int) -> str:
    return f"{format_number(energy_wh)} Wh"


def format_instant(instant: datetime) -> str:
    """An instant as "2026-03-02 10:15 UTC" (seconds shown only when not zero)."""
    t = instant.astimezone(UTC)
    if t.microsecond:
        return t.strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    if t.second:
        return t.strftime("%Y-%m-%d %H:%M:%S UTC")
    return t.strftime("%Y-%m-%d %H:%M UTC")


def format_duration(seconds: int) -> str:
    """A whole number of seconds as "1 d 2 h 15 min 30 s", leaving out zero parts ("15 min", "0 s")."""
    if seconds == 0:
        return "0 s"
    sign = "-" if seconds < 0 else ""
    rest = abs(seconds)
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count} {unit}")
    return sign + " ".join(parts)


# --- the rules --------------------------------------------------------------------------------------------


def gap(
    present_starts: Sequence[datetime],
    expected_start: datetime,
    expected_end: datetime,
    interval_s: int,
    obis: str,
) -> list[Flag]:
    """One flag per run of grid intervals in `[expected_start, expected_end)` missing from `present_starts`.

    The expected intervals are the grid slots (see the module docstring) that start within the span; an
    `expected_start` off the grid therefore expects the next slot, as for an installation mid-interval.
    """
    _require(interval_s > 0, f"interval_s must be positive, got {interval_s}", "gap")
    start = _utc(expected_start, "gap expected_start")
    end = _utc(expected_end, "gap expected_end")
    if end < start:
        raise ValidationError(
            f"expected_end {format_instant(end)} is before expected_start {format_instant(start)}", "gap"
        )
    step_us = interval_s * 1_000_000
    present = {_epoch_us(_utc(t, f"gap present_starts[{i}]")) for i, t in enumerate(present_starts)}
    first_us = -(-_epoch_us(start) // step_us) * step_us  # the first grid slot at or after `start`
    end_us = _epoch_us(end)

    flags = []
    run_start: int | None = None
    slot = first_us
    while slot < end_us:
        if slot not in present:
            if run_start is None:
                run_start = slot
        elif run_start is not None:
            flags.append(_gap_flag(obis, run_start, slot, interval_s))
            run_start = None
        slot += step_us
    if run_start is not None:
        flags.append(_gap_flag(obis, run_start, slot, interval_s))
    return flags


def spike(intervals: Sequence[IntervalValue], max_power_w: float) -> list[Flag]:
    """Intervals whose mean power is above the rating: energy_wh × 3600 / interval_s > max_power_w (W).

    Applies to import and export alike: the service cable limits power in both directions.
    """
    _require_positive_power(max_power_w, "spike")
    flags = []
    for i, v in enumerate(intervals):
        start = _interval_start(v, f"spike intervals[{i}]")
        # Compared as products so that the verdict does not depend on float division.
        if v.energy_wh * 3600 > max_power_w * v.interval_s:
            power_w = v.energy_wh * 3600 / v.interval_s
            reason = (
                f"{format_energy_wh(v.energy_wh)} in {format_duration(v.interval_s)} = "
                f"{format_number(power_w)} W > {format_number(max_power_w)} W rating"
            )
            flags.append(Flag(Rule.SPIKE, v.obis, start, start + timedelta(seconds=v.interval_s), reason))
    return _sorted(flags)


def negative_consumption(
    intervals: Sequence[IntervalValue], registers: Sequence[RegisterValue]
) -> list[Flag]:
    """Negative interval energy, and cumulative registers falling between consecutive reads of one OBIS code.

    Two reads of one register at the same instant with different values are a conflict, not a decrease.
    """
    flags = []
    for i, v in enumerate(intervals):
        start = _interval_start(v, f"negative_consumption intervals[{i}]")
        if v.energy_wh < 0:
            end = start + timedelta(seconds=v.interval_s)
            reason = f"interval energy is {format_energy_wh(v.energy_wh)}: it cannot be negative"
            flags.append(Flag(Rule.NEGATIVE, v.obis, start, end, reason))
    for obis, reads in _registers_by_obis(registers, "negative_consumption").items():
        for (t0, wh0), (t1, wh1) in itertools.pairwise(reads):
            if wh1 < wh0:  # reads at one instant are sorted by value, so they never fall
                reason = (
                    f"register {obis} fell from {format_energy_wh(wh0)} at {format_instant(t0)} to "
                    f"{format_energy_wh(wh1)} at {format_instant(t1)} ({format_energy_wh(wh1 - wh0)}): "
                    "a cumulative register never decreases"
                )
                flags.append(Flag(Rule.NEGATIVE, obis, t0, t1, reason))
    return _sorted(flags)


def register_mismatch(
    before: RegisterValue, after: RegisterValue, intervals: Sequence[IntervalValue], tolerance_wh: int
) -> list[Flag]:
    """The register delta `after - before` against the sum of the intervals in `[before, after)`.

    Only the intervals of the register's own load-profile quantity count (`INTERVAL_OBIS_OF_REGISTER`:
    1-0:1.29.0 for 1-0:1.8.0, 1-0:2.29.0 for 1-0:2.8.0); others in `intervals` are ignored. The rule speaks
    only when those intervals tile the span exactly, one value per slot: a hole is a gap, two values for one
    slot are a conflict, and neither leaves a sum to compare.
    """
    if before.obis != after.obis:
        raise ValidationError(
            f"cannot compare two different registers ({before.obis} and {after.obis})", "register_mismatch"
        )
    interval_obis = INTERVAL_OBIS_OF_REGISTER.get(before.obis)
    if interval_obis is None:
        raise ValidationError(
            f"register {before.obis} has no load-profile quantity to compare with "
            f"(known: {', '.join(sorted(INTERVAL_OBIS_OF_REGISTER))})",
            "register_mismatch",
        )
    _require(tolerance_wh >= 0, f"tolerance_wh must be >= 0, got {tolerance_wh}", "register_mismatch")
    t0 = _utc(before.read_at, "register_mismatch before.read_at")
    t1 = _utc(after.read_at, "register_mismatch after.read_at")
    if t1 < t0:
        raise ValidationError(
            f"`after` was read at {format_instant(t1)}, before `before` at {format_instant(t0)}",
            "register_mismatch",
        )
    by_start: dict[datetime, set[tuple[int, int]]] = defaultdict(set)
    for i, v in enumerate(intervals):
        start = _interval_start(v, f"register_mismatch intervals[{i}]")
        if v.obis == interval_obis and start >= t0 and start + timedelta(seconds=v.interval_s) <= t1:
            by_start[start].add((v.interval_s, v.energy_wh))
    if t1 == t0 or any(len(versions) > 1 for versions in by_start.values()):
        return []
    cursor = t0
    interval_sum_wh = 0
    for start in sorted(by_start):
        ((interval_s, energy_wh),) = by_start[start]
        if start != cursor:
            return []
        cursor = start + timedelta(seconds=interval_s)
        interval_sum_wh += energy_wh
    if cursor != t1:
        return []
    delta_wh = after.energy_wh - before.energy_wh
    difference_wh = delta_wh - interval_sum_wh
    if abs(difference_wh) <= tolerance_wh:
        return []
    sign = "+" if difference_wh > 0 else ""
    reason = (
        f"register {before.obis} rose {format_energy_wh(delta_wh)} from {format_instant(t0)} to "
        f"{format_instant(t1)}, but its {len(by_start)} intervals ({interval_obis}) sum to "
        f"{format_energy_wh(interval_sum_wh)}: {sign}{format_energy_wh(difference_wh)} apart, "
        f"tolerance {format_energy_wh(tolerance_wh)}"
    )
    return [Flag(Rule.REGISTER_MISMATCH, before.obis, t0, t1, reason)]


def clock_drift(meter_time: datetime, received_at: datetime, max_drift_s: float) -> list[Flag]:
    """The meter's clock differs from the head-end's by more than `max_drift_s` seconds (either way).

    Flagged on the clock's OBIS code at `received_at`, the head-end's instant, which is the one to trust.
    """
    if not math.isfinite(max_drift_s) or max_drift_s < 0:
        raise ValidationError(
            f"max_drift_s must be a finite number of seconds >= 0, got {max_drift_s}", "clock_drift"
        )
    meter = _utc(meter_time, "clock_drift meter_time")
    head_end = _utc(received_at, "clock_drift received_at")
    drift_s = (meter - head_end).total_seconds()
    if abs(drift_s) <= max_drift_s:
        return []
    direction = "ahead of" if drift_s > 0 else "behind"
    reason = (
        f"meter clock {format_instant(meter)} is {format_number(abs(drift_s))} s {direction} the head-end's "
        f"{format_instant(head_end)}, more than the {format_number(max_drift_s)} s allowed"
    )
    return [Flag(Rule.CLOCK_DRIFT, CLOCK, head_end, head_end, reason)]


def zero_run(intervals: Sequence[IntervalValue], max_run_intervals: int) -> list[Flag]:
    """Runs of more than `max_run_intervals` consecutive 0 Wh intervals of one OBIS code.

    Consecutive means each interval starts where the previous one ends: a missing interval (a gap) ends
    the run.
    A slot holding several values counts as zero only when all of them are zero. `validate` does not run
    this rule on export intervals (see the module docstring).
    """
    _require(max_run_intervals >= 0, f"max_run_intervals must be >= 0, got {max_run_intervals}", "zero_run")
    flags = []
    for obis, slots in _interval_slots(intervals, "zero_run").items():
        run: list[tuple[datetime, datetime]] = []  # (start, end) of the zero slots of the current run
        for start, (end, energies) in sorted(slots.items()):
            is_zero = energies == {0}
            if run and (not is_zero or start != run[-1][1]):
                flags.extend(_zero_run_flag(obis, run, max_run_intervals))
                run = []
            if is_zero:
                run.append((start, end))
        flags.extend(_zero_run_flag(obis, run, max_run_intervals))
    return _sorted(flags)


def conflict(intervals: Sequence[IntervalValue], registers: Sequence[RegisterValue]) -> list[Flag]:
    """Two or more different values for the same OBIS code and interval start (or register read instant).

    Pass stored and incoming values together to find what a new reading contradicts.
    """
    flags = []
    versions: dict[tuple[str, datetime], set[tuple[int, int]]] = defaultdict(set)
    for i, v in enumerate(intervals):
        versions[v.obis, _interval_start(v, f"conflict intervals[{i}]")].add((v.interval_s, v.energy_wh))
    for (obis, start), found in versions.items():
        if len(found) > 1:
            values = ", ".join(
                f"{format_energy_wh(wh)} in {format_duration(length_s)}" for length_s, wh in sorted(found)
            )
            end = start + timedelta(seconds=max(length_s for length_s, _ in found))
            reason = f"{len(found)} different values for the interval from {format_instant(start)}: {values}"
            flags.append(Flag(Rule.CONFLICT, obis, start, end, reason))
    reads: dict[tuple[str, datetime], set[int]] = defaultdict(set)
    for i, r in enumerate(registers):
        reads[r.obis, _utc(r.read_at, f"conflict registers[{i}]")].add(r.energy_wh)
    for (obis, read_at), energies in reads.items():
        if len(energies) > 1:
            values = ", ".join(format_energy_wh(wh) for wh in sorted(energies))
            reason = f"{len(energies)} different register values read at {format_instant(read_at)}: {values}"
            flags.append(Flag(Rule.CONFLICT, obis, read_at, read_at, reason))
    return _sorted(flags)


def validate(
    intervals: Sequence[IntervalValue],
    registers: Sequence[RegisterValue],
    context: ValidationContext,
    *,
    meter_time: datetime | None = None,
    received_at: datetime | None = None,
) -> list[Flag]:
    """Run every rule that applies to one meter's values (see `RULES`); flags by start, end, OBIS, rule.

    `intervals` may mix OBIS codes. Gaps are sought per OBIS code between its first and last interval
    here; gaps against what is already stored are the caller's to find with `gap`. The clock is checked
    only when both `meter_time` and `received_at` are given. Raises ValidationError for values no rule can
    judge: a naive datetime, or an interval whose length is not the meter's load-profile interval.
    """
    for i, v in enumerate(intervals):
        where = f"intervals[{i}] ({v.obis} at {v.interval_start.isoformat()})"
        _utc(v.interval_start, where)
        if v.interval_s != context.interval_s:
            raise ValidationError(
                f"interval is {v.interval_s} s long, the meter's load profile is {context.interval_s} s",
                where,
            )
    for i, r in enumerate(registers):
        _utc(r.read_at, f"registers[{i}] ({r.obis})")

    flags: list[Flag] = []
    by_obis: dict[str, list[IntervalValue]] = defaultdict(list)
    for v in intervals:
        by_obis[v.obis].append(v)
    for obis, values in by_obis.items():
        starts = [v.interval_start for v in values]
        span_end = max(starts) + timedelta(seconds=context.interval_s)
        flags += gap(starts, min(starts), span_end, context.interval_s, obis)
        if obis not in ZERO_RUN_EXEMPT:
            flags += zero_run(values, context.max_zero_run_intervals)
    flags += spike(intervals, context.max_power_w)
    flags += negative_consumption(intervals, registers)
    flags += conflict(intervals, registers)
    flags += _register_mismatches(intervals, registers, context.register_tolerance_wh)
    if meter_time is not None and received_at is not None:
        flags += clock_drift(meter_time, received_at, context.max_clock_drift_s)
    return _sorted(flags)


# The table of rules: each rule's function, whose docstring says what it flags and on which values.
RULES: Mapping[Rule, Callable[..., list[Flag]]] = MappingProxyType(
    {
        Rule.GAP: gap,
        Rule.SPIKE: spike,
        Rule.NEGATIVE: negative_consumption,
        Rule.REGISTER_MISMATCH: register_mismatch,
        Rule.CLOCK_DRIFT: clock_drift,
        Rule.ZERO_RUN: zero_run,
        Rule.CONFLICT: conflict,
    }
)


# --- helpers ----------------------------------------------------------------------------------------------


def _register_mismatches(
    intervals: Sequence[IntervalValue], registers: Sequence[RegisterValue], tolerance_wh: int
) -> list[Flag]:
    """`register_mismatch` over consecutive, unambiguous, non-decreasing reads of comparable registers."""
    flags = []
    for obis, reads in _registers_by_obis(registers, "validate").items():
        if obis not in INTERVAL_OBIS_OF_REGISTER:
            continue
        by_instant: dict[datetime, set[int]] = defaultdict(set)
        for read_at, energy_wh in reads:
            by_instant[read_at].add(energy_wh)
        # A read with two values is a conflict and cannot anchor a comparison; its neighbours still can.
        clear = [(t, next(iter(e))) for t, e in sorted(by_instant.items()) if len(e) == 1]
        for (t0, wh0), (t1, wh1) in itertools.pairwise(clear):
            if wh1 >= wh0:  # a decrease is already a NEGATIVE flag
                before, after = RegisterValue(obis, t0, wh0), RegisterValue(obis, t1, wh1)
                flags += register_mismatch(before, after, intervals, tolerance_wh)
    return flags


def _registers_by_obis(
    registers: Iterable[RegisterValue], where: str
) -> dict[str, list[tuple[datetime, int]]]:
    """(read_at UTC, energy_wh) per OBIS code, sorted by instant then value."""
    out: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    for i, r in enumerate(registers):
        out[r.obis].append((_utc(r.read_at, f"{where} registers[{i}]"), r.energy_wh))
    for reads in out.values():
        reads.sort()
    return out


def _interval_slots(
    intervals: Iterable[IntervalValue], where: str
) -> dict[str, dict[datetime, tuple[datetime, set[int]]]]:
    """Per OBIS code: interval start -> (latest end, the set of energies given for that start)."""
    out: dict[str, dict[datetime, tuple[datetime, set[int]]]] = defaultdict(dict)
    for i, v in enumerate(intervals):
        start = _interval_start(v, f"{where} intervals[{i}]")
        end = start + timedelta(seconds=v.interval_s)
        previous_end, energies = out[v.obis].get(start, (end, set()))
        energies.add(v.energy_wh)
        out[v.obis][start] = (max(end, previous_end), energies)
    return out


def _zero_run_flag(obis: str, run: list[tuple[datetime, datetime]], max_run_intervals: int) -> list[Flag]:
    if len(run) <= max_run_intervals:
        return []
    start, end = run[0][0], run[-1][1]
    reason = (
        f"{len(run)} consecutive intervals of 0 Wh ({format_duration(int((end - start).total_seconds()))}) "
        f"from {format_instant(start)} to {format_instant(end)}, more than the {max_run_intervals} allowed"
    )
    return [Flag(Rule.ZERO_RUN, obis, start, end, reason)]


def _gap_flag(obis: str, first_us: int, end_us: int, interval_s: int) -> Flag:
    start = EPOCH + first_us * _ONE_US
    end = EPOCH + end_us * _ONE_US
    count = (end_us - first_us) // (interval_s * 1_000_000)
    if count == 1:
        what = f"1 interval of {format_duration(interval_s)} missing"
    else:
        total = format_duration(count * interval_s)
        what = f"{count} intervals of {format_duration(interval_s)} missing ({total})"
    reason = f"{what} from {format_instant(start)} to {format_instant(end)}"
    return Flag(Rule.GAP, obis, start, end, reason)


_RULE_ORDER = {rule: n for n, rule in enumerate(Rule)}


def _sorted(flags: list[Flag]) -> list[Flag]:
    return sorted(flags, key=lambda f: (f.start, f.end, f.obis, _RULE_ORDER[f.rule]))


def _epoch_us(instant: datetime) -> int:
    return (instant - EPOCH) // _ONE_US


def _utc(instant: datetime, where: str) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValidationError(f"naive datetime {instant.isoformat()}: instants must be timezone-aware", where)
    return instant.astimezone(UTC)


def _interval_start(value: IntervalValue, where: str) -> datetime:
    """The interval's start in UTC, after checking that it is aware and its length positive."""
    if value.interval_s <= 0:
        raise ValidationError(
            f"interval length must be positive, got {value.interval_s} s ({value.obis})", where
        )
    return _utc(value.interval_start, where)


def _require_positive_power(max_power_w: float, where: str) -> None:
    _require(
        math.isfinite(max_power_w) and max_power_w > 0,
        f"max_power_w must be a finite power in W > 0, got {max_power_w}",
        where,
    )


def _require(ok: bool, message: str, where: str) -> None:
    if not ok:
        raise ValidationError(message, where)
