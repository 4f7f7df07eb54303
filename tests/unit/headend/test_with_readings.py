"""The head-end with the real ReadingsService on SQLite: frames become stored readings exactly once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.config import Settings
from openami.headend.codec import REPLY, reread_command
from openami.headend.inprocess import InProcessTransport
from openami.headend.service import HeadEnd
from openami.readings.models import IntervalReading
from openami.readings.service import ReadingsService
from openami.registry.interfaces import MeterInfo
from tests.unit.headend.helpers import KEY_B, frame, uplink


def stored_intervals(session_factory: sessionmaker[Session]) -> dict[int, int]:
    with session_factory() as session:
        rows = session.execute(
            select(IntervalReading.meter_id, func.count()).group_by(IntervalReading.meter_id)
        ).all()
        return {int(meter_id): int(n) for meter_id, n in rows}


def test_frames_are_stored_once_even_when_delivered_twice(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    headend = HeadEnd(session_factory, ReadingsService(clock), clock, Settings())
    transport = InProcessTransport(batch_size=4, background=False)
    headend.serve(transport)
    sent = []
    for hour in range(6):
        clock.set(clock.now().replace(hour=hour, minute=0, second=5))
        sent.append(frame(uplink("SN0001", clock.now(), energies_wh=(100, 110, 120, 130)), hour + 1))
        sent.append(frame(uplink("SN0002", clock.now(), energies_wh=(10, 11, 12, 13)), hour + 1, KEY_B))
    transport.submit(sent)
    transport.submit(sent[:5])  # an at-least-once transport delivering some again
    assert transport.pump() == 17

    assert stored_intervals(session_factory) == {fleet["SN0001"].id: 24, fleet["SN0002"].id: 24}
    stats = headend.stats
    assert (stats.frames_accepted, stats.rejected, stats.intervals_stored) == (12, {"replayed": 5}, 48)


def test_a_reread_reply_fills_a_gap(
    session_factory: sessionmaker[Session], clock: ManualClock, fleet: dict[str, MeterInfo]
) -> None:
    clock.set(clock.now().replace(hour=2, minute=0, second=5))
    headend = HeadEnd(session_factory, ReadingsService(clock), clock, Settings())

    def meter_side(serial: str, command: object) -> list[object]:
        content = uplink(
            serial,
            clock.now(),
            energies_wh=(50, 60, 70, 80),
            last_interval_start=clock.now().replace(hour=0, minute=45, second=0),
        )
        content.request_id = "rr-1"
        return [frame(content, 2, kind=REPLY)]

    transport = InProcessTransport(background=False, on_command=meter_side)
    headend.serve(transport)
    transport.submit([frame(uplink("SN0001", clock.now(), energies_wh=(1, 2, 3, 4)), 1)])  # 01:00-02:00
    transport.pump()
    headend.send_command(
        "SN0001", reread_command("rr-1", clock.now() - timedelta(hours=2), clock.now() - timedelta(hours=1))
    )
    assert transport.pump() == 1
    assert stored_intervals(session_factory) == {fleet["SN0001"].id: 8}
