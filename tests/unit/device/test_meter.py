"""The meter: energy into registers and intervals, boundaries by its own clock, rates by calendar, outages,
relay, clock drift and setting, memory faults, determinism and refusal of bad input."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from openami.device import (
    ActivityCalendar,
    DayProfile,
    EventCode,
    Meter,
    MeterConfig,
    PoweredDownError,
    ProfileEntry,
    Sample,
    Season,
    Status,
    WeekProfile,
)
from tests.unit.device.support import MONDAY, run_steps, sample_of

T = MONDAY.timestamp()
MINUTE = 60.0


def at(minutes: float) -> float:
    """True epoch seconds `minutes` after Monday midnight UTC."""
    return T + minutes * MINUTE


def utc(minutes: float) -> datetime:
    return MONDAY + timedelta(minutes=minutes)


def summary(entries: list[ProfileEntry]) -> list[tuple[datetime, int, int, int]]:
    return [(e.interval_start, e.import_wh, e.export_wh, e.status) for e in entries]


# --- energy -------------------------------------------------------------------------------------------------


def test_a_known_power_for_a_known_time_gives_known_wh(meter: Meter) -> None:
    meter.step(MONDAY, 3600.0, sample_of(1000.0))  # a datetime works as well as epoch seconds
    registers = meter.registers()
    assert registers["1-0:1.8.0"] == 1000
    assert registers["1-0:1.8.1"] == 1000  # Monday 00:00-01:00 is off-peak
    assert registers["1-0:1.8.2"] == registers["1-0:1.8.3"] == registers["1-0:1.8.4"] == 0
    assert registers["1-0:2.8.0"] == 0


def test_three_phases_and_power_factor() -> None:
    meter = Meter(MeterConfig("DEV-3P", phases=3), MONDAY)
    meter.step(T, 3600.0, Sample(230.0, 10.0, 0.0, power_factor=0.5))
    assert meter.registers()["1-0:1.8.0"] == 3450  # 230 V × 10 A × 0.5 × 3 phases × 1 h


def test_fractions_of_a_wh_carry_over_between_steps(meter: Meter) -> None:
    for i in range(36):
        meter.step(T + 10.0 * i, 10.0, sample_of(100.0))  # 0.28 Wh each
    assert meter.registers()["1-0:1.8.0"] == 10


def test_export_goes_to_the_export_registers(meter: Meter) -> None:
    meter.step(T, 1800.0, sample_of(2000.0, export=True))
    registers = meter.registers()
    assert (registers["1-0:2.8.0"], registers["1-0:2.8.1"], registers["1-0:1.8.0"]) == (1000, 1000, 0)
    assert meter.instantaneous()["1-0:2.7.0"] == pytest.approx(2000.0)
    assert meter.instantaneous()["1-0:1.7.0"] == 0.0


def test_initial_register_values_are_booked_to_the_rate_in_force() -> None:
    meter = Meter(MeterConfig("DEV-OLD"), MONDAY, initial_import_wh=5000, initial_export_wh=12)
    registers = meter.registers()
    assert (registers["1-0:1.8.0"], registers["1-0:1.8.1"]) == (5000, 5000)
    assert (registers["1-0:2.8.0"], registers["1-0:2.8.1"]) == (12, 12)


def test_instantaneous_values_are_the_last_sample(meter: Meter) -> None:
    assert meter.instantaneous()["1-0:32.7.0"] == 0.0  # nothing measured yet
    meter.step(T, 300.0, Sample(231.0, 4.0, 4.5, 0.9))
    values = meter.instantaneous()
    assert values == {
        "1-0:32.7.0": 231.0,
        "1-0:31.7.0": 4.0,
        "1-0:91.7.0": 4.5,
        "1-0:1.7.0": pytest.approx(831.6),
        "1-0:2.7.0": 0.0,
        "0-0:96.3.10": 1.0,
    }


# --- intervals ----------------------------------------------------------------------------------------------


def test_an_interval_closes_when_the_clock_crosses_its_end(meter: Meter) -> None:
    meter.step(at(10), 600.0, sample_of(3600.0))  # 1 Wh per second, 00:10 to 00:20
    assert summary(meter.take_new_profile_entries()) == [(utc(0), 300, 0, 0)]
    assert meter.take_new_profile_entries() == []
    meter.step(at(20), 600.0, sample_of(3600.0))  # ends exactly at 00:30: that interval is complete
    assert summary(meter.take_new_profile_entries()) == [(utc(15), 900, 0, 0)]


def test_one_step_over_several_boundaries_splits_energy_in_proportion(meter: Meter) -> None:
    meter.step(at(5), 3600.0, sample_of(3600.0))  # 00:05 to 01:05
    entries = meter.take_new_profile_entries()
    assert summary(entries) == [
        (utc(0), 600, 0, 0),
        (utc(15), 900, 0, 0),
        (utc(30), 900, 0, 0),
        (utc(45), 900, 0, 0),
    ]
    assert all(e.interval_s == 900 for e in entries)
    assert meter.captured_registers()["1-0:1.8.0"] == 3300
    assert meter.registers()["1-0:1.8.0"] == 3600


@pytest.mark.parametrize("interval_s", [300, 600, 900, 1800, 3600])
def test_every_allowed_interval_length(interval_s: int) -> None:
    meter = Meter(MeterConfig("DEV-L", load_profile_interval_s=interval_s), MONDAY)
    meter.step(T, 7200.0, sample_of(3600.0))
    entries = meter.take_new_profile_entries()
    assert [e.import_wh for e in entries] == [interval_s] * (7200 // interval_s)
    assert [e.interval_start.timestamp() - T for e in entries] == [
        i * interval_s for i in range(len(entries))
    ]


def test_a_rate_switch_inside_an_interval_takes_effect_at_the_switch() -> None:
    half_past = DayProfile("half past", [(time(0), 1), (time(7, 30), 4)])
    calendar = ActivityCalendar(
        "c", [Season("all", 1, 1, "w")], [WeekProfile("w", ["half past"] * 7)], [half_past]
    )
    meter = Meter(MeterConfig("DEV-CAL", load_profile_interval_s=3600, calendar=calendar), MONDAY)
    run_steps(meter, at(7 * 60), at(8 * 60), sample_of(1000.0), step_s=300.0)
    registers = meter.registers()
    assert (registers["1-0:1.8.1"], registers["1-0:1.8.4"]) == (500, 500)


def test_a_step_across_a_rate_switch_is_split_between_the_rates(meter: Meter) -> None:
    meter.step(at(6 * 60 + 30), 3600.0, sample_of(1000.0))  # Monday 06:30 to 07:30 UTC
    registers = meter.registers()
    assert (registers["1-0:1.8.1"], registers["1-0:1.8.2"]) == (500, 500)


# --- calendar in local time ---------------------------------------------------------------------------------


def energy_by_rate(zone: str, local_start: datetime, local_end: datetime) -> dict[int, int]:
    meter = Meter(MeterConfig("DEV-TZ", timezone=zone), local_start)
    run_steps(meter, local_start.timestamp(), local_end.timestamp(), sample_of(1000.0))
    registers = meter.registers()
    return {rate: registers[f"1-0:1.8.{rate}"] for rate in (1, 2, 3, 4)}


def berlin(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=ZoneInfo("Europe/Berlin"))


def test_rates_follow_local_time_on_a_weekday_in_winter() -> None:
    rates = energy_by_rate("Europe/Berlin", berlin(2026, 3, 4), berlin(2026, 3, 5))  # a Wednesday, CET
    assert rates == {1: 8000, 2: 13000, 3: 3000, 4: 0}


def test_rates_on_the_spring_forward_sunday_of_23_hours() -> None:
    rates = energy_by_rate("Europe/Berlin", berlin(2026, 3, 29), berlin(2026, 3, 30))
    assert rates == {1: 8000, 2: 15000, 3: 0, 4: 0}  # off-peak 00-02, 03-08 (02-03 never happens) and 23-24


def test_rates_on_the_first_summer_weekday_follow_the_new_offset() -> None:
    rates = energy_by_rate("Europe/Berlin", berlin(2026, 3, 30), berlin(2026, 3, 31))  # Monday, CEST
    assert rates == {1: 8000, 2: 13000, 3: 3000, 4: 0}


def test_rates_on_the_fall_back_sunday_of_25_hours() -> None:
    rates = energy_by_rate("Europe/Berlin", berlin(2026, 10, 25), berlin(2026, 10, 26))
    assert rates == {1: 10000, 2: 15000, 3: 0, 4: 0}  # 02:00-03:00 happens twice, off-peak


# --- supply -------------------------------------------------------------------------------------------------


def test_an_outage_flags_intervals_and_fills_the_profile_on_power_up(meter: Meter) -> None:
    load = sample_of(3600.0)
    meter.step(at(0), 1200.0, load)
    meter.power_down(at(20))
    assert meter.instantaneous()["1-0:32.7.0"] == 0.0
    meter.step(at(20), 3000.0, load)  # the caller keeps stepping: nothing is measured without supply
    meter.power_up(at(70))
    meter.step(at(70), 1200.0, load)
    down = Status.POWER_DOWN
    assert summary(meter.read_profile(utc(0), utc(90))) == [
        (utc(0), 900, 0, 0),
        (utc(15), 300, 0, down),
        (utc(30), 0, 0, down),
        (utc(45), 0, 0, down),
        (utc(60), 300, 0, down),
        (utc(75), 900, 0, 0),
    ]
    events = meter.events_since(0)
    assert [(e.code, e.occurred_at) for e in events] == [
        (EventCode.POWER_DOWN, utc(20)),
        (EventCode.POWER_UP, utc(70)),
    ]
    assert meter.registers()["1-0:1.8.0"] == 2400


def test_power_back_exactly_at_a_boundary_leaves_the_new_interval_clean(meter: Meter) -> None:
    meter.power_down(at(10))
    meter.power_up(at(30))
    meter.step(at(30), 900.0, sample_of(3600.0))
    assert [e.status for e in meter.read_profile(utc(0), utc(60))] == [
        Status.POWER_DOWN,
        Status.POWER_DOWN,
        0,
    ]


def test_a_powered_down_meter_refuses_commands(meter: Meter) -> None:
    meter.power_down(at(1))
    for command in (meter.disconnect, meter.connect):
        with pytest.raises(PoweredDownError, match="powered down"):
            command(at(2))
    with pytest.raises(PoweredDownError):
        meter.set_clock(at(2), utc(2))
    with pytest.raises(ValueError, match="already powered down"):
        meter.power_down(at(3))
    meter.power_up(at(4))
    with pytest.raises(ValueError, match="not powered down"):
        meter.power_up(at(5))


# --- relay --------------------------------------------------------------------------------------------------


def test_an_open_relay_stops_integration_and_flags_intervals(meter: Meter) -> None:
    load = sample_of(3600.0)
    meter.step(at(0), 600.0, load)
    meter.disconnect(at(10))
    assert not meter.relay_connected
    meter.step(at(10), 1800.0, load)
    values = meter.instantaneous()
    assert (values["0-0:96.3.10"], values["1-0:31.7.0"], values["1-0:1.7.0"]) == (0.0, 0.0, 0.0)
    assert values["1-0:32.7.0"] == 250.0  # the supply side is still measured
    meter.connect(at(40))
    meter.step(at(40), 1200.0, load)
    opened = Status.RELAY_OPEN
    assert summary(meter.take_new_profile_entries()) == [
        (utc(0), 600, 0, opened),
        (utc(15), 0, 0, opened),
        (utc(30), 300, 0, opened),
        (utc(45), 900, 0, 0),
    ]
    assert [e.code for e in meter.events_since(0)] == [EventCode.RELAY_OPENED, EventCode.RELAY_CLOSED]


def test_relay_commands_that_change_nothing_log_nothing(meter: Meter) -> None:
    meter.connect(at(1))
    meter.disconnect(at(2))
    meter.disconnect(at(3))
    assert [e.code for e in meter.events_since(0)] == [EventCode.RELAY_OPENED]
    assert meter.last_event_sequence == 1


def test_a_command_stamped_in_the_past_takes_effect_at_the_end_of_the_last_step(meter: Meter) -> None:
    meter.step(at(0), 900.0, sample_of(3600.0))
    meter.disconnect(at(5))
    assert meter.events_since(0)[0].occurred_at == utc(15)
    meter.step(at(15), 300.0, sample_of(3600.0))  # the next step still follows on
    assert meter.registers()["1-0:1.8.0"] == 900


# --- clock --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ppm", "offset_s"), [(100.0, 86.4), (-50.0, -43.2), (0.0, 0.0)])
def test_the_clock_drifts_by_its_ppm(ppm: float, offset_s: float) -> None:
    meter = Meter(MeterConfig("DEV-RTC", clock_drift_ppm=ppm), MONDAY)
    ten_days = MONDAY + timedelta(days=10)
    shown = meter.meter_time(ten_days)
    assert (shown - ten_days).total_seconds() == pytest.approx(offset_s, abs=1e-3)
    assert shown.tzinfo == UTC


def test_a_fast_clock_closes_the_interval_early_and_splits_the_energy() -> None:
    meter = Meter(MeterConfig("DEV-FAST", clock_drift_ppm=1000.0), MONDAY)
    meter.step(T, 900.0, sample_of(3600.0))  # the clock reaches 00:15 after 899.1 true seconds
    assert [e.import_wh for e in meter.take_new_profile_entries()] == [899]
    assert meter.registers()["1-0:1.8.0"] == 900


def test_a_slow_clock_closes_the_interval_late() -> None:
    meter = Meter(MeterConfig("DEV-SLOW", clock_drift_ppm=-1000.0), MONDAY)
    meter.step(T, 900.0, sample_of(3600.0))
    assert meter.take_new_profile_entries() == []
    meter.step(T + 900.0, 1.0, sample_of(3600.0))
    assert [e.import_wh for e in meter.take_new_profile_entries()] == [900]


def test_set_clock_corrects_drift_logs_old_and_new_and_flags_the_interval() -> None:
    meter = Meter(MeterConfig("DEV-SYNC", clock_drift_ppm=100.0), MONDAY)
    run_steps(meter, T, T + 86_400.0, sample_of(100.0))
    now = MONDAY + timedelta(days=1)
    before = meter.meter_time(now)
    meter.set_clock(now, now)
    assert meter.meter_time(now) == now
    assert meter.meter_time(now + timedelta(hours=1)) == now + timedelta(hours=1, seconds=0.36)
    (event,) = meter.events_since(0)
    assert event.code == EventCode.CLOCK_SET
    assert event.occurred_at == before
    assert before.isoformat() in event.detail
    assert now.isoformat() in event.detail
    meter.step(now, 900.0, sample_of(100.0))
    assert meter.take_new_profile_entries()[-1].status & Status.CLOCK_ADJUSTED


def test_setting_the_clock_forward_past_a_boundary_closes_the_interval(meter: Meter) -> None:
    meter.step(at(0), 840.0, sample_of(3600.0))
    meter.set_clock(at(14), utc(16))
    adjusted = Status.CLOCK_ADJUSTED
    assert summary(meter.take_new_profile_entries()) == [(utc(0), 840, 0, adjusted)]
    meter.step(at(14), 840.0, sample_of(3600.0))  # the clock now shows 00:16 to 00:30
    assert summary(meter.take_new_profile_entries()) == [(utc(15), 840, 0, adjusted)]


def test_setting_the_clock_back_never_records_an_interval_twice(meter: Meter) -> None:
    meter.step(at(0), 960.0, sample_of(3600.0))  # to 00:16
    meter.set_clock(at(16), utc(14))
    meter.step(at(16), 960.0, sample_of(3600.0))  # the clock shows 00:14 to 00:30
    entries = meter.take_new_profile_entries()
    assert summary(entries) == [(utc(0), 900, 0, 0), (utc(15), 1020, 0, Status.CLOCK_ADJUSTED)]


# --- memory -------------------------------------------------------------------------------------------------


def filled_meter(intervals: int, capacity: int = 96 * 62) -> Meter:
    meter = Meter(MeterConfig("DEV-MEM", profile_capacity=capacity), MONDAY)
    for i in range(intervals):
        meter.step(at(15 * i), 900.0, sample_of(3600.0 + 4 * i))
    return meter


def test_a_corrupted_copy_is_repaired_on_read_and_logged() -> None:
    meter = filled_meter(8)
    assert meter.corrupt_profile(copy=0, index=3) == 3
    entries = meter.read_profile(utc(0), utc(120))
    assert len(entries) == 8
    assert entries[3].import_wh == 903
    assert entries[3].status == Status.DATA_REPAIRED
    assert all(e.status == 0 for i, e in enumerate(entries) if i != 3)
    (event,) = meter.events_since(0)
    assert event.code == EventCode.MEMORY_REPAIRED
    assert "copy 0" in event.detail
    assert utc(45).isoformat() in event.detail
    meter.read_profile(utc(0), utc(120))
    assert meter.last_event_sequence == 1  # repaired for good: nothing new to report


def test_an_entry_with_both_copies_corrupted_is_left_out_and_logged_once() -> None:
    meter = filled_meter(8)
    meter.corrupt_profile(copy=0, index=5)
    meter.corrupt_profile(copy=1, index=5)
    entries = meter.read_profile(utc(0), utc(120))
    assert utc(75) not in [e.interval_start for e in entries]
    assert len(entries) == 7
    (event,) = meter.events_since(0)
    assert event.code == EventCode.MEMORY_LOST
    assert utc(75).isoformat() in event.detail
    meter.read_profile(utc(0), utc(120))
    assert meter.last_event_sequence == 1


def test_verify_memory_scrubs_everything_and_counts_repairs() -> None:
    meter = filled_meter(8)
    meter.corrupt_profile(copy=0, index=1)
    meter.corrupt_profile(copy=1, index=6)
    assert meter.verify_memory() == 2
    assert [e.code for e in meter.events_since(0)] == [EventCode.MEMORY_REPAIRED] * 2
    assert meter.verify_memory() == 0


def test_entries_pushed_after_corruption_are_read_back_repaired() -> None:
    meter = filled_meter(3)
    index = meter.corrupt_profile(copy=1)
    entries = meter.take_new_profile_entries()
    assert [e.status for e in entries].count(Status.DATA_REPAIRED) == 1
    assert entries[index].status == Status.DATA_REPAIRED


def test_the_ring_buffer_keeps_only_the_newest_entries() -> None:
    meter = filled_meter(10, capacity=4)
    assert [e.interval_start for e in meter.read_profile(utc(0), utc(1000))] == [
        utc(15 * i) for i in range(6, 10)
    ]
    assert [e.interval_start for e in meter.take_new_profile_entries()] == [utc(15 * i) for i in range(6, 10)]


def test_read_profile_takes_the_half_open_span(meter: Meter) -> None:
    run_steps(meter, T, at(120), sample_of(1000.0))
    assert [e.interval_start for e in meter.read_profile(utc(30), utc(75))] == [utc(30), utc(45), utc(60)]
    assert meter.read_profile(utc(30), utc(30)) == []
    with pytest.raises(ValueError, match="before start"):
        meter.read_profile(utc(30), utc(15))


def test_corrupt_profile_refuses_what_it_cannot_do(meter: Meter) -> None:
    with pytest.raises(ValueError, match="no load-profile entry"):
        meter.corrupt_profile(0)
    meter.step(T, 1800.0, sample_of(100.0))
    with pytest.raises(ValueError, match="copy must be 0 or 1"):
        meter.corrupt_profile(2)
    with pytest.raises(ValueError, match=r"index must be 0\.\.1"):
        meter.corrupt_profile(0, index=2)


# --- determinism --------------------------------------------------------------------------------------------


def scenario(seed: int) -> Meter:
    meter = Meter(MeterConfig("DEV-DET", clock_drift_ppm=37.0, timezone="Africa/Nairobi"), MONDAY, seed=seed)
    run_steps(meter, T, at(600), sample_of(1234.5))
    meter.power_down(at(600))
    meter.power_up(at(700))
    run_steps(meter, at(700), at(900), sample_of(777.0, export=True))
    meter.corrupt_profile(0)
    meter.corrupt_profile(1)
    meter.set_clock(at(900), utc(900))
    run_steps(meter, at(900), at(1000), sample_of(50.0))
    return meter


def observable(meter: Meter) -> tuple[object, ...]:
    return (meter.registers(), meter.read_profile(utc(-60), utc(2000)), meter.events_since(0))


def test_same_seed_and_input_give_identical_meters() -> None:
    assert observable(scenario(seed=5)) == observable(scenario(seed=5))


def test_the_seed_drives_the_random_choices() -> None:
    picks = set()
    for seed in range(10):
        meter = filled_meter(20)
        meter._seed = seed  # the same memory, different seeds
        picks.add(meter.corrupt_profile(0))
    assert len(picks) > 1


# --- refusal of bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("serial", ""),
        ("phases", 2),
        ("rated_current_a", 0),
        ("nominal_voltage_v", -230.0),
        ("load_profile_interval_s", 120),
        ("load_profile_interval_s", 900.0),
        ("profile_capacity", 0),
        ("clock_drift_ppm", float("nan")),
        ("clock_drift_ppm", 1e6),
        ("calendar", "tou"),
        ("timezone", "Mars/Olympus_Mons"),
        ("event_log_capacity", 0),
    ],
)
def test_bad_config_is_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"MeterConfig.{field} "):
        MeterConfig(**{"serial": "DEV-BAD", field: value})  # type: ignore[arg-type]


def test_bad_instants_and_durations_are_refused(meter: Meter) -> None:
    load = sample_of(100.0)
    with pytest.raises(ValueError, match="true_now must be timezone-aware"):
        meter.step(datetime(2026, 3, 2, 1), 300.0, load)  # noqa: DTZ001 - the naive time is the point
    with pytest.raises(ValueError, match="true_now"):
        meter.step(float("nan"), 300.0, load)
    with pytest.raises(ValueError, match="duration_s"):
        meter.step(T, -1.0, load)
    with pytest.raises(ValueError, match="duration_s"):
        meter.step(T, float("inf"), load)
    meter.step(T, 600.0, load)
    with pytest.raises(ValueError, match="steps must not overlap"):
        meter.step(T + 300.0, 300.0, load)
    assert meter.registers()["1-0:1.8.0"] == 16  # the refused steps changed nothing
    with pytest.raises(ValueError, match="commissioned_at"):
        Meter(MeterConfig("DEV-N"), datetime(2026, 3, 2))  # noqa: DTZ001
    with pytest.raises(ValueError, match="initial_import_wh"):
        Meter(MeterConfig("DEV-N"), MONDAY, initial_import_wh=-1)
