"""Read-only queries over stored readings: series at a resolution, register reads, live values, flags,
completeness, and the small set-based lookups the service needs.

Day and month buckets are site-local (the meter's site time zone): a day is 23, 24 or 25 hours long, and a
point's `expected` intervals follow suit.
"""

from __future__ import annotations

import enum
import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ARRAY, Integer, any_, func, literal, select
from sqlalchemy.orm import Session

from openami.common.clock import ensure_aware
from openami.common.errors import ValidationError
from openami.readings.bulk import RULE_BITS, RawSql
from openami.readings.completeness import DayCompleteness, completeness_grid, local_day_bounds, site_zone
from openami.readings.interfaces import Quality, RegisterValue
from openami.readings.models import (
    OPEN_GAP_STATUSES,
    DailyCompleteness,
    IntervalReading,
    LatestInstant,
    ReadingFlag,
    ReadingGap,
    RegisterReading,
)
from openami.readings.rules import INTERVAL_OBIS_OF_REGISTER, Rule
from openami.registry.interfaces import MeterInfo

_IR = IntervalReading
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Resolution(enum.StrEnum):
    FIFTEEN_MINUTES = "15min"
    HOUR = "hour"
    DAY = "day"  # site-local calendar day
    MONTH = "month"  # site-local calendar month


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """Energy of one bucket `[start, end)` (UTC) and how it is made up."""

    start: datetime
    end: datetime
    energy_wh: int  # sum of the stored values (actual, estimated and edited)
    expected: int  # intervals expected in the bucket (after installation, before now)
    actual: int
    estimated: int
    edited: int
    missing: int
    flags: list[str]  # the VEE rules raised (not cleared) on any interval of the bucket, or on its span


@dataclass(frozen=True, slots=True)
class InstantReading:
    obis: str
    value: float
    read_at: datetime
    received_at: datetime


@dataclass(frozen=True, slots=True)
class RegisterRead:
    obis: str
    read_at: datetime
    energy_wh: int
    source: str
    version: int


@dataclass(frozen=True, slots=True)
class FlagRecord:
    id: int
    obis: str
    rule: str
    start: datetime
    end: datetime
    reason: str
    raised_at: datetime
    cleared_at: datetime | None


# --- what the API shows -------------------------------------------------------------------------------------


def latest_instants(session: Session, meter_ids: Sequence[int]) -> dict[int, list[InstantReading]]:
    """The newest instantaneous value of each OBIS code, per meter (meters without any map to [])."""
    out: dict[int, list[InstantReading]] = {m: [] for m in meter_ids}
    rows = session.execute(
        select(LatestInstant)
        .where(LatestInstant.meter_id.in_(list(meter_ids)))
        .order_by(LatestInstant.meter_id, LatestInstant.obis)
    ).scalars()
    for row in rows:
        out[row.meter_id].append(InstantReading(row.obis, row.value, row.read_at, row.received_at))
    return out


def bucket_bounds(start: datetime, end: datetime, resolution: Resolution, timezone: str) -> list[datetime]:
    """The bucket edges covering `[start, end)`: the first at or before `start`, the last at or after `end`.

    15 min and hour buckets start on the local quarter hour and hour; day and month buckets at local
    midnight.
    """
    start, end = ensure_aware(start, "start"), ensure_aware(end, "end")
    zone = site_zone(timezone)
    if resolution in (Resolution.FIFTEEN_MINUTES, Resolution.HOUR):
        step = timedelta(minutes=15 if resolution is Resolution.FIFTEEN_MINUTES else 60)
        # Floored in local time, so hours start on the local hour in zones half an hour off UTC too.
        local = start.astimezone(zone)
        first = local.replace(minute=local.minute - local.minute % 15 if step < timedelta(hours=1) else 0)
        edges = [first.replace(second=0, microsecond=0).astimezone(UTC)]
        while edges[-1] < end:
            edges.append(edges[-1] + step)
        return edges
    local_day = start.astimezone(zone).date()
    day = local_day.replace(day=1) if resolution is Resolution.MONTH else local_day
    edges = []
    while True:
        edge = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
        edges.append(edge)
        if edge >= end:
            return edges
        if resolution is Resolution.MONTH:
            day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        else:
            day = day + timedelta(days=1)


def interval_series(
    session: Session,
    meter: MeterInfo,
    obis: str,
    start: datetime,
    end: datetime,
    resolution: Resolution,
    now: datetime,
) -> list[SeriesPoint]:
    """The meter's `obis` intervals in `[start, end)` summed per bucket, with their qualities and flags.

    Buckets are clipped to `[start, end)`. Intervals before installation or not yet over at `now` are not
    expected, so they never count as missing.
    """
    start, end, now = ensure_aware(start, "start"), ensure_aware(end, "end"), ensure_aware(now, "now")
    if end <= start:
        raise ValidationError(f"end {end.isoformat()} must be after start {start.isoformat()}", "end")
    step = meter.load_profile_interval_s
    if resolution is Resolution.FIFTEEN_MINUTES and step > 900:
        raise ValidationError(
            f"meter {meter.serial} records {step // 60} min intervals: ask for hour, day or month",
            "resolution",
        )
    edges = bucket_bounds(start, end, resolution, meter.timezone)
    rows = session.execute(
        select(_IR.interval_start, _IR.energy_wh, _IR.quality, _IR.flags)
        .where(
            _IR.meter_id == meter.id, _IR.obis == obis, _IR.interval_start >= start, _IR.interval_start < end
        )
        .order_by(_IR.interval_start)
    ).all()
    raised = _uncleared_flags(session, meter.id, obis, start, end)
    not_before = max(start, meter.installed_at) if meter.installed_at else start
    expected_until = now - timedelta(seconds=step)  # the last interval that has ended by `now` starts here
    points = []
    i = 0
    for edge_low, edge_high in itertools.pairwise(edges):
        low, high = max(edge_low, start), min(edge_high, end)
        energy, bits = 0, 0
        counts: Counter[str] = Counter()
        while i < len(rows) and rows[i][0] < high:
            _, energy_wh, quality, flags = rows[i]
            energy += energy_wh
            counts[quality] += 1
            bits |= flags
            i += 1
        for rule, f_start, f_end in raised:
            # A span flag counts where it overlaps the bucket; an instant flag (start == end) where it lies.
            if f_start < high and (f_end > low or (f_start == f_end and f_start >= low)):
                bits |= RULE_BITS[Rule(rule)]
        expected = _grid_count(
            max(low, not_before), min(high, expected_until + timedelta(microseconds=1)), step
        )
        stored = sum(counts.values())
        points.append(
            SeriesPoint(
                start=low,
                end=high,
                energy_wh=energy,
                expected=max(expected, stored),
                actual=counts[Quality.ACTUAL],
                estimated=counts[Quality.ESTIMATED],
                edited=counts[Quality.EDITED],
                missing=max(expected - stored, 0),
                flags=[rule.value for rule, bit in RULE_BITS.items() if bits & bit],
            )
        )
    return points


def _uncleared_flags(
    session: Session, meter_id: int, obis: str, start: datetime, end: datetime
) -> list[tuple[str, datetime, datetime]]:
    """(rule, start, end) of the flags not cleared on `obis` or on the register its intervals add up to."""
    codes = [obis, *(r for r, i in INTERVAL_OBIS_OF_REGISTER.items() if i == obis)]
    rows = session.execute(
        select(ReadingFlag.rule, ReadingFlag.start_at, ReadingFlag.end_at).where(
            ReadingFlag.meter_id == meter_id,
            ReadingFlag.obis.in_(codes),
            ReadingFlag.cleared_at.is_(None),
            ReadingFlag.start_at < end,
            ReadingFlag.end_at >= start,
        )
    ).all()
    return [(r, s, e) for r, s, e in rows]


def register_reads(
    session: Session, meter_id: int, start: datetime, end: datetime, obis: str | None = None
) -> list[RegisterRead]:
    """Register reads at instants in `[start, end)`, by OBIS code then time."""
    stmt = select(RegisterReading).where(
        RegisterReading.meter_id == meter_id,
        RegisterReading.read_at >= ensure_aware(start, "start"),
        RegisterReading.read_at < ensure_aware(end, "end"),
    )
    if obis is not None:
        stmt = stmt.where(RegisterReading.obis == obis)
    rows = session.execute(stmt.order_by(RegisterReading.obis, RegisterReading.read_at)).scalars()
    return [RegisterRead(r.obis, r.read_at, r.energy_wh, r.source, r.version) for r in rows]


def completeness_days(session: Session, meter_id: int, first: date, last: date) -> list[DailyCompleteness]:
    """The stored completeness rows of the site-local days `first`..`last` (inclusive)."""
    return list(
        session.execute(
            select(DailyCompleteness)
            .where(DailyCompleteness.meter_id == meter_id, DailyCompleteness.day.between(first, last))
            .order_by(DailyCompleteness.day)
        ).scalars()
    )


def flags(
    session: Session, meter_id: int, start: datetime, end: datetime, *, include_cleared: bool = False
) -> list[FlagRecord]:
    """VEE flags whose span overlaps `[start, end)` (instant flags: lie within it), oldest first."""
    start, end = ensure_aware(start, "start"), ensure_aware(end, "end")
    stmt = select(ReadingFlag).where(
        ReadingFlag.meter_id == meter_id, ReadingFlag.start_at < end, ReadingFlag.end_at >= start
    )
    if not include_cleared:
        stmt = stmt.where(ReadingFlag.cleared_at.is_(None))
    rows = session.execute(stmt.order_by(ReadingFlag.start_at, ReadingFlag.id)).scalars()
    return [
        FlagRecord(f.id, f.obis, f.rule, f.start_at, f.end_at, f.reason, f.raised_at, f.cleared_at)
        for f in rows
    ]


# --- lookups for the service --------------------------------------------------------------------------------


def previous_registers(
    session: Session, wanted: Mapping[tuple[int, str], datetime]
) -> dict[tuple[int, str], RegisterValue]:
    """For each (meter_id, obis) the stored read just before the given instant, in one query."""
    if not wanted:
        return {}
    raw = RawSql.of(session)
    keys = sorted(wanted)
    if raw.is_postgres:  # three array parameters, not three per key: a short statement to send and parse
        source = "SELECT * FROM unnest(?::int4[], ?::text[], ?::timestamptz[])"
        params: list[Any] = [[m for m, _ in keys], [o for _, o in keys], [wanted[k] for k in keys]]
    else:
        source = "VALUES " + ", ".join("(?, ?, ?)" for _ in keys)
        params = [p for m, o in keys for p in (m, o, raw.instant(wanted[m, o]))]
    rows = raw.fetchall(
        f"WITH w(meter_id, obis, before_at) AS ({source}) "  # noqa: S608 (placeholders only)
        "SELECT r.meter_id, r.obis, r.read_at, r.energy_wh FROM w JOIN reading_register r "
        "ON r.meter_id = w.meter_id AND r.obis = w.obis AND r.read_at = ("
        "SELECT max(r2.read_at) FROM reading_register r2 "
        "WHERE r2.meter_id = w.meter_id AND r2.obis = w.obis AND r2.read_at < w.before_at)",
        params,
    )
    return {(m, o): RegisterValue(o, raw.read_instant(t), int(wh)) for m, o, t, wh in rows}


def interval_counts(
    session: Session, obis: str, windows: Mapping[int, tuple[datetime, datetime]]
) -> dict[int, int]:
    """Stored intervals of `obis` per meter within each meter's own `[start, end)`, in one query."""
    if not windows:
        return {}
    raw = RawSql.of(session)
    out: dict[int, int] = {}
    ids = sorted(windows)
    for chunk_start in range(0, len(ids), 2000):
        chunk = ids[chunk_start : chunk_start + 2000]
        values = ", ".join("(?, ?, ?)" for _ in chunk)
        params: list[Any] = []
        for m in chunk:
            params += [m, raw.instant(windows[m][0]), raw.instant(windows[m][1])]
        rows = raw.fetchall(
            f"WITH w(meter_id, start_at, end_at) AS (VALUES {values}) "  # noqa: S608 (placeholders only)
            "SELECT w.meter_id, count(r.interval_start) FROM w JOIN reading_interval r "
            "ON r.meter_id = w.meter_id AND r.obis = ? AND r.interval_start >= w.start_at "
            "AND r.interval_start < w.end_at GROUP BY w.meter_id",
            [*params, obis],
        )
        out.update({int(m): int(n) for m, n in rows})
    return out


def interval_starts(
    session: Session, meter_id: int, obis: str, start: datetime, end: datetime
) -> list[datetime]:
    """Starts of the stored intervals (any quality) in `[start, end)`."""
    raw = RawSql.of(session)
    rows = raw.fetchall(
        "SELECT interval_start FROM reading_interval WHERE meter_id = ? AND obis = ? "
        "AND interval_start >= ? AND interval_start < ? ORDER BY interval_start",
        [meter_id, obis, raw.instant(start), raw.instant(end)],
    )
    return [raw.read_instant(r[0]) for r in rows]


def interval_qualities(
    session: Session, meter_id: int, obis: str, start: datetime, end: datetime
) -> dict[datetime, str]:
    rows = session.execute(
        select(_IR.interval_start, _IR.quality).where(
            _IR.meter_id == meter_id, _IR.obis == obis, _IR.interval_start >= start, _IR.interval_start < end
        )
    ).all()
    return dict(rows)


def quality_counts(
    session: Session, meter_id: int, obis: str, start: datetime, end: datetime
) -> Counter[str]:
    """How many stored intervals in `[start, end)` are actual, estimated and edited."""
    rows = session.execute(
        select(_IR.quality, func.count())
        .where(
            _IR.meter_id == meter_id, _IR.obis == obis, _IR.interval_start >= start, _IR.interval_start < end
        )
        .group_by(_IR.quality)
    ).all()
    counts: Counter[str] = Counter({q.value: 0 for q in Quality})
    counts.update({q: int(n) for q, n in rows})
    return counts


def energy_sum(session: Session, meter_id: int, obis: str, start: datetime, end: datetime) -> int:
    total = session.execute(
        select(func.coalesce(func.sum(_IR.energy_wh), 0)).where(
            _IR.meter_id == meter_id, _IR.obis == obis, _IR.interval_start >= start, _IR.interval_start < end
        )
    ).scalar_one()
    return int(total)


def actual_history(
    session: Session, meter_id: int, obis: str, start: datetime, end: datetime
) -> dict[datetime, int]:
    """Actual values (interval start -> Wh) in `[start, end)`: what estimation learns from."""
    rows = session.execute(
        select(_IR.interval_start, _IR.energy_wh).where(
            _IR.meter_id == meter_id,
            _IR.obis == obis,
            _IR.quality == Quality.ACTUAL.value,
            _IR.interval_start >= start,
            _IR.interval_start < end,
        )
    ).all()
    return {t: int(wh) for t, wh in rows}


def bracketing_registers(
    session: Session, meter_id: int, obis: str, start: datetime, end: datetime
) -> tuple[RegisterValue | None, RegisterValue | None]:
    """The last read at or before `start` and the first at or after `end` of one register."""
    before = session.execute(
        select(RegisterReading.read_at, RegisterReading.energy_wh)
        .where(
            RegisterReading.meter_id == meter_id,
            RegisterReading.obis == obis,
            RegisterReading.read_at <= start,
        )
        .order_by(RegisterReading.read_at.desc())
        .limit(1)
    ).first()
    after = session.execute(
        select(RegisterReading.read_at, RegisterReading.energy_wh)
        .where(
            RegisterReading.meter_id == meter_id, RegisterReading.obis == obis, RegisterReading.read_at >= end
        )
        .order_by(RegisterReading.read_at)
        .limit(1)
    ).first()
    return (
        RegisterValue(obis, before[0], int(before[1])) if before else None,
        RegisterValue(obis, after[0], int(after[1])) if after else None,
    )


def unsettled_gaps(
    session: Session, meter_ids: Sequence[int]
) -> list[tuple[int, int, str, datetime, datetime]]:
    """(id, meter_id, obis, start, end) of the gaps of these meters still open, requested or estimated."""
    if not meter_ids:
        return []
    rows = session.execute(
        select(ReadingGap.id, ReadingGap.meter_id, ReadingGap.obis, ReadingGap.start_at, ReadingGap.end_at)
        .where(
            _meter_among(session, ReadingGap.meter_id, meter_ids),
            ReadingGap.status.in_([s.value for s in OPEN_GAP_STATUSES]),
        )
        .order_by(ReadingGap.meter_id, ReadingGap.start_at)
    ).all()
    return [(int(i), int(m), o, s, e) for i, m, o, s, e in rows]


def unsettled_gap_spans(session: Session, obis: str, meter_ids: Sequence[int]) -> dict[int, list[list[Any]]]:
    """Per meter, [id, start, end, status] of its unsettled gaps of `obis` (mutable: the caller merges)."""
    out: dict[int, list[list[Any]]] = {}
    for chunk_start in range(0, len(meter_ids), 2000):
        chunk = list(meter_ids[chunk_start : chunk_start + 2000])
        rows = session.execute(
            select(
                ReadingGap.id, ReadingGap.meter_id, ReadingGap.start_at, ReadingGap.end_at, ReadingGap.status
            )
            .where(
                ReadingGap.obis == obis,
                ReadingGap.meter_id.in_(chunk),
                ReadingGap.status.in_([s.value for s in OPEN_GAP_STATUSES]),
            )
            .order_by(ReadingGap.start_at)
        ).all()
        for gap_id, meter_id, start, end, status in rows:
            out.setdefault(int(meter_id), []).append([int(gap_id), start, end, status])
    return out


def open_gap_flags(
    session: Session, meter_ids: Sequence[int]
) -> list[tuple[int, int, str, datetime, datetime]]:
    """(id, meter_id, obis, start, end) of the GAP flags of these meters not cleared yet."""
    if not meter_ids:
        return []
    rows = session.execute(
        select(
            ReadingFlag.id, ReadingFlag.meter_id, ReadingFlag.obis, ReadingFlag.start_at, ReadingFlag.end_at
        ).where(
            _meter_among(session, ReadingFlag.meter_id, meter_ids),
            ReadingFlag.cleared_at.is_(None),
            ReadingFlag.rule == "gap",
        )
    ).all()
    return [(int(i), int(m), o, s, e) for i, m, o, s, e in rows]


def _meter_among(session: Session, column: Any, meter_ids: Sequence[int]) -> Any:
    """`column IN meter_ids`; on PostgreSQL `= ANY(array)`, one parameter rather than one per meter."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(literal(list(meter_ids), ARRAY(Integer)))
    return column.in_(list(meter_ids))


def _grid_count(start: datetime, end: datetime, interval_s: int) -> int:
    """Grid slots of `interval_s` (from the epoch) that start in `[start, end)`."""
    if end <= start:
        return 0
    step = timedelta(seconds=interval_s)
    first = -(-(start - _EPOCH) // step)  # ceiling division: the first slot at or after `start`
    last = -(-(end - _EPOCH) // step)
    return max(last - first, 0)


def live_completeness(
    session: Session, meter: MeterInfo, obis: str, days: Sequence[date], now: datetime
) -> list[DayCompleteness]:
    """Completeness of the site-local `days`, counted now from the stored intervals (nothing is written)."""
    if not days:
        return []
    start, _ = local_day_bounds(min(days), meter.timezone)
    _, end = local_day_bounds(max(days), meter.timezone)
    qualities = interval_qualities(session, meter.id, obis, start, end)
    return completeness_grid(
        qualities, list(days), meter.timezone, meter.load_profile_interval_s, meter.installed_at, now
    )
