"""Tamper detection in the meter: each condition starts after its persistence time and not before, ends once
it has cleared for its restoration time, changes how energy is registered while present; covers opened
without supply carry their true time; events are numbered in the IDIS or the IS 15959 code set."""

from __future__ import annotations

import pytest

from openami.common import obis
from openami.device import EventCode, Meter, MeterConfig, Sample
from openami.device.event_codes import (
    ASSUMED_NUMBERS,
    EVENT_NUMBERS,
    IS_15959_EVENT_NUMBERS,
    EventCodeSet,
    event_number,
)
from openami.device.tamper import (
    Cover,
    TamperCondition,
    TamperConfig,
    conditions_present,
    tamper_episodes,
)
from tests.unit.device.support import MONDAY, VOLTAGE_V, run_steps, sample_of

T0 = MONDAY.timestamp()
HOUR_S = 3600.0


def tampered_meter(**config: object) -> Meter:
    return Meter(MeterConfig("DEV-TMP"), MONDAY, tamper=TamperConfig(**config))  # type: ignore[arg-type]


def codes(meter: Meter) -> list[EventCode]:
    return [e.code for e in meter.events_since(0)]


def import_wh(meter: Meter) -> int:
    return meter.registers()[obis.ACTIVE_IMPORT_TOTAL]


def currents(phase_a: float, neutral_a: float, **kw: object) -> Sample:
    return Sample(VOLTAGE_V, phase_a, neutral_a, 1.0, **kw)  # type: ignore[arg-type]


# --- current mismatch (earth load / bypass) ---------------------------------------------------------------


def test_a_mismatch_is_logged_after_its_persistence_time_and_not_before() -> None:
    meter = tampered_meter()
    earth_load = currents(20.0, 10.0)
    run_steps(meter, T0, T0 + 59, earth_load, step_s=1)
    assert EventCode.CURRENT_MISMATCH_DETECTED not in codes(meter)
    assert meter.active_tampers == frozenset()
    meter.step(T0 + 59, 1.0, earth_load)
    start = meter.events_since(0)[-1]
    assert start.code is EventCode.CURRENT_MISMATCH_DETECTED
    assert start.occurred_at.timestamp() == T0 + 60
    assert "since=2026-03-02T00:00:00+00:00" in start.detail
    assert meter.active_tampers == {TamperCondition.CURRENT_MISMATCH}


def test_a_mismatch_ends_once_it_has_cleared_for_the_restoration_time() -> None:
    meter = tampered_meter(detect_after_s=10.0, clear_after_s=30.0)
    meter.step(T0, 20.0, currents(20.0, 10.0))
    run_steps(meter, T0 + 20, T0 + 49, currents(10.0, 10.0), step_s=1)
    assert EventCode.CURRENT_MISMATCH_CLEARED not in codes(meter)  # 29 s clear: not yet
    meter.step(T0 + 49, 1.0, currents(10.0, 10.0))
    end = meter.events_since(0)[-1]
    assert end.code is EventCode.CURRENT_MISMATCH_CLEARED
    assert end.occurred_at.timestamp() == T0 + 50
    assert meter.active_tampers == frozenset()


def test_a_short_return_to_normal_does_not_end_the_episode() -> None:
    meter = tampered_meter(detect_after_s=10.0, clear_after_s=30.0)
    meter.step(T0, 20.0, currents(20.0, 10.0))
    meter.step(T0 + 20, 29.0, currents(10.0, 10.0))
    meter.step(T0 + 49, 100.0, currents(20.0, 10.0))  # back before the restoration time ran out
    meter.step(T0 + 149, 29.0, currents(10.0, 10.0))
    assert codes(meter) == [EventCode.CURRENT_MISMATCH_DETECTED]


def test_the_start_falls_inside_a_long_step_at_its_exact_instant() -> None:
    meter = tampered_meter(detect_after_s=90.0)
    meter.step(T0, 600.0, currents(4.0, 8.0))
    (start,) = meter.events_since(0)
    assert start.code is EventCode.CURRENT_MISMATCH_DETECTED
    assert start.occurred_at.timestamp() == T0 + 90


def test_energy_is_registered_on_the_larger_current_while_the_mismatch_lasts() -> None:
    bypass = tampered_meter()
    bypass.step(T0, HOUR_S, currents(4.0, 8.0))  # phase bypassed: the neutral carries the true load
    assert import_wh(bypass) == 2000  # 250 V x 8 A for an hour, not 250 V x 4 A
    earth = tampered_meter()
    earth.step(T0, HOUR_S, currents(8.0, 4.0))  # earth return: the phase carries the true load
    assert import_wh(earth) == 2000


def test_a_difference_within_the_thresholds_is_neither_logged_nor_registered_on_the_larger_current() -> None:
    meter = tampered_meter()
    meter.step(T0, HOUR_S, currents(10.0, 10.5))  # 0.5 A apart: under 1 A
    assert import_wh(meter) == 2500
    assert codes(meter) == []
    big = tampered_meter()
    big.step(T0, HOUR_S, currents(40.0, 41.5))  # 1.5 A apart but 3.7 % of 41.5 A: under 6.25 %
    assert import_wh(big) == 10_000
    assert codes(big) == []


def test_both_mismatch_thresholds_are_configurable() -> None:
    config = TamperConfig(mismatch_fraction=0.01, mismatch_min_ma=200)
    assert conditions_present(currents(10.0, 10.5), config, 230.0) == {TamperCondition.CURRENT_MISMATCH}
    assert conditions_present(currents(10.0, 10.5), TamperConfig(), 230.0) == frozenset()


# --- neutral missing / single wire -------------------------------------------------------------------------


def test_neutral_missing_is_detected_and_registered_at_nominal_voltage_and_unity_power_factor() -> None:
    meter = tampered_meter()  # nominal voltage 230 V
    single_wire = Sample(0.0, 10.0, 0.0, 0.5)  # no voltage across phase-neutral, current out through earth
    meter.step(T0, HOUR_S, single_wire)
    assert import_wh(meter) == 2300  # 230 V x 10 A x 1.0, where the measured values would give 0
    assert EventCode.NEUTRAL_MISSING_DETECTED in codes(meter)
    assert TamperCondition.NEUTRAL_MISSING in meter.active_tampers
    meter.step(T0 + HOUR_S, HOUR_S, sample_of(1000))
    assert EventCode.NEUTRAL_MISSING_CLEARED in codes(meter)
    assert meter.active_tampers == frozenset()


def test_no_voltage_and_no_current_is_not_a_missing_neutral() -> None:
    meter = tampered_meter()
    meter.step(T0, HOUR_S, Sample(0.0, 0.05, 0.0))  # 50 mA: under the 100 mA current threshold
    assert codes(meter) == []


# --- reverse current ---------------------------------------------------------------------------------------


def test_reverse_current_on_a_meter_not_allowed_to_export_is_logged_and_counted_as_import() -> None:
    meter = tampered_meter(export_allowed=False)
    reversed_meter = sample_of(1000, export=True)
    run_steps(meter, T0, T0 + 59, reversed_meter, step_s=1)
    assert EventCode.REVERSE_CURRENT_DETECTED not in codes(meter)
    run_steps(meter, T0 + 59, T0 + HOUR_S, reversed_meter, step_s=1)
    assert meter.events_since(0)[0].code is EventCode.REVERSE_CURRENT_DETECTED
    assert meter.events_since(0)[0].occurred_at.timestamp() == T0 + 60
    assert import_wh(meter) == 1000
    assert meter.registers()[obis.ACTIVE_EXPORT_TOTAL] == 0


def test_a_net_meter_counts_export_as_export_without_an_event() -> None:
    meter = tampered_meter()  # export_allowed defaults to True
    meter.step(T0, HOUR_S, sample_of(1000, export=True))
    assert meter.registers()[obis.ACTIVE_EXPORT_TOTAL] == 1000
    assert codes(meter) == []


# --- magnetic field ----------------------------------------------------------------------------------------


def test_a_magnet_is_logged_after_its_persistence_time_and_ends_when_the_field_has_gone() -> None:
    meter = tampered_meter()
    magnet = Sample(VOLTAGE_V, 1.0, 1.0, magnetic_field_mt=150.0)
    run_steps(meter, T0, T0 + 59, magnet, step_s=1)
    assert codes(meter) == []
    run_steps(meter, T0 + 59, T0 + 300, magnet, step_s=1)
    run_steps(meter, T0 + 300, T0 + 600, sample_of(250), step_s=1)
    (episode,) = tamper_episodes(meter.events_since(0))
    assert episode.code is EventCode.MAGNETIC_FIELD_DETECTED
    assert episode.started_at.timestamp() == T0 + 60
    assert episode.ended_at is not None
    assert episode.ended_at.timestamp() == T0 + 360


def test_a_weak_field_is_ignored() -> None:
    meter = tampered_meter()
    meter.step(T0, HOUR_S, Sample(VOLTAGE_V, 1.0, 1.0, magnetic_field_mt=99.0))
    assert codes(meter) == []


def test_while_a_magnet_is_detected_energy_is_registered_at_the_configured_current() -> None:
    meter = tampered_meter(magnet_register_current_ma=60_000)
    magnet = Sample(VOLTAGE_V, 1.0, 1.0, magnetic_field_mt=150.0)
    meter.step(T0, 120.0, magnet)  # detected at 60 s, inside the step
    # 60 s at the measured 1 A (4.17 Wh), then 60 s at 60 A (250 Wh)
    assert import_wh(meter) == 254
    meter.step(T0 + 120, HOUR_S, sample_of(250))  # field gone: the measured 1 A again
    assert import_wh(meter) == 254 + 250


def test_without_a_configured_current_a_magnet_changes_nothing_in_the_registers() -> None:
    meter = tampered_meter()
    meter.step(T0, HOUR_S, Sample(VOLTAGE_V, 1.0, 1.0, magnetic_field_mt=150.0))
    assert import_wh(meter) == 250
    assert codes(meter) == [EventCode.MAGNETIC_FIELD_DETECTED]


# --- covers and power ---------------------------------------------------------------------------------------


def test_a_cover_opened_on_supply_is_logged_at_once() -> None:
    meter = tampered_meter()
    meter.open_cover(T0 + 10, Cover.TERMINAL)
    assert meter.open_covers == {Cover.TERMINAL}
    meter.close_cover(T0 + 70, Cover.TERMINAL)
    events = meter.events_since(0)
    assert [(e.code, e.occurred_at.timestamp()) for e in events] == [
        (EventCode.TERMINAL_COVER_OPENED, T0 + 10),
        (EventCode.TERMINAL_COVER_CLOSED, T0 + 70),
    ]
    with pytest.raises(ValueError, match="terminal cover is already closed"):
        meter.close_cover(T0 + 80, Cover.TERMINAL)


def test_a_cover_opened_without_supply_carries_its_true_time_when_power_returns() -> None:
    meter = tampered_meter()
    meter.power_down(T0 + 100)
    meter.open_cover(T0 + 200, Cover.METER)
    meter.close_cover(T0 + 300, Cover.METER)
    assert codes(meter) == [EventCode.POWER_DOWN]  # nothing is written without supply
    meter.power_up(T0 + 500)
    events = meter.events_since(0)
    assert [(e.code, e.occurred_at.timestamp()) for e in events] == [
        (EventCode.POWER_DOWN, T0 + 100),
        (EventCode.METER_COVER_OPENED, T0 + 200),
        (EventCode.METER_COVER_CLOSED, T0 + 300),
        (EventCode.POWER_UP, T0 + 500),
    ]
    assert "latched without supply" in events[1].detail
    outage, cover = tamper_episodes(events)
    assert (outage.code, outage.started_at.timestamp(), outage.ended_at) == (
        EventCode.POWER_DOWN,
        T0 + 100,
        events[3].occurred_at,
    )
    assert cover.code is EventCode.METER_COVER_OPENED
    assert cover.ended_at is not None
    assert cover.ended_at.timestamp() == T0 + 300


def test_a_power_cut_restarts_the_persistence_time_but_keeps_an_active_condition() -> None:
    meter = tampered_meter(detect_after_s=60.0)
    meter.step(T0, 50.0, currents(20.0, 10.0))
    meter.power_down(T0 + 50)
    meter.power_up(T0 + 100)
    meter.step(T0 + 100, 50.0, currents(20.0, 10.0))  # 50 + 50 s, but not in one run
    assert EventCode.CURRENT_MISMATCH_DETECTED not in codes(meter)
    meter.step(T0 + 150, 10.0, currents(20.0, 10.0))
    assert codes(meter)[-1] is EventCode.CURRENT_MISMATCH_DETECTED
    meter.power_down(T0 + 160)
    meter.power_up(T0 + 200)
    assert TamperCondition.CURRENT_MISMATCH in meter.active_tampers


def test_with_the_relay_open_no_current_condition_is_detected() -> None:
    meter = tampered_meter()
    meter.disconnect(T0)
    meter.step(T0, HOUR_S, currents(20.0, 10.0))
    assert codes(meter) == [EventCode.RELAY_OPENED]


def test_an_episode_still_going_has_no_end() -> None:
    meter = tampered_meter()
    meter.open_cover(T0, Cover.METER)
    (episode,) = tamper_episodes(meter.events_since(0))
    assert episode.ended_at is None
    assert episode.end_sequence is None


# --- code sets ---------------------------------------------------------------------------------------------


def test_every_event_has_a_number_in_both_code_sets() -> None:
    for code_set in EventCodeSet:
        assert set(EVENT_NUMBERS[code_set]) == set(EventCode)
        assert ASSUMED_NUMBERS[code_set] <= set(EventCode)


@pytest.mark.parametrize(
    ("code", "idis", "is_15959"),
    [
        (EventCode.POWER_DOWN, 1, 101),
        (EventCode.POWER_UP, 2, 102),
        (EventCode.TERMINAL_COVER_OPENED, 40, 253),
        (EventCode.METER_COVER_OPENED, 44, 251),
        (EventCode.MAGNETIC_FIELD_DETECTED, 42, 201),
        (EventCode.MAGNETIC_FIELD_CLEARED, 43, 202),
        (EventCode.CURRENT_MISMATCH_DETECTED, 231, 69),
        (EventCode.NEUTRAL_MISSING_DETECTED, 233, 207),
        (EventCode.REVERSE_CURRENT_DETECTED, 235, 51),
        (EventCode.RELAY_OPENED, 62, 301),
    ],
)
def test_event_numbers_in_each_code_set(code: EventCode, idis: int, is_15959: int) -> None:
    assert event_number(code) == idis
    assert event_number(code, EventCodeSet.IS_15959) == is_15959
    assert IS_15959_EVENT_NUMBERS[code] == is_15959


def test_the_code_set_is_chosen_per_meter() -> None:
    idis = Meter(MeterConfig("DEV-IDIS"), MONDAY)
    indian = Meter(MeterConfig("DEV-IN"), MONDAY, event_codes=EventCodeSet.IS_15959)
    for meter in (idis, indian):
        meter.open_cover(T0, Cover.METER)
    assert idis.event_code_set is EventCodeSet.IDIS
    assert idis.event_number(idis.events_since(0)[0]) == 44
    assert indian.event_number(indian.events_since(0)[0]) == 251
    with pytest.raises(ValueError, match="event_codes must be one of"):
        Meter(MeterConfig("DEV-X"), MONDAY, event_codes="ansi")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown event code set"):
        event_number(EventCode.POWER_UP, "ansi")  # type: ignore[arg-type]


# --- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mismatch_fraction", 1.5),
        ("mismatch_min_ma", -1),
        ("current_present_ma", 0.5),
        ("export_allowed", "no"),
        ("magnet_threshold_mt", 0.0),
        ("magnet_register_current_ma", 0),
        ("detect_after_s", -1.0),
        ("clear_after_s", float("nan")),
    ],
)
def test_a_tamper_config_out_of_range_is_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"TamperConfig.{field}"):
        TamperConfig(**{field: value})  # type: ignore[arg-type]


def test_a_negative_field_reading_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Sample.magnetic_field_mt"):
        Sample(VOLTAGE_V, 1.0, 1.0, magnetic_field_mt=-1.0)
