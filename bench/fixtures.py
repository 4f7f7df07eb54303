"""What the benchmarks share: a scratch PostgreSQL database, a throwaway master key, a registered fleet, and its
frames; bulk writes straight into tables (COPY, with ids from the tables' own sequences); the peak memory."""

from __future__ import annotations

import hashlib
import os
import resource
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr
from sqlalchemy import Connection

from openami.bootstrap import Container
from openami.common.obis import ACTIVE_IMPORT_INTERVAL, ACTIVE_IMPORT_TOTAL, ACTIVE_POWER_IMPORT
from openami.config import Settings
from openami.headend.codec import Frame, UplinkContent, encode_uplink
from openami.readings.interfaces import InstantValue, IntervalValue, RegisterValue
from openami.security.meter_keys import MasterKey, generate_master_key
from openami.storage import migrate

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
INTERVAL_S = 900
PER_DAY = 86_400 // INTERVAL_S


@contextmanager
def scratch_postgres() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database, dropped afterwards."""
    name = f"openami_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def throwaway_master_key() -> MasterKey:
    """A master key for one run only: it seals the keys of a scratch database that is dropped afterwards.

    Made in the run so that `make bench` needs nothing configured (the server mode refuses to start without a
    master key), and so that no operator's key is ever used, or written, by a benchmark.
    """
    return generate_master_key(f"bench-{uuid.uuid4().hex[:8]}")


def bench_settings(database_url: str, master_key: MasterKey) -> Settings:
    """Settings for `database_url` sealing meter keys under `master_key`, whatever the environment configures."""
    return Settings(
        database_url=database_url, master_keys=SecretStr(master_key.entry()), master_key_file=None
    )


def worker_environment(database_url: str, master_key: MasterKey) -> dict[str, str]:
    """The environment of a worker subprocess: this process's, with the run's database and master key."""
    env = dict(os.environ, OPENAMI_DATABASE_URL=database_url, OPENAMI_MASTER_KEYS=master_key.entry())
    env.pop("OPENAMI_MASTER_KEY_FILE", None)  # setting both is refused
    return env


@dataclass(frozen=True)
class BenchMeter:
    id: int
    serial: str
    key: bytes


def register_meters(container: Container, n: int, site_code: str, installed_at: datetime) -> list[BenchMeter]:
    registry = container.registry
    out = []
    with container.session_factory() as session, session.begin():
        site = registry.create_site(
            session, code=site_code, name="bench", timezone="UTC", currency="EUR", holiday_country="DE"
        )
        for i in range(n):
            serial = f"B{i:07d}"
            key = hashlib.sha256(f"bench-key-{serial}".encode()).digest()
            meter = registry.create_meter(
                session,
                site_id=site.id,
                serial=serial,
                model="bench",
                rated_current_a=60,
                auth_key=key,
                installed_at=installed_at,
            )
            out.append(BenchMeter(meter.id, serial, key))
    return out


def bench_interval(meter_id: int, day: datetime, k: int) -> IntervalValue:
    """Interval `k` of `day`: a plausible household shape, low at night with morning and evening peaks."""
    wh = 40 + (k * 7 + meter_id * 13) % 90 + (180 if 28 <= k < 36 or 72 <= k < 88 else 0)
    return IntervalValue(ACTIVE_IMPORT_INTERVAL, day + timedelta(seconds=k * INTERVAL_S), INTERVAL_S, wh)


def day_frames(
    meters: list[BenchMeter], first_day: datetime, days: int, site_code: str, topic_root: str
) -> Iterator[Frame]:
    """One frame per meter per day: 96 interval values, the import register and the power. Lazily made."""
    registers = dict.fromkeys((m.serial for m in meters), 0)
    counters = dict.fromkeys((m.serial for m in meters), 0)
    for d in range(days):
        day = first_day + timedelta(days=d)
        for m in meters:
            intervals = []
            total = registers[m.serial]
            for k in range(PER_DAY):
                # A plausible household shape: low at night, peaks morning and evening; all positive.
                wh = 40 + (k * 7 + m.id * 13) % 90 + (180 if 28 <= k < 36 or 72 <= k < 88 else 0)
                intervals.append(
                    IntervalValue(
                        ACTIVE_IMPORT_INTERVAL, day + timedelta(seconds=k * INTERVAL_S), INTERVAL_S, wh
                    )
                )
                total += wh
            end = day + timedelta(days=1)
            registers[m.serial] = total
            counters[m.serial] += 1
            content = UplinkContent(
                serial=m.serial,
                meter_time=datetime.now(UTC),  # made just before it is sent, like a meter's push
                intervals=intervals,
                registers=[RegisterValue(ACTIVE_IMPORT_TOTAL, end, total)],
                instants=[InstantValue(ACTIVE_POWER_IMPORT, end, 420.0)],
                events=[],
            )
            yield encode_uplink(
                content, key=m.key, counter=counters[m.serial], topic_root=topic_root, site_code=site_code
            )


def first_day_for(days: int, now: datetime | None = None) -> datetime:
    """Midnight UTC `days` days before today, so every value is in the past and recent enough to be accepted."""
    now = now or datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)


def driver_connection(conn: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under a SQLAlchemy connection to PostgreSQL (in its transaction)."""
    driver = conn.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise TypeError(f"expected a psycopg connection to PostgreSQL, got {type(driver).__name__}")
    return driver


def reserve_ids(conn: psycopg.Connection[Any], table: str, n: int) -> list[int]:
    """`n` fresh ids from the sequence of `table.id`, ascending: the ids inserts without one would have taken,
    and the sequence stays ahead of them, so later inserts through the ORM do not collide."""
    rows = conn.execute(
        "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", (table, n)
    ).fetchall()
    return sorted(row[0] for row in rows)


def copy_rows(
    conn: psycopg.Connection[Any], table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """COPY `rows` (text format: psycopg adapts each Python value) into `columns` of `table`, as they come.

    Returns the number of rows the server reports written; the caller's transaction commits them.
    """
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cursor:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
        return cursor.rowcount


def database_size_bytes(database_url: str) -> int:
    """What the database of `database_url` takes on disk (tables, indexes, TOAST), as PostgreSQL counts it."""
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        row = conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone()
    if row is None:
        raise RuntimeError(f"no database {name!r} on {PG_ADMIN_DSN}")
    return int(row[0])


def peak_rss_mb() -> float:
    """The highest resident memory of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
