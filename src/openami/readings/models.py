"""Readings tables: interval values (current and superseded versions), register reads, live instants,
meter events, VEE flags, gaps and daily completeness.

The big tables are keyed by `meter_id` first and then by time, so they can later be partitioned by time and
distributed by meter. `meter_id` deliberately carries no foreign key to the registry's `meter` table: contexts
talk through services, and a foreign key would make every bulk insert probe the registry and stop distributing
by meter. The registry check happens once per meter in `ReadingsService` (cached `MeterInfo`).

Quality and source are stored as their lowercase string values (`Quality`, `Source` in `interfaces.py`) so the
raw COPY / executemany path of `bulk.py` writes exactly what the ORM would.
"""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    Float,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from openami.readings.interfaces import Quality, Source
from openami.storage.base import Base, UTCDateTime

# An integer primary key that autoincrements on SQLite (which only does so for INTEGER PRIMARY KEY) and
# is 64-bit on PostgreSQL.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

_QUALITIES = ", ".join(f"'{q.value}'" for q in Quality)
_SOURCES = ", ".join(f"'{s.value}'" for s in Source)


class SupersededWhy(enum.StrEnum):
    """Why a stored version stopped being the current one."""

    CONFLICT = "conflict"  # the meter sent a different value for the same interval
    REPLACED_BY_ACTUAL = "replaced_by_actual"  # an actual value arrived for an estimated interval
    EDITED = "edited"  # an operator edited it, with a reason


class GapStatus(enum.StrEnum):
    """Life of a run of missing intervals: open -> reread_requested -> estimated -> filled / closed."""

    OPEN = "open"  # detected, no re-read asked yet
    REREAD_REQUESTED = "reread_requested"  # the head-end asked the meter for its load-profile memory
    ESTIMATED = "estimated"  # no answer in time: the missing intervals were estimated
    FILLED = "filled"  # every interval now holds an actual value (late push or re-read answer)
    CLOSED = "closed"  # every interval holds an actual or an operator-edited value, at least one edited


OPEN_GAP_STATUSES = (GapStatus.OPEN, GapStatus.REREAD_REQUESTED, GapStatus.ESTIMATED)


class IntervalReading(Base):
    """The current value of one load-profile interval `[interval_start, interval_start + interval_s)`, UTC."""

    __tablename__ = "reading_interval"
    __table_args__ = (
        CheckConstraint(f"quality IN ({_QUALITIES})", name="quality"),
        CheckConstraint(f"source IN ({_SOURCES})", name="source"),
        CheckConstraint("energy_wh >= 0", name="energy_non_negative"),
        CheckConstraint("interval_s > 0", name="interval_positive"),
        CheckConstraint("version >= 1", name="version_positive"),
    )

    meter_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    obis: Mapped[str] = mapped_column(String(16), primary_key=True)
    interval_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    interval_s: Mapped[int] = mapped_column(Integer)
    energy_wh: Mapped[int] = mapped_column(BigInteger)
    quality: Mapped[str] = mapped_column(String(12))
    source: Mapped[str] = mapped_column(String(12))
    status: Mapped[int] = mapped_column(Integer, default=0)  # the meter's status bits for the interval
    version: Mapped[int] = mapped_column(Integer, default=1)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    flags: Mapped[int] = mapped_column(Integer, default=0)  # bitmask of VEE rules raised, see bulk.RULE_BITS
    # Who edited it and why (quality edited), or how it was estimated (quality estimated); NULL when actual.
    edited_by: Mapped[str | None] = mapped_column(String(120))
    reason: Mapped[str | None] = mapped_column(String(500))


class IntervalReadingHistory(Base):
    """A superseded version of an interval value: a copy of the row as it was, and why it was superseded."""

    __tablename__ = "reading_interval_history"
    __table_args__ = (
        CheckConstraint("why IN ('conflict', 'replaced_by_actual', 'edited')", name="why"),
        UniqueConstraint("meter_id", "obis", "interval_start", "version"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    meter_id: Mapped[int] = mapped_column(Integer)
    obis: Mapped[str] = mapped_column(String(16))
    interval_start: Mapped[datetime] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer)
    interval_s: Mapped[int] = mapped_column(Integer)
    energy_wh: Mapped[int] = mapped_column(BigInteger)
    quality: Mapped[str] = mapped_column(String(12))
    source: Mapped[str] = mapped_column(String(12))
    status: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    flags: Mapped[int] = mapped_column(Integer)
    edited_by: Mapped[str | None] = mapped_column(String(120))
    reason: Mapped[str | None] = mapped_column(String(500))
    superseded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    why: Mapped[str] = mapped_column(String(20))


class RegisterReading(Base):
    """A cumulative register (e.g. 1-0:1.8.0 active import total, Wh) read at an instant."""

    __tablename__ = "reading_register"
    __table_args__ = (
        CheckConstraint("energy_wh >= 0", name="energy_non_negative"),
        CheckConstraint(f"source IN ({_SOURCES})", name="source"),
    )

    meter_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    obis: Mapped[str] = mapped_column(String(16), primary_key=True)
    read_at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    energy_wh: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(12))
    version: Mapped[int] = mapped_column(Integer, default=1)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RegisterReadingHistory(Base):
    """A register read superseded by a conflicting one for the same meter, OBIS and instant."""

    __tablename__ = "reading_register_history"
    __table_args__ = (UniqueConstraint("meter_id", "obis", "read_at", "version"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    meter_id: Mapped[int] = mapped_column(Integer)
    obis: Mapped[str] = mapped_column(String(16))
    read_at: Mapped[datetime] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer)
    energy_wh: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(12))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    superseded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    why: Mapped[str] = mapped_column(String(20))


class LatestInstant(Base):
    """The newest instantaneous value per meter and OBIS ("live power"): V, A, W or a relay state."""

    __tablename__ = "reading_instant_latest"

    meter_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    obis: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    read_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class StoredMeterEvent(Base):
    """An entry of the meter's event log, keyed by the meter's own `sequence` so re-sent ones are ignored."""

    __tablename__ = "reading_meter_event"

    meter_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    code: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    detail: Mapped[str] = mapped_column(String(500), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReadingFlag(Base):
    """A VEE rule raised over `[start_at, end_at)` of one meter and OBIS; cleared when the cause went away."""

    __tablename__ = "reading_flag"
    __table_args__ = (
        UniqueConstraint("meter_id", "obis", "rule", "start_at", "end_at"),
        Index("ix_reading_flag_open", "meter_id", "cleared_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    meter_id: Mapped[int] = mapped_column(Integer)
    obis: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(24))
    start_at: Mapped[datetime] = mapped_column(UTCDateTime())
    end_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(String(500))
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime())
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ReadingGap(Base):
    """A run of missing intervals `[start_at, end_at)` of one meter and OBIS, and what was done about it."""

    __tablename__ = "reading_gap"
    __table_args__ = (
        CheckConstraint(
            "status IN ('open', 'reread_requested', 'estimated', 'filled', 'closed')",
            name="status",
        ),
        CheckConstraint("end_at > start_at", name="span_positive"),
        Index("ix_reading_gap_meter", "meter_id", "obis", "start_at"),
        Index("ix_reading_gap_status", "status", "requested_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    meter_id: Mapped[int] = mapped_column(Integer)
    obis: Mapped[str] = mapped_column(String(16))
    start_at: Mapped[datetime] = mapped_column(UTCDateTime())
    end_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(20), default=GapStatus.OPEN.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # re-read requests sent
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime())
    first_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # the latest request
    request_id: Mapped[str | None] = mapped_column(String(64))
    estimated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    estimate_reason: Mapped[str | None] = mapped_column(String(500))
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # when it became filled or closed


class DailyCompleteness(Base):
    """How many import intervals of one site-local day were expected, actual, estimated, edited, missing."""

    __tablename__ = "reading_completeness"

    meter_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)  # the site-local calendar day
    expected: Mapped[int] = mapped_column(Integer)
    actual: Mapped[int] = mapped_column(Integer)
    estimated: Mapped[int] = mapped_column(Integer)
    edited: Mapped[int] = mapped_column(Integer)
    missing: Mapped[int] = mapped_column(Integer)
    refreshed_at: Mapped[datetime] = mapped_column(UTCDateTime())
