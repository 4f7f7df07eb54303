"""The VEE validation rules: each rule's positive and negative cases, its boundaries, and `validate`."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openami.common.errors import ValidationError
from openami.common.obis import (
    ACTIVE_EXPORT_INTERVAL,
    ACTIVE_EXPORT_TOTAL,
    ACTIVE_IMPORT_INTERVAL,
    ACTIVE_IMPORT_TOTAL,
    CLOCK,
)
from openami.readings.interfaces import IntervalValue, RegisterValue
from openami.readings.rules import (
    RULES,
    Flag,
    Rule,
    ValidationContext,
    clock_drift,
    conflict,
    format_duration,
    format_energy_wh,
    format_instant,
    format_number,
    gap,
    negative_consumption,
    register_mismatch,
    spike,
    validate,
    zero_run,
)

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
Q = timedelta(minutes=15)
RATING_W = 13_800.0  # 60 A × 230 V


def at(k: int) -> datetime:
    """The start of the k-th 15-minute interval after T0."""
    return T0 + k * Q


def iv(k: int, energy_wh: int, obis: str = ACTIVE_IMPORT_INTERVAL, interval_s: int = 900) -> IntervalValue:
    return IntervalValue(obis, at(k), interval_s, energy_wh)


def reg(k: int, energy_wh: int, obis: str = ACTIVE_IMPORT_TOTAL) -> RegisterValue:
    return RegisterValue(obis, at(k), energy_wh)


T = TypeVar("T")


def shuffled(items: list[T], seed: int = 7) -> list[T]:
    out = list(items)
    random.Random(seed).shuffle(out)
    return out


def test_rule_names_are_the_stored_codes() -> None:
    assert [r.value for r in Rule] == [
        "gap",
        "spike",
        "negative",
        "register_mismatch",
        "clock_drift",
        "zero_run",
        "conflict",
    ]


def test_rules_table_lists_every_rule_with_a_documented_function() -> None:
    assert set(RULES) == set(Rule)
    for check in RULES.values():
        assert check.__doc__


# --- formatting ---------------------------------------------------------------------------------------------


def test_numbers_energy_instants_and_durations_read_well() -> None:
    assert format_number(13_648) == "13 648"
    assert format_number(13_800.0) == "13 800"
    assert format_number(1_234.56) == "1 234.6"
    assert format_number(-1_500) == "-1 500"
    assert format_energy_wh(3_412) == "3 412 Wh"
    assert format_instant(datetime(2026, 3, 2, 11, 15, tzinfo=timezone(timedelta(hours=1)))) == (
        "2026-03-02 10:15 UTC"
    )
    assert format_instant(T0 + timedelta(seconds=90)) == "2026-03-02 10:01:30 UTC"
    assert format_duration(900) == "15 min"
    assert format_duration(5_400) == "1 h 30 min"
    assert format_duration(90_061) == "1 d 1 h 1 min 1 s"
    assert format_duration(0) == "0 s"
    assert format_duration(-60) == "-1 min"


# --- context ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"interval_s": 0}, "interval_s"),
        ({"max_power_w": 0.0}, "max_power_w"),
        ({"max_power_w": float("nan")}, "max_power_w"),
        ({"max_clock_drift_s": -1.0}, "max_clock_drift_s"),
        ({"max_zero_run_intervals": -1}, "max_zero_run_intervals"),
        ({"register_tolerance_wh": -1}, "register_tolerance_wh"),
    ],
)
def test_context_refuses_impossible_limits(kwargs: dict[str, float], field: str) -> None:
    args: dict[str, float] = {"interval_s": 900, "max_power_w": RATING_W} | kwargs
    with pytest.raises(ValidationError, match=field):
        ValidationContext(**args)  # type: ignore[arg-type]


# --- gap ----------------------------------------------------------------------------------------------------


def test_gap_of_a_complete_series_is_empty() -> None:
    assert gap([at(k) for k in range(8)], at(0), at(8), 900, ACTIVE_IMPORT_INTERVAL) == []


def test_gap_reports_each_contiguous_run_once_with_its_span() -> None:
    present = [at(k) for k in (0, 1, 4, 5, 7)]
    flags = gap(shuffled(present), at(0), at(8), 900, ACTIVE_IMPORT_INTERVAL)
    assert [(f.start, f.end) for f in flags] == [(at(2), at(4)), (at(6), at(7))]
    assert {f.rule for f in flags} == {Rule.GAP}
    assert {f.obis for f in flags} == {ACTIVE_IMPORT_INTERVAL}
    assert flags[0].reason == (
        "2 intervals of 15 min missing (30 min) from 2026-03-02 10:30 UTC to 2026-03-02 11:00 UTC"
    )
    assert flags[1].reason == "1 interval of 15 min missing from 2026-03-02 11:30 UTC to 2026-03-02 11:45 UTC"


def test_gap_at_both_edges_and_of_nothing_at_all() -> None:
    flags = gap([at(k) for k in (1, 2)], at(0), at(4), 900, ACTIVE_IMPORT_INTERVAL)
    assert [(f.start, f.end) for f in flags] == [(at(0), at(1)), (at(3), at(4))]
    assert [(f.start, f.end) for f in gap([], at(0), at(4), 900, "x")] == [(at(0), at(4))]


def test_gap_of_an_empty_span_is_empty() -> None:
    assert gap([], at(3), at(3), 900, ACTIVE_IMPORT_INTERVAL) == []


def test_gap_expects_grid_slots_only() -> None:
    # Installed at 10:07: the 10:00 slot is not expected, the first expected slot is 10:15.
    flags = gap([], T0 + timedelta(minutes=7), at(2), 900, ACTIVE_IMPORT_INTERVAL)
    assert [(f.start, f.end) for f in flags] == [(at(1), at(2))]
    # A value off the grid does not fill the slot it should have been.
    flags = gap([T0 + timedelta(minutes=3)], at(0), at(1), 900, ACTIVE_IMPORT_INTERVAL)
    assert [(f.start, f.end) for f in flags] == [(at(0), at(1))]


def test_gap_accepts_instants_in_any_zone() -> None:
    plus_two = timezone(timedelta(hours=2))
    present = [at(k).astimezone(plus_two) for k in range(4)]
    assert gap(present, at(0).astimezone(plus_two), at(4), 900, ACTIVE_IMPORT_INTERVAL) == []


def test_gap_refuses_bad_arguments() -> None:
    with pytest.raises(ValidationError, match="before expected_start"):
        gap([], at(4), at(0), 900, ACTIVE_IMPORT_INTERVAL)
    with pytest.raises(ValidationError, match="interval_s must be positive"):
        gap([], at(0), at(4), 0, ACTIVE_IMPORT_INTERVAL)
    with pytest.raises(ValidationError, match=r"present_starts\[1\]"):
        gap([at(0), datetime(2026, 3, 2, 10, 15)], at(0), at(4), 900, ACTIVE_IMPORT_INTERVAL)  # noqa: DTZ001
    with pytest.raises(ValidationError, match="timezone-aware"):
        gap([], datetime(2026, 3, 2), at(4), 900, ACTIVE_IMPORT_INTERVAL)  # noqa: DTZ001


@settings(max_examples=60, deadline=None)
@given(
    n_intervals=st.integers(min_value=1, max_value=300),
    interval_s=st.sampled_from([300, 900, 1800, 3600]),
    data=st.data(),
)
def test_gap_reports_exactly_the_holes(n_intervals: int, interval_s: int, data: st.DataObject) -> None:
    step = timedelta(seconds=interval_s)
    holes = data.draw(st.sets(st.integers(min_value=0, max_value=n_intervals - 1)))
    present = [T0 + k * step for k in range(n_intervals) if k not in holes]
    flags = gap(shuffled(present), T0, T0 + n_intervals * step, interval_s, ACTIVE_IMPORT_INTERVAL)

    reported = set()
    for f in flags:
        k0, k1 = (f.start - T0) // step, (f.end - T0) // step
        reported |= set(range(k0, k1))
        # Runs are maximal: the slots just outside a flag are present (or outside the span).
        assert k0 - 1 not in holes
        assert k1 not in holes
    assert reported == holes
    assert [f.start for f in flags] == sorted(f.start for f in flags)


# --- spike --------------------------------------------------------------------------------------------------


def test_spike_flags_power_above_the_rating_with_the_numbers() -> None:
    # 3 450 Wh in 15 min is exactly 13 800 W: at the rating, not above it.
    assert spike([iv(0, 3_450)], RATING_W) == []
    flags = spike([iv(0, 3_451), iv(1, 100)], RATING_W)
    assert flags == [
        Flag(
            Rule.SPIKE,
            ACTIVE_IMPORT_INTERVAL,
            at(0),
            at(1),
            "3 451 Wh in 15 min = 13 804 W > 13 800 W rating",
        )
    ]


def test_spike_uses_each_intervals_own_length() -> None:
    # 3 451 Wh in 30 min is 6 902 W: fine for a 13 800 W service.
    assert spike([IntervalValue(ACTIVE_IMPORT_INTERVAL, T0, 1_800, 3_451)], RATING_W) == []
    flags = spike([IntervalValue(ACTIVE_IMPORT_INTERVAL, T0, 300, 1_200)], RATING_W)
    assert flags[0].end == T0 + timedelta(minutes=5)
    assert "14 400 W" in flags[0].reason


def test_spike_checks_export_too_and_ignores_negative_energy() -> None:
    flags = spike([iv(0, 5_000, ACTIVE_EXPORT_INTERVAL), iv(1, -9_000)], RATING_W)
    assert [(f.obis, f.start) for f in flags] == [(ACTIVE_EXPORT_INTERVAL, at(0))]


def test_spike_ignores_input_order_and_handles_empty_input() -> None:
    values = [iv(k, 4_000 if k % 3 == 0 else 10) for k in range(12)]
    assert spike(shuffled(values), RATING_W) == spike(values, RATING_W)
    assert [f.start for f in spike(values, RATING_W)] == [at(0), at(3), at(6), at(9)]
    assert spike([], RATING_W) == []


def test_spike_refuses_a_bad_rating_or_interval() -> None:
    with pytest.raises(ValidationError, match="max_power_w"):
        spike([iv(0, 1)], -1.0)
    with pytest.raises(ValidationError, match="interval length must be positive"):
        spike([iv(0, 1, interval_s=0)], RATING_W)


# --- negative consumption -----------------------------------------------------------------------------------


def test_negative_interval_energy_is_flagged_and_zero_is_not() -> None:
    flags = negative_consumption([iv(0, 0), iv(1, -1), iv(2, 5)], [])
    assert [(f.rule, f.start, f.end) for f in flags] == [(Rule.NEGATIVE, at(1), at(2))]
    assert "-1 Wh" in flags[0].reason


def test_a_falling_register_is_flagged_between_the_two_reads() -> None:
    reads = [reg(0, 1_000), reg(4, 1_200), reg(8, 1_150), reg(12, 1_150), reg(16, 1_300)]
    flags = negative_consumption([], shuffled(reads))
    assert [(f.obis, f.start, f.end) for f in flags] == [(ACTIVE_IMPORT_TOTAL, at(4), at(8))]
    assert flags[0].reason == (
        "register 1-0:1.8.0 fell from 1 200 Wh at 2026-03-02 11:00 UTC to 1 150 Wh at 2026-03-02 12:00 UTC "
        "(-50 Wh): a cumulative register never decreases"
    )


def test_registers_are_compared_only_with_their_own_obis_code() -> None:
    reads = [reg(0, 5_000), reg(1, 10, ACTIVE_EXPORT_TOTAL), reg(2, 5_001), reg(3, 11, ACTIVE_EXPORT_TOTAL)]
    assert negative_consumption([], reads) == []


def test_two_different_reads_at_one_instant_are_not_a_decrease() -> None:
    assert negative_consumption([], [reg(0, 1_000), reg(0, 990)]) == []


def test_negative_consumption_of_nothing_is_nothing() -> None:
    assert negative_consumption([], []) == []


# --- register mismatch --------------------------------------------------------------------------------------


def test_register_matching_its_intervals_is_not_flagged() -> None:
    intervals = [iv(k, 100) for k in range(4)]
    assert register_mismatch(reg(0, 5_000), reg(4, 5_400), shuffled(intervals), 1) == []
    assert register_mismatch(reg(0, 5_000), reg(4, 5_401), intervals, 1) == []  # within tolerance


def test_register_disagreeing_with_its_intervals_is_flagged_with_both_sums() -> None:
    intervals = [iv(k, 100) for k in range(4)]
    flags = register_mismatch(reg(0, 5_000), reg(4, 5_402), intervals, 1)
    assert [(f.rule, f.obis, f.start, f.end) for f in flags] == [
        (Rule.REGISTER_MISMATCH, ACTIVE_IMPORT_TOTAL, at(0), at(4))
    ]
    assert flags[0].reason == (
        "register 1-0:1.8.0 rose 402 Wh from 2026-03-02 10:00 UTC to 2026-03-02 11:00 UTC, but its 4 "
        "intervals (1-0:1.29.0) sum to 400 Wh: +2 Wh apart, tolerance 1 Wh"
    )
    assert "-100 Wh apart" in register_mismatch(reg(0, 5_000), reg(4, 5_300), intervals, 0)[0].reason


def test_register_mismatch_needs_complete_intervals() -> None:
    holey = [iv(k, 100) for k in (0, 1, 3)]
    assert register_mismatch(reg(0, 0), reg(4, 9_999), holey, 1) == []
    # Reads off the interval boundaries leave a part of an interval uncounted: not comparable.
    off_grid = RegisterValue(ACTIVE_IMPORT_TOTAL, at(4) + timedelta(minutes=7), 9_999)
    assert register_mismatch(reg(0, 0), off_grid, [iv(k, 100) for k in range(5)], 1) == []
    assert register_mismatch(reg(0, 0), reg(4, 9_999), [], 1) == []


def test_register_mismatch_counts_only_intervals_inside_the_span_and_of_its_quantity() -> None:
    intervals = [iv(k, 100) for k in range(-2, 6)] + [iv(k, 7_000, ACTIVE_EXPORT_INTERVAL) for k in range(4)]
    assert register_mismatch(reg(0, 0), reg(4, 400), intervals, 0) == []
    export = [iv(k, 5, ACTIVE_EXPORT_INTERVAL) for k in range(4)] + [iv(k, 100) for k in range(4)]
    before, after = reg(0, 70, ACTIVE_EXPORT_TOTAL), reg(4, 90, ACTIVE_EXPORT_TOTAL)
    assert register_mismatch(before, after, export, 0) == []
    assert (
        register_mismatch(before, reg(4, 91, ACTIVE_EXPORT_TOTAL), export, 0)[0].obis == ACTIVE_EXPORT_TOTAL
    )


def test_register_mismatch_gives_way_to_conflicts_and_counts_duplicates_once() -> None:
    doubled = [iv(k, 100) for k in range(4)] + [iv(2, 100)]
    assert register_mismatch(reg(0, 0), reg(4, 400), doubled, 0) == []
    assert register_mismatch(reg(0, 0), reg(4, 500), doubled, 0) != []
    conflicting = [iv(k, 100) for k in range(4)] + [iv(2, 300)]
    assert register_mismatch(reg(0, 0), reg(4, 999), conflicting, 0) == []


def test_register_mismatch_refuses_what_cannot_be_compared() -> None:
    with pytest.raises(ValidationError, match="two different registers"):
        register_mismatch(reg(0, 0), reg(4, 0, ACTIVE_EXPORT_TOTAL), [], 1)
    with pytest.raises(ValidationError, match=r"1-0:1\.8\.1 has no load-profile quantity"):
        register_mismatch(reg(0, 0, "1-0:1.8.1"), reg(4, 0, "1-0:1.8.1"), [], 1)
    with pytest.raises(ValidationError, match="was read at 2026-03-02 10:00 UTC, before"):
        register_mismatch(reg(4, 0), reg(0, 0), [], 1)
    with pytest.raises(ValidationError, match="tolerance_wh"):
        register_mismatch(reg(0, 0), reg(4, 0), [], -1)
    assert register_mismatch(reg(0, 0), reg(0, 50), [], 1) == []


# --- clock drift --------------------------------------------------------------------------------------------


def test_clock_within_the_limit_is_fine_up_to_the_limit_itself() -> None:
    assert clock_drift(T0 + timedelta(seconds=60), T0, 60.0) == []
    assert clock_drift(T0 - timedelta(seconds=60), T0, 60.0) == []


@pytest.mark.parametrize(("offset_s", "word"), [(61, "ahead of"), (-3_600, "behind")])
def test_clock_beyond_the_limit_is_flagged_at_the_head_end_instant(offset_s: int, word: str) -> None:
    flags = clock_drift(T0 + timedelta(seconds=offset_s), T0, 60.0)
    assert [(f.rule, f.obis, f.start, f.end) for f in flags] == [(Rule.CLOCK_DRIFT, CLOCK, T0, T0)]
    assert f"{abs(offset_s):,} s {word}".replace(",", " ") in flags[0].reason
    assert "60 s allowed" in flags[0].reason


def test_clock_drift_refuses_naive_instants_and_negative_limits() -> None:
    with pytest.raises(ValidationError, match="meter_time"):
        clock_drift(datetime(2026, 3, 2), T0, 60.0)  # noqa: DTZ001
    with pytest.raises(ValidationError, match="max_drift_s"):
        clock_drift(T0, T0, -1.0)


# --- zero run -----------------------------------------------------------------------------------------------


def test_zero_run_up_to_the_limit_is_fine_and_beyond_it_is_flagged() -> None:
    assert zero_run([iv(k, 0) for k in range(4)], 4) == []
    flags = zero_run(shuffled([iv(k, 0) for k in range(5)] + [iv(5, 30)]), 4)
    assert [(f.rule, f.start, f.end) for f in flags] == [(Rule.ZERO_RUN, at(0), at(5))]
    assert flags[0].reason == (
        "5 consecutive intervals of 0 Wh (1 h 15 min) from 2026-03-02 10:00 UTC to 2026-03-02 11:15 UTC, "
        "more than the 4 allowed"
    )


def test_zero_run_is_ended_by_energy_and_by_a_gap() -> None:
    by_energy = [iv(k, 0 if k != 3 else 1) for k in range(7)]
    assert zero_run(by_energy, 3) == []
    assert [(f.start, f.end) for f in zero_run(by_energy, 2)] == [(at(0), at(3)), (at(4), at(7))]
    by_gap = [iv(k, 0) for k in range(8) if k != 4]
    assert zero_run(by_gap, 4) == []
    assert [(f.start, f.end) for f in zero_run(by_gap, 3)] == [(at(0), at(4))]


def test_zero_run_keeps_obis_codes_apart_and_reports_every_run() -> None:
    values = [iv(k, 0) for k in range(3)] + [iv(k, 0, "1-0:3.29.0") for k in range(3, 6)]
    assert zero_run(values, 3) == []
    values = [iv(k, 0) for k in (0, 1, 3, 4)]
    assert [(f.start, f.end) for f in zero_run(values, 1)] == [(at(0), at(2)), (at(3), at(5))]


def test_zero_run_limit_zero_flags_a_single_zero_and_empty_input_is_fine() -> None:
    assert [f.start for f in zero_run([iv(0, 5), iv(1, 0)], 0)] == [at(1)]
    assert zero_run([], 0) == []
    with pytest.raises(ValidationError, match="max_run_intervals"):
        zero_run([], -1)


def test_a_slot_with_a_non_zero_version_is_not_zero() -> None:
    values = [iv(k, 0) for k in range(3)] + [iv(1, 40)]
    assert zero_run(values, 1) == []


# --- conflict -----------------------------------------------------------------------------------------------


def test_identical_duplicates_are_not_a_conflict() -> None:
    assert conflict([iv(0, 10), iv(0, 10)], [reg(0, 5), reg(0, 5)]) == []


def test_different_values_for_one_interval_or_read_are_a_conflict() -> None:
    flags = conflict(
        [iv(0, 10), iv(0, 12), iv(1, 3), iv(0, 10, ACTIVE_EXPORT_INTERVAL)], [reg(2, 5), reg(2, 6)]
    )
    assert [(f.rule, f.obis, f.start, f.end) for f in flags] == [
        (Rule.CONFLICT, ACTIVE_IMPORT_INTERVAL, at(0), at(1)),
        (Rule.CONFLICT, ACTIVE_IMPORT_TOTAL, at(2), at(2)),
    ]
    assert flags[0].reason.endswith("10 Wh in 15 min, 12 Wh in 15 min")
    assert flags[1].reason.endswith("5 Wh, 6 Wh")


# --- validate -----------------------------------------------------------------------------------------------

CONTEXT = ValidationContext(interval_s=900, max_power_w=RATING_W, max_zero_run_intervals=4)


def test_validate_of_clean_values_and_of_nothing_is_empty() -> None:
    intervals = [iv(k, 100 + k) for k in range(8)] + [iv(k, 0, ACTIVE_EXPORT_INTERVAL) for k in range(8)]
    registers = [reg(0, 1_000), reg(8, 1_000 + sum(100 + k for k in range(8)))]
    assert validate(intervals, registers, CONTEXT, meter_time=T0, received_at=T0) == []
    assert validate([], [], CONTEXT) == []


def test_validate_runs_every_rule_and_keeps_obis_codes_apart() -> None:
    intervals = [
        *(iv(k, 0) for k in range(6)),  # import: 6 zeros > 4 allowed
        iv(6, 4_000),  # import spike
        iv(7, -5),  # negative
        *(iv(k, 0, ACTIVE_EXPORT_INTERVAL) for k in range(6)),  # export zeros: normal
        iv(7, 10, ACTIVE_EXPORT_INTERVAL),  # export 6 missing: a gap
        iv(8, 9_000, ACTIVE_EXPORT_INTERVAL),  # export spike
        iv(2, 1),  # conflicts with the import zero at 10:30
    ]
    registers = [reg(0, 500), reg(8, 4_000), reg(12, 3_900)]
    flags = validate(
        shuffled(intervals), registers, CONTEXT, meter_time=T0 + timedelta(minutes=5), received_at=T0
    )
    found = {(f.rule, f.obis, f.start) for f in flags}
    assert found == {
        (Rule.CONFLICT, ACTIVE_IMPORT_INTERVAL, at(2)),
        (Rule.SPIKE, ACTIVE_IMPORT_INTERVAL, at(6)),
        (Rule.NEGATIVE, ACTIVE_IMPORT_INTERVAL, at(7)),
        (Rule.GAP, ACTIVE_EXPORT_INTERVAL, at(6)),
        (Rule.SPIKE, ACTIVE_EXPORT_INTERVAL, at(8)),
        (Rule.NEGATIVE, ACTIVE_IMPORT_TOTAL, at(8)),
        (Rule.CLOCK_DRIFT, CLOCK, T0),
    }
    # The zero run at 10:30 has two values (0 and 1 Wh) so it is not a zero: runs of 2 and 3 remain.
    assert not any(f.rule is Rule.ZERO_RUN for f in flags)
    assert flags == sorted(flags, key=lambda f: (f.start, f.end))


def test_validate_flags_an_import_zero_run_but_never_an_export_one() -> None:
    intervals = [iv(k, 0) for k in range(6)] + [iv(k, 0, ACTIVE_EXPORT_INTERVAL) for k in range(96 * 2)]
    flags = validate(intervals, [], CONTEXT)
    assert [(f.rule, f.obis, f.start, f.end) for f in flags] == [
        (Rule.ZERO_RUN, ACTIVE_IMPORT_INTERVAL, at(0), at(6))
    ]


def test_validate_compares_registers_with_their_intervals() -> None:
    intervals = [iv(k, 100) for k in range(8)] + [iv(k, 20, ACTIVE_EXPORT_INTERVAL) for k in range(8)]
    registers = [
        reg(0, 1_000),
        reg(4, 1_400),
        reg(8, 1_900),  # +500 against 400 of intervals
        reg(0, 50, ACTIVE_EXPORT_TOTAL),
        reg(8, 210, ACTIVE_EXPORT_TOTAL),  # +160 against 160: fine
        reg(0, 7, "1-0:1.8.1"),  # per-rate registers have no intervals to compare with
        reg(8, 7_000, "1-0:1.8.1"),
    ]
    flags = validate(intervals, shuffled(registers), CONTEXT)
    assert [(f.rule, f.obis, f.start, f.end) for f in flags] == [
        (Rule.REGISTER_MISMATCH, ACTIVE_IMPORT_TOTAL, at(4), at(8))
    ]


def test_a_falling_register_is_flagged_once_as_negative_not_also_as_a_mismatch() -> None:
    intervals = [iv(k, 100) for k in range(4)]
    flags = validate(intervals, [reg(0, 1_000), reg(4, 900)], CONTEXT)
    assert [(f.rule, f.start, f.end) for f in flags] == [(Rule.NEGATIVE, at(0), at(4))]


def test_validate_skips_a_conflicting_read_but_compares_across_it() -> None:
    intervals = [iv(k, 100) for k in range(8)]
    registers = [reg(0, 1_000), reg(4, 1_400), reg(4, 1_450), reg(8, 1_900)]
    flags = validate(intervals, registers, CONTEXT)
    assert {(f.rule, f.start, f.end) for f in flags} == {
        (Rule.CONFLICT, at(4), at(4)),
        (Rule.REGISTER_MISMATCH, at(0), at(8)),
    }


def test_validate_checks_the_clock_only_with_both_instants() -> None:
    late = T0 + timedelta(hours=2)
    assert validate([], [], CONTEXT, meter_time=late) == []
    assert validate([], [], CONTEXT, received_at=late) == []
    assert [f.rule for f in validate([], [], CONTEXT, meter_time=T0, received_at=late)] == [Rule.CLOCK_DRIFT]


def test_validate_refuses_values_no_rule_can_judge() -> None:
    with pytest.raises(
        ValidationError, match=r"intervals\[1\] \(1-0:1\.29\.0 at .*\): interval is 1800 s long"
    ):
        validate([iv(0, 1), iv(1, 1, interval_s=1_800)], [], CONTEXT)
    naive = IntervalValue(ACTIVE_IMPORT_INTERVAL, datetime(2026, 3, 2, 10), 900, 1)  # noqa: DTZ001
    with pytest.raises(ValidationError, match="timezone-aware"):
        validate([naive], [], CONTEXT)
    with pytest.raises(ValidationError, match=r"registers\[0\]"):
        validate([], [RegisterValue(ACTIVE_IMPORT_TOTAL, datetime(2026, 3, 2), 1)], CONTEXT)  # noqa: DTZ001


@settings(max_examples=40, deadline=None)
@given(
    energies=st.lists(st.integers(min_value=-50, max_value=5_000), min_size=1, max_size=60),
    holes=st.sets(st.integers(min_value=0, max_value=59)),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_validate_ignores_input_order(energies: list[int], holes: set[int], seed: int) -> None:
    intervals = [iv(k, e) for k, e in enumerate(energies) if k not in holes]
    intervals += [iv(k, max(e, 0) // 10, ACTIVE_EXPORT_INTERVAL) for k, e in enumerate(energies)]
    registers = [reg(0, 10_000), reg(len(energies), 10_000 + sum(energies)), reg(len(energies) // 2, 9_000)]
    expected = validate(intervals, registers, CONTEXT)
    assert validate(shuffled(intervals, seed), shuffled(registers, seed), CONTEXT) == expected
