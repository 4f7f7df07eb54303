"""The registry's HTTP API under /api/v1: create, read and list the tree.

Domain errors become HTTP statuses here, whatever app mounts the router: NotFoundError 404, ConflictError 409,
ValidationError 422 with the field in `location` (and every field in `errors` when several are wrong). The
bodies match the app-wide handlers in `openami.api.app`. Meter responses never carry the auth key.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from openami.api.auth import Access, require
from openami.api.deps import SessionDep, get_container
from openami.bootstrap import Container
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.registry.schemas import (
    AccountCreate,
    AccountOut,
    CustomerCreate,
    CustomerOut,
    MeterCreate,
    MeterKeyIn,
    MeterOut,
    ServicePointCreate,
    ServicePointOut,
    SiteCreate,
    SiteOut,
    TransformerCreate,
    TransformerOut,
)
from openami.registry.service import MAX_PAGE, RegistryService
from openami.registry.validation import InvalidFieldsError
from openami.security.identity import IdentityService
from openami.security.models import Role
from openami.security.permissions import Permission


def error_response(exc: NotFoundError | ConflictError | ValidationError) -> JSONResponse:
    """The HTTP answer to an openami domain error."""
    if isinstance(exc, NotFoundError):
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, ConflictError):
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)
    parts = exc.errors if isinstance(exc, InvalidFieldsError) else [exc]
    body = {
        "detail": exc.message,
        "location": exc.location,
        "errors": [{"location": e.location, "message": e.message} for e in parts],
    }
    return JSONResponse(body, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


class _DomainErrorRoute(APIRoute):
    """Answers domain errors raised by the endpoint (after its session is closed) with their HTTP status."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def translated(request: Request) -> Response:
            try:
                return await handler(request)
            except (NotFoundError, ConflictError, ValidationError) as exc:
                return error_response(exc)

        return translated


router = APIRouter(prefix="/api/v1", tags=["registry"], route_class=_DomainErrorRoute)


def get_registry(container: Annotated[Container, Depends(get_container)]) -> RegistryService:
    return container.registry


RegistryDep = Annotated[RegistryService, Depends(get_registry)]
# Row ids are 32-bit integers in the database: a larger number can name nothing, so it is refused as input.
MAX_ROW_ID = 2**31 - 1
SiteFilter = Annotated[int | None, Query(ge=1, le=MAX_ROW_ID, description="Only objects of this site.")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="At most this many items.")]
Offset = Annotated[int, Query(ge=0, le=MAX_ROW_ID, description="Skip this many items (ordered by id).")]
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="The object's id.")]
_CREATED: dict[str, Any] = {"status_code": status.HTTP_201_CREATED}


ReadAccess = Annotated[Access, require(Permission.REGISTRY_READ)]
WriteAccess = Annotated[Access, require(Permission.REGISTRY_WRITE)]


def _in_reach(access: Access, site_id: int, what: str, object_id: object) -> None:
    """404, worded as for a missing object, when the object's site is not one of the caller's."""
    if not access.reach.whole_site(site_id):
        raise NotFoundError(f"no {what} with id {object_id}")


def _site_for_new(access: Access, site_id: int) -> None:
    """422 for a new object in a site out of the caller's reach, worded as for a site that does not exist."""
    if not access.reach.whole_site(site_id):
        raise ValidationError(f"no site with id {site_id}", location="site_id")


def _created(session: Session, access: Access, what: str, out: Any, object_id: object, site_id: int) -> None:
    access.record(
        session,
        action=f"registry.{what.replace(' ', '_')}_created",
        object_type=what.replace(" ", "_"),
        object_id=str(object_id),
        after=jsonable_encoder(out),
        site_id=site_id,
    )


@router.post("/sites", response_model=SiteOut, **_CREATED)
def create_site(
    body: SiteCreate,
    session: SessionDep,
    registry: RegistryDep,
    container: Annotated[Container, Depends(get_container)],
    access: Annotated[Access, require(Permission.SITES_CREATE)],
) -> Any:
    """A new site. Its creator becomes its admin (a site's people see nothing of other sites)."""
    site = registry.create_site(session, **body.model_dump())
    IdentityService(container.clock).grant_role(session, access.principal.user_id, Role.ADMIN, site.id)
    _created(session, access, "site", SiteOut.model_validate(site), site.id, site.id)
    session.commit()
    return site


@router.get("/sites", response_model=list[SiteOut])
def list_sites(
    session: SessionDep, registry: RegistryDep, access: ReadAccess, limit: Limit = 100, offset: Offset = 0
) -> Any:
    return registry.list_sites(session, site_ids=access.reach.site_ids, limit=limit, offset=offset)


@router.get("/sites/{site_id}", response_model=SiteOut)
def get_site(site_id: RowId, session: SessionDep, registry: RegistryDep, access: ReadAccess) -> Any:
    _in_reach(access, site_id, "site", site_id)
    return registry.get_site(session, site_id)


@router.post("/customers", response_model=CustomerOut, **_CREATED)
def create_customer(
    body: CustomerCreate, session: SessionDep, registry: RegistryDep, access: WriteAccess
) -> Any:
    _site_for_new(access, body.site_id)
    customer = registry.create_customer(session, **body.model_dump())
    _created(session, access, "customer", CustomerOut.model_validate(customer), customer.id, customer.site_id)
    session.commit()
    return customer


@router.get("/customers", response_model=list[CustomerOut])
def list_customers(
    session: SessionDep,
    registry: RegistryDep,
    access: ReadAccess,
    site_id: SiteFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Any:
    sites = access.site_ids_filter(site_id)
    return registry.list_customers(session, site_id=sites, limit=limit, offset=offset)


@router.get("/customers/{customer_id}", response_model=CustomerOut)
def get_customer(customer_id: RowId, session: SessionDep, registry: RegistryDep, access: ReadAccess) -> Any:
    customer = registry.get_customer(session, customer_id)
    _in_reach(access, customer.site_id, "customer", customer_id)
    return customer


@router.post("/accounts", response_model=AccountOut, **_CREATED)
def create_account(
    body: AccountCreate, session: SessionDep, registry: RegistryDep, access: WriteAccess
) -> Any:
    _site_for_new(access, body.site_id)
    account = registry.create_account(session, **body.model_dump())
    _created(session, access, "account", AccountOut.model_validate(account), account.id, account.site_id)
    session.commit()
    return account


@router.get("/accounts", response_model=list[AccountOut])
def list_accounts(
    session: SessionDep,
    registry: RegistryDep,
    access: ReadAccess,
    site_id: SiteFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Any:
    sites = access.site_ids_filter(site_id)
    return registry.list_accounts(session, site_id=sites, limit=limit, offset=offset)


@router.get("/accounts/{account_id}", response_model=AccountOut)
def get_account(account_id: RowId, session: SessionDep, registry: RegistryDep, access: ReadAccess) -> Any:
    account = registry.get_account(session, account_id)
    _in_reach(access, account.site_id, "account", account_id)
    return account


@router.post("/transformers", response_model=TransformerOut, **_CREATED)
def create_transformer(
    body: TransformerCreate, session: SessionDep, registry: RegistryDep, access: WriteAccess
) -> Any:
    _site_for_new(access, body.site_id)
    transformer = registry.create_transformer(session, **body.model_dump())
    out = TransformerOut.model_validate(transformer)
    _created(session, access, "transformer", out, transformer.id, transformer.site_id)
    session.commit()
    return transformer


@router.get("/transformers", response_model=list[TransformerOut])
def list_transformers(
    session: SessionDep,
    registry: RegistryDep,
    access: ReadAccess,
    site_id: SiteFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Any:
    sites = access.site_ids_filter(site_id)
    return registry.list_transformers(session, site_id=sites, limit=limit, offset=offset)


@router.get("/transformers/{transformer_id}", response_model=TransformerOut)
def get_transformer(
    transformer_id: RowId, session: SessionDep, registry: RegistryDep, access: ReadAccess
) -> Any:
    transformer = registry.get_transformer(session, transformer_id)
    _in_reach(access, transformer.site_id, "transformer", transformer_id)
    return transformer


@router.post("/service-points", response_model=ServicePointOut, **_CREATED)
def create_service_point(
    body: ServicePointCreate, session: SessionDep, registry: RegistryDep, access: WriteAccess
) -> Any:
    _site_for_new(access, body.site_id)
    point = registry.create_service_point(session, **body.model_dump())
    out = ServicePointOut.model_validate(point)
    _created(session, access, "service point", out, point.id, point.site_id)
    session.commit()
    return point


@router.get("/service-points", response_model=list[ServicePointOut])
def list_service_points(
    session: SessionDep,
    registry: RegistryDep,
    access: ReadAccess,
    site_id: SiteFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Any:
    sites = access.site_ids_filter(site_id)
    return registry.list_service_points(session, site_id=sites, limit=limit, offset=offset)


@router.get("/service-points/{service_point_id}", response_model=ServicePointOut)
def get_service_point(
    service_point_id: RowId, session: SessionDep, registry: RegistryDep, access: ReadAccess
) -> Any:
    point = registry.get_service_point(session, service_point_id)
    _in_reach(access, point.site_id, "service point", service_point_id)
    return point


@router.post("/meters", response_model=MeterOut, **_CREATED)
def create_meter(body: MeterCreate, session: SessionDep, registry: RegistryDep, access: WriteAccess) -> Any:
    """A meter, with its frame-authentication key (stored sealed; no response or log ever shows it)."""
    _site_for_new(access, body.site_id)
    values = body.model_dump(exclude={"auth_key"})
    meter = registry.create_meter(session, auth_key=body.auth_key.get_secret_value(), **values)
    _created(session, access, "meter", MeterOut.model_validate(meter), meter.serial, meter.site_id)
    session.commit()
    return meter


@router.get("/meters", response_model=list[MeterOut])
def list_meters(
    session: SessionDep,
    registry: RegistryDep,
    access: ReadAccess,
    site_id: SiteFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Any:
    return registry.meter_infos(session, access.site_ids_filter(site_id), limit=limit, offset=offset)


@router.get("/meters/{serial}", response_model=MeterOut)
def get_meter(serial: str, session: SessionDep, registry: RegistryDep, access: ReadAccess) -> Any:
    meter = registry.meter_by_serial(session, serial)
    if not access.reach.whole_site(meter.site_id):
        raise NotFoundError(f"no meter with serial {serial!r}")
    return meter


@router.post("/meters/{serial}/key", response_model=MeterOut)
def rotate_meter_key(
    serial: str,
    body: MeterKeyIn,
    session: SessionDep,
    registry: RegistryDep,
    access: Annotated[Access, require(Permission.METER_KEYS_WRITE)],
) -> Any:
    """Provision a meter's new key; the current one stays accepted for `grace_hours`, then is refused. The key is
    stored sealed and appears in no response and no log."""
    meter = registry.meter_by_serial(session, serial)
    if not access.reach.whole_site(meter.site_id):
        raise NotFoundError(f"no meter with serial {serial!r}")
    rotated = registry.rotate_meter_key(
        session, serial, body.auth_key.get_secret_value(), timedelta(hours=body.grace_hours)
    )
    until = rotated.previous_key_until
    access.record(
        session,
        action="meter_key.rotate",
        object_type="meter",
        object_id=serial,
        after={"previous_key_until": until.isoformat() if until else None, "key": "provided"},
        reason=body.reason,
        site_id=meter.site_id,
    )
    session.commit()
    return rotated
