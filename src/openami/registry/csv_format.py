"""The registry CSV format: which columns each record type uses, and parsing of the text into checked rows.

Pure: text in, rows and errors out; nothing here looks at the database (references and duplicates against
stored data are resolved by `registry.csv_import`). The format is documented in docs/registry-import.md.

Row numbers are the ones a spreadsheet shows: the header is row 1 and every record, blank ones included,
counts.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from openami.common.errors import ValidationError
from openami.registry.records import (
    NewAccount,
    NewCustomer,
    NewMeter,
    NewServicePoint,
    NewSite,
    NewTransformer,
    clean_account,
    clean_customer,
    clean_meter,
    clean_service_point,
    clean_site,
    clean_transformer,
)
from openami.registry.validation import InvalidFieldsError

RECORD_COLUMN = "record"

NewRecord = NewSite | NewCustomer | NewAccount | NewTransformer | NewServicePoint | NewMeter


@dataclass(frozen=True, slots=True)
class RecordType:
    """The columns one record type reads. `key` names it (unique per site; the serial is unique everywhere);
    `references` name other records by their key."""

    name: str
    key: str
    required: tuple[str, ...]  # own values that must be present
    optional: tuple[str, ...]  # own values with a default
    references: dict[str, str]  # column -> the record type it names
    required_references: tuple[str, ...]
    clean: Callable[..., NewRecord]

    @property
    def columns(self) -> tuple[str, ...]:
        site = () if self.name == "site" else ("site",)
        return (*site, *self.required, *self.optional, *self.references)


RECORD_TYPES: dict[str, RecordType] = {
    r.name: r
    for r in (
        RecordType(
            "site",
            key="code",
            required=("code", "name", "timezone", "currency", "holiday_country"),
            optional=("holiday_subdivision",),
            references={},
            required_references=(),
            clean=clean_site,
        ),
        RecordType(
            "customer",
            key="reference",
            required=("reference", "name"),
            optional=("email", "phone"),
            references={},
            required_references=(),
            clean=clean_customer,
        ),
        RecordType(
            "account",
            key="number",
            required=("number", "kind"),
            optional=(),
            references={"customer": "customer"},
            required_references=("customer",),
            clean=clean_account,
        ),
        RecordType(
            "transformer",
            key="code",
            required=("code", "rating_kva"),
            optional=(),
            references={"check_meter": "meter"},
            required_references=(),
            clean=clean_transformer,
        ),
        RecordType(
            "service_point",
            key="code",
            required=("code", "rated_current_a"),
            optional=("phases", "address"),
            references={"account": "account", "transformer": "transformer"},
            required_references=(),
            clean=clean_service_point,
        ),
        RecordType(
            "meter",
            key="serial",
            required=("serial", "model", "rated_current_a", "auth_key"),
            optional=("phases", "protocol", "role", "load_profile_interval_s", "installed_at"),
            references={"service_point": "service_point"},
            required_references=(),
            clean=clean_meter,
        ),
    )
}

# Every column the format knows, in the order the documentation and the example file use.
ALL_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys([RECORD_COLUMN, "site", *(c for r in RECORD_TYPES.values() for c in r.columns)])
)


class RowError(NamedTuple):
    """One problem in the file: the row as a spreadsheet numbers it (header = 1), the column, the problem."""

    row: int
    column: str
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}, column {self.column}" if self.column else f"row {self.row}"
        return f"{where}: {self.message}"


class ImportErrors(ValidationError):  # noqa: N818  (the name the CLI and the API document; it carries many errors)
    """The registry file has errors; nothing was imported. `errors` lists every one, by row then column."""

    def __init__(self, errors: list[RowError]) -> None:
        self.errors = sorted(errors, key=lambda e: e.row)
        shown = "; ".join(str(e) for e in self.errors[:5])
        more = f"; and {len(self.errors) - 5} more" if len(self.errors) > 5 else ""
        first = self.errors[0]
        super().__init__(
            f"{len(self.errors)} error(s) in the registry file, nothing imported: {shown}{more}",
            location=f"row {first.row}",
        )


@dataclass(slots=True)
class ParsedRow:
    """One record of the file.

    `new` holds the checked values, or None when any is wrong (the errors are reported separately). `key`,
    `site` and `references` are the raw texts, so other rows can still refer to this one without a cascade of
    follow-on errors.
    """

    row: int
    record: RecordType
    site: str | None
    key: str | None
    references: dict[str, str | None] = field(default_factory=dict)
    new: Any = None  # one of the New* values of registry.records, or None


@dataclass(slots=True)
class ParsedFile:
    rows: list[ParsedRow]
    errors: list[RowError]


def _cell(values: list[str], index: int) -> str | None:
    """The trimmed cell, or None when empty or absent (a short row leaves its trailing cells empty)."""
    if index >= len(values):
        return None
    text = values[index].strip()
    return text or None


def _read_records(text: str) -> tuple[list[tuple[int, list[str]]], RowError | None]:
    """Every CSV record with its row number; stops at the first malformed record (an unclosed quote)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    try:
        for number, values in enumerate(reader, start=1):
            records.append((number, values))
    except csv.Error as exc:
        return records, RowError(len(records) + 1, "", f"is not valid CSV ({exc}); check the quotes")
    return records, None


def _header_errors(header_row: int, header: list[str]) -> list[RowError]:
    errors: list[RowError] = []
    seen: set[str] = set()
    for position, name in enumerate(header, start=1):
        if not name:
            errors.append(RowError(header_row, f"column {position}", "the header names no column here"))
        elif name in seen:
            errors.append(RowError(header_row, name, "appears twice in the header"))
        elif name not in ALL_COLUMNS:
            hint = ""
            if ";" in name or "\t" in name:
                hint = "; separate columns with commas, not semicolons or tabs"
            errors.append(
                RowError(header_row, name, f"unknown column{hint}; known columns: {', '.join(ALL_COLUMNS)}")
            )
        seen.add(name)
    if RECORD_COLUMN not in seen:
        errors.append(RowError(header_row, RECORD_COLUMN, "the header must have a 'record' column"))
    return errors


def _parse_row(
    number: int, values: list[str], columns: dict[str, int], record: RecordType, missing: set[str]
) -> tuple[ParsedRow, list[RowError]]:
    errors: list[RowError] = []

    def cell(name: str) -> str | None:
        return _cell(values, columns[name]) if name in columns else None

    for name, index in columns.items():
        if name != RECORD_COLUMN and name not in record.columns and _cell(values, index) is not None:
            errors.append(
                RowError(number, name, f"{record.name} records do not use this column; leave it empty")
            )

    site = cell("code") if record.name == "site" else cell("site")
    references = {name: cell(name) for name in record.references}
    for name in (*(() if record.name == "site" else ("site",)), *record.required_references):
        if name not in missing and cell(name) is None:
            errors.append(RowError(number, name, "is required"))

    own = {name: cell(name) for name in (*record.required, *record.optional)}
    new: Any = None
    try:
        new = record.clean(**own)
    except InvalidFieldsError as exc:
        # A column missing from the header is reported once, on the header, not again on every row.
        errors.extend(
            RowError(number, e.location or "", e.message) for e in exc.errors if e.location not in missing
        )
    parsed = ParsedRow(number, record, site=site, key=cell(record.key), references=references, new=new)
    return parsed, errors


def parse_registry_csv(text: str) -> ParsedFile:
    """Parse the whole file, checking every row's own values; never stops at the first error."""
    if not text.strip():
        return ParsedFile(
            [], [RowError(1, "", "the file is empty; it needs a header row naming the columns, then records")]
        )
    records, malformed = _read_records(text)
    errors: list[RowError] = [malformed] if malformed else []
    records = [(n, v) for n, v in records if any(cell.strip() for cell in v)]
    if not records:
        return ParsedFile([], [*errors, RowError(1, "", "the file has no header row")])
    header_row, raw_header = records[0]
    header = [name.strip().lower() for name in raw_header]
    errors.extend(_header_errors(header_row, header))
    if RECORD_COLUMN not in header:
        return ParsedFile([], errors)
    columns = {name: i for i, name in enumerate(header) if name in ALL_COLUMNS}
    body = records[1:]
    if not body and not malformed:
        errors.append(RowError(header_row, "", "the file has a header but no records"))

    rows: list[ParsedRow] = []
    missing_reported: dict[str, int] = {}
    for number, values in body:
        if len(values) > len(header):
            errors.append(
                RowError(
                    number, "", f"has {len(values)} cells but the header names only {len(header)} columns"
                )
            )
        kind = (_cell(values, columns[RECORD_COLUMN]) or "").lower()
        record = RECORD_TYPES.get(kind)
        if record is None:
            message = "is required" if not kind else f"unknown record type {kind!r}"
            errors.append(RowError(number, RECORD_COLUMN, f"{message}; use one of {', '.join(RECORD_TYPES)}"))
            continue
        needed = (*record.required, *record.required_references, *(() if kind == "site" else ("site",)))
        missing = {name for name in needed if name not in columns}
        for name in sorted(missing - missing_reported.keys()):
            missing_reported[name] = number
            errors.append(
                RowError(header_row, name, f"missing column, needed by {record.name} records (row {number})")
            )
        parsed, row_errors = _parse_row(number, values, columns, record, missing)
        errors.extend(row_errors)
        rows.append(parsed)
    return ParsedFile(rows, errors)
