"""Ingest on real PostgreSQL: the COPY path keeps the same semantics, and concurrent writers store once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.common.obis import ACTIVE_EXPORT_TOTAL, ACTIVE_IMPORT_TOTAL
from openami.readings import bulk
from openami.readings.interfaces import IngestResult, Source
from openami.readings.models import (
    IntervalReading,
    IntervalReadingHistory,
    ReadingFlag,
    ReadingGap,
    RegisterReading,
    RegisterReadingHistory,
)
from openami.readings.service import ReadingsService
from openami.registry.interfaces import MeterInfo
from openami.storage.db import make_session_factory
from tests.unit.readings.test_service_support import T0, Q, batch, intervals, make_meter, make_site, register

pytestmark = pytest.mark.integration

EXPORT = ACTIVE_EXPORT_TOTAL


@pytest.fixture
def factory(pg_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(pg_engine)


@pytest.fixture
def meters(factory: sessionmaker[Session]) -> list[MeterInfo]:
    with factory() as session:
        site = make_site(session)
        found = [make_meter(session, site) for _ in range(4)]
        session.commit()
    return found


@pytest.fixture
def session(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as s:
        yield s


def _current(session: Session, meter: MeterInfo) -> list[tuple[int, str, int]]:
    rows = session.execute(
        select(IntervalReading.energy_wh, IntervalReading.quality, IntervalReading.version)
        .where(IntervalReading.meter_id == meter.id)
        .order_by(IntervalReading.interval_start)
    ).all()
    return [tuple(r) for r in rows]


def test_duplicates_conflicts_and_replaced_estimates_on_the_copy_path(
    session, meters, clock: ManualClock
) -> None:
    service = ReadingsService(clock)
    meter = meters[0]
    first = service.ingest(session, [batch(meter, intervals(T0, [100, 110, 120, 130]))])
    session.commit()
    again = service.ingest(session, [batch(meter, intervals(T0, [100, 110, 125, 130]))])
    session.commit()

    assert (first.intervals_stored, first.duplicates) == (4, 0)
    assert (again.intervals_stored, again.duplicates, again.conflicts) == (1, 3, 1)
    assert _current(session, meter) == [
        (100, "actual", 1),
        (110, "actual", 1),
        (125, "actual", 2),
        (130, "actual", 1),
    ]
    assert session.scalar(select(IntervalReadingHistory.why)) == "conflict"
    assert (
        session.scalar(select(func.count()).select_from(ReadingFlag).where(ReadingFlag.rule == "conflict"))
        == 1
    )

    # A hole, detected, asked for, unanswered: estimated; then the actual values replace the estimates.
    hole = T0 + 4 * Q
    service.ingest(
        session, [batch(meter, intervals(hole + 2 * Q, [100] * 4), registers=[register(hole, 900)])]
    )
    service.ingest(
        session, [batch(meter, registers=[register(hole + 2 * Q, 1_100)], received_at=hole + 3 * Q)]
    )
    now = hole + timedelta(hours=4)
    service.detect_gaps(
        session, now, [meter.id], lookback=timedelta(hours=5), grace=timedelta(hours=2, minutes=30)
    )
    gap_id = session.scalar(select(ReadingGap.id))
    assert gap_id is not None
    service.mark_reread_requested(session, [gap_id], now)
    assert service.estimate_overdue(session, now + timedelta(hours=4)) == 2
    session.commit()
    estimated = session.execute(
        select(IntervalReading.energy_wh).where(IntervalReading.quality == "estimated")
    ).scalars()
    assert sum(estimated) == 200  # the register delta

    late = service.ingest(session, [batch(meter, intervals(hole, [90, 110]), source=Source.REREAD)])
    session.commit()
    assert (late.estimates_replaced, late.intervals_stored, late.conflicts) == (2, 2, 0)
    assert session.scalar(select(ReadingGap.status)) == "filled"
    assert (
        session.scalar(
            select(func.count()).select_from(IntervalReading).where(IntervalReading.quality != "actual")
        )
        == 0
    )


def test_two_calls_in_one_transaction_reuse_the_staging_table(session, meters, clock: ManualClock) -> None:
    service = ReadingsService(clock)
    service.ingest(session, [batch(meters[0], intervals(T0, [1, 2]))])
    result = service.ingest(session, [batch(meters[0], intervals(T0 + Q, [2, 3]))])
    session.commit()
    assert (result.intervals_stored, result.duplicates) == (1, 1)


def test_a_rolled_back_ingest_leaves_nothing(session, meters, clock: ManualClock) -> None:
    ReadingsService(clock).ingest(session, [batch(meters[0], intervals(T0, [1, 2]))])
    session.rollback()
    assert session.scalar(select(func.count()).select_from(IntervalReading)) == 0
    assert (
        ReadingsService(clock).ingest(session, [batch(meters[0], intervals(T0, [1, 2]))]).intervals_stored
        == 2
    )


def test_concurrent_overlapping_ingests_store_each_reading_once(factory, meters, clock: ManualClock) -> None:
    # Two workers get overlapping frames of the same meters (a redelivery): 96 intervals each, 48 shared.
    first_half = [batch(m, intervals(T0, [100 + n for n in range(96)])) for m in meters]
    second_half = [batch(m, intervals(T0 + 48 * Q, [148 + n for n in range(96)])) for m in meters]
    results: list[IngestResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker(batches: list) -> None:
        service = ReadingsService(clock)
        try:
            with factory() as session:
                start.wait()
                for _ in range(3):  # each worker also replays its own frames
                    results.append(service.ingest(session, batches))
                session.commit()
        except BaseException as exc:  # collected and re-raised by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(b,)) for b in (first_half, second_half)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors

    total = IngestResult()
    for r in results:
        total.add(r)
    assert total.intervals_stored == 4 * 144
    assert total.duplicates == 6 * 96 * 4 - 4 * 144
    assert total.conflicts == 0
    with factory() as session:
        per_meter = session.execute(
            select(IntervalReading.meter_id, func.count(), func.max(IntervalReading.version)).group_by(
                IntervalReading.meter_id
            )
        ).all()
    assert sorted((n, v) for _, n, v in per_meter) == [(144, 1)] * 4


def test_previous_register_reads_of_several_meters_come_from_the_database(
    session, meters, clock: ManualClock
) -> None:
    # Stored reads of two registers per meter; the next batch of each meter is judged against them.
    service = ReadingsService(clock)
    first_reads = [
        batch(m, registers=[register(T0, 10_000), register(T0, 5_000, EXPORT)], received_at=T0 + Q / 60)
        for m in meters
    ]
    service.ingest(session, first_reads)
    session.commit()
    later = [
        # Meter 0: the import register rose 1 000 Wh over intervals of 400 Wh. Meter 1: it fell.
        batch(meters[0], intervals(T0, [100] * 4), registers=[register(T0 + 4 * Q, 11_000)]),
        batch(meters[1], intervals(T0, [100] * 4), registers=[register(T0 + 4 * Q, 9_000)]),
        # Meter 2: both registers agree with their history; meter 3: the export register fell.
        batch(meters[2], intervals(T0, [100] * 4), registers=[register(T0 + 4 * Q, 10_400)]),
        batch(meters[3], registers=[register(T0 + 4 * Q, 4_000, EXPORT)], received_at=T0 + 4 * Q + Q / 60),
    ]
    result = service.ingest(session, later)
    session.commit()

    assert result.flags_raised == {"register_mismatch": 1, "negative": 2}
    flagged = session.execute(select(ReadingFlag.meter_id, ReadingFlag.obis, ReadingFlag.rule)).all()
    assert sorted(flagged) == sorted(
        [
            (meters[0].id, ACTIVE_IMPORT_TOTAL, "register_mismatch"),
            (meters[1].id, ACTIVE_IMPORT_TOTAL, "negative"),
            (meters[3].id, EXPORT, "negative"),
        ]
    )


def test_register_replays_and_conflicts_on_the_copy_path(session, meters, clock: ManualClock) -> None:
    # Registers too are COPYed straight into their table while they are new; a replay or a conflict falls
    # back to the staging table with the same outcome as on SQLite.
    service = ReadingsService(clock)
    meter, at = meters[0], T0 + 4 * Q
    first = service.ingest(
        session, [batch(meter, intervals(T0, [100] * 4), registers=[register(at, 10_400)])]
    )
    replay = service.ingest(
        session, [batch(meter, intervals(T0, [100] * 4), registers=[register(at, 10_400)])]
    )
    # New intervals with a register read that contradicts the stored one, from a worker that has seen no
    # replay: the intervals go straight in, the registers' COPY meets the stored key and falls back alone.
    clash = ReadingsService(clock).ingest(
        session, [batch(meter, intervals(T0 + 4 * Q, [100] * 4), registers=[register(at, 10_407)])]
    )
    session.commit()

    assert (first.registers_stored, first.intervals_stored) == (1, 4)
    assert (replay.duplicates, replay.registers_stored, replay.intervals_stored) == (5, 0, 0)
    assert (clash.intervals_stored, clash.registers_stored, clash.conflicts) == (4, 1, 1)
    stored = session.execute(select(RegisterReading.energy_wh, RegisterReading.version)).all()
    assert [tuple(r) for r in stored] == [(10_407, 2)]
    assert session.scalar(select(RegisterReadingHistory.energy_wh)) == 10_400


def test_the_copy_baseline_writes_the_same_rows(pg_engine: Engine, meters) -> None:
    rows = [
        bulk.interval_row(m.id, v, Source.PUSH, T0 + timedelta(days=1))
        for m in meters
        for v in intervals(T0, [10] * 8)
    ]
    with pg_engine.begin() as conn:
        assert bulk.copy_rows_baseline(conn, rows) == 32
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*), sum(energy_wh) FROM reading_interval")).one() == (32, 320)
