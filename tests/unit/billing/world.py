"""A small site for billing tests: accounts with an hourly meter each, a time-of-use tariff, and readings
written straight into the readings table (the readings context's own tests prove how they get there)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import insert
from sqlalchemy.orm import Session

from openami.common.obis import ACTIVE_IMPORT_INTERVAL
from openami.readings.models import IntervalReading
from openami.registry.interfaces import AccountInfo, MeterInfo, SiteInfo
from openami.registry.service import RegistryService
from openami.tariffs.pricing import Load

ZONE = "Africa/Nairobi"
HOUR = 3600
_keys = itertools.count(1)

# Time of use with a daily charge, an export credit and VAT, in the site's currency and zone.
TOU: dict[str, Any] = {
    "name": "KSM domestic time of use",
    "currency": "KES",
    "timezone": ZONE,
    "periods": ["peak", "off_peak"],
    "schedules": {
        "all_year": {
            "weekday": {"00:00": "off_peak", "18:00": "peak", "22:00": "off_peak"},
            "weekend": {"00:00": "off_peak"},
        }
    },
    "energy": {"all_year/peak": "25.50", "all_year/off_peak": "12.10"},
    "fixed": {"per_day": "5.00"},
    "export": {"mode": "net_billing", "price_per_kwh": "8.00"},
    "taxes": [{"name": "VAT", "rate": "0.16"}],
}

FLAT: dict[str, Any] = {
    "name": "KSM flat",
    "currency": "KES",
    "timezone": ZONE,
    "periods": ["any"],
    "energy": {"all_year/any": "20.00"},
}


@dataclass(frozen=True)
class Customer:
    account: AccountInfo
    meter: MeterInfo


def make_site(session: Session, registry: RegistryService, code: str = "KSM") -> SiteInfo:
    return registry.create_site(
        session, code=code, name=f"Site {code}", timezone=ZONE, currency="KES", holiday_country="KE"
    )


def make_customer(
    session: Session,
    registry: RegistryService,
    site: SiteInfo,
    number: str,
    *,
    installed_at: datetime = datetime(2025, 6, 1, tzinfo=UTC),
    interval_s: int = HOUR,
    kind: str = "postpaid",
) -> Customer:
    customer = registry.create_customer(
        session, site_id=site.id, reference=f"C-{number}", name=f"Cust {number}"
    )
    account = registry.create_account(
        session, site_id=site.id, customer_id=customer.id, number=number, kind=kind
    )
    point = registry.create_service_point(
        session, site_id=site.id, code=f"SP-{number}", rated_current_a=60, account_id=account.id
    )
    meter = registry.create_meter(
        session,
        site_id=site.id,
        serial=f"{site.code}-M-{number}",
        model="test",
        rated_current_a=60,
        auth_key=bytes([next(_keys) % 256]) * 32,
        load_profile_interval_s=interval_s,
        service_point_id=point.id,
        installed_at=installed_at,
    )
    return Customer(account, meter)


def local_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(ZONE)).astimezone(UTC)


def hourly_wh(start: date, end: date, profile: Callable[[int], int]) -> list[tuple[datetime, int]]:
    """(UTC start, Wh) of every hour of the local days [start, end); `profile(n)` gives hour n's energy."""
    first, last = local_midnight(start), local_midnight(end)
    hours = int((last - first) / timedelta(hours=1))
    return [(first + timedelta(hours=n), profile(n)) for n in range(hours)]


def write_intervals(
    session: Session,
    meter: MeterInfo,
    values: Sequence[tuple[datetime, int]],
    *,
    obis: str = ACTIVE_IMPORT_INTERVAL,
    quality: str = "actual",
    interval_s: int = HOUR,
) -> None:
    if not values:
        return
    received = values[-1][0] + timedelta(hours=2)
    session.execute(
        insert(IntervalReading),
        [
            {
                "meter_id": meter.id,
                "obis": obis,
                "interval_start": start,
                "interval_s": interval_s,
                "energy_wh": wh,
                "quality": quality,
                "source": "push" if quality == "actual" else "estimate",
                "received_at": received,
            }
            for start, wh in values
        ],
    )


def load_of(imports: Sequence[tuple[datetime, int]], exports: Sequence[tuple[datetime, int]] = ()) -> Load:
    """The load the tests expect billing to build: one hourly meter's values, in mWh."""
    starts = np.array([int(t.timestamp()) for t, _ in imports], dtype=np.int64)
    export = None
    if exports:
        by_start = {int(t.timestamp()): wh for t, wh in exports}
        export = np.array([by_start.get(int(s), 0) * 1000 for s in starts], dtype=np.int64)
    return Load(
        start_s=starts,
        import_mwh=np.array([wh * 1000 for _, wh in imports], dtype=np.int64),
        interval_s=HOUR,
        export_mwh=export,
    )


def household(n: int) -> int:
    """A household's hourly Wh: more in the evening, varying from day to day."""
    hour = n % 24
    return 300 + 900 * (18 <= hour < 22) + 37 * (n // 24 % 5) + 11 * (n % 7)


def solar(n: int) -> int:
    hour = n % 24
    return 800 if 9 <= hour < 15 else 0
