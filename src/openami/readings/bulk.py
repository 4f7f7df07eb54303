"""Bulk, idempotent writes of readings: the hot path of `ReadingsService.ingest`.

Rows are written set-based, never as ORM objects. `write_new_rows` inserts every row whose key is not stored
yet and returns, in one more query, only the rows that clash with what is stored (a different value, or a
stored value that is not an actual one); identical duplicates cost nothing more. On PostgreSQL the rows are
COPYed (binary) into a temporary staging table and moved with one `INSERT ... SELECT ... ON CONFLICT DO
NOTHING`; on SQLite they are inserted with `executemany` and compared through a `VALUES` list. Rows are always
inserted in key order, so two transactions writing overlapping rows lock them in the same order and never
deadlock.

`copy_rows_baseline` and `executemany_baseline` write the same interval rows into the same table the plain
way: the figures the ingest benchmark is compared against. The latest instants and meter events are upserted
here too; superseded versions are `versions`' business and VEE flags `flag_store`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, cast

import psycopg
from sqlalchemy import Connection, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from openami.readings.interfaces import IntervalValue, Quality, Source
from openami.readings.models import LatestInstant, StoredMeterEvent
from openami.readings.rules import Rule

# One bit per VEE rule in `reading_interval.flags`, so "intervals with a spike" is a cheap bitwise test.
RULE_BITS: dict[Rule, int] = {rule: 1 << n for n, rule in enumerate(Rule)}

# SQLite keeps instants as text in SQLAlchemy's DATETIME format; raw statements must write exactly that text
# so that keys written here and by the ORM compare equal.
_SQLITE_INSTANT = "%Y-%m-%d %H:%M:%S.%f"
# SQLite allows 32 766 bound variables per statement (since 3.32).
_SQLITE_MAX_VARIABLES = 32_000


@dataclass(frozen=True, slots=True)
class TableSpec:
    """How a versioned readings table is written in bulk."""

    name: str
    columns: tuple[str, ...]  # written by the hot path, in row-tuple order
    pg_types: tuple[str, ...]  # PostgreSQL type of each column, for binary COPY
    key: tuple[str, ...]  # the primary key (a prefix of `columns`)
    compared: tuple[str, ...]  # incoming columns the clash condition reads
    clash: str  # SQL condition on stored `r` and incoming `s` rows that needs more than "already stored"
    returned: tuple[str, ...]  # stored columns returned for each clash

    @property
    def instant_positions(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.pg_types) if t == "timestamptz")


INTERVALS = TableSpec(
    name="reading_interval",
    columns=(
        "meter_id",
        "obis",
        "interval_start",
        "interval_s",
        "energy_wh",
        "quality",
        "source",
        "status",
        "version",
        "received_at",
        "flags",
    ),
    pg_types=(
        "int4",
        "text",
        "timestamptz",
        "int4",
        "int8",
        "text",
        "text",
        "int4",
        "int4",
        "timestamptz",
        "int4",
    ),
    key=("meter_id", "obis", "interval_start"),
    compared=("energy_wh",),
    clash=f"r.energy_wh <> s.energy_wh OR r.quality <> '{Quality.ACTUAL.value}'",
    returned=("energy_wh", "quality", "version", "flags"),
)

REGISTERS = TableSpec(
    name="reading_register",
    columns=("meter_id", "obis", "read_at", "energy_wh", "source", "version", "received_at"),
    pg_types=("int4", "text", "timestamptz", "int8", "text", "int4", "timestamptz"),
    key=("meter_id", "obis", "read_at"),
    compared=("energy_wh",),
    clash="r.energy_wh <> s.energy_wh",
    returned=("energy_wh", "version"),
)


@dataclass(frozen=True, slots=True)
class Clash:
    """An incoming row (by its index in the written list) whose key is stored with something to resolve."""

    index: int
    stored: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    inserted: int  # rows whose key was new
    clashes: list[Clash]  # rows whose stored twin differs or is not actual; the rest were identical
    fell_back: bool = False  # a direct COPY was tried and found a stored key


def interval_row(
    meter_id: int, value: IntervalValue, source: Source, received_at: datetime, flags: int = 0
) -> tuple[Any, ...]:
    """The `INTERVALS` row tuple of one actual interval value, version 1."""
    return (
        meter_id,
        value.obis,
        value.interval_start,
        value.interval_s,
        value.energy_wh,
        Quality.ACTUAL.value,
        source.value,
        value.status,
        1,
        received_at,
        flags,
    )


class RawSql:
    """The DB-API connection under a SQLAlchemy connection, with the little each dialect needs.

    Statements are written with `?` placeholders and adapted for psycopg; instants are aware UTC datetimes and
    become SQLAlchemy's text format on SQLite.
    """

    def __init__(self, connection: Connection) -> None:
        self.dialect = connection.dialect.name
        self.is_postgres = self.dialect == "postgresql"
        driver = connection.connection.driver_connection
        if driver is None:
            raise RuntimeError("the SQLAlchemy connection has no DB-API connection")
        self.driver: Any = driver

    @classmethod
    def of(cls, session: Session) -> RawSql:
        return cls(session.connection())

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.is_postgres else statement

    def instant(self, value: datetime) -> Any:
        if self.is_postgres:
            return value
        return value.astimezone(UTC).strftime(_SQLITE_INSTANT)

    def read_instant(self, value: Any) -> datetime:
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

    def encode(
        self, rows: Iterable[Sequence[Any]], instant_positions: Sequence[int]
    ) -> list[tuple[Any, ...]]:
        """Rows with their instants in the driver's format."""
        if self.is_postgres or not instant_positions:
            return [tuple(r) for r in rows]
        # Meters share the interval grid and a batch shares its received_at, so a few distinct instants
        # recur across many rows: each is formatted once.
        texts: dict[datetime, str] = {}
        out = []
        for row in rows:
            values = list(row)
            for i in instant_positions:
                instant = values[i]
                text = texts.get(instant)
                if text is None:
                    text = texts[instant] = instant.astimezone(UTC).strftime(_SQLITE_INSTANT)
                values[i] = text
            out.append(tuple(values))
        return out

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        cursor = self.driver.cursor()
        cursor.execute(self.sql(statement), params)
        return cursor

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run `statement` once per row; the number of rows changed."""
        if not rows:
            return 0
        cursor = self.driver.cursor()
        cursor.executemany(self.sql(statement), rows)
        return max(int(cursor.rowcount), 0)

    def fetchall(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self.execute(statement, params)
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        cursor.close()
        return rows


def write_new_rows(
    session: Session, spec: TableSpec, rows: Sequence[tuple[Any, ...]], *, direct: bool = False
) -> WriteOutcome:
    """Insert the rows whose key is new; report the rest that clash with what is stored.

    `rows` must not repeat a key (the caller splits repeats into later calls). With `direct` on PostgreSQL
    the rows are first COPYed straight into the table, as fast as a bare COPY, under a savepoint: when any key
    is already stored the COPY fails whole, is rolled back, and the staging path runs (`fell_back`). Worth it
    when the rows are probably new. Nothing is committed.
    """
    if not rows:
        return WriteOutcome(0, [])
    raw = RawSql.of(session)
    key_of = itemgetter(*(spec.columns.index(c) for c in spec.key))
    keys = list(map(key_of, rows))
    order = sorted(range(len(rows)), key=keys.__getitem__)
    if raw.is_postgres:
        if direct and _copy_direct(raw, spec, rows, order):
            return WriteOutcome(len(rows), [])
        outcome = _write_postgres(raw, spec, rows, order)
        return WriteOutcome(outcome.inserted, outcome.clashes, fell_back=direct)
    return _write_sqlite(raw, spec, rows, order)


def _copy_direct(raw: RawSql, spec: TableSpec, rows: Sequence[tuple[Any, ...]], order: list[int]) -> bool:
    """COPY the rows into the table itself; False (and nothing written) when a key is already stored."""
    cursor = raw.driver.cursor()
    cursor.execute("SAVEPOINT openami_bulk_copy")
    try:
        with cursor.copy(f"COPY {spec.name} ({', '.join(spec.columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(list(spec.pg_types))
            for i in order:
                copy.write_row(rows[i])
    except psycopg.errors.UniqueViolation:
        cursor.execute("ROLLBACK TO SAVEPOINT openami_bulk_copy")
        cursor.close()
        return False
    cursor.execute("RELEASE SAVEPOINT openami_bulk_copy")
    cursor.close()
    return True


def _write_postgres(
    raw: RawSql, spec: TableSpec, rows: Sequence[tuple[Any, ...]], order: list[int]
) -> WriteOutcome:
    stage = f"{spec.name}_stage"
    columns = ", ".join(spec.columns)
    # The staging table lives as long as the connection; ON COMMIT DELETE ROWS empties it at each commit and
    # the DELETE between two writes in one transaction. Created in a DO block to avoid the NOTICE that
    # CREATE ... IF NOT EXISTS raises on every call.
    raw.execute(
        f"DO $$ BEGIN IF to_regclass('pg_temp.{stage}') IS NULL THEN "  # noqa: S608 (table names are ours)
        f"CREATE TEMP TABLE {stage} (LIKE {spec.name} INCLUDING DEFAULTS, ord integer) "
        f"ON COMMIT DELETE ROWS; END IF; END $$; DELETE FROM {stage}"
    ).close()
    cursor = raw.driver.cursor()
    with cursor.copy(f"COPY {stage} ({columns}, ord) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([*spec.pg_types, "int4"])
        for i in order:
            copy.write_row((*rows[i], i))
    cursor.execute(
        f"INSERT INTO {spec.name} ({columns}) SELECT {columns} FROM {stage} "  # noqa: S608 (table names are ours)
        f"ORDER BY {', '.join(spec.key)} ON CONFLICT DO NOTHING"
    )
    inserted = max(cursor.rowcount, 0)
    cursor.close()
    if inserted == len(rows):
        return WriteOutcome(inserted, [])
    returned = ", ".join(f"r.{c}" for c in spec.returned)
    join = " AND ".join(f"r.{k} = s.{k}" for k in spec.key)
    # A statement of its own (not a CTE of the INSERT) so that it sees rows that a concurrent transaction
    # committed while the INSERT waited for them; FOR UPDATE keeps them as read until this transaction ends.
    found = raw.fetchall(
        f"SELECT s.ord, {returned} FROM {stage} s JOIN {spec.name} r ON {join} "  # noqa: S608
        f"WHERE {spec.clash} ORDER BY s.ord FOR UPDATE OF r"
    )
    return WriteOutcome(inserted, _clashes(spec, found))


def _write_sqlite(
    raw: RawSql, spec: TableSpec, rows: Sequence[tuple[Any, ...]], order: list[int]
) -> WriteOutcome:
    columns = ", ".join(spec.columns)
    marks = ", ".join("?" for _ in spec.columns)
    encoded = raw.encode((rows[i] for i in order), spec.instant_positions)
    inserted = raw.executemany(
        f"INSERT INTO {spec.name} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING",  # noqa: S608
        encoded,
    )
    if inserted == len(rows):
        return WriteOutcome(inserted, [])
    # Compare the incoming rows with the stored ones in the database: only clashes come back.
    wanted = ("ord", *spec.key, *spec.compared)
    positions = [spec.columns.index(c) for c in wanted[1:]]
    per_statement = _SQLITE_MAX_VARIABLES // len(wanted)
    returned = ", ".join(f"r.{c}" for c in spec.returned)
    join = " AND ".join(f"r.{k} = s.{k}" for k in spec.key)
    found: list[tuple[Any, ...]] = []
    for chunk_start in range(0, len(order), per_statement):
        chunk = order[chunk_start : chunk_start + per_statement]
        values = ", ".join(f"({', '.join('?' for _ in wanted)})" for _ in chunk)
        params: list[Any] = []
        for n, i in enumerate(chunk):
            params.append(i)
            params.extend(encoded[chunk_start + n][p] for p in positions)
        found += raw.fetchall(
            f"WITH s({', '.join(wanted)}) AS (VALUES {values}) "  # noqa: S608
            f"SELECT s.ord, {returned} FROM s JOIN {spec.name} r ON {join} WHERE {spec.clash} ORDER BY s.ord",
            params,
        )
    return WriteOutcome(inserted, _clashes(spec, found))


def _clashes(spec: TableSpec, found: Iterable[tuple[Any, ...]]) -> list[Clash]:
    return [Clash(int(row[0]), dict(zip(spec.returned, row[1:], strict=True))) for row in found]


# --- the plain baselines the ingest benchmark compares against ----------------------------------------------


def copy_rows_baseline(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    """COPY `INTERVALS` rows (binary, as ingest does) straight into `reading_interval`: no checks at all.

    `conn` is a SQLAlchemy connection to PostgreSQL; the caller commits. Returns the number of rows written.
    """
    raw = RawSql(conn)
    if not raw.is_postgres:
        raise ValueError(f"COPY needs PostgreSQL, this connection is {raw.dialect}")
    cursor = raw.driver.cursor()
    with cursor.copy(
        f"COPY {INTERVALS.name} ({', '.join(INTERVALS.columns)}) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(list(INTERVALS.pg_types))
        for row in rows:
            copy.write_row(row)
    cursor.close()
    return len(rows)


def executemany_baseline(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    """A plain `executemany` INSERT of `INTERVALS` rows into `reading_interval`; the caller commits."""
    raw = RawSql(conn)
    columns = ", ".join(INTERVALS.columns)
    marks = ", ".join("?" for _ in INTERVALS.columns)
    return raw.executemany(
        f"INSERT INTO {INTERVALS.name} ({columns}) VALUES ({marks})",  # noqa: S608
        raw.encode(rows, INTERVALS.instant_positions),
    )


# --- latest instants and meter events: set-based Core statements (small, portable) -------------------------


def dialect_insert(session: Session, table: Any) -> Any:
    """The dialect's INSERT with ON CONFLICT support (PostgreSQL and SQLite spell it the same way)."""
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(table)
    return sqlite_insert(table)


def upsert_instants(session: Session, rows: Sequence[tuple[int, str, float, datetime, datetime]]) -> None:
    """Keep the newest value per (meter_id, obis); rows are (meter_id, obis, value, read_at, received_at)."""
    newest: dict[tuple[int, str], tuple[int, str, float, datetime, datetime]] = {}
    for row in rows:
        kept = newest.get(row[:2])
        if kept is None or row[3] > kept[3]:
            newest[row[:2]] = row
    if not newest:
        return
    table = cast(Table, LatestInstant.__table__)
    statement = dialect_insert(session, table)
    statement = statement.on_conflict_do_update(
        index_elements=["meter_id", "obis"],
        set_={
            "value": statement.excluded.value,
            "read_at": statement.excluded.read_at,
            "received_at": statement.excluded.received_at,
        },
        where=statement.excluded.read_at > table.c.read_at,
    )
    session.connection().execute(
        statement,
        [
            {"meter_id": m, "obis": o, "value": v, "read_at": t, "received_at": r}
            for (m, o, v, t, r) in (newest[k] for k in sorted(newest))
        ],
    )


def insert_events(session: Session, rows: Sequence[tuple[int, int, str, datetime, str, datetime]]) -> None:
    """Store meter events once per (meter_id, sequence).

    Rows are (meter_id, sequence, code, occurred_at, detail, received_at).
    """
    unique = {row[:2]: row for row in rows}
    if not unique:
        return
    statement = dialect_insert(session, StoredMeterEvent.__table__).on_conflict_do_nothing()
    session.connection().execute(
        statement,
        [
            {"meter_id": m, "sequence": s, "code": c, "occurred_at": t, "detail": d[:500], "received_at": r}
            for (m, s, c, t, d, r) in (unique[k] for k in sorted(unique))
        ],
    )
