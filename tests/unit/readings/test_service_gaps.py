"""Gaps: detection -> re-read requests -> a re-read answer fills them, or estimates when unanswered; edits."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from openami.common.clock import ManualClock
from openami.common.errors import NotFoundError, ValidationError
from openami.common.obis import ACTIVE_IMPORT_INTERVAL
from openami.readings.interfaces import Source
from openami.readings.models import (
    DailyCompleteness,
    IntervalReading,
    IntervalReadingHistory,
    ReadingFlag,
    ReadingGap,
)
from openami.readings.service import ReadingsService
from openami.security.audit import AuditEntry
from tests.unit.readings.test_service_support import T0, Q, batch, intervals, make_meter, make_site, register

DAY = timedelta(days=1)
HOLE = (T0 + timedelta(hours=10), T0 + timedelta(hours=11))  # 4 missing intervals


@pytest.fixture
def service(clock: ManualClock) -> ReadingsService:
    return ReadingsService(clock)


@pytest.fixture
def meter(session: Session, service: ReadingsService):
    """A meter with a whole day of 100 Wh intervals on T0 except HOLE, and registers around the hole."""
    info = make_meter(session, make_site(session))
    before = intervals(T0, [100] * 40)
    after = intervals(HOLE[1], [100] * 52)
    registers = [register(HOLE[0], 50_000), register(HOLE[1], 50_800)]
    service.ingest(session, [batch(info, before), batch(info, after, registers=registers)])
    session.commit()
    return info


def _gaps(session: Session) -> list[ReadingGap]:
    return list(
        session.scalars(
            select(ReadingGap).order_by(ReadingGap.start_at).execution_options(populate_existing=True)
        )
    )


def _hole_rows(session: Session) -> list[IntervalReading]:
    return list(
        session.scalars(
            select(IntervalReading)
            .where(IntervalReading.interval_start >= HOLE[0], IntervalReading.interval_start < HOLE[1])
            .order_by(IntervalReading.interval_start)
            .execution_options(populate_existing=True)
        )
    )


def test_detect_gaps_records_the_hole_once(service, session, meter) -> None:
    now = T0 + DAY + timedelta(hours=2)
    assert service.detect_gaps(session, now, [meter.id], lookback=DAY + timedelta(hours=2)) == 1
    assert service.detect_gaps(session, now, [meter.id], lookback=DAY + timedelta(hours=2)) == 0
    (gap,) = _gaps(session)
    assert (gap.start_at, gap.end_at, gap.status, gap.attempts) == (*HOLE, "open", 0)
    (flag,) = session.scalars(select(ReadingFlag).where(ReadingFlag.rule == "gap")).all()
    assert (flag.start_at, flag.end_at, flag.cleared_at) == (*HOLE, None)
    assert "4 intervals" in flag.reason


def test_detect_gaps_covers_every_meter_by_default_and_extends_a_growing_outage(
    service, session, meter
) -> None:
    silent = make_meter(session, make_site(session, code="MSA"), installed_at=T0 + DAY - timedelta(hours=1))
    now = T0 + DAY + timedelta(hours=3)
    service.detect_gaps(session, now, lookback=timedelta(hours=12))
    gaps = {(g.meter_id, g.start_at, g.end_at) for g in _gaps(session)}
    # The silent meter is expected from its installation, the other from now - lookback (after HOLE), both
    # until now - grace.
    assert gaps == {
        (silent.id, T0 + DAY - timedelta(hours=1), T0 + DAY + timedelta(hours=1)),
        (meter.id, T0 + DAY, T0 + DAY + timedelta(hours=1)),
    }
    service.detect_gaps(session, now + timedelta(hours=1), lookback=timedelta(hours=12))
    grown = [(g.meter_id, g.start_at, g.end_at) for g in _gaps(session) if g.meter_id == silent.id]
    assert grown == [(silent.id, T0 + DAY - timedelta(hours=1), T0 + DAY + timedelta(hours=2))]


def test_a_reread_answer_fills_the_gap(service, session, meter, clock) -> None:
    now = T0 + DAY + timedelta(hours=2)
    service.detect_gaps(session, now, [meter.id], lookback=DAY + timedelta(hours=2))
    (request,) = service.due_rereads(session, now, limit=10)
    assert (request.meter_id, request.obis, request.start, request.end) == (
        meter.id,
        ACTIVE_IMPORT_INTERVAL,
        *HOLE,
    )
    assert request.request_id == f"reread-{request.gap_id}-1"
    assert service.mark_reread_requested(session, [request.gap_id], now) == 1
    assert service.due_rereads(session, now + timedelta(minutes=30), limit=10) == []
    (again,) = service.due_rereads(session, now + timedelta(hours=1), limit=10)
    assert again.request_id == f"reread-{request.gap_id}-2"

    answer = batch(meter, intervals(HOLE[0], [200, 200, 200, 200]), source=Source.REREAD, received_at=now)
    result = service.ingest(session, [answer])
    session.commit()

    assert result.intervals_stored == 4
    (gap,) = _gaps(session)
    assert (gap.status, gap.settled_at) == ("filled", clock.now())
    assert [(r.source, r.quality) for r in _hole_rows(session)] == [("reread", "actual")] * 4
    assert session.scalar(select(ReadingFlag.cleared_at).where(ReadingFlag.rule == "gap")) == clock.now()
    assert service.due_rereads(session, now + timedelta(hours=5), limit=10) == []


def test_rereads_stop_after_the_last_attempt(service, session, meter) -> None:
    now = T0 + DAY + timedelta(hours=2)
    service.detect_gaps(session, now, [meter.id], lookback=DAY + timedelta(hours=2))
    gap_id = _gaps(session)[0].id
    for attempt in range(3):
        asked = now + timedelta(hours=10 * attempt)
        assert [r.gap_id for r in service.due_rereads(session, asked, limit=5)] == [gap_id]
        service.mark_reread_requested(session, [gap_id], asked)
    assert service.due_rereads(session, now + timedelta(days=5), limit=5) == []


def test_the_reread_back_off_doubles(service, session, meter) -> None:
    now = T0 + DAY + timedelta(hours=2)
    service.detect_gaps(session, now, [meter.id], lookback=DAY + timedelta(hours=2))
    gap_id = _gaps(session)[0].id
    service.mark_reread_requested(session, [gap_id], now)
    service.mark_reread_requested(session, [gap_id], now + timedelta(hours=1))  # second attempt
    assert service.due_rereads(session, now + timedelta(hours=2), limit=5) == []  # 1 h after: too early
    (third,) = service.due_rereads(session, now + timedelta(hours=3), limit=5)  # 2 h after
    assert third.request_id == f"reread-{gap_id}-3"


def test_an_unanswered_reread_is_estimated_then_replaced_by_the_actual_values(
    service, session, meter
) -> None:
    now = T0 + DAY + timedelta(hours=2)
    service.detect_gaps(session, now, [meter.id], lookback=DAY + timedelta(hours=2))
    gap_id = _gaps(session)[0].id
    service.mark_reread_requested(session, [gap_id], now)
    assert service.estimate_overdue(session, now + timedelta(hours=3)) == 0
    assert service.estimate_overdue(session, now + timedelta(hours=4)) == 4
    session.commit()

    rows = _hole_rows(session)
    assert {(r.quality, r.source) for r in rows} == {("estimated", "estimate")}
    assert sum(r.energy_wh for r in rows) == 800  # the register delta across the hole
    assert all(r.reason for r in rows)
    (gap,) = _gaps(session)
    assert gap.status == "estimated"
    assert "register delta" in (gap.estimate_reason or "")
    # The system's change is in the operation log, with the meter's site.
    (entry,) = session.scalars(select(AuditEntry).where(AuditEntry.action == "readings.gap_estimated")).all()
    assert (entry.actor, entry.role, entry.object_id, entry.site_id) == (
        "system:collection",
        "system",
        str(gap_id),
        meter.site_id,
    )
    assert json.loads(entry.after or "{}")["intervals_estimated"] == 4
    assert service.estimate_overdue(session, now + timedelta(hours=8)) == 0  # done once

    late = batch(meter, intervals(HOLE[0], [150, 250, 200, 200]), received_at=now + timedelta(hours=9))
    result = service.ingest(session, [late])
    session.commit()

    assert (result.estimates_replaced, result.conflicts, result.intervals_stored) == (4, 0, 4)
    assert [(r.energy_wh, r.quality, r.version, r.reason) for r in _hole_rows(session)] == [
        (150, "actual", 2, None),
        (250, "actual", 2, None),
        (200, "actual", 2, None),
        (200, "actual", 2, None),
    ]
    history = session.scalars(select(IntervalReadingHistory)).all()
    assert {(h.why, h.quality, h.version) for h in history} == {("replaced_by_actual", "estimated", 1)}
    assert _gaps(session)[0].status == "filled"


def test_estimation_without_registers_interpolates_from_the_neighbours(session, clock) -> None:
    service = ReadingsService(clock)
    info = make_meter(session, make_site(session))
    service.ingest(
        session, [batch(info, intervals(T0, [100] * 40)), batch(info, intervals(HOLE[1], [200] * 4))]
    )
    now = HOLE[1] + timedelta(hours=3)
    service.detect_gaps(session, now, [info.id], lookback=timedelta(hours=14), grace=timedelta(hours=2))
    (gap,) = _gaps(session)
    service.mark_reread_requested(session, [gap.id], now)
    assert service.estimate_overdue(session, now + timedelta(hours=4)) == 4
    assert [r.energy_wh for r in _hole_rows(session)] == [120, 140, 160, 180]


def test_an_operator_edit_needs_a_reason_and_keeps_history(service, session, meter) -> None:
    start = T0 + 3 * Q
    with pytest.raises(ValidationError, match="reason") as excinfo:
        service.edit_interval(session, meter.id, ACTIVE_IMPORT_INTERVAL, start, 50, "   ", "ops")
    assert excinfo.value.location == "reason"
    with pytest.raises(ValidationError, match="not the start"):
        service.edit_interval(
            session, meter.id, ACTIVE_IMPORT_INTERVAL, start + timedelta(minutes=1), 50, "x", "ops"
        )
    with pytest.raises(NotFoundError):
        service.edit_interval(session, meter.id + 99, ACTIVE_IMPORT_INTERVAL, start, 50, "x", "ops")

    version = service.edit_interval(session, meter.id, ACTIVE_IMPORT_INTERVAL, start, 50, "meter swap", "ops")
    session.commit()

    assert version == 2
    row = session.scalars(select(IntervalReading).where(IntervalReading.interval_start == start)).one()
    assert (row.energy_wh, row.quality, row.source, row.edited_by, row.reason) == (
        50,
        "edited",
        "operator",
        "ops",
        "meter swap",
    )
    (old,) = session.scalars(select(IntervalReadingHistory)).all()
    assert (old.energy_wh, old.why, old.quality) == (100, "edited", "actual")

    # The meter sending its old value again is a duplicate; a new, different one is flagged, the edit stands.
    assert service.ingest(session, [batch(meter, intervals(start, [100]))]).duplicates == 1
    result = service.ingest(session, [batch(meter, intervals(start, [70]))])
    assert (result.conflicts, result.flags_raised) == (1, {"conflict": 1})
    assert (
        session.scalar(select(IntervalReading.energy_wh).where(IntervalReading.interval_start == start)) == 50
    )


def test_editing_every_missing_interval_closes_the_gap(service, session, meter) -> None:
    now = T0 + DAY + timedelta(hours=2)
    service.detect_gaps(session, now, [meter.id], lookback=DAY + timedelta(hours=2))
    for n in range(4):
        version = service.edit_interval(
            session, meter.id, ACTIVE_IMPORT_INTERVAL, HOLE[0] + n * Q, 150, "site visit", "ops"
        )
        assert version == 1
    assert _gaps(session)[0].status == "closed"


def test_refresh_completeness_counts_each_local_day(service, session, meter, clock) -> None:
    now = T0 + DAY + timedelta(hours=2)
    clock.set(now)
    service.detect_gaps(session, now, [meter.id], lookback=DAY + timedelta(hours=2))
    service.mark_reread_requested(session, [_gaps(session)[0].id], now)
    service.estimate_overdue(session, now + timedelta(hours=4))
    service.edit_interval(session, meter.id, ACTIVE_IMPORT_INTERVAL, T0 + 2 * Q, 90, "checked", "ops")
    # Nairobi is UTC+3: the local 1 March runs 28 Feb 21:00 -> 1 Mar 21:00 UTC.
    rows = service.refresh_completeness(session, [meter.id], [date(2026, 3, 1), date(2026, 3, 2)])
    session.commit()

    by_day = {d.day: d for _, d in rows}
    first = by_day[date(2026, 3, 1)]
    assert (first.expected, first.actual, first.estimated, first.edited, first.missing) == (96, 79, 4, 1, 12)
    second = by_day[date(2026, 3, 2)]
    assert (second.expected, second.actual, second.missing) == (20, 12, 8)  # until now (05:00 local)
    stored = session.scalars(select(DailyCompleteness).order_by(DailyCompleteness.day)).all()
    assert [(s.day, s.missing) for s in stored] == [(date(2026, 3, 1), 12), (date(2026, 3, 2), 8)]
    service.refresh_completeness(
        session, [meter.id], [date(2026, 3, 1)]
    )  # refreshing replaces, never doubles
    assert len(session.scalars(select(DailyCompleteness)).all()) == 2
