"""Helpers shared by the readings service, API and integration tests: registry rows and batches.

Registry rows are inserted directly (tests may set up other contexts' tables); the readings code itself only
learns about meters through `RegistryService`.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from openami.common.obis import ACTIVE_IMPORT_INTERVAL, ACTIVE_IMPORT_TOTAL
from openami.readings.interfaces import IntervalValue, MeterBatch, RegisterValue, Source
from openami.registry.interfaces import MeterInfo
from openami.registry.models import Account, AccountKind, Customer, Meter, ServicePoint, Site
from openami.registry.service import RegistryService

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)  # a Sunday; the `clock` fixture starts a day later
Q = timedelta(minutes=15)
_serials = itertools.count(1)


def make_site(session: Session, code: str = "NBO", timezone: str = "Africa/Nairobi") -> Site:
    site = Site(
        code=code,
        name=f"site {code}",
        timezone=timezone,
        currency="KES",
        holiday_country="KE",
        created_at=T0 - timedelta(days=400),
    )
    session.add(site)
    session.flush()
    return site


def make_meter(
    session: Session,
    site: Site,
    *,
    serial: str | None = None,
    interval_s: int = 900,
    rated_current_a: int = 60,
    installed_at: datetime | None = T0 - timedelta(days=60),
    account_number: str | None = None,
) -> MeterInfo:
    """A customer meter (1 phase, 60 A: 13 800 W) at its own service point, optionally on an account."""
    serial = serial or f"SN{next(_serials):06d}"
    account_id = None
    if account_number is not None:
        customer = Customer(site_id=site.id, reference=f"C-{serial}", name="A. Customer")
        session.add(customer)
        session.flush()
        account = Account(
            site_id=site.id, customer_id=customer.id, number=account_number, kind=AccountKind.POSTPAID
        )
        session.add(account)
        session.flush()
        account_id = account.id
    point = ServicePoint(
        site_id=site.id, code=f"SP-{serial}", account_id=account_id, rated_current_a=rated_current_a
    )
    session.add(point)
    session.flush()
    meter = Meter(
        site_id=site.id,
        serial=serial,
        model="test",
        rated_current_a=rated_current_a,
        auth_key=b"k" * 32,
        load_profile_interval_s=interval_s,
        service_point_id=point.id,
        installed_at=installed_at,
    )
    session.add(meter)
    session.flush()
    return RegistryService(clock=_NoClock()).meter_info(session, meter.id)


class _NoClock:
    def now(self) -> datetime:
        raise AssertionError("the registry lookup needs no clock")


def intervals(
    start: datetime, energies_wh: list[int], *, obis: str = ACTIVE_IMPORT_INTERVAL, interval_s: int = 900
) -> list[IntervalValue]:
    step = timedelta(seconds=interval_s)
    return [IntervalValue(obis, start + n * step, interval_s, wh) for n, wh in enumerate(energies_wh)]


def batch(
    meter: MeterInfo,
    values: list[IntervalValue] | None = None,
    *,
    received_at: datetime | None = None,
    source: Source = Source.PUSH,
    registers: list[RegisterValue] | None = None,
    **more: object,
) -> MeterBatch:
    """A batch received just after its last interval (or at T0 + 1 day when it has none)."""
    values = values or []
    if received_at is None:
        last = max(
            (v.interval_start + timedelta(seconds=v.interval_s) for v in values),
            default=T0 + timedelta(days=1),
        )
        received_at = last + timedelta(seconds=30)
    return MeterBatch(
        meter_id=meter.id,
        received_at=received_at,
        source=source,
        intervals=values,
        registers=registers or [],
        **more,  # type: ignore[arg-type]
    )


def register(at: datetime, energy_wh: int, obis: str = ACTIVE_IMPORT_TOTAL) -> RegisterValue:
    return RegisterValue(obis, at, energy_wh)
