"""Versions of stored readings: a value superseded by another goes to history, never away.

A conflicting meter value or an actual value replacing an estimate becomes the new current version (version +
1) and the one it replaces is copied to history with why it went (`SupersededWhy`); an operator's edit does
the same. Estimates are written here too, where no value is stored. Set-based Core statements, small and
portable; the hot path of new rows is `bulk.write_new_rows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import String, Table, bindparam, select
from sqlalchemy.orm import Session

from openami.readings.bulk import RULE_BITS, dialect_insert
from openami.readings.interfaces import Quality, Source
from openami.readings.models import (
    IntervalReading,
    IntervalReadingHistory,
    RegisterReading,
    RegisterReadingHistory,
    SupersededWhy,
)
from openami.readings.rules import Rule
from openami.storage.base import UTCDateTime

_INTERVAL: Table = cast(Table, IntervalReading.__table__)
_INTERVAL_HISTORY: Table = cast(Table, IntervalReadingHistory.__table__)
_REGISTER: Table = cast(Table, RegisterReading.__table__)
_REGISTER_HISTORY: Table = cast(Table, RegisterReadingHistory.__table__)
_HISTORY_COPIED = (
    "meter_id",
    "obis",
    "interval_start",
    "version",
    "interval_s",
    "energy_wh",
    "quality",
    "source",
    "status",
    "received_at",
    "flags",
    "edited_by",
    "reason",
)


def _copy_interval_to_history(
    session: Session, keys: Sequence[dict[str, Any]], why: str, now: datetime
) -> None:
    """Copy the current rows named by `keys` (meter_id, obis, interval_start) into history."""
    if not keys:
        return
    source = select(
        *[_INTERVAL.c[c] for c in _HISTORY_COPIED],
        bindparam("superseded_at", type_=UTCDateTime()),
        bindparam("why", type_=String()),
    ).where(
        _INTERVAL.c.meter_id == bindparam("k_meter"),
        _INTERVAL.c.obis == bindparam("k_obis"),
        _INTERVAL.c.interval_start == bindparam("k_start", type_=UTCDateTime()),
    )
    statement = _INTERVAL_HISTORY.insert().from_select([*_HISTORY_COPIED, "superseded_at", "why"], source)
    connection = session.connection()
    for k in keys:
        connection.execute(
            statement,
            {
                "k_meter": k["meter_id"],
                "k_obis": k["obis"],
                "k_start": k["interval_start"],
                "superseded_at": now,
            }
            | {"why": why},
        )


def supersede_intervals(
    session: Session, items: Sequence[tuple[tuple[Any, ...], dict[str, Any], int]], why: str, now: datetime
) -> None:
    """Move the stored versions to history and make the incoming actual rows current (version + 1).

    `items` are (incoming `INTERVALS` row, stored values, flags of the new version).
    """
    if not items:
        return
    ordered = sorted(items, key=lambda item: item[0][:3])
    _copy_interval_to_history(
        session,
        [{"meter_id": r[0], "obis": r[1], "interval_start": r[2]} for r, _, _ in ordered],
        why,
        now,
    )
    statement = (
        _INTERVAL.update()
        .where(
            _INTERVAL.c.meter_id == bindparam("k_meter"),
            _INTERVAL.c.obis == bindparam("k_obis"),
            _INTERVAL.c.interval_start == bindparam("k_start", type_=UTCDateTime()),
        )
        .values(
            energy_wh=bindparam("v_energy"),
            quality=Quality.ACTUAL.value,
            source=bindparam("v_source"),
            status=bindparam("v_status"),
            version=bindparam("v_version"),
            received_at=bindparam("v_received", type_=UTCDateTime()),
            flags=bindparam("v_flags"),
            edited_by=None,
            reason=None,
        )
    )
    session.connection().execute(
        statement,
        [
            {
                "k_meter": r[0],
                "k_obis": r[1],
                "k_start": r[2],
                "v_energy": r[4],
                "v_source": r[6],
                "v_status": r[7],
                "v_version": stored["version"] + 1,
                "v_received": r[9],
                "v_flags": flags,
            }
            for r, stored, flags in ordered
        ],
    )


def supersede_registers(
    session: Session, items: Sequence[tuple[tuple[Any, ...], dict[str, Any]]], now: datetime
) -> None:
    """Move stored register reads to history (why conflict) and make the incoming `REGISTERS` rows current."""
    if not items:
        return
    ordered = sorted(items, key=lambda item: item[0][:3])
    copied = ("meter_id", "obis", "read_at", "version", "energy_wh", "source", "received_at")
    source = select(
        *[_REGISTER.c[c] for c in copied],
        bindparam("superseded_at", type_=UTCDateTime()),
        bindparam("why", type_=String()),
    ).where(
        _REGISTER.c.meter_id == bindparam("k_meter"),
        _REGISTER.c.obis == bindparam("k_obis"),
        _REGISTER.c.read_at == bindparam("k_at", type_=UTCDateTime()),
    )
    to_history = _REGISTER_HISTORY.insert().from_select([*copied, "superseded_at", "why"], source)
    connection = session.connection()
    for r, _ in ordered:
        connection.execute(
            to_history,
            {
                "k_meter": r[0],
                "k_obis": r[1],
                "k_at": r[2],
                "superseded_at": now,
                "why": SupersededWhy.CONFLICT.value,
            },
        )
    connection.execute(
        _REGISTER.update()
        .where(
            _REGISTER.c.meter_id == bindparam("k_meter"),
            _REGISTER.c.obis == bindparam("k_obis"),
            _REGISTER.c.read_at == bindparam("k_at", type_=UTCDateTime()),
        )
        .values(
            energy_wh=bindparam("v_energy"),
            source=bindparam("v_source"),
            version=bindparam("v_version"),
            received_at=bindparam("v_received", type_=UTCDateTime()),
        ),
        [
            {
                "k_meter": r[0],
                "k_obis": r[1],
                "k_at": r[2],
                "v_energy": r[3],
                "v_source": r[4],
                "v_version": stored["version"] + 1,
                "v_received": r[6],
            }
            for r, stored in ordered
        ],
    )


def history_energies(session: Session, rows: Sequence[tuple[Any, ...]]) -> dict[tuple[Any, ...], set[int]]:
    """Every energy (Wh) superseded for the keys of these `INTERVALS` rows, by (meter_id, obis, start)."""
    out: dict[tuple[Any, ...], set[int]] = {}
    for meter_id, obis, start, *_ in rows:
        found = session.execute(
            select(IntervalReadingHistory.energy_wh).where(
                IntervalReadingHistory.meter_id == meter_id,
                IntervalReadingHistory.obis == obis,
                IntervalReadingHistory.interval_start == start,
            )
        ).scalars()
        out[meter_id, obis, start] = set(found)
    return out


def insert_estimates(
    session: Session, rows: Sequence[tuple[int, str, datetime, int, int, str]], now: datetime
) -> int:
    """Store estimated intervals (meter_id, obis, start, interval_s, energy_wh, reason) where none is stored.

    Returns how many were stored; an interval whose actual value arrived meanwhile keeps it.
    """
    if not rows:
        return 0
    statement = dialect_insert(session, _INTERVAL).on_conflict_do_nothing().returning(_INTERVAL.c.meter_id)
    stored = 0
    connection = session.connection()
    for meter_id, obis, start, interval_s, energy_wh, reason in sorted(rows):
        row = connection.execute(
            statement,
            {
                "meter_id": meter_id,
                "obis": obis,
                "interval_start": start,
                "interval_s": interval_s,
                "energy_wh": energy_wh,
                "quality": Quality.ESTIMATED.value,
                "source": Source.ESTIMATE.value,
                "status": 0,
                "version": 1,
                "received_at": now,
                "flags": RULE_BITS[Rule.GAP],
                "reason": reason[:500],
            },
        ).first()
        stored += row is not None
    return stored


def edit_interval_row(
    session: Session,
    meter_id: int,
    obis: str,
    interval_start: datetime,
    interval_s: int,
    energy_wh: int,
    reason: str,
    editor: str,
    now: datetime,
) -> int:
    """Make an operator's value current (quality edited), the previous one going to history; new version."""
    connection = session.connection()
    key = (
        (_INTERVAL.c.meter_id == meter_id)
        & (_INTERVAL.c.obis == obis)
        & (_INTERVAL.c.interval_start == interval_start)
    )
    current = connection.execute(select(_INTERVAL.c.version).where(key).with_for_update()).scalar()
    values = {
        "energy_wh": energy_wh,
        "quality": Quality.EDITED.value,
        "source": Source.OPERATOR.value,
        "status": 0,
        "received_at": now,
        "edited_by": editor[:120],
        "reason": reason[:500],
    }
    if current is None:
        connection.execute(
            _INTERVAL.insert().values(
                meter_id=meter_id,
                obis=obis,
                interval_start=interval_start,
                interval_s=interval_s,
                version=1,
                flags=0,
                **values,
            )
        )
        return 1
    _copy_interval_to_history(
        session,
        [{"meter_id": meter_id, "obis": obis, "interval_start": interval_start}],
        SupersededWhy.EDITED,
        now,
    )
    connection.execute(_INTERVAL.update().where(key).values(version=current + 1, **values))
    return int(current) + 1
