"""The rules' cores against plain slot-by-slot definitions, and the shortcuts they take for complete series.

The cores decide the usual case (a complete series, nothing wrong) with whole-list comparisons; these tests
hold them to the straightforward definitions on random series with holes, repeats, off-grid starts and mixed
lengths, and pin the boundaries of each shortcut.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from openami.common.obis import ACTIVE_EXPORT_INTERVAL, ACTIVE_IMPORT_INTERVAL, ACTIVE_IMPORT_TOTAL
from openami.readings import rule_cores as core
from openami.readings.interfaces import IntervalValue, RegisterValue
from openami.readings.rules import (
    Rule,
    ValidationContext,
    conflict,
    gap,
    negative_consumption,
    register_mismatch,
    spike,
    validate,
    zero_run,
)

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
T0_US = core.to_epoch_us(T0)
STEP_US = 900 * core.US_PER_S
RATING_W = 13_800.0


def _missing_runs(present_us: list[int], first_us: int, end_us: int, step_us: int) -> list[tuple[int, int]]:
    """The definition of a gap: walk every grid slot of the span and collect the runs nobody fills."""
    present, runs, slot = set(present_us), [], first_us
    while slot < end_us:
        if slot not in present:
            if runs and runs[-1][1] == slot:
                runs[-1] = (runs[-1][0], slot + step_us)
            else:
                runs.append((slot, slot + step_us))
        slot += step_us
    return runs


def _tiling(items: list[core.Item], t0_us: int, t1_us: int) -> tuple[int, int] | None:
    """The definition of a tiling: the values lying within the span, one per start, end to end."""
    by_start: dict[int, set[tuple[int, int]]] = defaultdict(set)
    for start_us, length_s, energy_wh in items:
        if start_us >= t0_us and start_us + length_s * core.US_PER_S <= t1_us:
            by_start[start_us].add((length_s, energy_wh))
    if t1_us == t0_us or any(len(versions) > 1 for versions in by_start.values()):
        return None
    cursor, total = t0_us, 0
    for start_us in sorted(by_start):
        ((length_s, energy_wh),) = by_start[start_us]
        if start_us != cursor:
            return None
        cursor, total = start_us + length_s * core.US_PER_S, total + energy_wh
    return (len(by_start), total) if cursor == t1_us else None


# Slots 0..23 mostly on the grid; some starts 7 s or 450 s off it, some values twice, some half as long.
_slot = st.integers(0, 23)
_offset = st.sampled_from([0, 0, 0, 0, 0, 0, 7, 450])
_length = st.sampled_from([900, 900, 900, 900, 450, 1800])
_item = st.tuples(_slot, _offset, _length, st.integers(0, 300)).map(
    lambda t: (T0_US + t[0] * STEP_US + t[1] * core.US_PER_S, t[2], t[3])
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_slot, max_size=30),
    st.lists(st.integers(-3, 3), max_size=3),
    st.booleans(),
    st.integers(0, 26),
)
def test_gaps_match_the_slot_by_slot_definition(slots, strays, shuffled, span_slots) -> None:
    present = [T0_US + s * STEP_US for s in sorted(slots)] + [T0_US + s * core.US_PER_S for s in strays]
    if shuffled:
        present.reverse()
    end_us = T0_US + span_slots * STEP_US + (7 * core.US_PER_S if span_slots % 2 else 0)

    found = [
        (core.to_epoch_us(f.start), core.to_epoch_us(f.end))
        for f in core.gaps("x", present, T0_US, end_us, 900)
    ]

    assert found == _missing_runs(present, T0_US, end_us, STEP_US)


def test_gaps_shortcut_is_taken_only_for_exactly_the_expected_slots() -> None:
    complete = [T0_US + n * STEP_US for n in range(8)]
    end_us = T0_US + 8 * STEP_US
    assert core.gaps("x", complete, T0_US, end_us, 900) == []
    assert core.gaps("x", complete[::-1], T0_US, end_us, 900) == []  # any order, through the walk
    assert core.gaps("x", [*complete, complete[3]], T0_US, end_us, 900) == []  # a repeat fills nothing twice
    (hole,) = core.gaps("x", complete[:-1], T0_US, end_us, 900)
    assert (hole.start, hole.end) == (T0 + 7 * timedelta(minutes=15), T0 + 8 * timedelta(minutes=15))


@settings(max_examples=400, deadline=None)
@given(st.lists(_item, max_size=30), st.integers(0, 24), st.integers(0, 24), st.sampled_from([0, 0, 7, 450]))
def test_the_register_tiling_matches_its_definition(items, first, last, offset_s) -> None:
    t0_us = T0_US + min(first, last) * STEP_US
    t1_us = T0_US + max(first, last) * STEP_US + offset_s * core.US_PER_S
    by_start = sorted(items)
    expected = _tiling(items, t0_us, t1_us)
    before, after = (t0_us, 0), (t1_us, 10**9)  # far apart: any tiling is a mismatch and says its sum

    found = core.register_mismatch(ACTIVE_IMPORT_TOTAL, before, after, ACTIVE_IMPORT_INTERVAL, by_start, 0)

    if expected is None:
        assert found == []
    else:
        count, total_wh = expected
        (flag,) = found
        assert f"its {count} intervals" in flag.reason
        assert f"sum to {total_wh:,} Wh".replace(",", " ") in flag.reason


def test_a_span_that_is_not_a_whole_number_of_intervals_is_not_tiled() -> None:
    # Four 15-minute values from 10:00, registers at 10:00 and 10:52:30: the fourth value ends after the
    # second read, so the values do not tile the span and there is no sum to compare.
    values = [
        IntervalValue(ACTIVE_IMPORT_INTERVAL, T0 + n * timedelta(minutes=15), 900, 100) for n in range(4)
    ]
    before = RegisterValue(ACTIVE_IMPORT_TOTAL, T0, 10_000)
    after = RegisterValue(ACTIVE_IMPORT_TOTAL, T0 + timedelta(minutes=52, seconds=30), 90_000)
    assert register_mismatch(before, after, values, 1) == []


def test_the_spike_shortcut_judges_each_value_by_its_own_length() -> None:
    # 3 450 Wh in 15 min is the rating exactly; 3 451 Wh in 30 min is half of it: neither is a spike,
    # although 3 451 Wh in the shortest interval would be one.
    fine = [
        IntervalValue(ACTIVE_IMPORT_INTERVAL, T0, 900, 3_450),
        IntervalValue(ACTIVE_IMPORT_INTERVAL, T0 + timedelta(hours=1), 1_800, 3_451),
    ]
    assert spike(fine, RATING_W) == []
    # 3 451 Wh in 15 min is a spike, even beside a 30-minute value that could hold twice as much.
    short = [IntervalValue(ACTIVE_IMPORT_INTERVAL, T0, 900, 3_451), fine[1]]
    assert [f.start for f in spike(short, RATING_W)] == [T0]


def test_a_single_zero_is_a_run_when_no_run_is_allowed() -> None:
    values = [
        IntervalValue(ACTIVE_IMPORT_INTERVAL, T0 + n * timedelta(minutes=15), 900, wh)
        for n, wh in enumerate([0, 5])
    ]
    assert [(f.rule, f.start) for f in zero_run(values, 0)] == [(Rule.ZERO_RUN, T0)]
    assert zero_run(values[1:], 0) == []


_zone = st.sampled_from([UTC, UTC, timezone(timedelta(hours=3)), timezone(timedelta(hours=-4, minutes=-30))])
_value = st.tuples(
    st.sampled_from([ACTIVE_IMPORT_INTERVAL, ACTIVE_IMPORT_INTERVAL, ACTIVE_EXPORT_INTERVAL]),
    st.integers(0, 40),
    _offset,
    st.sampled_from([0, 0, 0, 120, 4_000, -2]),
    _zone,
).map(
    lambda t: IntervalValue(
        t[0], (T0 + timedelta(minutes=15 * t[1], seconds=t[2])).astimezone(t[4]), 900, t[3]
    )
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_value, max_size=60), st.lists(st.tuples(st.integers(0, 41), st.integers(0, 9_000)), max_size=4)
)
def test_validate_agrees_with_each_rule_run_on_its_own(values, reads) -> None:
    registers = [RegisterValue(ACTIVE_IMPORT_TOTAL, T0 + timedelta(minutes=15 * k), wh) for k, wh in reads]
    context = ValidationContext(interval_s=900, max_power_w=RATING_W, max_zero_run_intervals=3)

    flags = validate(values, registers, context)

    def of(*rules: Rule) -> list:
        return [f for f in flags if f.rule in rules]

    assert of(Rule.SPIKE) == spike(values, RATING_W)
    assert of(Rule.NEGATIVE) == negative_consumption(values, registers)
    assert of(Rule.CONFLICT) == conflict(values, registers)
    imports = [v for v in values if v.obis == ACTIVE_IMPORT_INTERVAL]
    assert of(Rule.ZERO_RUN) == zero_run(imports, 3)
    expected_gaps = []
    for obis in {v.obis for v in values}:
        starts = [v.interval_start for v in values if v.obis == obis]
        expected_gaps += gap(starts, min(starts), max(starts) + timedelta(minutes=15), 900, obis)
    assert sorted(of(Rule.GAP), key=lambda f: (f.start, f.obis)) == sorted(
        expected_gaps, key=lambda f: (f.start, f.obis)
    )
