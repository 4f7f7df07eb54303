"""Loads from CSV files, for `openami tariff bill` and analysts: one `kwh` column per interval, or with timestamps.

- Without a timestamp column, the rows are consecutive intervals of one year, starting at local midnight of
  1 January in the tariff's zone: 8760 (8784 in a leap year) rows are hourly, 4 times that quarter-hourly, 2 times
  half-hourly.
- With a `timestamp` column (ISO-8601 with an offset), each row is the interval starting then; the interval
  length is the step between rows, which must be the same throughout.
An optional `export_kwh` column gives exported energy. Every value must be present and >= 0: a missing or negative
interval is an error naming its row and column, since a bill on a guessed load would be wrong without saying so.
"""

from __future__ import annotations

import csv
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from openami.common.errors import ValidationError
from openami.tariffs.calendar import utc_seconds
from openami.tariffs.pricing import MWH_PER_KWH, PRICE_SCALE, Load

_STEPS = {8760: 3600, 8784: 3600, 17520: 1800, 17568: 1800, 35040: 900, 35136: 900, 105120: 300, 105408: 300}


def read_load(path: Path, year: int, zone: str) -> Load:
    """The load in `path` for `year` (see the module docstring)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            raw_rows = list(reader)
    except OSError as exc:
        raise ValidationError(f"cannot read the load file: {exc.strerror}", str(path)) from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ValidationError(f"not a CSV file: {exc}", str(path)) from exc
    if "kwh" not in fields:
        raise ValidationError(f"needs a `kwh` column (found: {', '.join(fields) or 'none'})", str(path))
    for n, row in enumerate(raw_rows, start=2):
        if None in row:  # more fields than the header: a decimal comma ("1,5") is the usual cause
            raise ValidationError(
                f"{len(fields) + len(row[None])} fields for {len(fields)} columns (a decimal comma? use 1.5, not 1,5)",
                f"{path}, row {n}",
            )
    rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in raw_rows]
    if not rows:
        raise ValidationError("has no rows", str(path))
    imported = _energies(rows, "kwh", path)
    exported = _energies(rows, "export_kwh", path) if "export_kwh" in fields else None
    if "timestamp" in fields:
        starts = np.array(
            [_instant(row["timestamp"], n, path) for n, row in enumerate(rows, start=2)], dtype=np.int64
        )
        steps = np.diff(starts)
        if len(steps) and (steps.min() != steps.max() or steps.min() <= 0):
            bad = int(np.argmax(steps != steps[0])) + 3
            raise ValidationError("timestamps must rise by the same step on every row", f"{path}, row {bad}")
        step = int(steps[0]) if len(steps) else 3600
    else:
        step = _STEPS.get(len(rows), 0)
        expected = 8784 if _leap(year) else 8760
        if not step or len(rows) not in (expected * 3600 // s for s in (3600, 1800, 900, 300)):
            raise ValidationError(
                f"{len(rows)} rows is not one {year} year of hourly ({expected}), half-hourly or 15-minute "
                "intervals; add a timestamp column for other spans",
                str(path),
            )
        first = utc_seconds(datetime(year, 1, 1, tzinfo=ZoneInfo(zone)))
        starts = first + step * np.arange(len(rows), dtype=np.int64)
    return Load(starts, imported, step, exported)


def read_prices(path: Path, load: Load) -> Load:
    """`load` with a dynamic price per interval from a CSV of `timestamp,price` (price per kWh, ISO-8601 starts):
    each interval takes the price of the latest row at or before its start."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            raw = list(csv.DictReader(handle))
    except OSError as exc:
        raise ValidationError(f"cannot read the price file: {exc.strerror}", str(path)) from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ValidationError(f"not a CSV file: {exc}", str(path)) from exc
    for n, r in enumerate(raw, start=2):
        if None in r:  # more fields than the header: a decimal comma ("0,25") is the usual cause
            raise ValidationError(
                "more fields than columns (a decimal comma? use 0.25, not 0,25)", f"{path}, row {n}"
            )
    rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in r.items()} for r in raw]
    if not rows or "timestamp" not in rows[0] or "price" not in rows[0]:
        raise ValidationError("needs `timestamp` and `price` columns", str(path))
    at = np.array([_instant(r["timestamp"], n, path) for n, r in enumerate(rows, start=2)], dtype=np.int64)
    micro = []
    for n, row in enumerate(rows, start=2):
        try:
            micro.append(int((Decimal(row["price"]) * PRICE_SCALE).to_integral_value()))
        except InvalidOperation:
            raise ValidationError(
                f"price {row['price']!r} is not a number", f"{path}, row {n}, column price"
            ) from None
    order = np.argsort(at)
    at, prices = at[order], np.array(micro, dtype=np.int64)[order]
    index = np.searchsorted(at, load.start_s, side="right") - 1
    if len(index) and index.min() < 0:
        raise ValidationError("the price series starts after the first interval", str(path))
    return Load(load.start_s, load.import_mwh, load.interval_s, load.export_mwh, prices[index])


def _energies(rows: list[dict[str, str]], column: str, path: Path) -> np.ndarray:
    out = np.empty(len(rows), dtype=np.int64)
    for n, row in enumerate(rows):
        text = row.get(column, "")
        where = f"{path}, row {n + 2}, column {column}"
        if not text:
            raise ValidationError("missing value: every interval needs its energy", where)
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise ValidationError(f"{text!r} is not a number", where) from None
        if not value.is_finite() or value < 0:
            raise ValidationError(f"energy must be a finite number >= 0, got {text}", where)
        out[n] = int((value * MWH_PER_KWH).to_integral_value())
    return out


def _instant(text: str, row: int, path: Path) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"{text!r} is not an ISO-8601 instant", f"{path}, row {row}, column timestamp"
        ) from None
    if moment.tzinfo is None:
        raise ValidationError(f"{text!r} has no UTC offset", f"{path}, row {row}, column timestamp")
    return utc_seconds(moment)


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
