"""Fleet: layout, pushes, profile completeness, re-reads, outages, memory faults and down-link commands."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from openami.common.errors import NotFoundError, ValidationError
from openami.common.obis import (
    ACTIVE_EXPORT_INTERVAL,
    ACTIVE_IMPORT_INTERVAL,
    ACTIVE_IMPORT_TOTAL,
    CURRENT_L1,
    CURRENT_NEUTRAL,
    RELAY_STATE,
)
from openami.device import Status
from openami.headend.codec import (
    Command,
    Frame,
    UplinkContent,
    decode_uplink,
    encode_command,
    reread_command,
    verify,
)
from openami.simulator.faults import FaultPlan, Outage
from openami.simulator.fleet import Fleet

START = datetime(2026, 3, 2, tzinfo=UTC)
SITE = "SIM"


def _build(n: int = 6, **kwargs: object) -> Fleet:
    return Fleet.build(n, 7, START, SITE, "Africa/Nairobi", **kwargs)  # type: ignore[arg-type]


class _Collector:
    """The head-end's place in these tests: keeps every frame, decoded, by serial."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self._data: dict[str, list[UplinkContent]] = defaultdict(list)

    def __call__(self, frames: list[Frame]) -> None:
        self.frames.extend(frames)
        for frame in frames:
            _, kind, content = decode_uplink(frame)
            if kind == "data":
                self._data[content.serial].append(content)

    def contents(self, serial: str) -> list[UplinkContent]:
        return list(self._data[serial])

    def intervals(self, serial: str, obis: str = ACTIVE_IMPORT_INTERVAL) -> dict[datetime, tuple[int, int]]:
        found: dict[datetime, tuple[int, int]] = {}
        for content in self.contents(serial):
            for iv in content.intervals:
                if iv.obis == obis:
                    assert iv.interval_start not in found, "an interval was pushed twice"
                    found[iv.interval_start] = (iv.energy_wh, iv.status)
        return found


def test_layout_has_transformers_check_meters_and_keys() -> None:
    fleet = _build(120)
    customers = [s for s in fleet.specs if s.role == "customer"]
    checks = [s for s in fleet.specs if s.role == "check"]
    assert len(customers) == 120
    assert len(fleet.transformers) == len(checks) == 3  # ~N/50
    assert len({s.serial for s in fleet.specs}) == 123
    assert all(len(s.key) == 32 for s in fleet.specs)
    assert len({s.key for s in fleet.specs}) == 123
    fed = [serial for t in fleet.transformers for serial in t.meter_serials]
    assert sorted(fed) == sorted(s.serial for s in customers)
    for t in fleet.transformers:
        check = next(s for s in checks if s.serial == t.check_serial)
        assert check.phases == 3
        assert check.rated_current_a * 3 * 230 >= t.rating_kva * 1000
        assert 0.02 <= t.loss_share <= 0.05
    for spec in customers:
        assert spec.household
        assert spec.rated_current_a >= spec.service_rated_current_a
        assert fleet.transformers[spec.transformer_index].meter_serials.count(spec.serial) == 1


def test_same_seed_same_fleet_and_keys_can_be_given() -> None:
    assert _build(10).specs == _build(10).specs
    assert _build(10).specs != Fleet.build(10, 8, START, SITE, "Africa/Nairobi").specs
    key = bytes(range(32))
    fleet = _build(3, keys={"SIM-M000002": key})
    assert next(s for s in fleet.specs if s.serial == "SIM-M000002").key == key


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_meters": 0}, "n_meters"),
        ({"seed": -1}, "seed"),
        ({"site_code": "bad code"}, "site_code"),
        ({"site_code": "S" * 35}, "site_code"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"interval_s": 700}, "interval_s"),
        ({"push_every_s": 1000}, "push_every_s"),
        ({"solar_share": 2.0}, "solar_share"),
        ({"keys": {"NOPE": b"x" * 32}}, "NOPE"),
        ({"keys": {"SIM-M000001": b"short"}}, "SIM-M000001"),
        ({"faults": FaultPlan(corrupted_meters=99)}, "corrupted_meters"),
        ({"faults": FaultPlan(outages=(Outage("GHOST", START, 1.0),))}, "GHOST"),
        ({"start": datetime(2026, 3, 2)}, "start"),  # noqa: DTZ001 - naive on purpose
    ],
)
def test_bad_build_arguments_are_named(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "n_meters": 3,
        "seed": 1,
        "start": START,
        "site_code": SITE,
        "timezone": "Africa/Nairobi",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Fleet.build(**args)  # type: ignore[arg-type]


def test_run_pushes_a_complete_profile_matching_the_registers() -> None:
    fleet = _build(6, interval_s=900)
    sink = _Collector()
    days = 2
    pushed = fleet.run(START + timedelta(days=days), sink)
    assert pushed == len(sink.frames) == fleet.stats.frames_pushed
    assert fleet.now == START + timedelta(days=days)
    for spec in fleet.specs:
        intervals = sink.intervals(spec.serial)
        assert len(intervals) == 96 * days, spec.serial
        assert sorted(intervals) == [START + timedelta(minutes=15 * k) for k in range(96 * days)]
        last = sink.contents(spec.serial)[-1]
        total = next(r.energy_wh for r in last.registers if r.obis == ACTIVE_IMPORT_TOTAL)
        assert sum(wh for wh, _ in intervals.values()) == total
        if spec.role == "customer":
            assert 1_000 * days < total < 60_000 * days  # household-sized Wh per day
        for content in sink.contents(spec.serial):
            assert content.meter_time == content.registers[0].read_at
    for frame in sink.frames:
        serial = decode_uplink(frame)[2].serial
        verify(frame, next(s.key for s in fleet.specs if s.serial == serial))


def test_counters_rise_strictly_per_meter() -> None:
    fleet = _build(3)
    sink = _Collector()
    fleet.run(START + timedelta(days=1), sink)
    by_serial: dict[str, list[int]] = defaultdict(list)
    for frame in sink.frames:
        by_serial[decode_uplink(frame)[2].serial].append(frame.counter)
    for counters in by_serial.values():
        assert counters == list(range(1, len(counters) + 1))
        assert len(counters) == 24 * 3600 // fleet.push_every_s


def test_export_intervals_only_where_energy_can_flow_back() -> None:
    fleet = _build(20, solar_share=0.5, longitude_deg=0.0)
    sink = _Collector()
    fleet.run(START + timedelta(days=1), sink)
    for spec in fleet.specs:
        exports = sink.intervals(spec.serial, ACTIVE_EXPORT_INTERVAL)
        if spec.role == "customer" and not spec.pv_kwp:
            assert not exports
        else:
            assert len(exports) == 96
    solar = [s for s in fleet.specs if s.pv_kwp]
    assert solar
    exported = {
        start.hour
        for s in solar
        for start, (wh, _) in sink.intervals(s.serial, ACTIVE_EXPORT_INTERVAL).items()
        if wh
    }
    assert exported
    assert exported <= set(range(5, 19))  # near the equator, longitude 0: daylight in UTC


def test_check_meter_sees_its_customers_plus_losses() -> None:
    fleet = _build(50, solar_share=0.0)
    sink = _Collector()
    fleet.run(START + timedelta(days=1), sink)
    transformer = fleet.transformers[0]
    customers_wh = sum(sum(wh for wh, _ in sink.intervals(s).values()) for s in transformer.meter_serials)
    check_wh = sum(wh for wh, _ in sink.intervals(transformer.check_serial).values())
    assert customers_wh * 1.01 < check_wh < customers_wh * 1.07


def test_single_phase_neutral_carries_the_phase_current() -> None:
    fleet = _build(30)
    fleet.run(START + timedelta(hours=4), _Collector())
    for spec in fleet.specs:
        values = fleet.meter(spec.serial).instantaneous()
        if spec.phases == 1:
            assert values[CURRENT_NEUTRAL] == values[CURRENT_L1]
        else:
            assert values[CURRENT_NEUTRAL] < values[CURRENT_L1]


def test_same_seed_same_frames_and_running_in_slices_changes_nothing() -> None:
    one, two = _build(4), _build(4)
    whole, sliced = _Collector(), _Collector()
    one.run(START + timedelta(days=1), whole)
    for hours in (4, 12, 24):
        two.run(START + timedelta(hours=hours), sliced)
    assert whole.frames == sliced.frames


def test_reread_answers_what_was_pushed() -> None:
    fleet = _build(3)
    sink = _Collector()
    fleet.run(START + timedelta(days=1), sink)
    spec = fleet.specs[1]
    start, end = START + timedelta(hours=3), START + timedelta(hours=9)
    command = reread_command("rq-1", start, end)
    frame = encode_command(
        command, key=spec.key, counter=1, topic_root="openami/v1", site_code=SITE, serial=spec.serial
    )
    replies = fleet.handle_command(spec.serial, frame)
    assert len(replies) == 1
    verify(replies[0], spec.key)
    site_code, kind, content = decode_uplink(replies[0])
    assert (site_code, kind, content.request_id) == (SITE, "reply", "rq-1")
    answered = {iv.interval_start: (iv.energy_wh, iv.status) for iv in content.intervals}
    pushed = {k: v for k, v in sink.intervals(spec.serial).items() if start <= k < end}
    assert answered == pushed
    assert len(answered) == 24
    assert replies[0].counter == max(f.counter for f in sink.frames if spec.serial in f.topic) + 1


def test_long_rereads_are_split_into_several_replies() -> None:
    fleet = _build(1, interval_s=300)
    fleet.run(START + timedelta(days=8), _Collector())
    spec = fleet.specs[0]
    replies = fleet.handle_command(spec.serial, reread_command("big", START, START + timedelta(days=8)))
    assert len(replies) == 2
    intervals = [iv for r in replies for iv in decode_uplink(r)[2].intervals]
    assert len(intervals) == 8 * 288
    assert [r.counter for r in replies] == sorted({r.counter for r in replies})


def test_reread_of_an_empty_span_still_answers() -> None:
    fleet = _build(1)
    fleet.run(START + timedelta(hours=4), _Collector())
    spec = fleet.specs[0]
    replies = fleet.handle_command(spec.serial, reread_command("r", START - timedelta(days=3), START))
    content = decode_uplink(replies[0])[2]
    assert content.intervals == []
    assert content.registers


def test_meters_refuse_forged_and_replayed_commands() -> None:
    fleet = _build(2)
    fleet.run(START + timedelta(hours=4), _Collector())
    spec = fleet.specs[0]
    command = reread_command("r1", START, START + timedelta(hours=1))
    forged = encode_command(
        command, key=b"\x00" * 32, counter=5, topic_root="openami/v1", site_code=SITE, serial=spec.serial
    )
    assert fleet.handle_command(spec.serial, forged) == []
    genuine = encode_command(
        command, key=spec.key, counter=5, topic_root="openami/v1", site_code=SITE, serial=spec.serial
    )
    assert len(fleet.handle_command(spec.serial, genuine)) == 1
    assert fleet.handle_command(spec.serial, genuine) == []  # same counter again
    other = fleet.specs[1]
    wrong_meter = encode_command(
        command, key=other.key, counter=9, topic_root="openami/v1", site_code=SITE, serial=other.serial
    )
    assert fleet.handle_command(spec.serial, wrong_meter) == []
    assert fleet.stats.commands_refused == 3
    with pytest.raises(NotFoundError, match="NOPE"):
        fleet.handle_command("NOPE", command)


def test_disconnect_stops_consumption_and_the_check_meter_sees_it() -> None:
    fleet = _build(50, solar_share=0.0)
    sink = _Collector()
    fleet.run(START + timedelta(hours=4), sink)
    transformer = fleet.transformers[0]
    serials = transformer.meter_serials[:25]
    for serial in serials:
        reply = fleet.handle_command(serial, Command("disconnect", f"d-{serial}", {}))
        content = decode_uplink(reply[0])[2]
        assert next(i.value for i in content.instants if i.obis == RELAY_STATE) == 0.0
        assert not fleet.meter(serial).relay_connected
    later = _Collector()
    fleet.run(START + timedelta(hours=8), later)
    for serial in serials:
        intervals = later.intervals(serial)
        assert all(wh == 0 and status & Status.RELAY_OPEN for wh, status in intervals.values())
    customers_wh = sum(sum(wh for wh, _ in later.intervals(s).values()) for s in transformer.meter_serials)
    check_wh = sum(wh for wh, _ in later.intervals(transformer.check_serial).values())
    assert customers_wh * 1.01 < check_wh < customers_wh * 1.07
    reply = fleet.handle_command(serials[0], Command("connect", "c-1", {}))
    assert next(i.value for i in decode_uplink(reply[0])[2].instants if i.obis == RELAY_STATE) == 1.0


def test_set_clock_command_moves_the_meter_clock() -> None:
    fleet = _build(1, faults=FaultPlan(clock_drift_ppm_spread=200.0))
    fleet.run(START + timedelta(days=2), _Collector())
    spec = fleet.specs[0]
    assert spec.clock_drift_ppm != 0
    assert fleet.meter(spec.serial).meter_time(fleet.now) != fleet.now
    target = fleet.now
    replies = fleet.handle_command(spec.serial, Command("set_clock", "s-1", {"time": target.isoformat()}))
    assert decode_uplink(replies[0])[2].meter_time == target
    assert fleet.meter(spec.serial).meter_time(fleet.now) == target


def test_bad_command_arguments_are_named() -> None:
    fleet = _build(1)
    fleet.run(START + timedelta(hours=4), _Collector())
    serial = fleet.specs[0].serial
    with pytest.raises(ValidationError, match="reread"):
        fleet.handle_command(serial, Command("reread", "r", {"start": "yesterday", "end": "today"}))
    with pytest.raises(ValidationError, match="explode"):
        fleet.handle_command(serial, Command("explode", "r", {}))


def test_power_outage_fills_the_profile_after_return() -> None:
    fleet = _build(3)
    serial = fleet.specs[1].serial
    outage_start = START + timedelta(hours=5)
    fleet = _build(3, faults=FaultPlan(outages=(Outage(serial, outage_start, 7.0),)))
    sink = _Collector()
    fleet.run(START + timedelta(days=1), sink)
    pushes = sink.contents(serial)
    push_times = [c.meter_time for c in pushes]
    assert START + timedelta(hours=8) not in push_times  # offline: no push during the outage
    assert START + timedelta(hours=12) in push_times
    intervals = sink.intervals(serial)
    assert len(intervals) == 96  # nothing missing: the meter filled the outage on its return
    down = {k for k, (wh, status) in intervals.items() if status & Status.POWER_DOWN}
    assert down == {outage_start + timedelta(minutes=15 * k) for k in range(28)}
    assert all(intervals[k][0] == 0 for k in down)
    codes = [e.code for c in pushes for e in c.events]
    assert codes == ["power_down", "power_up"]
    assert fleet.fault_counts.outages == 1
    assert fleet.fault_counts.pushes_missed == 1
    # The others pushed every time.
    assert len(sink.contents(fleet.specs[0].serial)) == 6


def test_comms_outage_keeps_measuring_and_pushes_the_backlog() -> None:
    serial = "SIM-M000001"
    outage = Outage(serial, START + timedelta(hours=3), 10.0, power=False)  # 03:00 to 13:00
    fleet = _build(2, faults=FaultPlan(outages=(outage,)))
    sink = _Collector()
    fleet.run(START + timedelta(hours=8), sink)
    assert fleet.handle_command(serial, Command("connect", "c", {})) == []  # unreachable
    assert fleet.stats.commands_missed == 1
    fleet.run(START + timedelta(days=1), sink)
    pushes = sink.contents(serial)
    assert [c.meter_time.hour for c in pushes] == [16, 20, 0]  # 04:00, 08:00 and 12:00 were missed
    assert fleet.fault_counts.pushes_missed == 3
    backlog = pushes[0]
    assert len([iv for iv in backlog.intervals if iv.obis == ACTIVE_IMPORT_INTERVAL]) == 16 * 4
    intervals = sink.intervals(serial)
    assert len(intervals) == 96
    assert all(status == 0 for _, status in intervals.values())  # it measured on: nothing flagged
    assert all(wh > 0 for wh, _ in intervals.values())


def test_random_outages_are_drawn_within_the_window() -> None:
    plan = FaultPlan(
        random_outages=2,
        random_comms_outages=1,
        random_outage_hours=(1.0, 2.0),
        random_outage_within_days=1.0,
    )
    fleet = _build(5, faults=plan)
    sink = _Collector()
    fleet.run(START + timedelta(days=2), sink)
    assert fleet.fault_counts.outages == 3
    for spec in fleet.specs:
        assert len(sink.intervals(spec.serial)) == 192


def test_corrupted_memory_is_found_by_the_daily_scrub_and_reported() -> None:
    fleet = _build(5, faults=FaultPlan(corrupted_meters=2))
    sink = _Collector()
    fleet.run(START + timedelta(days=2), sink)
    assert fleet.fault_counts.corrupted_entries == 2
    assert fleet.stats.memory_repairs == 2
    repaired = {
        c.serial
        for spec in fleet.specs
        for c in sink.contents(spec.serial)
        for e in c.events
        if e.code == "memory_repaired"
    }
    assert len(repaired) == 2


def test_clock_drift_spread_is_applied() -> None:
    fleet = _build(40, faults=FaultPlan(clock_drift_ppm_spread=50.0))
    drifts = [s.clock_drift_ppm for s in fleet.specs]
    assert all(abs(d) <= 50.0 for d in drifts)
    assert max(drifts) > 20
    assert min(drifts) < -20
    assert fleet.fault_counts.drifting_meters == len(drifts)


def test_link_faults_are_applied_to_pushes_and_counted() -> None:
    fleet = _build(10, faults=FaultPlan(drop_share=0.2, duplicate_share=0.1, forge_share=0.1))
    sink = _Collector()
    pushed = fleet.run(START + timedelta(days=1), sink)
    counts = fleet.fault_counts
    assert counts.frames_offered == pushed
    assert min(counts.dropped, counts.duplicated, counts.forged) > 0
    assert len(sink.frames) == pushed - counts.dropped + counts.duplicated + counts.forged


def test_bad_run_arguments_are_named() -> None:
    fleet = _build(1)
    sink = _Collector()
    with pytest.raises(ValueError, match="step_s"):
        fleet.run(START + timedelta(hours=4), sink, step_s=7)
    with pytest.raises(ValueError, match="multiples of step_s"):
        fleet.run(START + timedelta(hours=4, seconds=30), sink)
    fleet.run(START + timedelta(hours=4), sink)
    with pytest.raises(ValueError, match="before the fleet's time"):
        fleet.run(START, sink)


def test_clock_and_progress_follow_true_time() -> None:
    from openami.common.clock import ManualClock

    fleet = _build(1)
    clock = ManualClock(START)
    seen_at_delivery: list[datetime] = []
    progress: list[datetime] = []
    fleet.run(
        START + timedelta(hours=8),
        lambda frames: seen_at_delivery.append(clock.now()),
        on_progress=progress.append,
        clock=clock,
    )
    assert seen_at_delivery == [START + timedelta(hours=4), START + timedelta(hours=8)]
    assert progress == seen_at_delivery


def test_a_fleet_runs_through_a_dst_change() -> None:
    start = datetime(2026, 3, 28, tzinfo=UTC)
    fleet = Fleet.build(2, 3, start, SITE, "Europe/London")
    sink = _Collector()
    fleet.run(start + timedelta(days=2), sink)
    for spec in fleet.specs:
        assert len(sink.intervals(spec.serial)) == 192
