"""A billing run on PostgreSQL: N accounts with a month of hourly readings each, against the time to read the same
readings out of the database in the same run (the floor a billing run cannot beat).

The world is built the way a utility's database would hold it after a month of ingestion, but fast enough for
100,000 accounts (74.4 million readings): the site and the tariff through the services, then the registry rows
COPYed in chunks with exactly the values the services would store (the same `registry.records` checks, meter
keys sealed by the run's cipher), then the readings COPYed meter by meter from a generator, and the tables
vacuumed and analysed. Memory stays bounded by a chunk whatever N is.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from sqlalchemy import Engine, text

from bench.fixtures import (
    bench_settings,
    copy_rows,
    database_size_bytes,
    driver_connection,
    peak_rss_mb,
    reserve_ids,
    scratch_postgres,
    throwaway_master_key,
)
from openami.billing.service import BillingService
from openami.bootstrap import Container, bootstrap
from openami.common.clock import ManualClock
from openami.common.obis import ACTIVE_EXPORT_INTERVAL, ACTIVE_IMPORT_INTERVAL
from openami.ledger.service import LedgerService
from openami.readings import bulk
from openami.readings.interfaces import IntervalValue, Source
from openami.registry.records import clean_account, clean_customer, clean_meter, clean_service_point
from openami.registry.validation import valid_installed_at, valid_meter_placement
from openami.security.meter_keys import MeterKeyCipher

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
HOURS = (MONTH_END - MONTH_START).days * 24  # 744 hourly import intervals per meter
FIRST_HOUR = datetime(2026, 3, 1, tzinfo=UTC)
RECEIVED_AT = FIRST_HOUR + timedelta(days=32)
INSTALLED_AT = FIRST_HOUR - timedelta(days=30)
TARIFF_FROM = date(2026, 1, 1)
NOW = datetime(2026, 4, 2, tzinfo=UTC)  # the run's clock: the month is over

# Accounts whose registry rows are made and COPYed per transaction: some tens of MB of rows in flight.
REGISTRY_CHUNK = 10_000
# Meters whose readings go in one COPY and one commit: 744,000 rows, streamed, never held.
READINGS_CHUNK = 1_000
# Rows the read baseline fetches per round trip of its server-side cursor.
READ_BATCH = 10_000
_METER_AT = bulk.INTERVALS.columns.index("meter_id")
_ENERGY_AT = bulk.INTERVALS.columns.index("energy_wh")


@dataclass(frozen=True)
class SetupFigures:
    accounts: int
    readings: int
    registry_s: float  # customers, accounts, service points, meters, tariffs: COPY, VACUUM ANALYZE, counts
    readings_s: float  # COPY of the readings
    vacuum_s: float  # VACUUM ANALYZE of the readings
    database_bytes: int
    peak_rss_mb: float  # of this process, at the end of setup

    @property
    def total_s(self) -> float:
        return self.registry_s + self.readings_s + self.vacuum_s


@dataclass(frozen=True)
class BillingFigures:
    accounts: int
    readings: int
    billed: int
    setup: SetupFigures
    run_s: float  # one run_billing call, committing each batch of 500 accounts as it goes
    read_s: float  # the same readings streamed out, in the order billing needs them
    peak_rss_mb: float  # of this process, over setup, run and read

    @property
    def ratio(self) -> float:
        return self.run_s / self.read_s


@dataclass(frozen=True)
class BillingWorld:
    """What setup made: one site on one tariff, its meters by id (one per account), and the setup figures."""

    site_id: int
    meter_ids: Sequence[int]
    setup: SetupFigures


def meter_key(serial: str) -> bytes:
    """The bench meter's 32-byte key, made from its serial: a check can tell what its sealed key opens to."""
    return hashlib.sha256(f"bench-key-{serial}".encode()).digest()


def service_arguments(n: int) -> dict[str, dict[str, Any]]:
    """The arguments of the registry calls that would make bench account `n`, by the table each fills.

    Setup writes what these calls would store; the references between the rows (site, customer, account,
    service point) are the callers', so they are left out.
    """
    serial = f"M{n:06d}"
    return {
        "customer": {"reference": f"C{n}", "name": "n"},
        "account": {"number": f"A{n}", "kind": "postpaid"},
        "service_point": {"code": f"SP{n}", "rated_current_a": 60},
        "meter": {
            "serial": serial,
            "model": "bench",
            "rated_current_a": 60,
            "auth_key": meter_key(serial),
            "load_profile_interval_s": 3600,
            "installed_at": INSTALLED_AT,
        },
    }


def _progress(message: str) -> None:
    """Setup takes minutes at 100,000 accounts: say how far it is on stderr, apart from the figures."""
    print(f"  [billing setup] {message}", file=sys.stderr, flush=True)


# The registry columns setup writes, by table in foreign-key order; `_registry_rows` makes rows in this order.
# Left out: the meter's previous key and its end (NULL until a rotation), as create_meter leaves them.
REGISTRY_COLUMNS = {
    "customer": ("id", "site_id", "reference", "name", "email", "phone"),
    "account": ("id", "site_id", "customer_id", "number", "kind"),
    "service_point": (
        "id", "site_id", "code", "account_id", "transformer_id", "address", "phases", "rated_current_a",
    ),
    "meter": (
        "id", "site_id", "serial", "model", "phases", "rated_current_a", "protocol", "role", "auth_key",
        "load_profile_interval_s", "service_point_id", "installed_at",
    ),
    "account_tariff": ("id", "account_id", "tariff_id", "effective_from", "created_at"),
}  # fmt: skip


def _registry_rows(
    number: int, ids: dict[str, int], site_id: int, tariff_id: int, cipher: MeterKeyCipher, now: datetime
) -> dict[str, tuple[Any, ...]]:
    """The rows of bench account `number` under `ids` (by table): what the registry service's create_customer,
    create_account, create_service_point and create_meter, then assign_tariff, would store for it."""
    args = service_arguments(number)
    customer = clean_customer(**args["customer"])
    account = clean_account(**args["account"])
    point = clean_service_point(**args["service_point"])
    meter = clean_meter(**args["meter"])
    valid_installed_at(meter.installed_at, now)
    valid_meter_placement(meter.role, at_service_point=True)
    return {
        "customer": (
            ids["customer"], site_id, customer.reference, customer.name, customer.email, customer.phone,
        ),
        "account": (ids["account"], site_id, ids["customer"], account.number, account.kind.value),
        "service_point": (
            ids["service_point"], site_id, point.code, ids["account"], None, point.address, point.phases,
            point.rated_current_a,
        ),
        "meter": (
            ids["meter"], site_id, meter.serial, meter.model, meter.phases, meter.rated_current_a,
            meter.protocol, meter.role.value, cipher.seal(meter.serial, meter.auth_key),
            meter.load_profile_interval_s, ids["service_point"], meter.installed_at,
        ),
        "account_tariff": (ids["account_tariff"], ids["account"], tariff_id, TARIFF_FROM, now),
    }  # fmt: skip


def _write_registry_chunk(container: Container, site_id: int, tariff_id: int, numbers: range) -> list[int]:
    """COPY the registry rows of accounts `numbers`, in one transaction; returns their meters' ids."""
    n, now = len(numbers), container.clock.now()
    with container.engine.begin() as conn:
        pg = driver_connection(conn)
        ids = {table: reserve_ids(pg, table, n) for table in REGISTRY_COLUMNS}
        rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in REGISTRY_COLUMNS}
        for i, number in enumerate(numbers):
            made = _registry_rows(
                number, {t: ids[t][i] for t in ids}, site_id, tariff_id, container.meter_keys, now
            )
            for table, row in made.items():
                rows[table].append(row)
        written = {table: copy_rows(pg, table, REGISTRY_COLUMNS[table], rows[table]) for table in rows}
    short = {table: count for table, count in written.items() if count != n}
    if short:
        raise RuntimeError(
            f"registry COPY of accounts {numbers.start}..{numbers.stop - 1}: wrote {short}, not {n}"
        )
    return ids["meter"]


def _check_registry(engine: Engine, site_id: int, tariff_id: int, accounts: int) -> None:
    """Every account is there once, with its customer, service point, meter and tariff linked as billing reads
    them; raises naming what is short."""
    counts = """
        SELECT (SELECT count(*) FROM customer WHERE site_id = :site),
               (SELECT count(*) FROM account WHERE site_id = :site),
               (SELECT count(*) FROM service_point WHERE site_id = :site),
               (SELECT count(*) FROM meter WHERE site_id = :site),
               (SELECT count(*) FROM account_tariff t JOIN account a ON a.id = t.account_id
                 WHERE a.site_id = :site AND t.tariff_id = :tariff),
               (SELECT count(*) FROM meter m
                  JOIN service_point p ON p.id = m.service_point_id AND p.site_id = :site
                  JOIN account a ON a.id = p.account_id AND a.site_id = :site
                  JOIN customer c ON c.id = a.customer_id AND c.site_id = :site
                  JOIN account_tariff t ON t.account_id = a.id AND t.tariff_id = :tariff
                 WHERE m.site_id = :site)
    """
    names = ("customers", "accounts", "service points", "meters", "tariff assignments", "linked chains")
    with engine.connect() as conn:
        found = conn.execute(text(counts), {"site": site_id, "tariff": tariff_id}).one()
    wrong = {name: count for name, count in zip(names, found, strict=True) if count != accounts}
    if wrong:
        raise RuntimeError(f"after setup of {accounts:,} accounts in site {site_id}, found {wrong}")


def _check_keys(container: Container, meter_ids: Sequence[int]) -> None:
    """The sealed keys of the first and last meters open, through the registry, to the keys they were made
    with."""
    with container.session_factory() as session:
        infos = container.registry.meters_by_id(session, {meter_ids[0], meter_ids[-1]})
    for info in infos.values():
        if info.auth_key != meter_key(info.serial):
            raise RuntimeError(f"meter {info.serial!r}: its stored key does not open to the key it was given")
    if len(infos) != len({meter_ids[0], meter_ids[-1]}):
        raise RuntimeError(f"meters {meter_ids[0]} and {meter_ids[-1]} are not both registered")


def reading_rows(meter_ids: Sequence[int]) -> Iterator[tuple[Any, ...]]:
    """A month of hourly import intervals per meter as `bulk.INTERVALS` rows, meter by meter, in time order.

    Each hour's row is made once by `bulk.interval_row`; each meter's copy differs in its id and energy
    (200 + (h * 37 + meter_id) % 900 Wh), so a row costs a tuple, not a value object.
    """
    starts = [FIRST_HOUR + timedelta(hours=h) for h in range(HOURS)]
    hours = [
        bulk.interval_row(0, IntervalValue(ACTIVE_IMPORT_INTERVAL, start, 3600, 0), Source.PUSH, RECEIVED_AT)
        for start in starts
    ]
    for m in meter_ids:
        for h, template in enumerate(hours):
            row = list(template)
            row[_METER_AT], row[_ENERGY_AT] = m, 200 + (h * 37 + m) % 900
            yield tuple(row)


def expected_energy_wh(meter_ids: Sequence[int]) -> int:
    """The energy of every row `reading_rows` makes for `meter_ids`, summed (Wh)."""
    steps = np.arange(HOURS, dtype=np.int64) * 37
    return sum(int(((steps + m) % 900).sum()) for m in meter_ids) + 200 * HOURS * len(meter_ids)


def _copy_readings(engine: Engine, meter_ids: Sequence[int]) -> int:
    """COPY (binary) the readings of `meter_ids` into `reading_interval`, a transaction per chunk of them."""
    columns = ", ".join(bulk.INTERVALS.columns)
    written, t0 = 0, time.perf_counter()
    for at in range(0, len(meter_ids), READINGS_CHUNK):
        chunk = meter_ids[at : at + READINGS_CHUNK]
        with engine.begin() as conn, driver_connection(conn).cursor() as cursor:
            with cursor.copy(f"COPY {bulk.INTERVALS.name} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(list(bulk.INTERVALS.pg_types))
                for row in reading_rows(chunk):
                    copy.write_row(row)
            if cursor.rowcount != len(chunk) * HOURS:
                raise RuntimeError(
                    f"COPY of the readings of meters {chunk[0]}..{chunk[-1]} wrote {cursor.rowcount} rows, "
                    f"not {len(chunk) * HOURS}"
                )
            written += cursor.rowcount
        done = at + len(chunk)
        if done == len(meter_ids) or done // READINGS_CHUNK % 10 == 0:
            elapsed = time.perf_counter() - t0
            _progress(
                f"readings of {done:,}/{len(meter_ids):,} meters ({written:,} rows) in {elapsed:.0f} s, "
                f"{written / elapsed:,.0f} rows/s"
            )
    return written


def _vacuum_analyze(database_url: str, tables: Sequence[str]) -> None:
    """VACUUM ANALYZE tables setup wrote: statistics for the planner (without them, counting 100,000 accounts
    takes minutes), and the hint bits and visibility map set now, so that neither the billing run nor the read
    after it pays for writing them."""
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in tables:
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))


def build_world(container: Container, billing: BillingService, accounts: int) -> BillingWorld:
    """`accounts` postpaid accounts of one site, each with a customer, a service point and an hourly meter,
    all on the bench tariff, and a month of hourly readings per meter; checked by counting, then vacuumed."""
    if accounts < 1:
        raise ValueError(f"a billing bench needs at least one account, got {accounts}")
    registry = container.registry
    url = container.engine.url.render_as_string(hide_password=False)
    t0 = time.perf_counter()
    with container.session_factory() as session, session.begin():
        site = registry.create_site(
            session, code="BILL", name="bench", timezone="UTC", currency="KES", holiday_country="KE"
        )
        tariff = billing.store_tariff(session, site_id=site.id, code="TOU", document=TOU)
    meter_ids: list[int] = []
    for at in range(0, accounts, REGISTRY_CHUNK):
        numbers = range(at, min(at + REGISTRY_CHUNK, accounts))
        meter_ids += _write_registry_chunk(container, site.id, tariff.id, numbers)
    _vacuum_analyze(url, list(REGISTRY_COLUMNS))
    _check_registry(container.engine, site.id, tariff.id, accounts)
    _check_keys(container, meter_ids)
    registry_s = time.perf_counter() - t0
    _progress(f"registry rows of {accounts:,} accounts written, analysed and counted in {registry_s:.1f} s")
    t0 = time.perf_counter()
    readings = _copy_readings(container.engine, meter_ids)
    readings_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _vacuum_analyze(url, [bulk.INTERVALS.name])
    vacuum_s = time.perf_counter() - t0
    _progress(f"VACUUM ANALYZE of the readings in {vacuum_s:.1f} s")
    setup = SetupFigures(
        accounts, readings, registry_s, readings_s, vacuum_s, database_size_bytes(url), peak_rss_mb()
    )
    return BillingWorld(site.id, meter_ids, setup)


def read_readings(engine: Engine) -> tuple[int, int]:
    """Stream the month's intervals out as billing reads them (its columns and intervals, by meter, then
    time) through a server-side cursor, READ_BATCH rows a round trip, keeping none: returns (rows, energy Wh).

    Plain psycopg tuples, not SQLAlchemy rows: the floor is what any billing run pays to have the readings in
    Python at all.
    """
    query = (
        "SELECT meter_id, obis, interval_start, interval_s, energy_wh, quality FROM reading_interval "
        "WHERE obis IN (%s, %s) AND interval_start >= %s AND interval_start < %s "
        "ORDER BY meter_id, obis, interval_start"
    )
    params = (ACTIVE_IMPORT_INTERVAL, ACTIVE_EXPORT_INTERVAL, FIRST_HOUR, FIRST_HOUR + timedelta(hours=HOURS))
    rows = energy_wh = 0
    with engine.connect() as conn, driver_connection(conn).cursor(name="bench_read_readings") as cursor:
        cursor.execute(query, params)
        while batch := cursor.fetchmany(READ_BATCH):
            rows += len(batch)
            energy_wh += sum(row[4] for row in batch)
    return rows, energy_wh


def _billing_service(container: Container) -> BillingService:
    registry = container.registry
    return BillingService(container.clock, registry, LedgerService(container.clock, registry))


def setup_only(accounts: int) -> SetupFigures:
    """Build the world of `accounts` in a scratch database and drop it: the setup's own time and size."""
    with scratch_postgres() as url:
        container = bootstrap(bench_settings(url, throwaway_master_key()), clock=ManualClock(NOW))
        try:
            return build_world(container, _billing_service(container), accounts).setup
        finally:
            container.close()


def run(accounts: int) -> BillingFigures:
    """Build the world of `accounts`, bill it, read its readings back; raises unless every account is billed
    and the energy billed, read and written agree."""
    with scratch_postgres() as url:
        container = bootstrap(bench_settings(url, throwaway_master_key()), clock=ManualClock(NOW))
        try:
            billing = _billing_service(container)
            world = build_world(container, billing, accounts)
            t0 = time.perf_counter()
            with container.session_factory() as session:
                # Committed batch by batch, as the CLI and the API run it (see BillingService.run_billing).
                report = billing.run_billing(
                    session, world.site_id, MONTH_START, MONTH_END, after_batch=lambda _: session.commit()
                )
                session.commit()
            run_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            read, read_wh = read_readings(container.engine)
            read_s = time.perf_counter() - t0
        finally:
            container.close()
    bills = [outcome.bill for outcome in report.accounts if outcome.bill is not None]
    billed_wh = sum(bill.import_wh for bill in bills)
    expected_wh = expected_energy_wh(world.meter_ids)
    if read != world.setup.readings or len(bills) != accounts or not read_wh == billed_wh == expected_wh:
        raise RuntimeError(
            f"read {read:,} of {world.setup.readings:,} readings ({read_wh:,} Wh), billed {len(bills):,} of "
            f"{accounts:,} accounts ({billed_wh:,} Wh); the readings hold {expected_wh:,} Wh"
        )
    return BillingFigures(accounts, read, len(bills), world.setup, run_s, read_s, peak_rss_mb())
