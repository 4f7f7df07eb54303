"""What a bill is priced on: the stored intervals of an account's meters, read from the readings tables, checked
for completeness and summed into one `tariffs.pricing.Load`.

Read-only. The intervals are the readings context's validated, stored values (actual, estimated or edited);
estimated ones are counted so the bill can say so. Meters of one account may record intervals of different
lengths: their sum is taken on the grid of the least common multiple of the lengths (every allowed length
divides an hour, so that grid is at most an hour).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session

from openami.common.obis import ACTIVE_EXPORT_INTERVAL, ACTIVE_IMPORT_INTERVAL
from openami.readings.bulk import RawSql
from openami.readings.interfaces import Quality
from openami.registry.interfaces import MeterInfo
from openami.tariffs.calendar import local_times, utc_seconds
from openami.tariffs.pricing import Load

MWH_PER_WH = 1000
_CHUNK = 500  # meters per query


def local_midnight(day: date, timezone: str) -> datetime:
    """The UTC instant local day `day` begins in `timezone` (where midnight does not exist, the first instant)."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(timezone)).astimezone(UTC)


_NO_INTS: NDArray[np.int64] = np.zeros(0, dtype=np.int64)


@dataclass
class MeterUsage:
    """One meter's stored intervals in a span: UTC starts (s) and Wh, import and export apart, by start."""

    meter: MeterInfo
    import_start_s: NDArray[np.int64] = field(default_factory=lambda: _NO_INTS)
    import_wh: NDArray[np.int64] = field(default_factory=lambda: _NO_INTS)
    export_start_s: NDArray[np.int64] = field(default_factory=lambda: _NO_INTS)
    export_wh: NDArray[np.int64] = field(default_factory=lambda: _NO_INTS)
    estimated: int = 0  # intervals (import or export) of quality estimated
    odd_lengths: set[int] = field(default_factory=set)  # interval lengths other than the meter's profile


# The intervals of some meters as plain integers, one row per interval: the database turns the instant into epoch
# seconds and the OBIS code and quality into 0/1, so a month of 500 accounts' hours (372,000 rows) becomes one
# numpy array without a Python object per value.
_USAGE_SQL = (
    "SELECT meter_id, CASE WHEN obis = ? THEN 0 ELSE 1 END, {epoch}, interval_s, energy_wh, "
    "CASE WHEN quality = ? THEN 1 ELSE 0 END FROM reading_interval "
    "WHERE {meters} AND obis IN (?, ?) AND interval_start >= ? AND interval_start < ? "
    "ORDER BY meter_id, obis, interval_start"
)
_EPOCH = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM interval_start) AS BIGINT)",
    "sqlite": "CAST(strftime('%s', interval_start) AS INTEGER)",
}


def read_usage(
    session: Session, meters: Sequence[MeterInfo], start: datetime, end: datetime
) -> dict[int, MeterUsage]:
    """The import and export intervals starting in `[start, end)` of each meter, by meter id."""
    out = {m.id: MeterUsage(m) for m in meters}
    ids = sorted(out)
    raw = RawSql.of(session)
    for at in range(0, len(ids), _CHUNK):
        chunk = ids[at : at + _CHUNK]
        meter_params: list[Any]
        if raw.is_postgres:  # one array parameter: psycopg parses a statement of 500 placeholders slowly
            meters_sql, meter_params = "meter_id = ANY(?)", [chunk]
        else:
            meters_sql, meter_params = f"meter_id IN ({', '.join('?' * len(chunk))})", chunk
        statement = _USAGE_SQL.format(epoch=_EPOCH[raw.dialect], meters=meters_sql)
        params = (
            ACTIVE_IMPORT_INTERVAL,
            Quality.ESTIMATED.value,
            *meter_params,
            ACTIVE_IMPORT_INTERVAL,
            ACTIVE_EXPORT_INTERVAL,
            raw.instant(start),
            raw.instant(end),
        )
        rows = raw.fetchall(statement, params)
        if not rows:
            continue
        table = np.array(rows, dtype=np.int64).reshape(len(rows), 6)
        meter_col, export_col, start_col, length_col, wh_col, estimated_col = table.T
        # Rows come by meter, then OBIS code, then time: each meter's part is one slice.
        cuts = np.flatnonzero(np.diff(meter_col)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(rows)], strict=True):
            usage = out[int(meter_col[lo])]
            lengths = np.unique(length_col[lo:hi])
            usage.odd_lengths = {int(x) for x in lengths if x != usage.meter.load_profile_interval_s}
            usage.estimated = int(estimated_col[lo:hi].sum())
            exported = export_col[lo:hi] == 1
            starts, energy = start_col[lo:hi], wh_col[lo:hi]
            usage.import_start_s, usage.import_wh = starts[~exported], energy[~exported]
            usage.export_start_s, usage.export_wh = starts[exported], energy[exported]
    return out


def expected_starts(meter: MeterInfo, start: datetime, end: datetime) -> NDArray[np.int64]:
    """The meter's grid starts (UTC s, aligned to the epoch) in `[start, end)`, from its installation on."""
    step = meter.load_profile_interval_s
    lo = utc_seconds(start)
    if meter.installed_at is not None:
        lo = max(lo, utc_seconds(meter.installed_at))
    first = -(-lo // step) * step
    return np.arange(first, utc_seconds(end), step, dtype=np.int64)


def missing_reason(usage: MeterUsage, start: datetime, end: datetime) -> str | None:
    """Why the meter's intervals cannot be billed in `[start, end)`, or None when they are complete.

    Every import interval after installation must be stored; export intervals too, once the meter reported any
    in the span (a meter that never exports reports none)."""
    meter = usage.meter
    if usage.odd_lengths:
        lengths = ", ".join(f"{s} s" for s in sorted(usage.odd_lengths))
        return (
            f"meter {meter.serial} has intervals of {lengths} in the period; its load profile is "
            f"{meter.load_profile_interval_s} s"
        )
    expected = expected_starts(meter, start, end)
    for what, starts in (("import", usage.import_start_s), ("export", usage.export_start_s)):
        if what == "export" and not len(starts):
            continue
        lacking = np.setdiff1d(expected, starts, assume_unique=True)
        if len(lacking):
            first = datetime.fromtimestamp(int(lacking[0]), UTC).isoformat()
            return (
                f"meter {meter.serial} lacks {len(lacking)} of {len(expected)} {what} intervals in the period "
                f"(the first at {first}); estimate or re-read them, then bill again"
            )
    return None


def account_step_s(usages: Sequence[MeterUsage]) -> int:
    """The grid an account's meters are summed on: the least common multiple of their profile lengths."""
    return math.lcm(*(u.meter.load_profile_interval_s for u in usages)) if usages else 3600


def to_load(usages: Sequence[MeterUsage], step_s: int) -> Load:
    """The account's load: every meter's intervals summed per `step_s` slot (mWh), import and export."""
    imports = [(u.import_start_s, u.import_wh) for u in usages]
    exports = [(u.export_start_s, u.export_wh) for u in usages]
    every = np.concatenate([s for s, _ in imports + exports] or [_NO_INTS])
    slots = np.unique(every // step_s * step_s)
    return Load(
        start_s=slots,
        import_mwh=_summed(imports, slots, step_s),
        export_mwh=_summed(exports, slots, step_s) if any(len(s) for s, _ in exports) else None,
        interval_s=step_s,
    )


def _summed(
    series: list[tuple[NDArray[np.int64], NDArray[np.int64]]], slots: NDArray[np.int64], step_s: int
) -> NDArray[np.int64]:
    if len(series) == 1 and len(series[0][0]) == len(slots):
        # One meter on its own grid (most accounts): its values are the slots' already.
        return series[0][1] * MWH_PER_WH
    out = np.zeros(len(slots), dtype=np.int64)
    for starts, values in series:
        if len(starts):
            index = np.searchsorted(slots, starts // step_s * step_s)
            np.add.at(out, index, values * MWH_PER_WH)
    return out


def filled_to(load: Load, start_s: int, end_s: int, timezone: str) -> Load:
    """`load` with every slot of `[start_s, end_s)` it lacks given the mean energy of its slots at the same local
    time of day (the mean of all its slots where that time of day was not seen): the projection of a cycle."""
    step = load.interval_s
    grid = np.arange(-(-start_s // step) * step, end_s, step, dtype=np.int64)
    lacking = np.setdiff1d(grid, load.start_s, assume_unique=True)
    if not len(lacking):
        return load
    starts = np.concatenate([load.start_s, lacking])
    order = np.argsort(starts, kind="stable")

    def fill(values: NDArray[np.int64] | None) -> NDArray[np.int64] | None:
        if values is None:
            return None
        if not len(values):
            guess = np.zeros(len(lacking), dtype=np.int64)
        else:
            seen = local_times(load.start_s, timezone).minute
            wanted = local_times(lacking, timezone).minute
            sums = np.bincount(seen, weights=values, minlength=1440)
            counts = np.bincount(seen, minlength=1440)
            overall = float(values.mean())
            means = np.where(counts > 0, sums / np.maximum(counts, 1), overall)
            guess = np.rint(means[wanted]).astype(np.int64)
        return np.concatenate([values, guess])[order]

    filled_import = fill(load.import_mwh)
    assert filled_import is not None  # noqa: S101  (import is never None)
    return Load(
        start_s=starts[order],
        import_mwh=filled_import,
        export_mwh=fill(load.export_mwh),
        interval_s=step,
    )


def drop_unfinished(usage: MeterUsage, now: datetime) -> None:
    """Leave out the intervals that have not ended by `now` (a meter may push a running interval)."""
    step = usage.meter.load_profile_interval_s
    limit = int(now.timestamp()) - step
    keep = usage.import_start_s <= limit
    usage.import_start_s, usage.import_wh = usage.import_start_s[keep], usage.import_wh[keep]
    keep = usage.export_start_s <= limit
    usage.export_start_s, usage.export_wh = usage.export_start_s[keep], usage.export_wh[keep]
