"""The theft scorer's input files, read into arrays: readings, transformer check meters, a mapping, tamper events.

Formats (docs/theft-score.md): readings `meter_id,timestamp,energy_wh` (optionally `transformer_id`), transformers
`transformer_id,timestamp,energy_wh`, mapping `meter_id,transformer_id`, events `meter_id,start,end,code`.
Timestamps are ISO-8601 with a zone; a row's timestamp is the start of its interval.

Which problems stop the run and which are only warned about: anything that would change a score without anyone
seeing it is an error naming the file and its first rows (non-numeric or negative energy, timestamps without a zone
or off the interval grid, two different values for one interval, a meter on two transformers, an event ending before
it starts, an empty file). Rows that can be set aside without changing any score are warnings naming them: rows out
of time order (they are sorted), exact duplicate rows (one is kept), events or mapping rows for meters that have no
readings (there is no one to score).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt

from openami.common.errors import ValidationError

# Interval lengths the scorer understands, longest first: the resolution is the longest that divides every step.
RESOLUTIONS_MIN = (1440, 60, 30, 15)
MINUTES_PER_DAY = 1440
# How many offending rows a message lists before saying "and N more".
SHOWN_ROWS = 5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class EnergyGrid:
    """Energy per interval of several meters (or transformers) on one grid of UTC days.

    `energy_wh[i, d, s]` is the energy of `ids[i]` in slot `s` of day `first_day + d` (NaN: no row). Daily data has
    one slot per day; intraday slots start at UTC midnight.
    """

    ids: tuple[str, ...]
    first_day: date
    interval_min: int
    energy_wh: npt.NDArray[np.float64]

    @property
    def days(self) -> int:
        return int(self.energy_wh.shape[1])


@dataclass(frozen=True)
class ReadingsFile:
    grid: EnergyGrid
    transformer_of: dict[str, str]  # from a `transformer_id` column; empty when there is none
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class TamperEvent:
    meter_id: str
    start: datetime
    end: datetime | None  # None: still open at the end of the file
    code: str


@dataclass
class _Problems:
    """Offending rows by kind, for one message per kind that names the first few."""

    path: Path
    rows: dict[str, list[tuple[int, str]]] = field(default_factory=dict)

    def add(self, kind: str, line: int, detail: str = "") -> None:
        self.rows.setdefault(kind, []).append((line, detail))

    def text(self, kind: str) -> str:
        found = self.rows[kind]
        shown = ", ".join(f"{line}{f' ({detail})' if detail else ''}" for line, detail in found[:SHOWN_ROWS])
        more = f" and {len(found) - SHOWN_ROWS} more" if len(found) > SHOWN_ROWS else ""
        return f"{kind}: row{'s' if len(found) > 1 else ''} {shown}{more}"

    def raise_if_any(self) -> None:
        if self.rows:
            raise ValidationError("; ".join(self.text(kind) for kind in self.rows), str(self.path))


def _rows_text(lines: Iterable[int]) -> str:
    lines = list(lines)
    more = f" and {len(lines) - SHOWN_ROWS} more" if len(lines) > SHOWN_ROWS else ""
    return ", ".join(str(n) for n in lines[:SHOWN_ROWS]) + more


def _read_table(path: Path, required: Sequence[str]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (lower case) and the data rows with their line numbers; an error if unreadable or empty."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = [name.strip().lower() for name in next(reader, [])]
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except OSError as exc:
        raise ValidationError(f"cannot read the file: {exc.strerror}", str(path)) from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ValidationError(f"not a UTF-8 CSV file: {exc}", str(path)) from exc
    if not header:
        raise ValidationError("the file is empty; expected a header " + ",".join(required), str(path))
    missing = [name for name in required if name not in header]
    if missing:
        raise ValidationError(
            f"missing column(s) {', '.join(missing)}; the header is {','.join(header)}", str(path)
        )
    if not rows:
        raise ValidationError("the file has a header but no data rows", str(path))
    return header, rows


class _Timestamps:
    """ISO-8601 text to minutes since 1970 UTC, cached: a fleet's readings repeat the same few timestamps."""

    def __init__(self) -> None:
        self._cache: dict[str, float] = {}

    def minutes(self, text: str) -> float:
        """Minutes since the epoch (fractional if off the minute); raises ValueError saying what is wrong."""
        cached = self._cache.get(text)
        if cached is None:
            cached = (parse_timestamp(text) - _EPOCH).total_seconds() / 60
            self._cache[text] = cached
        return cached


def parse_timestamp(text: str) -> datetime:
    """A zoned ISO-8601 timestamp as UTC; ValueError saying what is wrong otherwise."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 timestamp") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{text!r} has no zone (add Z or an offset such as +03:00)")
    return moment.astimezone(UTC)


def _energy(text: str) -> float:
    value = float(text)  # ValueError for text that is not a number
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _read_energy(
    path: Path, id_column: str, *, first_day: date | None = None, days: int | None = None
) -> tuple[EnergyGrid, list[str], list[tuple[int, list[str]]], list[str]]:
    """An energy file on its own grid of days (or on `first_day` + `days`; rows outside it are dropped).

    Also returns the header and raw rows (for extra columns) and the warnings.
    """
    header, rows = _read_table(path, (id_column, "timestamp", "energy_wh"))
    at_id, at_time, at_energy = header.index(id_column), header.index("timestamp"), header.index("energy_wh")
    problems = _Problems(path)
    stamps = _Timestamps()
    index: dict[str, int] = {}
    ids, minutes, values, lines = [], [], [], []
    width = max(at_id, at_time, at_energy) + 1
    for line, row in rows:
        if len(row) < width:
            problems.add("too few columns", line)
            continue
        name = row[at_id].strip()
        if not name:
            problems.add(f"empty {id_column}", line)
            continue
        try:
            minute = stamps.minutes(row[at_time])
        except ValueError as exc:
            problems.add("bad timestamp", line, str(exc))
            continue
        try:
            value = _energy(row[at_energy])
        except ValueError:
            problems.add("energy_wh is not a number", line, repr(row[at_energy]))
            continue
        if value < 0:
            problems.add("negative energy_wh", line, row[at_energy].strip())
            continue
        ids.append(index.setdefault(name, len(index)))
        minutes.append(minute)
        values.append(value)
        lines.append(line)
    problems.raise_if_any()

    who = np.asarray(ids, dtype=np.int64)
    when = np.asarray(minutes, dtype=np.float64)
    energy = np.asarray(values, dtype=np.float64)
    line_no = np.asarray(lines, dtype=np.int64)
    names = tuple(index)
    warnings: list[str] = []

    off_minute = np.flatnonzero(when != np.floor(when))
    if off_minute.size:
        raise ValidationError(
            f"timestamps not on a whole minute: rows {_rows_text(line_no[off_minute])}", str(path)
        )
    when_min = when.astype(np.int64)

    # Out of order within a meter, in file order: sorting fixes it, but say so.
    by_id = np.argsort(who, kind="stable")
    same = who[by_id][1:] == who[by_id][:-1]
    backwards = by_id[1:][same & (np.diff(when_min[by_id]) < 0)]
    if backwards.size:
        warnings.append(
            f"{path}: rows not in time order for their {id_column} (sorted before scoring): rows "
            f"{_rows_text(np.sort(line_no[backwards]))}"
        )

    order = np.lexsort((line_no, when_min, who))
    who, when_min, energy, line_no = who[order], when_min[order], energy[order], line_no[order]
    repeat = np.flatnonzero((who[1:] == who[:-1]) & (when_min[1:] == when_min[:-1])) + 1
    if repeat.size:
        differ = repeat[energy[repeat] != energy[repeat - 1]]
        if differ.size:
            pairs = [f"{line_no[i - 1]} and {line_no[i]}" for i in differ[:SHOWN_ROWS]]
            more = f" and {differ.size - SHOWN_ROWS} more" if differ.size > SHOWN_ROWS else ""
            raise ValidationError(
                f"duplicate rows with different energy_wh for the same {id_column} and timestamp: rows "
                f"{'; '.join(pairs)}{more}",
                str(path),
            )
        warnings.append(
            f"{path}: exact duplicate rows ignored (the first copy is kept): rows {_rows_text(line_no[repeat])}"
        )
        keep = np.ones(who.size, dtype=bool)
        keep[repeat] = False
        who, when_min, energy, line_no = who[keep], when_min[keep], energy[keep], line_no[keep]

    steps = np.diff(when_min)[who[1:] == who[:-1]]
    if steps.size == 0:
        raise ValidationError(f"cannot tell the resolution: every {id_column} has a single row", str(path))
    step = int(np.gcd.reduce(steps))
    interval = next((r for r in RESOLUTIONS_MIN if step % r == 0), None)
    if interval is None:
        raise ValidationError(
            f"rows are {step} minutes apart; expected 15-minute, 30-minute, hourly or daily readings",
            str(path),
        )
    if interval == MINUTES_PER_DAY:
        # A daily row belongs to the UTC date nearest its timestamp, so that local midnights east or west of
        # UTC land on the date they were written with.
        day = (when_min + MINUTES_PER_DAY // 2) // MINUTES_PER_DAY
        slot = np.zeros_like(day)
    else:
        off_grid = np.flatnonzero(when_min % interval)
        if off_grid.size:
            raise ValidationError(
                f"timestamps off the {interval}-minute grid (intervals start at :00, :{interval:02d} ... UTC): "
                f"rows {_rows_text(np.sort(line_no[off_grid]))}",
                str(path),
            )
        day, slot = np.divmod(when_min, MINUTES_PER_DAY)
        slot //= interval
    epoch = date(1970, 1, 1)
    if first_day is None:
        start = int(day.min())
        days = int(day.max()) - start + 1
        first_day = epoch + timedelta(days=start)
    else:
        start = (first_day - epoch).days
        assert days is not None  # noqa: S101  (both or neither, by the callers in this module)
        inside = (day >= start) & (day < start + days)
        who, day, slot, energy = who[inside], day[inside], slot[inside], energy[inside]
    matrix = np.full((len(names), days, MINUTES_PER_DAY // interval), np.nan)
    matrix[who, day - start, slot] = energy
    return EnergyGrid(names, first_day, interval, matrix), header, rows, warnings


def read_readings(path: Path) -> ReadingsFile:
    """The customers' meter readings, and the transformer of each meter when the file has a `transformer_id`."""
    grid, header, rows, warnings = _read_energy(path, "meter_id")
    transformer_of: dict[str, str] = {}
    if "transformer_id" in header:
        at_meter, at_tx = header.index("meter_id"), header.index("transformer_id")
        first_line: dict[str, int] = {}
        problems = _Problems(path)
        for line, row in rows:
            meter = row[at_meter].strip()
            tx = row[at_tx].strip() if at_tx < len(row) else ""
            if not tx:
                continue
            known = transformer_of.setdefault(meter, tx)
            first_line.setdefault(meter, line)
            if known != tx:
                problems.add(
                    "a meter under two transformers",
                    line,
                    f"{meter}: {known} at row {first_line[meter]}, {tx} here",
                )
        problems.raise_if_any()
    return ReadingsFile(grid, transformer_of, tuple(warnings))


def read_transformers(path: Path, first_day: date, days: int) -> tuple[EnergyGrid, tuple[str, ...]]:
    """The transformer check meters' energy on the readings' days (rows on other days play no part)."""
    grid, _, _, warnings = _read_energy(path, "transformer_id", first_day=first_day, days=days)
    return grid, tuple(warnings)


def read_mapping(path: Path, meters: Iterable[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """`meter_id,transformer_id` rows; rows for meters without readings are warned about and set aside."""
    header, rows = _read_table(path, ("meter_id", "transformer_id"))
    at_meter, at_tx = header.index("meter_id"), header.index("transformer_id")
    known_meters = set(meters)
    problems = _Problems(path)
    mapping: dict[str, str] = {}
    first_line: dict[str, int] = {}
    unknown: list[int] = []
    for line, row in rows:
        if len(row) <= max(at_meter, at_tx) or not row[at_meter].strip() or not row[at_tx].strip():
            problems.add("empty meter_id or transformer_id", line)
            continue
        meter, tx = row[at_meter].strip(), row[at_tx].strip()
        if meter not in known_meters:
            unknown.append(line)
            continue
        known = mapping.setdefault(meter, tx)
        first_line.setdefault(meter, line)
        if known != tx:
            problems.add(
                "a meter under two transformers",
                line,
                f"{meter}: {known} at row {first_line[meter]}, {tx} here",
            )
    problems.raise_if_any()
    warnings = (f"{path}: meters without readings ignored: rows {_rows_text(unknown)}",) if unknown else ()
    return mapping, warnings


def read_events(path: Path, meters: Iterable[str]) -> tuple[list[TamperEvent], tuple[str, ...]]:
    """`meter_id,start,end,code` rows (an empty end: still open); events of meters without readings are set aside
    with a warning, since there is no score for them to change."""
    header, rows = _read_table(path, ("meter_id", "start", "end", "code"))
    at = {name: header.index(name) for name in ("meter_id", "start", "end", "code")}
    width = max(at.values()) + 1
    known_meters = set(meters)
    problems = _Problems(path)
    events: list[TamperEvent] = []
    unknown: list[int] = []
    for line, row in rows:
        if len(row) < width:
            problems.add("too few columns", line)
            continue
        meter, code = row[at["meter_id"]].strip(), row[at["code"]].strip()
        if not meter or not code:
            problems.add("empty meter_id or code", line)
            continue
        try:
            start = parse_timestamp(row[at["start"]])
            end = parse_timestamp(row[at["end"]]) if row[at["end"]].strip() else None
        except ValueError as exc:
            problems.add("bad timestamp", line, str(exc))
            continue
        if end is not None and end < start:
            problems.add("end before start", line)
            continue
        if meter not in known_meters:
            unknown.append(line)
            continue
        events.append(TamperEvent(meter, start, end, code))
    problems.raise_if_any()
    warnings = (
        (f"{path}: events of meters without readings ignored: rows {_rows_text(unknown)}",) if unknown else ()
    )
    return events, warnings
