"""`openami registry import FILE.csv`: load a whole registry tree from one CSV file, all or nothing.

Every row is checked first (its own values, then duplicates and references against the file and the
database); any error stops the import before anything is written, and every error is reported. The rows are
then written in one transaction. The file format is in docs/registry-import.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from openami.common.clock import Clock
from openami.common.errors import ConfigurationError, ConflictError, ValidationError
from openami.config import get_settings
from openami.registry.csv_format import ImportErrors, ParsedRow, RowError, parse_registry_csv
from openami.registry.models import Account, Customer, Meter, ServicePoint, Site, Transformer
from openami.registry.validation import valid_check_meter_role, valid_installed_at, valid_meter_placement
from openami.security.meter_keys import MeterKeyCipher
from openami.storage.db import unit_of_work

__all__ = ["ImportErrors", "ImportSummary", "RowError", "import_registry_csv", "read_registry_file"]

# Keeps IN (...) lists well under SQLite's and PostgreSQL's parameter limits.
_CHUNK = 500

SiteKey = tuple[str, str]  # (site code, key within the site)

# The record types named by a key unique within their site: table and key column.
_KEY_COLUMNS: dict[str, tuple[Any, InstrumentedAttribute[str]]] = {
    "customer": (Customer, Customer.reference),
    "account": (Account, Account.number),
    "transformer": (Transformer, Transformer.code),
    "service_point": (ServicePoint, ServicePoint.code),
}


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """How many records of each type one import wrote."""

    sites: int = 0
    customers: int = 0
    accounts: int = 0
    transformers: int = 0
    service_points: int = 0
    meters: int = 0

    @property
    def total(self) -> int:
        return sum(self.as_dict().values())

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _chunks(values: Iterable[Any]) -> Iterator[list[Any]]:
    ordered = sorted(set(values))
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


@dataclass(slots=True)
class _Stored:
    """What the database already holds, limited to what the file names."""

    site_ids: dict[str, int]  # code -> id
    keyed: dict[str, dict[SiteKey, int]]  # record type -> (site code, key) -> id
    meters: dict[str, Any]  # serial -> row with id, serial, site_id, role
    occupied_points: dict[int, str]  # service point id -> serial of the meter installed there
    checking: dict[int, str]  # meter id -> code of the transformer it checks


def _load_stored(session: Session, rows: list[ParsedRow]) -> _Stored:
    site_ids: dict[str, int] = {}
    for chunk in _chunks(r.site for r in rows if r.site):
        site_ids.update(
            {
                code: id_
                for id_, code in session.execute(select(Site.id, Site.code).where(Site.code.in_(chunk)))
            }
        )
    codes_by_id = {id_: code for code, id_ in site_ids.items()}

    named: dict[str, set[str]] = {kind: set() for kind in _KEY_COLUMNS}
    for r in rows:
        if r.record.name in named and r.key:
            named[r.record.name].add(r.key)
        for column, target in r.record.references.items():
            key = r.references.get(column)
            if target in named and key:
                named[target].add(key)
    keyed: dict[str, dict[SiteKey, int]] = {kind: {} for kind in _KEY_COLUMNS}
    for kind, (table, key_column) in _KEY_COLUMNS.items():
        for chunk in _chunks(named[kind]):
            stmt = select(table.id, table.site_id, key_column).where(
                table.site_id.in_(codes_by_id), key_column.in_(chunk)
            )
            keyed[kind].update(
                {(codes_by_id[site_id], key): id_ for id_, site_id, key in session.execute(stmt)}
            )

    serials = {r.key for r in rows if r.record.name == "meter" and r.key}
    serials |= {r.references["check_meter"] or "" for r in rows if r.references.get("check_meter")}
    meters: dict[str, Any] = {}
    for chunk in _chunks(serials):
        stmt = select(Meter.id, Meter.serial, Meter.site_id, Meter.role).where(Meter.serial.in_(chunk))
        meters.update({m.serial: m for m in session.execute(stmt)})

    occupied: dict[int, str] = {}
    for chunk in _chunks(keyed["service_point"].values()):
        stmt = select(Meter.service_point_id, Meter.serial).where(Meter.service_point_id.in_(chunk))
        occupied.update(
            (point_id, serial) for point_id, serial in session.execute(stmt) if point_id is not None
        )
    checking: dict[int, str] = {}
    for chunk in _chunks(m.id for m in meters.values()):
        stmt = select(Transformer.check_meter_id, Transformer.code).where(
            Transformer.check_meter_id.in_(chunk)
        )
        checking.update((meter_id, code) for meter_id, code in session.execute(stmt) if meter_id is not None)
    return _Stored(site_ids, keyed, meters, occupied, checking)


class _ReferenceCheck:
    """Duplicates and references of the parsed rows, against each other and against the database."""

    def __init__(self, rows: list[ParsedRow], stored: _Stored, now: datetime) -> None:
        self.rows = rows
        self.stored = stored
        self.now = now
        self.errors: list[RowError] = []
        self.sites: dict[str, ParsedRow] = {}
        self.defined: dict[str, dict[SiteKey, ParsedRow]] = {kind: {} for kind in _KEY_COLUMNS}
        self.meters: dict[str, ParsedRow] = {}
        self.occupants: dict[SiteKey, ParsedRow] = {}  # service point -> the meter row installed there
        self.checked_by: dict[str, ParsedRow] = {}  # check meter serial -> the transformer row it checks

    def run(self) -> list[RowError]:
        # Definitions first, so that a row may refer to one further down the file.
        for row in self.rows:
            self._define(row)
        for row in self.rows:
            self._check_references(row)
        return self.errors

    def _error(self, row: ParsedRow, column: str, message: str) -> None:
        self.errors.append(RowError(row.row, column, message))

    def _define(self, row: ParsedRow) -> None:
        kind, key, column = row.record.name, row.key, row.record.key
        if key is None:
            return  # the parser reported the missing value
        if kind == "site":
            if key in self.sites:
                self._error(row, column, f"duplicate site code {key!r} (first on row {self.sites[key].row})")
            elif key in self.stored.site_ids:
                self._error(row, column, f"site {key!r} already exists in the database")
            else:
                self.sites[key] = row
        elif kind == "meter":
            if key in self.meters:
                self._error(
                    row, column, f"duplicate meter serial {key!r} (first on row {self.meters[key].row})"
                )
            elif key in self.stored.meters:
                self._error(row, column, f"meter {key!r} already exists in the database")
            else:
                self.meters[key] = row
        elif row.site is not None:
            label, defined, site_key = kind.replace("_", " "), self.defined[kind], (row.site, key)
            if site_key in defined:
                first = defined[site_key].row
                self._error(
                    row, column, f"duplicate {label} {key!r} in site {row.site!r} (first on row {first})"
                )
            elif site_key in self.stored.keyed[kind]:
                self._error(
                    row, column, f"{label} {key!r} already exists in site {row.site!r} in the database"
                )
            else:
                defined[site_key] = row

    def _check_references(self, row: ParsedRow) -> None:
        if row.record.name == "site" or row.site is None:
            return
        if row.site not in self.sites and row.site not in self.stored.site_ids:
            self._error(row, "site", f"unknown site {row.site!r}: neither in this file nor in the database")
            return  # every other reference of the row lives in that site
        for column, target in row.record.references.items():
            key = row.references.get(column)
            if key is None or target == "meter":
                continue
            site_key = (row.site, key)
            if site_key not in self.defined[target] and site_key not in self.stored.keyed[target]:
                self._error(row, column, f"unknown {target.replace('_', ' ')} {key!r} in site {row.site!r}")
        if row.record.name == "meter":
            self._check_meter(row, row.site)
        elif row.record.name == "transformer":
            self._check_check_meter(row, row.site)

    def _check_meter(self, row: ParsedRow, site: str) -> None:
        point = row.references.get("service_point")
        if row.new is not None:
            try:
                valid_meter_placement(row.new.role, at_service_point=point is not None, field="service_point")
                valid_installed_at(row.new.installed_at, self.now)
            except ValidationError as exc:
                self._error(row, exc.location or "", exc.message)
        if point is None:
            return
        first = self.occupants.get((site, point))
        stored_id = self.stored.keyed["service_point"].get((site, point))
        if first is not None:
            self._error(
                row,
                "service_point",
                f"service point {point!r} already gets meter {first.key!r} on row {first.row}",
            )
        elif stored_id is not None and stored_id in self.stored.occupied_points:
            installed = self.stored.occupied_points[stored_id]
            self._error(
                row,
                "service_point",
                f"service point {point!r} already has meter {installed!r} in the database",
            )
        else:
            self.occupants[(site, point)] = row

    def _check_check_meter(self, row: ParsedRow, site: str) -> None:
        serial = row.references.get("check_meter")
        if serial is None:
            return
        in_file, stored = self.meters.get(serial), self.stored.meters.get(serial)
        if in_file is not None:
            same_site = in_file.site == site
            role = in_file.new.role if in_file.new is not None else None
            already = None
        elif stored is not None:
            same_site = stored.site_id == self.stored.site_ids.get(site)
            role = stored.role
            already = self.stored.checking.get(stored.id)
        else:
            self._error(
                row, "check_meter", f"unknown meter {serial!r}: neither in this file nor in the database"
            )
            return
        if not same_site:
            self._error(
                row, "check_meter", f"meter {serial!r} is not in site {site!r}, the transformer's site"
            )
            return
        if role is not None:
            try:
                valid_check_meter_role(role, serial, field="check_meter")
            except ValidationError as exc:
                self._error(row, "check_meter", exc.message)
                return
        first = self.checked_by.get(serial)
        if first is not None:
            self._error(
                row,
                "check_meter",
                f"meter {serial!r} already checks transformer {first.key!r} on row {first.row}",
            )
        elif already is not None:
            self._error(
                row, "check_meter", f"meter {serial!r} already checks transformer {already!r} in the database"
            )
        else:
            self.checked_by[serial] = row


def _write(
    session: Session, rows: list[ParsedRow], stored: _Stored, now: datetime, cipher: MeterKeyCipher
) -> ImportSummary:
    """Insert every row, parents before children; the caller's transaction makes it all or nothing.

    Meter keys are stored sealed by `cipher`, as `RegistryService.create_meter` stores them."""
    by_kind: dict[str, list[ParsedRow]] = {}
    for row in rows:
        by_kind.setdefault(row.record.name, []).append(row)
    site_ids = dict(stored.site_ids)
    ids: dict[str, dict[SiteKey, int]] = {kind: dict(keyed) for kind, keyed in stored.keyed.items()}

    def insert(kind: str, build: Any) -> list[tuple[ParsedRow, Any]]:
        made = [(row, build(row, row.new)) for row in by_kind.get(kind, [])]
        session.add_all(obj for _, obj in made)
        session.flush()
        return made

    for row, site in insert("site", lambda _r, n: Site(**_values(n), created_at=now)):
        site_ids[row.key or ""] = site.id

    def site_of(row: ParsedRow) -> int:
        return site_ids[row.site or ""]

    def ref(row: ParsedRow, column: str, kind: str) -> int | None:
        key = row.references.get(column)
        return None if key is None else ids[kind][(row.site or "", key)]

    def remember(kind: str, made: list[tuple[ParsedRow, Any]]) -> None:
        ids[kind].update({(row.site or "", row.key or ""): obj.id for row, obj in made})

    remember("customer", insert("customer", lambda r, n: Customer(site_id=site_of(r), **_values(n))))
    remember(
        "account",
        insert(
            "account",
            lambda r, n: Account(
                site_id=site_of(r), customer_id=ref(r, "customer", "customer"), **_values(n)
            ),
        ),
    )
    transformers = insert("transformer", lambda r, n: Transformer(site_id=site_of(r), **_values(n)))
    remember("transformer", transformers)
    remember(
        "service_point",
        insert(
            "service_point",
            lambda r, n: ServicePoint(
                site_id=site_of(r),
                account_id=ref(r, "account", "account"),
                transformer_id=ref(r, "transformer", "transformer"),
                **_values(n),
            ),
        ),
    )
    meters = insert(
        "meter",
        lambda r, n: Meter(
            site_id=site_of(r),
            service_point_id=ref(r, "service_point", "service_point"),
            **(_values(n) | {"auth_key": cipher.seal(n.serial, n.auth_key)}),
        ),
    )
    meter_ids = {m.serial: m.id for m in stored.meters.values()} | {obj.serial: obj.id for _, obj in meters}
    # Meters point at service points and transformers at their check meter: set the latter once both exist.
    for row, transformer in transformers:
        serial = row.references.get("check_meter")
        if serial is not None:
            transformer.check_meter_id = meter_ids[serial]
    session.flush()
    return ImportSummary(**{f"{kind}s": len(made) for kind, made in by_kind.items()})


def _values(new: Any) -> dict[str, Any]:
    return {f.name: getattr(new, f.name) for f in fields(new)}


def read_registry_file(path: Path) -> str:
    """The file's text: UTF-8, with or without a byte-order mark (as spreadsheets save 'CSV UTF-8')."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read the registry file: {exc.strerror}", location=str(path)) from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        row = data[: exc.start].count(b"\n") + 1
        raise ImportErrors(
            [
                RowError(
                    row, "", f"is not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as CSV UTF-8"
                )
            ]
        ) from exc


def import_registry_csv(
    session_factory: sessionmaker[Session],
    path: Path | str,
    clock: Clock,
    cipher: MeterKeyCipher | None = None,
) -> ImportSummary:
    """Import the registry file at `path` in one transaction, or raise ImportErrors listing every problem.

    Meter keys are sealed by `cipher`; without one, by the cipher the environment's settings configure (the one
    `bootstrap()` makes from them).
    """
    parsed = parse_registry_csv(read_registry_file(Path(path)))
    if cipher is None:
        cipher = MeterKeyCipher.from_settings(get_settings())
    now = clock.now()
    try:
        with unit_of_work(session_factory) as session:
            stored = _load_stored(session, parsed.rows)
            errors = parsed.errors + _ReferenceCheck(parsed.rows, stored, now).run()
            if errors:
                raise ImportErrors(errors)
            return _write(session, parsed.rows, stored, now, cipher)
    except IntegrityError as exc:
        raise ConflictError(
            f"the database refused the import, probably because another change landed at the same time; "
            f"nothing was imported, retry ({exc.orig})"
        ) from exc
    except (OperationalError, ProgrammingError) as exc:
        raise ConfigurationError(
            f"the database refused the import ({exc.orig}); if a table is missing, run `openami db upgrade`"
        ) from exc
