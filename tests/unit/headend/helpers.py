"""Factories for head-end tests: registered meters, frames as meters send them, a fake readings sink."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import Clock
from openami.common.units import floor_to_interval
from openami.config import Settings
from openami.headend.codec import DATA, Frame, UplinkContent, encode_uplink
from openami.headend.service import HeadEnd
from openami.readings.interfaces import (
    IngestResult,
    InstantValue,
    IntervalValue,
    MeterBatch,
    MeterEvent,
    RegisterValue,
)
from openami.registry.interfaces import MeterInfo
from openami.registry.service import RegistryService

ROOT = "openami/v1"
SITE = "demo"
KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
KEY_C = bytes(range(200, 232))


def register_fleet(session_factory: sessionmaker[Session], clock: Clock) -> dict[str, MeterInfo]:
    """Site "demo" with meters SN0001 (KEY_A), SN0002 (KEY_B); site "other" with meter OT0001 (KEY_C).

    Keys are sealed with the master key of the environment, as a head-end built without `meters=` opens them."""
    registry = RegistryService.from_settings(clock)
    with session_factory() as session, session.begin():
        demo = registry.create_site(
            session, code=SITE, name="Demo", timezone="Africa/Nairobi", currency="KES", holiday_country="KE"
        )
        other = registry.create_site(
            session, code="other", name="Other", timezone="UTC", currency="EUR", holiday_country="DE"
        )
        return {
            "SN0001": registry.create_meter(
                session, site_id=demo.id, serial="SN0001", model="sim", rated_current_a=60, auth_key=KEY_A
            ),
            "SN0002": registry.create_meter(
                session, site_id=demo.id, serial="SN0002", model="sim", rated_current_a=60, auth_key=KEY_B
            ),
            "OT0001": registry.create_meter(
                session, site_id=other.id, serial="OT0001", model="sim", rated_current_a=60, auth_key=KEY_C
            ),
        }


def uplink(
    serial: str,
    meter_time: datetime,
    *,
    energies_wh: tuple[int, ...] = (120,),
    interval_s: int = 900,
    register_wh: int | None = 1_000_000,
    voltage_v: float | None = 230.5,
    events: tuple[MeterEvent, ...] = (),
    last_interval_start: datetime | None = None,
) -> UplinkContent:
    """Intervals ending at the last boundary before `meter_time` (or at `last_interval_start` + length)."""
    last = last_interval_start or floor_to_interval(meter_time, timedelta(seconds=interval_s)) - timedelta(
        seconds=interval_s
    )
    n = len(energies_wh)
    intervals = [
        IntervalValue("1-0:1.29.0", last - timedelta(seconds=interval_s * (n - 1 - i)), interval_s, e)
        for i, e in enumerate(energies_wh)
    ]
    registers = [] if register_wh is None else [RegisterValue("1-0:1.8.0", meter_time, register_wh)]
    instants = [] if voltage_v is None else [InstantValue("1-0:32.7.0", meter_time, voltage_v)]
    return UplinkContent(serial, meter_time, intervals, registers, instants, list(events))


def frame(
    content: UplinkContent, counter: int, key: bytes = KEY_A, *, kind: str = DATA, site: str = SITE
) -> Frame:
    return encode_uplink(content, key=key, counter=counter, topic_root=ROOT, site_code=site, kind=kind)


@dataclass
class FakeSink:
    """Records what it was given; counts each interval and register as stored. `fail` makes ingest raise
    a database error, as a lost connection would."""

    batches: list[MeterBatch] = field(default_factory=list)
    fail: bool = False

    def ingest(self, session: Session, batches: list[MeterBatch]) -> IngestResult:
        if self.fail:
            raise OperationalError("INSERT INTO interval_reading ...", {}, Exception("connection lost"))
        self.batches.extend(batches)
        return IngestResult(
            intervals_stored=sum(len(b.intervals) for b in batches),
            registers_stored=sum(len(b.registers) for b in batches),
        )


def make_headend(
    session_factory: sessionmaker[Session], clock: Clock, sink: FakeSink | None = None, **settings: object
) -> tuple[HeadEnd, FakeSink]:
    sink = sink or FakeSink()
    return HeadEnd(session_factory, sink, clock, Settings(**settings)), sink
