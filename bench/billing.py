"""A billing run on PostgreSQL: N accounts with a month of hourly readings each, against the time to read the same
readings out of the database in the same run (the floor a billing run cannot beat)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text

from bench.fixtures import bench_settings, scratch_postgres, throwaway_master_key
from openami.billing.service import BillingService
from openami.bootstrap import bootstrap
from openami.common.clock import ManualClock
from openami.common.obis import ACTIVE_IMPORT_INTERVAL
from openami.ledger.service import LedgerService
from openami.readings import bulk
from openami.readings.interfaces import IntervalValue, Source

TOU = {
    "name": "bench time of use",
    "currency": "KES",
    "timezone": "UTC",
    "periods": ["peak", "off_peak"],
    "schedules": {
        "all_year": {
            "weekday": {"00:00": "off_peak", "18:00": "peak", "22:00": "off_peak"},
            "weekend": {"00:00": "off_peak"},
        }
    },
    "energy": {"all_year/peak": ["25.50", "30.00"], "all_year/off_peak": ["12.10", "15.00"]},
    "tiers": {"bounds_kwh": [100], "basis": "monthly", "allocation": "pro_rata"},
    "fixed": {"per_day": "5.00"},
    "taxes": [{"name": "VAT", "rate": "0.16"}],
}
MONTH_START, MONTH_END = date(2026, 3, 1), date(2026, 4, 1)


@dataclass(frozen=True)
class BillingFigures:
    accounts: int
    readings: int
    billed: int
    run_s: float
    read_s: float

    @property
    def ratio(self) -> float:
        return self.run_s / self.read_s


def run(accounts: int) -> BillingFigures:
    with scratch_postgres() as url:
        clock = ManualClock(datetime(2026, 4, 2, tzinfo=UTC))
        container = bootstrap(bench_settings(url, throwaway_master_key()), clock=clock)
        registry = container.registry
        billing = BillingService(clock, registry, LedgerService(clock, registry))
        hours = int((MONTH_END - MONTH_START).days * 24)
        first = datetime(2026, 3, 1, tzinfo=UTC)
        with container.session_factory() as session, session.begin():
            site = registry.create_site(
                session, code="BILL", name="bench", timezone="UTC", currency="KES", holiday_country="KE"
            )
            tariff = billing.store_tariff(session, site_id=site.id, code="TOU", document=TOU)
            meter_ids = []
            for n in range(accounts):
                customer = registry.create_customer(session, site_id=site.id, reference=f"C{n}", name="n")
                account = registry.create_account(
                    session, site_id=site.id, customer_id=customer.id, number=f"A{n}", kind="postpaid"
                )
                point = registry.create_service_point(
                    session, site_id=site.id, code=f"SP{n}", rated_current_a=60, account_id=account.id
                )
                meter = registry.create_meter(
                    session, site_id=site.id, serial=f"M{n:06d}", model="bench", rated_current_a=60,
                    auth_key=bytes(32), load_profile_interval_s=3600, service_point_id=point.id,
                    installed_at=first - timedelta(days=30),
                )  # fmt: skip
                billing.assign_tariff(
                    session, account_id=account.id, tariff_id=tariff.id, effective_from=date(2026, 1, 1)
                )
                meter_ids.append(meter.id)
        received = first + timedelta(days=32)
        rows = [
            bulk.interval_row(
                m,
                IntervalValue(
                    ACTIVE_IMPORT_INTERVAL, first + timedelta(hours=h), 3600, 200 + (h * 37 + m) % 900
                ),
                Source.PUSH,
                received,
            )
            for m in meter_ids
            for h in range(hours)
        ]
        with container.engine.begin() as conn:
            bulk.copy_rows_baseline(conn, rows)
            conn.execute(text("ANALYZE reading_interval"))
        t0 = time.perf_counter()
        with container.session_factory() as session, session.begin():
            report = billing.run_billing(session, site.id, MONTH_START, MONTH_END)
        run_s = time.perf_counter() - t0
        with container.engine.connect() as conn:
            t0 = time.perf_counter()
            read = conn.execute(
                text(
                    "SELECT meter_id, interval_start, energy_wh FROM reading_interval "
                    "WHERE interval_start >= :a AND interval_start < :b ORDER BY meter_id, interval_start"
                ),
                {"a": first, "b": first + timedelta(hours=hours)},
            ).fetchall()
            read_s = time.perf_counter() - t0
        billed = sum(1 for outcome in report.accounts if outcome.bill is not None)
        container.close()
    if len(read) != len(rows) or billed != accounts:
        raise RuntimeError(
            f"read {len(read)} of {len(rows)} readings, billed {billed} of {accounts} accounts"
        )
    return BillingFigures(accounts, len(rows), billed, run_s, read_s)
