"""VEE validation rules: pure checks of one meter's interval and register values.

Each rule is a function named after what it detects. It takes plain values (no session, clock or I/O),
ignores the order of its input, accepts empty input, and returns one `Flag` per problem, whose reason
carries the numbers and units. `validate` is the one dispatcher; `RULES` is the table of rules.

Export intervals (1-0:2.29.0) get every check that import intervals get except the zero run: exporting
nothing all day is what a house without solar panels does, so 0 Wh of export says nothing about the meter.

Interval starts live on the grid of `interval_s`-long intervals counted from the Unix epoch (UTC midnight),
the grid of `openami.common.units.floor_to_interval`. A value whose start is off that grid fills no grid
slot, so the slot it should have filled is reported as a gap.

`validate` runs on the ingest hot path, so the rules' logic lives in `rule_cores`, on values already
checked and with instants in whole microseconds since the epoch: each rule here checks its own input and
calls its core; `validate` checks everything once and calls the cores directly. `Rule`, `Flag` and the
wording of reasons come from `findings`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from types import MappingProxyType

from openami.common.errors import ValidationError
from openami.common.obis import (
    ACTIVE_EXPORT_INTERVAL,
    ACTIVE_EXPORT_TOTAL,
    ACTIVE_IMPORT_INTERVAL,
    ACTIVE_IMPORT_TOTAL,
    CLOCK,
)
from openami.readings import rule_cores as core
from openami.readings.findings import (
    Flag,
    Rule,
    format_duration,
    format_energy_wh,
    format_instant,
    format_number,
)
from openami.readings.interfaces import IntervalValue, RegisterValue
from openami.readings.rule_cores import EPOCH, ONE_US, Item, Read

__all__ = [
    "EPOCH",
    "INTERVAL_OBIS_OF_REGISTER",
    "RULES",
    "ZERO_RUN_EXEMPT",
    "Flag",
    "Rule",
    "ValidationContext",
    "clock_drift",
    "conflict",
    "format_duration",
    "format_energy_wh",
    "format_instant",
    "format_number",
    "gap",
    "negative_consumption",
    "register_mismatch",
    "spike",
    "validate",
    "zero_run",
]

# The load-profile quantity whose intervals add up to each cumulative register; per-rate registers
# (1-0:1.8.1 ...) have none, because the load profile does not split energy by tariff rate.
INTERVAL_OBIS_OF_REGISTER: Mapping[str, str] = MappingProxyType(
    {ACTIVE_IMPORT_TOTAL: ACTIVE_IMPORT_INTERVAL, ACTIVE_EXPORT_TOTAL: ACTIVE_EXPORT_INTERVAL}
)
# Interval quantities for which long runs of 0 Wh are normal (see the module docstring).
ZERO_RUN_EXEMPT: frozenset[str] = frozenset({ACTIVE_EXPORT_INTERVAL})
_START_US = itemgetter(0)


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
    present = [
        ((t if t.tzinfo is UTC else _utc(t, f"gap present_starts[{i}]")) - EPOCH) // ONE_US
        for i, t in enumerate(present_starts)
    ]
    step_us = interval_s * core.US_PER_S
    first_us = -(-core.to_epoch_us(start) // step_us) * step_us  # the first grid slot at or after `start`
    return core.gaps(obis, present, first_us, core.to_epoch_us(end), interval_s)


def spike(intervals: Sequence[IntervalValue], max_power_w: float) -> list[Flag]:
    """Intervals whose mean power is above the rating: energy_wh × 3600 / interval_s > max_power_w (W).

    Applies to import and export alike: the service cable limits power in both directions.
    """
    _require_positive_power(max_power_w, "spike")
    flags = []
    for obis, items in _interval_items(intervals, "spike").items():
        flags += core.spikes(obis, items, max_power_w)
    return _sorted(flags)


def negative_consumption(
    intervals: Sequence[IntervalValue], registers: Sequence[RegisterValue]
) -> list[Flag]:
    """Negative interval energy, and cumulative registers falling between consecutive reads of one OBIS code.

    Two reads of one register at the same instant with different values are a conflict, not a decrease.
    """
    flags = []
    for obis, items in _interval_items(intervals, "negative_consumption").items():
        flags += core.negative_intervals(obis, items)
    for obis, reads in _register_reads(registers, "negative_consumption").items():
        flags += core.falling_registers(obis, reads)
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
    items = sorted(_interval_items(intervals, "register_mismatch").get(interval_obis, ()))
    first_read = (core.to_epoch_us(t0), before.energy_wh)
    last_read = (core.to_epoch_us(t1), after.energy_wh)
    return core.register_mismatch(before.obis, first_read, last_read, interval_obis, items, tolerance_wh)


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
    for obis, items in _interval_items(intervals, "zero_run").items():
        flags += core.zero_runs(obis, items, max_run_intervals)
    return _sorted(flags)


def conflict(intervals: Sequence[IntervalValue], registers: Sequence[RegisterValue]) -> list[Flag]:
    """Two or more different values for the same OBIS code and interval start (or register read instant).

    Pass stored and incoming values together to find what a new reading contradicts.
    """
    flags = []
    for obis, items in _interval_items(intervals, "conflict").items():
        flags += core.interval_conflicts(obis, items)
    for obis, reads in _register_reads(registers, "conflict").items():
        flags += core.register_conflicts(obis, reads)
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
    interval_s = context.interval_s
    series: dict[str, list[Item]] = {}
    for i, v in enumerate(intervals):
        start = v.interval_start
        if start.tzinfo is not UTC or v.interval_s != interval_s:
            # The checks and their messages, built only for the rare value that is not plain UTC.
            where = f"intervals[{i}] ({v.obis} at {start.isoformat()})"
            start = _utc(start, where)
            if v.interval_s != interval_s:
                raise ValidationError(
                    f"interval is {v.interval_s} s long, the meter's load profile is {interval_s} s", where
                )
        item = ((start - EPOCH) // ONE_US, interval_s, v.energy_wh)
        found = series.get(v.obis)
        if found is None:
            series[v.obis] = [item]
        else:
            found.append(item)
    for i, r in enumerate(registers):
        if r.read_at.tzinfo is not UTC:
            _utc(r.read_at, f"registers[{i}] ({r.obis})")
    reads = _register_reads(registers, "validate")

    flags: list[Flag] = []
    step_us = interval_s * core.US_PER_S
    ordered: dict[str, list[Item]] = {}
    for obis, items in series.items():
        flags += core.spikes(obis, items, context.max_power_w)
        flags += core.negative_intervals(obis, items)
        flags += core.interval_conflicts(obis, items)
        ordered[obis] = by_start = sorted(items)
        first_us, last_us = by_start[0][0], by_start[-1][0]
        grid_first_us = -(-first_us // step_us) * step_us
        flags += core.gaps(obis, list(map(_START_US, by_start)), grid_first_us, last_us + step_us, interval_s)
        if obis not in ZERO_RUN_EXEMPT:
            flags += core.zero_runs(obis, by_start, context.max_zero_run_intervals)
    for obis, obis_reads in reads.items():
        flags += core.falling_registers(obis, obis_reads)
        flags += core.register_conflicts(obis, obis_reads)
        interval_obis = INTERVAL_OBIS_OF_REGISTER.get(obis)
        if interval_obis is not None:
            by_start = ordered.get(interval_obis, [])
            tolerance_wh = context.register_tolerance_wh
            flags += core.register_mismatches(obis, obis_reads, interval_obis, by_start, tolerance_wh)
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


def _interval_items(intervals: Iterable[IntervalValue], where: str) -> dict[str, list[Item]]:
    """The values per OBIS code, in input order, each checked as `_interval_start` does."""
    out: dict[str, list[Item]] = {}
    for i, v in enumerate(intervals):
        start = v.interval_start
        if start.tzinfo is not UTC or v.interval_s <= 0:
            start = _interval_start(v, f"{where} intervals[{i}]")
        item = ((start - EPOCH) // ONE_US, v.interval_s, v.energy_wh)
        found = out.get(v.obis)
        if found is None:
            out[v.obis] = [item]
        else:
            found.append(item)
    return out


def _register_reads(registers: Iterable[RegisterValue], where: str) -> dict[str, list[Read]]:
    """(read_at µs, energy_wh) per OBIS code, sorted by instant then value."""
    out: dict[str, list[Read]] = defaultdict(list)
    for i, r in enumerate(registers):
        read_at = r.read_at if r.read_at.tzinfo is UTC else _utc(r.read_at, f"{where} registers[{i}]")
        out[r.obis].append(((read_at - EPOCH) // ONE_US, r.energy_wh))
    for reads in out.values():
        reads.sort()
    return out


_RULE_ORDER = {rule: n for n, rule in enumerate(Rule)}


def _sorted(flags: list[Flag]) -> list[Flag]:
    return sorted(flags, key=lambda f: (f.start, f.end, f.obis, _RULE_ORDER[f.rule]))


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
