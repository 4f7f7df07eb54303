"""The cores of the VEE rules: checked values of one OBIS code, instants in whole µs since the epoch (UTC).

`rules` checks and converts its input once, then calls these; each returns its flags unsorted. Instants
become datetimes again only in the flags, which are rare.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from operator import itemgetter

from openami.readings.findings import (
    Flag,
    Rule,
    format_duration,
    format_energy_wh,
    format_instant,
    format_number,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
US_PER_S = 1_000_000

Item = tuple[int, int, int]  # an interval value: (start µs, interval_s, energy_wh)
Read = tuple[int, int]  # a register read: (read_at µs, energy_wh)
_START_US = itemgetter(0)
_LENGTH_S = itemgetter(1)
_ENERGY_WH = itemgetter(2)


def gaps(obis: str, present_us: list[int], first_us: int, end_us: int, interval_s: int) -> list[Flag]:
    """Runs of grid slots from `first_us` (on the grid) up to `end_us` that no present start fills."""
    step_us = interval_s * US_PER_S
    if present_us == list(range(first_us, end_us, step_us)):
        return []  # exactly the expected slots, in order: the usual complete series, checked at C speed
    slots = sorted({t for t in present_us if first_us <= t < end_us and not t % step_us})
    flags = []
    expected_us = first_us
    for slot_us in slots:
        if slot_us != expected_us:
            flags.append(_gap_flag(obis, expected_us, slot_us, interval_s))
        expected_us = slot_us + step_us
    if expected_us < end_us:
        # The last run ends on the grid: at the first slot at or after `end_us`.
        flags.append(_gap_flag(obis, expected_us, -(-end_us // step_us) * step_us, interval_s))
    return flags


def spikes(obis: str, items: list[Item], max_power_w: float) -> list[Flag]:
    """Values whose mean power is above `max_power_w`, in the order given."""
    if max(map(_ENERGY_WH, items), default=0) * 3600 <= max_power_w * min(map(_LENGTH_S, items), default=1):
        return []  # the most energy in the shortest interval is within the rating: every value is
    flags = []
    for start_us, interval_s, energy_wh in items:
        # Compared as products so that the verdict does not depend on float division.
        if energy_wh * 3600 > max_power_w * interval_s:
            power_w = energy_wh * 3600 / interval_s
            reason = (
                f"{format_energy_wh(energy_wh)} in {format_duration(interval_s)} = "
                f"{format_number(power_w)} W > {format_number(max_power_w)} W rating"
            )
            start = from_epoch_us(start_us)
            flags.append(Flag(Rule.SPIKE, obis, start, start + timedelta(seconds=interval_s), reason))
    return flags


def negative_intervals(obis: str, items: list[Item]) -> list[Flag]:
    """Values below 0 Wh, in the order given."""
    if min(map(_ENERGY_WH, items), default=0) >= 0:
        return []
    flags = []
    for start_us, interval_s, energy_wh in items:
        if energy_wh < 0:
            start = from_epoch_us(start_us)
            reason = f"interval energy is {format_energy_wh(energy_wh)}: it cannot be negative"
            flags.append(Flag(Rule.NEGATIVE, obis, start, start + timedelta(seconds=interval_s), reason))
    return flags


def falling_registers(obis: str, reads: list[Read]) -> list[Flag]:
    """Consecutive reads (sorted by instant, then value) where the register fell."""
    flags = []
    for (t0_us, wh0), (t1_us, wh1) in itertools.pairwise(reads):
        if wh1 < wh0:  # reads at one instant are sorted by value, so they never fall
            t0, t1 = from_epoch_us(t0_us), from_epoch_us(t1_us)
            reason = (
                f"register {obis} fell from {format_energy_wh(wh0)} at {format_instant(t0)} to "
                f"{format_energy_wh(wh1)} at {format_instant(t1)} ({format_energy_wh(wh1 - wh0)}): "
                "a cumulative register never decreases"
            )
            flags.append(Flag(Rule.NEGATIVE, obis, t0, t1, reason))
    return flags


def zero_runs(obis: str, items: list[Item], max_run_intervals: int) -> list[Flag]:
    """Runs of more than `max_run_intervals` consecutive slots whose every value is 0 Wh."""
    if 0 not in map(_ENERGY_WH, items):
        return []
    slots: dict[int, tuple[int, set[int]]] = {}  # start -> (latest end, the energies given for it)
    for start_us, interval_s, energy_wh in items:
        end_us = start_us + interval_s * US_PER_S
        previous_end_us, energies = slots.get(start_us, (end_us, set()))
        energies.add(energy_wh)
        slots[start_us] = (max(end_us, previous_end_us), energies)
    flags = []
    run: list[tuple[int, int]] = []  # (start, end) of the zero slots of the current run
    for start_us, (end_us, energies) in sorted(slots.items()):
        is_zero = energies == {0}
        if run and (not is_zero or start_us != run[-1][1]):
            flags += _zero_run_flag(obis, run, max_run_intervals)
            run = []
        if is_zero:
            run.append((start_us, end_us))
    return flags + _zero_run_flag(obis, run, max_run_intervals)


def interval_conflicts(obis: str, items: list[Item]) -> list[Flag]:
    """Starts given with two or more different (interval_s, energy_wh)."""
    if len({start_us for start_us, _, _ in items}) == len(items):
        return []  # one value per start: nothing to contradict
    versions: dict[int, set[tuple[int, int]]] = defaultdict(set)
    for start_us, interval_s, energy_wh in items:
        versions[start_us].add((interval_s, energy_wh))
    flags = []
    for start_us, found in versions.items():
        if len(found) > 1:
            values = ", ".join(
                f"{format_energy_wh(wh)} in {format_duration(length_s)}" for length_s, wh in sorted(found)
            )
            start = from_epoch_us(start_us)
            end = start + timedelta(seconds=max(length_s for length_s, _ in found))
            reason = f"{len(found)} different values for the interval from {format_instant(start)}: {values}"
            flags.append(Flag(Rule.CONFLICT, obis, start, end, reason))
    return flags


def register_conflicts(obis: str, reads: list[Read]) -> list[Flag]:
    """Instants read with several values; `reads` sorted by instant, then value."""
    flags = []
    for read_us, group in itertools.groupby(reads, key=lambda read: read[0]):
        energies = sorted({wh for _, wh in group})
        if len(energies) > 1:
            read_at = from_epoch_us(read_us)
            values = ", ".join(format_energy_wh(wh) for wh in energies)
            reason = f"{len(energies)} different register values read at {format_instant(read_at)}: {values}"
            flags.append(Flag(Rule.CONFLICT, obis, read_at, read_at, reason))
    return flags


def register_mismatches(
    obis: str, reads: list[Read], interval_obis: str, by_start: list[Item], tolerance_wh: int
) -> list[Flag]:
    """`register_mismatch` over consecutive, unambiguous, non-decreasing reads of register `obis`.

    `by_start` holds the values of `interval_obis`, the register's load-profile quantity, sorted.
    """
    # A read with two values is a conflict and cannot anchor a comparison; its neighbours still can.
    clear = [
        group[0]
        for group in (list(g) for _, g in itertools.groupby(reads, key=lambda read: read[0]))
        if all(wh == group[0][1] for _, wh in group)
    ]
    flags = []
    for before, after in itertools.pairwise(clear):
        if after[1] >= before[1]:  # a decrease is already a NEGATIVE flag
            flags += register_mismatch(obis, before, after, interval_obis, by_start, tolerance_wh)
    return flags


def register_mismatch(
    obis: str, before: Read, after: Read, interval_obis: str, by_start: list[Item], tolerance_wh: int
) -> list[Flag]:
    """Reads `before` and `after` (not earlier) of register `obis` against the sum of its intervals.

    `by_start` holds the values of `interval_obis`, the register's load-profile quantity, sorted; only
    those lying within `[before, after)` count, and only when they tile it one value per slot.
    """
    (t0_us, wh0), (t1_us, wh1) = before, after
    if t1_us == t0_us:
        return []
    window = by_start[bisect_left(by_start, (t0_us,)) : bisect_left(by_start, (t1_us,))]
    tiling = _tiling_sum(window, t0_us, t1_us)
    if tiling is None:
        return []
    count, interval_sum_wh = tiling
    delta_wh = wh1 - wh0
    difference_wh = delta_wh - interval_sum_wh
    if abs(difference_wh) <= tolerance_wh:
        return []
    t0, t1 = from_epoch_us(t0_us), from_epoch_us(t1_us)
    sign = "+" if difference_wh > 0 else ""
    reason = (
        f"register {obis} rose {format_energy_wh(delta_wh)} from {format_instant(t0)} to "
        f"{format_instant(t1)}, but its {count} intervals ({interval_obis}) sum to "
        f"{format_energy_wh(interval_sum_wh)}: {sign}{format_energy_wh(difference_wh)} apart, "
        f"tolerance {format_energy_wh(tolerance_wh)}"
    )
    return [Flag(Rule.REGISTER_MISMATCH, obis, t0, t1, reason)]


def _tiling_sum(window: list[Item], t0_us: int, t1_us: int) -> tuple[int, int] | None:
    """(count, energy_wh sum) of the values tiling `[t0, t1)` one per slot, from `window`, the sorted values
    starting in it; None when they leave a hole or give two values for one slot."""
    if window:
        # The usual case, checked at C speed: equal lengths, one value per slot, slots end to end up to t1.
        length_s = window[0][1]
        step_us = length_s * US_PER_S
        if (
            (t1_us - t0_us) % step_us == 0
            and list(map(_START_US, window)) == list(range(t0_us, t1_us, step_us))
            and set(map(_LENGTH_S, window)) == {length_s}
        ):
            return len(window), sum(map(_ENERGY_WH, window))
    cursor_us, interval_sum_wh, count = t0_us, 0, 0
    last: Item | None = None
    for item in window:
        start_us, interval_s, energy_wh = item
        if start_us + interval_s * US_PER_S > t1_us or item == last:
            continue  # ends after the span, or repeats the value just counted
        if start_us != cursor_us:
            return None  # a hole (a gap), or a second value for the slot just counted (a conflict)
        cursor_us = start_us + interval_s * US_PER_S
        interval_sum_wh += energy_wh
        count += 1
        last = item
    return (count, interval_sum_wh) if cursor_us == t1_us else None


def _zero_run_flag(obis: str, run: list[tuple[int, int]], max_run_intervals: int) -> list[Flag]:
    if len(run) <= max_run_intervals:
        return []
    start, end = from_epoch_us(run[0][0]), from_epoch_us(run[-1][1])
    reason = (
        f"{len(run)} consecutive intervals of 0 Wh ({format_duration(int((end - start).total_seconds()))}) "
        f"from {format_instant(start)} to {format_instant(end)}, more than the {max_run_intervals} allowed"
    )
    return [Flag(Rule.ZERO_RUN, obis, start, end, reason)]


def _gap_flag(obis: str, first_us: int, end_us: int, interval_s: int) -> Flag:
    start = from_epoch_us(first_us)
    end = from_epoch_us(end_us)
    count = (end_us - first_us) // (interval_s * US_PER_S)
    if count == 1:
        what = f"1 interval of {format_duration(interval_s)} missing"
    else:
        total = format_duration(count * interval_s)
        what = f"{count} intervals of {format_duration(interval_s)} missing ({total})"
    reason = f"{what} from {format_instant(start)} to {format_instant(end)}"
    return Flag(Rule.GAP, obis, start, end, reason)


def to_epoch_us(instant: datetime) -> int:
    """An aware instant as whole microseconds since the epoch."""
    return (instant - EPOCH) // ONE_US


def from_epoch_us(epoch_us: int) -> datetime:
    """Whole microseconds since the epoch as an aware UTC datetime."""
    return EPOCH + epoch_us * ONE_US
