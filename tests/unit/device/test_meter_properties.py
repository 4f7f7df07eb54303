"""Properties over random operation sequences: the registers and the closed intervals always agree to the Wh,
the rates add up to the total, and the total is the physical energy measured, less a fraction of a Wh."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from openami.device import LOAD_PROFILE_INTERVALS_S, Meter, MeterConfig, ProfileEntry, Sample
from tests.unit.device.support import MONDAY

IMPORT, EXPORT = "1-0:1.8.0", "1-0:2.8.0"

step_op = st.tuples(
    st.just("step"),
    st.floats(0.0, 4000.0),  # duration s
    st.floats(0.0, 60.0),  # phase current A
    st.floats(0.0, 1.0),  # power factor
    st.booleans(),  # export
)
operations = st.lists(
    st.one_of(
        step_op,
        step_op,
        step_op,
        st.tuples(st.just("gap"), st.floats(0.0, 5000.0)),
        st.tuples(st.just("supply")),
        st.tuples(st.just("relay")),
        st.tuples(st.just("clock"), st.floats(-3000.0, 3000.0)),
    ),
    max_size=40,
)


def check_agreement(meter: Meter, entries: list[ProfileEntry], interval_s: int) -> None:
    registers = meter.registers()
    for total in (IMPORT, EXPORT):
        stem = total[:-1]
        assert sum(registers[f"{stem}{rate}"] for rate in (1, 2, 3, 4)) == registers[total]
    captured = meter.captured_registers()
    assert captured[IMPORT] == sum(e.import_wh for e in entries)
    assert captured[EXPORT] == sum(e.export_wh for e in entries)
    starts = [e.interval_start.timestamp() for e in entries]
    assert starts == sorted(set(starts))  # rising, never twice
    assert all(start % interval_s == 0 for start in starts)
    assert all(e.interval_s == interval_s for e in entries)


@settings(max_examples=150, deadline=None)
@given(
    ops=operations,
    interval_s=st.sampled_from(LOAD_PROFILE_INTERVALS_S),
    drift_ppm=st.floats(-2000.0, 2000.0),
    phases=st.sampled_from([1, 3]),
    voltage_v=st.floats(180.0, 260.0),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/Santiago", "Asia/Kolkata"]),
)
def test_registers_and_intervals_agree_to_the_wh(
    ops: list[tuple[object, ...]], interval_s: int, drift_ppm: float, phases: int, voltage_v: float, zone: str
) -> None:
    config = MeterConfig(
        "DEV-PROP",
        phases=phases,
        load_profile_interval_s=interval_s,
        profile_capacity=100_000,
        clock_drift_ppm=drift_ppm,
        timezone=zone,
    )
    meter = Meter(config, MONDAY + timedelta(seconds=417))
    t = MONDAY.timestamp() + 417.0
    expected = {IMPORT: 0.0, EXPORT: 0.0}
    entries: list[ProfileEntry] = []
    set_back_s = 0.0  # how far the clock was set back in all: the open interval ends that much later
    for op in ops:
        kind = op[0]
        if kind == "step":
            _, duration_s, current_a, power_factor, export = op
            sample = Sample(voltage_v, current_a, current_a, power_factor, export)  # type: ignore[arg-type]
            meter.step(t, duration_s, sample)  # type: ignore[arg-type]
            if meter.powered and meter.relay_connected:
                power_w = voltage_v * current_a * power_factor * phases  # type: ignore[operator]
                expected[EXPORT if export else IMPORT] += power_w * duration_s / 3600.0  # type: ignore[operator]
            t += duration_s  # type: ignore[operator]
        elif kind == "gap":
            t += op[1]  # type: ignore[operator]
        elif kind == "supply":
            (meter.power_up if not meter.powered else meter.power_down)(t)
        elif kind == "relay" and meter.powered:
            (meter.connect if not meter.relay_connected else meter.disconnect)(t)
        elif kind == "clock" and meter.powered:
            meter.set_clock(t, meter.meter_time(t) + timedelta(seconds=op[1]))  # type: ignore[arg-type]
            set_back_s += max(0.0, -op[1])  # type: ignore[operator]
        entries.extend(meter.take_new_profile_entries())
        check_agreement(meter, entries, interval_s)
        registers = meter.registers()
        for total in (IMPORT, EXPORT):
            # Only whole Wh are registered: the fraction left over is less than one.
            assert expected[total] - 1.0 - 1e-6 <= registers[total] <= expected[total] + 1e-6

    # Let the open interval close with nothing more measured: then every registered Wh is in an interval.
    if not meter.powered:
        meter.power_up(t)
    meter.step(t, (2 * interval_s + set_back_s) * 1.01, Sample(voltage_v, 0.0, 0.0))
    entries.extend(meter.take_new_profile_entries())
    check_agreement(meter, entries, interval_s)
    registers = meter.registers()
    assert registers[IMPORT] == sum(e.import_wh for e in entries)
    assert registers[EXPORT] == sum(e.export_wh for e in entries)
    assert meter.read_profile(MONDAY - timedelta(days=1), MONDAY + timedelta(days=30)) == entries


@settings(max_examples=50, deadline=None)
@given(
    durations=st.lists(st.floats(1.0, 900.0), min_size=1, max_size=30),
    current_a=st.floats(0.1, 60.0),
)
def test_cutting_the_same_span_into_different_steps_registers_the_same_energy(
    durations: list[float], current_a: float
) -> None:
    span_s = sum(durations)
    sample = Sample(230.0, current_a, current_a)
    one = Meter(MeterConfig("DEV-ONE", clock_drift_ppm=35.0), MONDAY)
    one.step(MONDAY.timestamp(), span_s, sample)
    many = Meter(MeterConfig("DEV-MANY", clock_drift_ppm=35.0), MONDAY)
    t = MONDAY.timestamp()
    for duration_s in durations:
        many.step(t, duration_s, sample)
        t += duration_s
    # Floating point may put the last fraction of a Wh on either side of a whole Wh, never more.
    assert abs(one.registers()[IMPORT] - many.registers()[IMPORT]) <= 1
