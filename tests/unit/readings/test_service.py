"""ReadingsService.ingest on SQLite: idempotence, conflicts, estimates replaced, rejections, VEE flags."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openami.common.clock import ManualClock
from openami.common.errors import ValidationError
from openami.common.obis import (
    ACTIVE_EXPORT_INTERVAL,
    ACTIVE_IMPORT_INTERVAL,
    ACTIVE_POWER_IMPORT,
    CURRENT_L1,
)
from openami.readings.bulk import RULE_BITS
from openami.readings.interfaces import InstantValue, IntervalValue, MeterEvent, Source
from openami.readings.models import (
    IntervalReading,
    IntervalReadingHistory,
    LatestInstant,
    ReadingFlag,
    RegisterReading,
    RegisterReadingHistory,
    StoredMeterEvent,
)
from openami.readings.rules import Rule
from openami.readings.service import ReadingsService
from tests.unit.readings.test_service_support import T0, Q, batch, intervals, make_meter, make_site, register


@pytest.fixture
def service(clock: ManualClock) -> ReadingsService:
    return ReadingsService(clock)


@pytest.fixture
def meter(session: Session):
    return make_meter(session, make_site(session))


def _rows(session: Session) -> list[IntervalReading]:
    return list(
        session.scalars(
            select(IntervalReading)
            .order_by(IntervalReading.obis, IntervalReading.interval_start)
            .execution_options(populate_existing=True)
        )
    )


def test_new_intervals_are_stored_once_and_a_replay_is_a_duplicate(service, session, meter) -> None:
    values = intervals(T0, [100, 120, 90, 80])
    first = service.ingest(session, [batch(meter, values)])
    session.commit()
    again = service.ingest(session, [batch(meter, values, received_at=T0 + timedelta(hours=5))])
    session.commit()

    assert (first.intervals_stored, first.duplicates, first.conflicts) == (4, 0, 0)
    assert (again.intervals_stored, again.duplicates, again.conflicts) == (0, 4, 0)
    rows = _rows(session)
    assert [(r.energy_wh, r.version, r.quality, r.source) for r in rows] == [
        (100, 1, "actual", "push"),
        (120, 1, "actual", "push"),
        (90, 1, "actual", "push"),
        (80, 1, "actual", "push"),
    ]
    assert rows[0].interval_start == T0
    assert rows[0].received_at == T0 + Q * 4 + timedelta(seconds=30)  # the replay changed nothing
    assert session.scalar(select(func.count()).select_from(IntervalReadingHistory)) == 0


def test_a_repeated_key_inside_one_call_is_a_duplicate(service, session, meter) -> None:
    values = intervals(T0, [100, 120])
    result = service.ingest(session, [batch(meter, values), batch(meter, values)])
    assert (result.intervals_stored, result.duplicates) == (2, 2)


def test_a_conflicting_value_becomes_a_new_version_with_history_and_a_flag(service, session, meter) -> None:
    service.ingest(session, [batch(meter, intervals(T0, [100, 120]))])
    later = T0 + timedelta(hours=3)
    result = service.ingest(session, [batch(meter, intervals(T0, [100, 150]), received_at=later)])
    session.commit()

    assert (result.conflicts, result.duplicates, result.intervals_stored) == (1, 1, 1)
    assert result.flags_raised.get("conflict") == 1
    current = _rows(session)[1]
    assert (current.energy_wh, current.version, current.received_at) == (150, 2, later)
    assert current.flags & RULE_BITS[Rule.CONFLICT]
    (old,) = session.scalars(select(IntervalReadingHistory)).all()
    assert (old.energy_wh, old.version, old.why, old.interval_start) == (120, 1, "conflict", T0 + Q)
    (flag,) = session.scalars(select(ReadingFlag).where(ReadingFlag.rule == "conflict")).all()
    assert "120 Wh" in flag.reason
    assert "150 Wh" in flag.reason
    assert (flag.start_at, flag.end_at) == (T0 + Q, T0 + 2 * Q)


def test_the_same_conflict_sent_again_is_a_duplicate(service, session, meter) -> None:
    service.ingest(session, [batch(meter, intervals(T0, [100]))])
    service.ingest(session, [batch(meter, intervals(T0, [130]))])
    again = service.ingest(session, [batch(meter, intervals(T0, [130]))])
    assert (again.duplicates, again.conflicts) == (1, 0)
    assert _rows(session)[0].version == 2


def test_conflicting_values_inside_one_call_keep_both_as_versions(service, session, meter) -> None:
    result = service.ingest(session, [batch(meter, intervals(T0, [100])), batch(meter, intervals(T0, [140]))])
    assert (result.intervals_stored, result.conflicts) == (2, 1)
    assert _rows(session)[0].energy_wh == 140
    assert session.scalar(select(IntervalReadingHistory.energy_wh)) == 100


def test_impossible_values_are_rejected_per_record_with_a_reason(service, session, meter) -> None:
    received = T0 + timedelta(hours=2)
    bad = [
        IntervalValue(ACTIVE_IMPORT_INTERVAL, T0, 900, -5),  # negative
        IntervalValue(ACTIVE_IMPORT_INTERVAL, T0 + Q, 900, 40_000),  # 160 kW on a 13.8 kW service
        IntervalValue(ACTIVE_IMPORT_INTERVAL, T0 + timedelta(days=3), 900, 10),  # far future
        IntervalValue(ACTIVE_IMPORT_INTERVAL, T0 - timedelta(days=500), 900, 10),  # too old
        IntervalValue(ACTIVE_IMPORT_INTERVAL, T0 + 2 * Q, 1800, 10),  # not the meter's interval length
        IntervalValue(ACTIVE_IMPORT_INTERVAL, T0 + timedelta(minutes=7), 900, 10),  # off the grid
        IntervalValue("1-0:99.99.0", T0, 900, 10),  # not a load-profile quantity
    ]
    good = IntervalValue(ACTIVE_IMPORT_INTERVAL, T0 + 3 * Q, 900, 200)
    result = service.ingest(session, [batch(meter, [*bad, good], received_at=received)])

    assert result.intervals_stored == 1
    assert result.rejected == {
        "negative_energy": 1,
        "beyond_rating": 1,
        "time_out_of_range": 2,
        "interval_length": 1,
        "misaligned_interval": 1,
        "unknown_obis": 1,
    }
    assert [(r.interval_start, r.energy_wh) for r in _rows(session)] == [(T0 + 3 * Q, 200)]


def test_a_batch_of_an_unknown_meter_is_rejected_whole(service, session, meter) -> None:
    orphan = batch(meter, intervals(T0, [1, 2]))
    orphan.meter_id = meter.id + 1000
    result = service.ingest(session, [orphan])
    assert result.rejected == {"unknown_meter": 2}
    assert _rows(session) == []


def test_a_batch_claiming_to_be_an_estimate_is_a_caller_error(service, session, meter) -> None:
    with pytest.raises(ValidationError, match="not a meter's"):
        service.ingest(session, [batch(meter, intervals(T0, [1]), source=Source.ESTIMATE)])


def test_vee_flags_are_stored_and_marked_on_the_intervals(service, session, meter) -> None:
    # 13 800 W rating: 4 000 Wh in 15 min is 16 000 W, a spike but physically possible (< 10×).
    values = [*intervals(T0, [100, 4_000]), *intervals(T0 + 3 * Q, [90])]  # T0 + 2Q missing: a gap
    result = service.ingest(session, [batch(meter, values)])
    session.commit()

    assert result.flags_raised == {"spike": 1, "gap": 1}
    stored = {(f.rule, f.start_at, f.end_at) for f in session.scalars(select(ReadingFlag))}
    assert stored == {("spike", T0 + Q, T0 + 2 * Q), ("gap", T0 + 2 * Q, T0 + 3 * Q)}
    by_start = {r.interval_start: r.flags for r in _rows(session)}
    assert by_start[T0 + Q] == RULE_BITS[Rule.SPIKE]
    assert by_start[T0] == 0
    # The same batch again raises nothing new.
    assert service.ingest(session, [batch(meter, values)]).flags_raised == {}


def test_register_mismatch_uses_the_previous_register_from_the_database(service, session, meter) -> None:
    service.ingest(
        session, [batch(meter, registers=[register(T0, 10_000)], received_at=T0 + timedelta(seconds=5))]
    )
    session.commit()
    # The 4 intervals add up to 400 Wh but the register rose by 1 000 Wh.
    later = batch(meter, intervals(T0, [100, 100, 100, 100]), registers=[register(T0 + 4 * Q, 11_000)])
    result = service.ingest(session, [later])
    session.commit()

    assert result.flags_raised == {"register_mismatch": 1}
    assert result.registers_stored == 1
    assert all(r.flags & RULE_BITS[Rule.REGISTER_MISMATCH] for r in _rows(session))


def test_a_decreasing_register_is_flagged_negative(service, session, meter) -> None:
    service.ingest(
        session, [batch(meter, registers=[register(T0, 10_000)], received_at=T0 + timedelta(seconds=5))]
    )
    result = service.ingest(
        session,
        [batch(meter, registers=[register(T0 + Q, 9_000)], received_at=T0 + Q + timedelta(seconds=5))],
    )
    assert result.flags_raised == {"negative": 1}


def test_register_reads_are_idempotent_and_conflicts_versioned(service, session, meter) -> None:
    at = T0 + timedelta(seconds=5)
    first = service.ingest(session, [batch(meter, registers=[register(T0, 10_000)], received_at=at)])
    dup = service.ingest(session, [batch(meter, registers=[register(T0, 10_000)], received_at=at)])
    clash = service.ingest(session, [batch(meter, registers=[register(T0, 10_007)], received_at=at)])
    session.commit()

    assert (first.registers_stored, dup.duplicates, clash.conflicts) == (1, 1, 1)
    (current,) = session.scalars(select(RegisterReading)).all()
    assert (current.energy_wh, current.version) == (10_007, 2)
    (old,) = session.scalars(select(RegisterReadingHistory)).all()
    assert (old.energy_wh, old.version, old.why) == (10_000, 1, "conflict")


def test_latest_instants_keep_the_newest_value_and_events_are_stored_once(service, session, meter) -> None:
    at = T0 + timedelta(hours=1)
    newer = InstantValue(ACTIVE_POWER_IMPORT, at, 1_500.0)
    older = InstantValue(ACTIVE_POWER_IMPORT, at - timedelta(minutes=5), 900.0)
    event = MeterEvent("power_down", at - timedelta(minutes=30), sequence=7, detail="mains lost")
    service.ingest(
        session, [batch(meter, received_at=at, instants=[newer, InstantValue(CURRENT_L1, at, 6.5)])]
    )
    service.ingest(session, [batch(meter, received_at=at, instants=[older], events=[event])])
    service.ingest(session, [batch(meter, received_at=at, events=[event])])
    session.commit()

    live = {i.obis: i.value for i in session.scalars(select(LatestInstant))}
    assert live == {ACTIVE_POWER_IMPORT: 1_500.0, CURRENT_L1: 6.5}
    events = session.scalars(select(StoredMeterEvent)).all()
    assert [(e.sequence, e.code, e.detail) for e in events] == [(7, "power_down", "mains lost")]


def test_impossible_instants_are_rejected(service, session, meter) -> None:
    at = T0 + timedelta(hours=1)
    values = [InstantValue(ACTIVE_POWER_IMPORT, at, float("nan")), InstantValue(ACTIVE_POWER_IMPORT, at, 1e9)]
    result = service.ingest(session, [batch(meter, received_at=at, instants=values)])
    assert result.rejected == {"impossible_value": 1, "beyond_rating": 1}
    assert session.scalar(select(func.count()).select_from(LatestInstant)) == 0


def test_export_intervals_are_stored_beside_import(service, session, meter) -> None:
    values = [*intervals(T0, [100]), *intervals(T0, [0], obis=ACTIVE_EXPORT_INTERVAL)]
    result = service.ingest(session, [batch(meter, values)])
    assert result.intervals_stored == 2
    assert {r.obis for r in _rows(session)} == {ACTIVE_IMPORT_INTERVAL, ACTIVE_EXPORT_INTERVAL}


def test_the_meters_of_one_call_are_looked_up_together(service, session, monkeypatch) -> None:
    site = make_site(session)
    meters = [make_meter(session, site, serial=f"SN{n}") for n in range(3)]
    looked_up: list[set[int]] = []
    real = service.registry.meters_by_id
    monkeypatch.setattr(
        service.registry, "meters_by_id", lambda s, ids: looked_up.append(set(ids)) or real(s, ids)
    )
    monkeypatch.setattr(service.registry, "meter_info", lambda *_: pytest.fail("looked up one by one"))
    first = service.ingest(session, [batch(m, intervals(T0, [10, 20])) for m in meters])
    again = service.ingest(session, [batch(m, intervals(T0 + Q * 2, [30])) for m in meters])
    assert (first.intervals_stored, again.intervals_stored) == (6, 3)
    assert looked_up == [{m.id for m in meters}]  # once, for all three; then from the cache
