"""HeadEnd on the real PostgreSQL: concurrent workers never accept a counter twice, and never deadlock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from openami.common.clock import ManualClock
from openami.config import Settings
from openami.headend.codec import Frame
from openami.headend.models import FrameRejection, MeterLink
from openami.headend.service import HandleResult, HeadEnd
from openami.readings.models import IntervalReading
from openami.readings.service import ReadingsService
from openami.storage.db import make_session_factory
from tests.unit.headend.helpers import KEY_A, KEY_B, frame, register_fleet, uplink

pytestmark = pytest.mark.integration


def test_two_headends_racing_over_the_same_frames_accept_each_once(pg_engine: Engine) -> None:
    clock = ManualClock(datetime(2026, 3, 2, 6, 0, 5, tzinfo=UTC))
    factory = make_session_factory(pg_engine)
    register_fleet(factory, clock)
    frames: list[Frame] = []
    first = datetime(2026, 2, 28, 12, 0, tzinfo=UTC)
    for counter in range(1, 41):  # 40 frames per meter, each with its own four intervals
        last_start = first + timedelta(minutes=15 * (4 * counter - 1))
        for serial, key in (("SN0001", KEY_A), ("SN0002", KEY_B)):
            content = uplink(
                serial, clock.now(), energies_wh=(10, 20, 30, 40), last_interval_start=last_start
            )
            frames.append(frame(content, counter, key))
    # Each worker gets every frame (as if the broker delivered everything twice), in opposite orders, in
    # batches that mix both meters: the lock order, not luck, must keep them from deadlocking.
    results: dict[str, list[HandleResult]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work(name: str, ordered: list[Frame]) -> None:
        headend = HeadEnd(factory, ReadingsService(clock), clock, Settings())
        barrier.wait()
        try:
            for i in range(0, len(ordered), 7):
                results[name].append(headend.handle(ordered[i : i + 7]))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=("a", frames)),
        threading.Thread(target=work, args=("b", frames[::-1])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors

    accepted = sum(r.accepted for rs in results.values() for r in rs)
    reasons = {rej.reason for rs in results.values() for r in rs for rej in r.rejections}
    assert accepted == len(frames)
    assert reasons <= {"replayed"}
    with Session(pg_engine) as session:
        assert session.scalar(select(func.sum(MeterLink.frames_accepted))) == len(frames)
        assert session.scalar(select(func.count()).select_from(FrameRejection)) == len(frames)
        assert set(session.scalars(select(MeterLink.highest_counter))) == {40}
        assert session.scalar(select(func.count()).select_from(IntervalReading)) == 2 * 40 * 4
