"""The load limiter: the relay trips once import power has stayed above the limit for the trip time (not
before, not under it), closes again after the limiter's wait (or stays open), keeps the limit over a power cut,
and a remote disconnect takes over a relay the limiter opened."""

from __future__ import annotations

import pytest

from openami.common import obis
from openami.device import EventCode, Meter, MeterConfig, Status
from tests.unit.device.support import MONDAY, run_steps, sample_of

T0 = MONDAY.timestamp()


def limited(limit_w: int = 2000, **kw: object) -> Meter:
    meter = Meter(MeterConfig("DEV-LIM"), MONDAY, **kw)  # type: ignore[arg-type]
    meter.set_load_limit(T0, limit_w)
    return meter


def codes(meter: Meter) -> list[EventCode]:
    return [e.code for e in meter.events_since(0)]


def test_trips_after_thirty_seconds_above_the_limit_and_not_before() -> None:
    meter = limited()
    run_steps(meter, T0, T0 + 29, sample_of(3000), step_s=1)
    assert meter.relay_connected  # 29 s above: not yet
    assert EventCode.LOAD_LIMIT_EXCEEDED not in codes(meter)
    meter.step(T0 + 29, 1.0, sample_of(3000))
    assert not meter.relay_connected
    assert meter.load_limit_tripped
    trip = meter.events_since(0)[-1]
    assert trip.code is EventCode.LOAD_LIMIT_EXCEEDED
    assert trip.occurred_at.timestamp() == T0 + 30
    assert "limit=2000W import=3000W since=2026-03-02T00:00:00+00:00" in trip.detail
    assert meter.instantaneous()[obis.RELAY_STATE] == 0.0


def test_the_trip_falls_inside_a_long_step_and_only_what_flowed_before_it_is_counted() -> None:
    meter = limited(load_limit_reclose_after_s=None)
    meter.step(T0, 300.0, sample_of(3600))  # 3.6 kW: 1 Wh a second
    assert not meter.relay_connected
    assert meter.registers()[obis.ACTIVE_IMPORT_TOTAL] == 30  # the 30 s before the trip, not 300


def test_does_not_trip_at_or_under_the_limit_nor_when_the_excess_is_interrupted() -> None:
    meter = limited()
    run_steps(meter, T0, T0 + 3600, sample_of(2000), step_s=60)  # exactly at the limit for an hour
    assert meter.relay_connected
    t = T0 + 3600
    for _ in range(20):  # 20 s above, 10 s under, again and again: never 30 s in a row
        meter.step(t, 20.0, sample_of(5000))
        meter.step(t + 20, 10.0, sample_of(1000))
        t += 30
    assert meter.relay_connected
    assert EventCode.LOAD_LIMIT_EXCEEDED not in codes(meter)


def test_export_is_not_import_and_no_limit_means_no_trip() -> None:
    meter = limited()
    meter.step(T0, 300.0, sample_of(5000, export=True))
    assert meter.relay_connected
    free = Meter(MeterConfig("DEV-FREE"), MONDAY)
    free.step(T0, 300.0, sample_of(50_000))
    assert free.relay_connected
    assert free.load_limit_w == 0


def test_recloses_after_the_wait_and_trips_again_while_the_load_stays() -> None:
    meter = limited(load_limit_reclose_after_s=60.0)
    meter.step(T0, 30.0, sample_of(3600))
    assert not meter.relay_connected
    meter.step(T0 + 30, 59.0, sample_of(3600))
    assert not meter.relay_connected  # 59 s of the 60 s wait
    meter.step(T0 + 89, 1.0, sample_of(3600))
    assert meter.relay_connected
    assert not meter.load_limit_tripped
    reclosed = meter.events_since(0)[-1]
    assert reclosed.code is EventCode.LOAD_LIMIT_RECLOSED
    assert reclosed.occurred_at.timestamp() == T0 + 90
    meter.step(T0 + 90, 300.0, sample_of(3600))  # still too much: 30 s on, 60 s off, ...
    # Trips at 30 s, then at 120, 210, 300 and 390 s (the end of the step); 30 Wh flowed before each.
    assert codes(meter).count(EventCode.LOAD_LIMIT_EXCEEDED) == 5
    assert not meter.relay_connected
    assert meter.registers()[obis.ACTIVE_IMPORT_TOTAL] == 30 * 5


def test_stays_open_until_a_remote_connect_when_set_so() -> None:
    meter = limited(load_limit_reclose_after_s=None)
    run_steps(meter, T0, T0 + 86_400, sample_of(3000))
    assert not meter.relay_connected
    assert meter.load_limit_tripped
    meter.connect(T0 + 86_400)
    assert meter.relay_connected
    assert not meter.load_limit_tripped
    meter.step(T0 + 86_400, 10.0, sample_of(1000))
    assert meter.relay_connected


def test_a_remote_disconnect_takes_over_a_limiter_trip() -> None:
    meter = limited(load_limit_reclose_after_s=60.0)
    meter.step(T0, 30.0, sample_of(3000))
    assert meter.load_limit_tripped
    meter.disconnect(T0 + 40)
    assert not meter.load_limit_tripped
    assert meter.events_since(0)[-1].code is EventCode.RELAY_OPENED
    run_steps(meter, T0 + 40, T0 + 3600, sample_of(500))
    assert not meter.relay_connected  # the limiter's wait does not close a remote disconnection


def test_the_limit_survives_a_power_cut_but_the_time_above_it_does_not() -> None:
    meter = limited()
    meter.step(T0, 20.0, sample_of(3000))
    meter.power_down(T0 + 20)
    meter.power_up(T0 + 600)
    assert meter.load_limit_w == 2000
    meter.step(T0 + 600, 20.0, sample_of(3000))
    assert meter.relay_connected  # 20 s + 20 s, but not in a row
    meter.step(T0 + 620, 10.0, sample_of(3000))
    assert not meter.relay_connected


def test_a_trip_held_through_a_power_cut_recloses_once_supply_is_back() -> None:
    meter = limited(load_limit_reclose_after_s=60.0)
    meter.step(T0, 30.0, sample_of(3000))
    meter.power_down(T0 + 40)
    meter.power_up(T0 + 900)
    assert not meter.relay_connected  # a latching relay: still open
    meter.step(T0 + 900, 10.0, sample_of(500))
    assert meter.relay_connected


def test_setting_and_removing_the_limit_is_logged_and_removing_releases_a_trip() -> None:
    meter = limited(load_limit_reclose_after_s=None)
    meter.step(T0, 60.0, sample_of(3000))
    assert meter.load_limit_tripped
    meter.set_load_limit(T0 + 60, 0)
    assert meter.relay_connected
    assert meter.load_limit_w == 0
    events = meter.events_since(0)
    assert [e.code for e in events] == [
        EventCode.LOAD_LIMIT_SET,
        EventCode.LOAD_LIMIT_EXCEEDED,
        EventCode.LOAD_LIMIT_SET,
        EventCode.LOAD_LIMIT_RECLOSED,
    ]
    assert events[0].detail == "old=0W new=2000W"
    assert events[2].detail == "old=2000W new=0W"


def test_a_trip_marks_the_interval_relay_open() -> None:
    meter = limited(load_limit_reclose_after_s=None)
    run_steps(meter, T0, T0 + 1800, sample_of(3000))
    entries = meter.take_new_profile_entries()
    assert entries[0].status & Status.RELAY_OPEN
    assert entries[1].status & Status.RELAY_OPEN
    assert entries[1].import_wh == 0


@pytest.mark.parametrize("bad", [-1, 1_000_001, 2.5, True, "2000"])
def test_bad_limits_are_refused(bad: object) -> None:
    meter = Meter(MeterConfig("DEV-BAD"), MONDAY)
    with pytest.raises(ValueError, match="load limit must be a whole number of W"):
        meter.set_load_limit(T0, bad)  # type: ignore[arg-type]
    assert meter.load_limit_w == 0


def test_bad_limiter_timing_is_refused() -> None:
    with pytest.raises(ValueError, match="load_limit_trip_after_s"):
        Meter(MeterConfig("DEV-BAD"), MONDAY, load_limit_trip_after_s=0)
    with pytest.raises(ValueError, match="load_limit_reclose_after_s"):
        Meter(MeterConfig("DEV-BAD"), MONDAY, load_limit_reclose_after_s=-1.0)
