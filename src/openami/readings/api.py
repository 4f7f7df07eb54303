"""The readings HTTP API under /api/v1: live values, interval series, registers, completeness, flags, edits.

Per meter (`/meters/{serial}/readings/...`) and per account
(`/sites/{site_code}/accounts/{number}/readings/...`, one entry per meter of the account). Instants in
queries are ISO-8601 with an offset (naive ones are refused, 422); answers give instants in UTC and name the
site's time zone. One request may span at most `MAX_SPAN` of its resolution. Domain errors become 404
(unknown meter, account) and 422 (bad input, with its location).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlalchemy.orm import Session

from openami.api.auth import Access, require
from openami.api.deps import ContainerDep, SessionDep
from openami.bootstrap import Container
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.common.obis import ACTIVE_IMPORT_INTERVAL, QUANTITIES
from openami.readings import completeness, queries
from openami.readings.models import IntervalReading
from openami.readings.queries import Resolution
from openami.readings.schemas import (
    CompletenessDayOut,
    CompletenessOut,
    FlagOut,
    FlagsOut,
    InstantOut,
    IntervalEdit,
    IntervalEditOut,
    MeterInstantsOut,
    RegisterReadOut,
    RegistersOut,
    SeriesOut,
    SeriesPointOut,
)
from openami.readings.service import ReadingsService
from openami.registry.interfaces import MeterInfo
from openami.registry.models import Account, Site
from openami.security.permissions import Permission

# The longest span one request may ask for, per resolution (and for the other lists).
MAX_SPAN = {
    Resolution.FIFTEEN_MINUTES: timedelta(days=31),
    Resolution.HOUR: timedelta(days=93),
    Resolution.DAY: timedelta(days=732),
    Resolution.MONTH: timedelta(days=3660),
}
MAX_LIST_SPAN = timedelta(days=93)
MAX_COMPLETENESS_DAYS = 366
# Starlette decodes "+" in a query string as a space, so "...T00:00:00+02:00" unquoted arrives as "... 02:00".
_SPACED_OFFSET = re.compile(r" (\d{2}(:?\d{2})?)$")


class _DomainErrorRoute(APIRoute):
    """Answers openami's domain errors with their HTTP status, whichever app mounts the router."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def translated(request: Request) -> Response:
            try:
                return await handler(request)
            except NotFoundError as exc:
                return JSONResponse({"detail": str(exc)}, status_code=404)
            except ConflictError as exc:
                return JSONResponse({"detail": str(exc)}, status_code=409)
            except ValidationError as exc:
                return JSONResponse({"detail": exc.message, "location": exc.location}, status_code=422)

        return translated


router = APIRouter(prefix="/api/v1", tags=["readings"], route_class=_DomainErrorRoute)

ReadAccess = Annotated[Access, require(Permission.READINGS_READ)]
StartQuery = Annotated[str, Query(description="ISO-8601 instant with offset, e.g. 2026-03-01T00:00:00+01:00")]
EndQuery = Annotated[str, Query(description="ISO-8601 instant with offset (exclusive)")]
ObisQuery = Annotated[str, Query(description="the load-profile quantity, e.g. 1-0:1.29.0 (import)")]


def parse_instant(text: str, name: str) -> datetime:
    """An ISO-8601 instant with a UTC offset, in UTC; ValidationError naming `name` otherwise."""
    cleaned = _SPACED_OFFSET.sub(r"+\1", text.strip())
    try:
        value = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValidationError(
            f"{text!r} is not an ISO-8601 instant such as 2026-03-01T00:00:00+00:00", name
        ) from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            f"{text!r} has no UTC offset: give one (e.g. {cleaned}+00:00 or {cleaned}Z); "
            "naive times are ambiguous",
            name,
        )
    return value.astimezone(UTC)


def _span(start_text: str, end_text: str, longest: timedelta, what: str) -> tuple[datetime, datetime]:
    start, end = parse_instant(start_text, "start"), parse_instant(end_text, "end")
    if end <= start:
        raise ValidationError(f"end {end.isoformat()} must be after start {start.isoformat()}", "end")
    if end - start > longest:
        raise ValidationError(
            f"{what} may span at most {longest.days} days per request, asked {end - start}", "end"
        )
    return start, end


def _interval_obis(obis: str) -> str:
    quantity = QUANTITIES.get(obis)
    if quantity is None or quantity.kind.value != "interval":
        raise ValidationError(
            f"{obis!r} is not a load-profile quantity (e.g. {ACTIVE_IMPORT_INTERVAL})", "obis"
        )
    return obis


def _meter(session: Session, container: Container, serial: str, access: Access) -> MeterInfo:
    """The meter, if the caller may see it: on one of their sites, or (a customer) on one of their accounts."""
    meter = container.registry.meter_by_serial(session, serial)
    if not access.sees_meter(meter):
        raise NotFoundError(f"no meter with serial {serial!r}")  # as for a meter that does not exist
    return meter


def _account_meters(
    session: Session, container: Container, site_code: str, number: str, access: Access
) -> list[MeterInfo]:
    """The meters of an account the caller may see (a site's staff: any of it; a customer: their own)."""
    found = session.execute(
        select(Account.id, Account.site_id)
        .join(Site, Site.id == Account.site_id)
        .where(Site.code == site_code, Account.number == number)
    ).first()
    if found is None or not access.sees_account(found.site_id, found.id):
        raise NotFoundError(f"no account {number!r} in site {site_code!r}")
    return container.registry.meters_for_account(session, site_code, number)


# --- builders shared by the per-meter and per-account endpoints ---------------------------------------------


def _instants(session: Session, meters: list[MeterInfo]) -> list[MeterInstantsOut]:
    found = queries.latest_instants(session, [m.id for m in meters])
    out = []
    for m in meters:
        values = []
        for v in found[m.id]:
            quantity = QUANTITIES.get(v.obis)
            values.append(
                InstantOut(
                    obis=v.obis,
                    name=quantity.name if quantity else v.obis,
                    unit=quantity.unit if quantity else "",
                    value=v.value,
                    read_at=v.read_at,
                    received_at=v.received_at,
                )
            )
        out.append(MeterInstantsOut(serial=m.serial, timezone=m.timezone, values=values))
    return out


def _series(
    session: Session,
    container: Container,
    meter: MeterInfo,
    obis: str,
    start: datetime,
    end: datetime,
    res: Resolution,
) -> SeriesOut:
    zone = completeness.site_zone(meter.timezone)
    points = queries.interval_series(session, meter, obis, start, end, res, container.clock.now())
    return SeriesOut(
        serial=meter.serial,
        timezone=meter.timezone,
        obis=obis,
        resolution=res.value,
        start=start,
        end=end,
        points=[
            SeriesPointOut(
                start=p.start,
                end=p.end,
                local_start=p.start.astimezone(zone).isoformat(),
                energy_wh=p.energy_wh,
                expected=p.expected,
                actual=p.actual,
                estimated=p.estimated,
                edited=p.edited,
                missing=p.missing,
                flags=p.flags,
            )
            for p in points
        ],
    )


def _registers(
    session: Session, meter: MeterInfo, start: datetime, end: datetime, obis: str | None
) -> RegistersOut:
    reads = queries.register_reads(session, meter.id, start, end, obis)
    return RegistersOut(
        serial=meter.serial,
        timezone=meter.timezone,
        reads=[
            RegisterReadOut(
                obis=r.obis, read_at=r.read_at, energy_wh=r.energy_wh, source=r.source, version=r.version
            )
            for r in reads
        ],
    )


def _completeness(
    session: Session, container: Container, meter: MeterInfo, first: date, last: date, obis: str
) -> CompletenessOut:
    if last < first:
        raise ValidationError(f"last day {last} is before first day {first}", "last")
    if (last - first).days + 1 > MAX_COMPLETENESS_DAYS:
        raise ValidationError(f"at most {MAX_COMPLETENESS_DAYS} days per request", "last")
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    grid = queries.live_completeness(session, meter, obis, days, container.clock.now())
    return CompletenessOut(
        serial=meter.serial,
        timezone=meter.timezone,
        obis=obis,
        days=[
            CompletenessDayOut(
                day=d.day,
                expected=d.expected,
                actual=d.actual,
                estimated=d.estimated,
                edited=d.edited,
                missing=d.missing,
                percent=round(d.percent, 2),
            )
            for d in grid
        ],
    )


def _flags(
    session: Session, meter: MeterInfo, start: datetime, end: datetime, include_cleared: bool
) -> FlagsOut:
    found = queries.flags(session, meter.id, start, end, include_cleared=include_cleared)
    return FlagsOut(
        serial=meter.serial,
        timezone=meter.timezone,
        flags=[
            FlagOut(
                id=f.id,
                obis=f.obis,
                rule=f.rule,
                start=f.start,
                end=f.end,
                reason=f.reason,
                raised_at=f.raised_at,
                cleared_at=f.cleared_at,
            )
            for f in found
        ],
    )


# --- per meter ----------------------------------------------------------------------------------------------


@router.get("/meters/{serial}/readings/instants", response_model=MeterInstantsOut)
def meter_instants(serial: str, session: SessionDep, container: ContainerDep, access: ReadAccess) -> Any:
    """The newest instantaneous values (power W, voltage V, current A, relay state) of one meter."""
    return _instants(session, [_meter(session, container, serial, access)])[0]


@router.get("/meters/{serial}/readings/intervals", response_model=SeriesOut)
def meter_intervals(
    serial: str,
    session: SessionDep,
    container: ContainerDep,
    access: ReadAccess,
    start: StartQuery,
    end: EndQuery,
    resolution: Resolution = Resolution.HOUR,
    obis: ObisQuery = ACTIVE_IMPORT_INTERVAL,
) -> Any:
    """Energy per bucket in `[start, end)`, with counts of actual, estimated, edited and missing intervals."""
    meter = _meter(session, container, serial, access)
    begin, finish = _span(start, end, MAX_SPAN[resolution], f"a {resolution.value} series")
    return _series(session, container, meter, _interval_obis(obis), begin, finish, resolution)


@router.get("/meters/{serial}/readings/registers", response_model=RegistersOut)
def meter_registers(
    serial: str,
    session: SessionDep,
    container: ContainerDep,
    access: ReadAccess,
    start: StartQuery,
    end: EndQuery,
    obis: Annotated[str | None, Query(description="only this register, e.g. 1-0:1.8.0")] = None,
) -> Any:
    """Cumulative register reads (Wh) taken in `[start, end)`."""
    meter = _meter(session, container, serial, access)
    begin, finish = _span(start, end, MAX_LIST_SPAN, "register reads")
    return _registers(session, meter, begin, finish, obis)


@router.get("/meters/{serial}/readings/completeness", response_model=CompletenessOut)
def meter_completeness(
    serial: str,
    session: SessionDep,
    container: ContainerDep,
    access: ReadAccess,
    first: Annotated[date, Query(description="first site-local day, YYYY-MM-DD")],
    last: Annotated[date, Query(description="last site-local day (inclusive)")],
    obis: ObisQuery = ACTIVE_IMPORT_INTERVAL,
) -> Any:
    """Per site-local day: intervals expected, actual, estimated, edited and missing."""
    meter = _meter(session, container, serial, access)
    return _completeness(session, container, meter, first, last, _interval_obis(obis))


@router.get("/meters/{serial}/readings/flags", response_model=FlagsOut)
def meter_flags(
    serial: str,
    session: SessionDep,
    container: ContainerDep,
    access: ReadAccess,
    start: StartQuery,
    end: EndQuery,
    include_cleared: bool = False,
) -> Any:
    """VEE flags (spike, gap, conflict ...) overlapping `[start, end)`."""
    meter = _meter(session, container, serial, access)
    begin, finish = _span(start, end, MAX_LIST_SPAN, "flags")
    return _flags(session, meter, begin, finish, include_cleared)


@router.put("/meters/{serial}/readings/intervals/{interval_start}", response_model=IntervalEditOut)
def edit_interval(
    serial: str,
    interval_start: str,
    body: IntervalEdit,
    session: SessionDep,
    container: ContainerDep,
    access: Annotated[Access, require(Permission.READINGS_EDIT)],
) -> Any:
    """Correct one interval by hand. The reason is mandatory; the previous version is kept in history, and the
    change (who, before, after, why) goes to the operation log."""
    meter = _meter(session, container, serial, access)
    start = parse_instant(interval_start, "interval_start")
    obis = _interval_obis(body.obis)
    stored = session.get(IntervalReading, (meter.id, obis, start))
    before = (
        None
        if stored is None
        else {"energy_wh": stored.energy_wh, "quality": stored.quality, "version": stored.version}
    )
    service = ReadingsService(container.clock, container.registry)
    version = service.edit_interval(session, meter.id, obis, start, body.energy_wh, body.reason, access.actor)
    access.record(
        session,
        action="readings.interval_edited",
        object_type="interval",
        object_id=f"{meter.serial} {obis} {start.isoformat()}",
        before=before,
        after={"energy_wh": body.energy_wh, "quality": "edited", "version": version},
        reason=body.reason,
        site_id=meter.site_id,
    )
    session.commit()
    return IntervalEditOut(
        serial=meter.serial,
        obis=obis,
        interval_start=start,
        energy_wh=body.energy_wh,
        quality="edited",
        version=version,
    )


# --- per account --------------------------------------------------------------------------------------------

_ACCOUNT = "/sites/{site_code}/accounts/{account_number}/readings"


@router.get(f"{_ACCOUNT}/instants", response_model=list[MeterInstantsOut])
def account_instants(
    site_code: str, account_number: str, session: SessionDep, container: ContainerDep, access: ReadAccess
) -> Any:
    """The newest instantaneous values of every meter of the account."""
    return _instants(session, _account_meters(session, container, site_code, account_number, access))


@router.get(f"{_ACCOUNT}/intervals", response_model=list[SeriesOut])
def account_intervals(
    site_code: str,
    account_number: str,
    session: SessionDep,
    container: ContainerDep,
    access: ReadAccess,
    start: StartQuery,
    end: EndQuery,
    resolution: Resolution = Resolution.HOUR,
    obis: ObisQuery = ACTIVE_IMPORT_INTERVAL,
) -> Any:
    """One series per meter of the account."""
    meters = _account_meters(session, container, site_code, account_number, access)
    begin, finish = _span(start, end, MAX_SPAN[resolution], f"a {resolution.value} series")
    return [_series(session, container, m, _interval_obis(obis), begin, finish, resolution) for m in meters]


@router.get(f"{_ACCOUNT}/registers", response_model=list[RegistersOut])
def account_registers(
    site_code: str,
    account_number: str,
    session: SessionDep,
    container: ContainerDep,
    access: ReadAccess,
    start: StartQuery,
    end: EndQuery,
    obis: Annotated[str | None, Query(description="only this register, e.g. 1-0:1.8.0")] = None,
) -> Any:
    meters = _account_meters(session, container, site_code, account_number, access)
    begin, finish = _span(start, end, MAX_LIST_SPAN, "register reads")
    return [_registers(session, m, begin, finish, obis) for m in meters]


@router.get(f"{_ACCOUNT}/completeness", response_model=list[CompletenessOut])
def account_completeness(
    site_code: str,
    account_number: str,
    session: SessionDep,
    container: ContainerDep,
    access: ReadAccess,
    first: Annotated[date, Query(description="first site-local day, YYYY-MM-DD")],
    last: Annotated[date, Query(description="last site-local day (inclusive)")],
    obis: ObisQuery = ACTIVE_IMPORT_INTERVAL,
) -> Any:
    meters = _account_meters(session, container, site_code, account_number, access)
    return [_completeness(session, container, m, first, last, _interval_obis(obis)) for m in meters]


@router.get(f"{_ACCOUNT}/flags", response_model=list[FlagsOut])
def account_flags(
    site_code: str,
    account_number: str,
    session: SessionDep,
    container: ContainerDep,
    access: ReadAccess,
    start: StartQuery,
    end: EndQuery,
    include_cleared: bool = False,
) -> Any:
    meters = _account_meters(session, container, site_code, account_number, access)
    begin, finish = _span(start, end, MAX_LIST_SPAN, "flags")
    return [_flags(session, m, begin, finish, include_cleared) for m in meters]
