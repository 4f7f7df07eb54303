"""Stored VEE flags: raised idempotently (with the intervals they mark), and cleared when values settle them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, update
from sqlalchemy.orm import Session

from openami.readings.bulk import RULE_BITS, dialect_insert
from openami.readings.models import IntervalReading, ReadingFlag
from openami.readings.rules import INTERVAL_OBIS_OF_REGISTER, Flag, Rule

_INTERVAL: Table = cast(Table, IntervalReading.__table__)


def store_flags(session: Session, flags: Sequence[tuple[int, Flag]], now: datetime) -> list[str]:
    """Store VEE flags (meter_id, Flag) idempotently; returns the rule of each flag newly raised or re-raised.

    A flag already stored with the same reason and not cleared is left alone; one with a new reason, or one
    that was cleared, is raised again. REGISTER_MISMATCH flags also mark the intervals they span.
    """
    unique = {(m, f.obis, f.rule.value, f.start, f.end): f for m, f in flags}
    if not unique:
        return []
    table = cast(Table, ReadingFlag.__table__)
    statement = dialect_insert(session, table)
    statement = statement.on_conflict_do_update(
        index_elements=["meter_id", "obis", "rule", "start_at", "end_at"],
        set_={
            "reason": statement.excluded.reason,
            "raised_at": statement.excluded.raised_at,
            "cleared_at": None,
        },
        where=(table.c.reason != statement.excluded.reason) | table.c.cleared_at.is_not(None),
    ).returning(table.c.id)
    raised: list[str] = []
    connection = session.connection()
    for key in sorted(unique, key=lambda k: (k[0], k[1], k[2], k[3], k[4])):
        meter_id, obis, rule, start, end = key
        flag = unique[key]
        row = connection.execute(
            statement,
            {
                "meter_id": meter_id,
                "obis": obis,
                "rule": rule,
                "start_at": start,
                "end_at": end,
                "reason": flag.reason[:500],
                "raised_at": now,
            },
        ).first()
        if row is None:
            continue
        raised.append(rule)
        interval_obis = INTERVAL_OBIS_OF_REGISTER.get(obis)
        if flag.rule is Rule.REGISTER_MISMATCH and interval_obis is not None:
            connection.execute(
                _INTERVAL.update()
                .where(
                    _INTERVAL.c.meter_id == meter_id,
                    _INTERVAL.c.obis == interval_obis,
                    _INTERVAL.c.interval_start >= start,
                    _INTERVAL.c.interval_start < end,
                )
                .values(flags=_INTERVAL.c.flags.op("|")(RULE_BITS[Rule.REGISTER_MISMATCH]))
            )
    return raised


def clear_flags(session: Session, flag_ids: Sequence[int], now: datetime) -> None:
    if flag_ids:
        session.execute(
            update(ReadingFlag)
            .where(ReadingFlag.id.in_(list(flag_ids)), ReadingFlag.cleared_at.is_(None))
            .values(cleared_at=now)
        )


def clear_gap_flags(
    session: Session, meter_id: int, obis: str, start: datetime, end: datetime, now: datetime
) -> None:
    """Clear the GAP flags lying within `[start, end)`: real values fill that span now."""
    session.execute(
        update(ReadingFlag)
        .where(
            ReadingFlag.meter_id == meter_id,
            ReadingFlag.obis == obis,
            ReadingFlag.rule == Rule.GAP.value,
            ReadingFlag.start_at >= start,
            ReadingFlag.end_at <= end,
            ReadingFlag.cleared_at.is_(None),
        )
        .values(cleared_at=now)
    )
