"""The registry service: create, find and list the physical and commercial tree.

Methods take the caller's `Session` first and never commit: the caller's unit of work decides, so a CSV
import or an API request writes everything or nothing. Values are validated by `registry.records`;
duplicates raise ConflictError, references to missing or foreign-site objects raise ValidationError naming
the field. Results are the plain values of `registry.interfaces`, never the tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar, TypeVarTuple

from sqlalchemy import Select, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from openami.common.clock import Clock
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.registry.interfaces import (
    AccountInfo,
    CustomerInfo,
    MeterInfo,
    ServicePointInfo,
    SiteInfo,
    TransformerInfo,
)
from openami.registry.models import (
    Account,
    AccountKind,
    Customer,
    Meter,
    MeterRole,
    ServicePoint,
    Site,
    Transformer,
)
from openami.registry.records import (
    clean_account,
    clean_customer,
    clean_meter,
    clean_service_point,
    clean_site,
    clean_transformer,
)
from openami.registry.validation import (
    valid_check_meter_role,
    valid_installed_at,
    valid_meter_placement,
)
from openami.storage.base import Base

M = TypeVar("M", bound=Base)
Ts = TypeVarTuple("Ts")
# The tables that belong to a site through their own `site_id`.
SiteOwned = TypeVar("SiteOwned", Customer, Account, Transformer, ServicePoint, Meter)
MAX_PAGE = 1000
# Meters looked up per query by `meters_by_serial` / `meters_by_id` (keeps the IN list to a sane size).
LOOKUP_CHUNK = 1000


def site_info(site: Site) -> SiteInfo:
    return SiteInfo(
        id=site.id,
        code=site.code,
        name=site.name,
        timezone=site.timezone,
        currency=site.currency,
        holiday_country=site.holiday_country,
        holiday_subdivision=site.holiday_subdivision,
        created_at=site.created_at,
    )


def customer_info(customer: Customer) -> CustomerInfo:
    return CustomerInfo(
        id=customer.id,
        site_id=customer.site_id,
        reference=customer.reference,
        name=customer.name,
        email=customer.email,
        phone=customer.phone,
    )


def account_info(account: Account) -> AccountInfo:
    return AccountInfo(
        id=account.id,
        site_id=account.site_id,
        customer_id=account.customer_id,
        number=account.number,
        kind=AccountKind(account.kind).value,
    )


def transformer_info(transformer: Transformer) -> TransformerInfo:
    return TransformerInfo(
        id=transformer.id,
        site_id=transformer.site_id,
        code=transformer.code,
        rating_kva=transformer.rating_kva,
        check_meter_id=transformer.check_meter_id,
    )


def service_point_info(point: ServicePoint) -> ServicePointInfo:
    return ServicePointInfo(
        id=point.id,
        site_id=point.site_id,
        code=point.code,
        account_id=point.account_id,
        transformer_id=point.transformer_id,
        address=point.address,
        phases=point.phases,
        rated_current_a=point.rated_current_a,
    )


def _meter_info_query() -> Select[Meter, str, str, int, int | None, int | None, int]:
    """Meters with what MeterInfo needs from their site, service point and (for check meters) transformer."""
    checked = aliased(Transformer)
    return (
        select(
            Meter,
            Site.code,
            Site.timezone,
            ServicePoint.rated_current_a,
            ServicePoint.account_id,
            ServicePoint.transformer_id,
            checked.id,
        )
        .join(Site, Site.id == Meter.site_id)
        .outerjoin(ServicePoint, ServicePoint.id == Meter.service_point_id)
        .outerjoin(checked, checked.check_meter_id == Meter.id)
        .order_by(Meter.id)
    )


def _meter_info_from_row(row: Any) -> MeterInfo:
    meter, site_code, timezone, service_rated_a, account_id, point_transformer_id, checked_transformer_id = (
        row
    )
    return MeterInfo(
        id=meter.id,
        serial=meter.serial,
        site_id=meter.site_id,
        site_code=site_code,
        timezone=timezone,
        phases=meter.phases,
        rated_current_a=meter.rated_current_a,
        service_rated_current_a=service_rated_a,
        load_profile_interval_s=meter.load_profile_interval_s,
        auth_key=meter.auth_key,
        installed_at=meter.installed_at,
        account_id=account_id,
        transformer_id=point_transformer_id if point_transformer_id is not None else checked_transformer_id,
        model=meter.model,
        protocol=meter.protocol,
        role=MeterRole(meter.role).value,
        service_point_id=meter.service_point_id,
    )


def _check_page(limit: int | None, offset: int) -> None:
    if limit is not None and not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"must be between 1 and {MAX_PAGE}, got {limit}", location="limit")
    if offset < 0:
        raise ValidationError(f"must not be negative, got {offset}", location="offset")


def _page(stmt: Select[*Ts], limit: int | None, offset: int) -> Select[*Ts]:
    _check_page(limit, offset)
    return stmt.limit(limit).offset(offset) if limit is not None else stmt.offset(offset)


@contextmanager
def _translated_integrity_errors(what: str) -> Iterator[None]:
    """A unique or foreign key refused by the database despite the checks means a concurrent writer won."""
    try:
        yield
    except IntegrityError as exc:
        raise ConflictError(
            f"{what} conflicts with data stored at the same time; retry ({exc.orig})"
        ) from exc


class RegistryService:
    """Sites, customers, accounts, transformers, service points and meters. Reads time only from `clock`."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    # -- lookups ---------------------------------------------------------------------------------------------

    def _get(self, session: Session, model: type[M], object_id: int, what: str) -> M:
        found = session.get(model, object_id)
        if found is None:
            raise NotFoundError(f"no {what} with id {object_id}")
        return found

    def _referenced(
        self, session: Session, model: type[SiteOwned], object_id: int, field: str, site_id: int
    ) -> SiteOwned:
        """An object another one points at: it must exist and belong to the same site."""
        found = session.get(model, object_id)
        what = field.removesuffix("_id").replace("_", " ")
        if found is None:
            raise ValidationError(f"no {what} with id {object_id}", location=field)
        if found.site_id != site_id:
            raise ValidationError(
                f"{what} {object_id} belongs to site {found.site_id}, not site {site_id}", location=field
            )
        return found

    def _site_for_new(self, session: Session, site_id: int) -> Site:
        site = session.get(Site, site_id)
        if site is None:
            raise ValidationError(f"no site with id {site_id}", location="site_id")
        return site

    @staticmethod
    def _list(
        session: Session, model: type[SiteOwned], site_id: int | None, limit: int | None, offset: int
    ) -> list[SiteOwned]:
        stmt = select(model).order_by(model.id)
        if site_id is not None:
            stmt = stmt.where(model.site_id == site_id)
        return list(session.scalars(_page(stmt, limit, offset)))

    def _insert(self, session: Session, row: Base, what: str) -> None:
        session.add(row)
        with _translated_integrity_errors(what):
            session.flush()

    # -- sites -----------------------------------------------------------------------------------------------

    def create_site(
        self,
        session: Session,
        *,
        code: str,
        name: str,
        timezone: str,
        currency: str,
        holiday_country: str,
        holiday_subdivision: str | None = None,
    ) -> SiteInfo:
        new = clean_site(
            code=code,
            name=name,
            timezone=timezone,
            currency=currency,
            holiday_country=holiday_country,
            holiday_subdivision=holiday_subdivision,
        )
        if session.scalar(select(exists().where(Site.code == new.code))):
            raise ConflictError(f"site code {new.code!r} already exists")
        site = Site(
            code=new.code,
            name=new.name,
            timezone=new.timezone,
            currency=new.currency,
            holiday_country=new.holiday_country,
            holiday_subdivision=new.holiday_subdivision,
            created_at=self.clock.now(),
        )
        self._insert(session, site, f"site {new.code!r}")
        return site_info(site)

    def get_site(self, session: Session, site_id: int) -> SiteInfo:
        return site_info(self._get(session, Site, site_id, "site"))

    def site_by_code(self, session: Session, code: str) -> SiteInfo:
        site = session.scalar(select(Site).where(Site.code == code))
        if site is None:
            raise NotFoundError(f"no site with code {code!r}")
        return site_info(site)

    def list_sites(self, session: Session, *, limit: int | None = None, offset: int = 0) -> list[SiteInfo]:
        stmt = _page(select(Site).order_by(Site.id), limit, offset)
        return [site_info(s) for s in session.scalars(stmt)]

    # -- customers and accounts ------------------------------------------------------------------------------

    def create_customer(
        self,
        session: Session,
        *,
        site_id: int,
        reference: str,
        name: str,
        email: str | None = None,
        phone: str | None = None,
    ) -> CustomerInfo:
        new = clean_customer(reference=reference, name=name, email=email, phone=phone)
        site = self._site_for_new(session, site_id)
        taken = select(exists().where(Customer.site_id == site_id, Customer.reference == new.reference))
        if session.scalar(taken):
            raise ConflictError(f"customer reference {new.reference!r} already exists in site {site.code!r}")
        customer = Customer(
            site_id=site_id, reference=new.reference, name=new.name, email=new.email, phone=new.phone
        )
        self._insert(session, customer, f"customer {new.reference!r}")
        return customer_info(customer)

    def get_customer(self, session: Session, customer_id: int) -> CustomerInfo:
        return customer_info(self._get(session, Customer, customer_id, "customer"))

    def list_customers(
        self, session: Session, *, site_id: int | None = None, limit: int | None = None, offset: int = 0
    ) -> list[CustomerInfo]:
        return [customer_info(c) for c in self._list(session, Customer, site_id, limit, offset)]

    def create_account(
        self, session: Session, *, site_id: int, customer_id: int, number: str, kind: AccountKind | str
    ) -> AccountInfo:
        new = clean_account(number=number, kind=kind)
        site = self._site_for_new(session, site_id)
        self._referenced(session, Customer, customer_id, "customer_id", site_id)
        if session.scalar(select(exists().where(Account.site_id == site_id, Account.number == new.number))):
            raise ConflictError(f"account number {new.number!r} already exists in site {site.code!r}")
        account = Account(site_id=site_id, customer_id=customer_id, number=new.number, kind=new.kind)
        self._insert(session, account, f"account {new.number!r}")
        return account_info(account)

    def get_account(self, session: Session, account_id: int) -> AccountInfo:
        return account_info(self._get(session, Account, account_id, "account"))

    def list_accounts(
        self, session: Session, *, site_id: int | None = None, limit: int | None = None, offset: int = 0
    ) -> list[AccountInfo]:
        return [account_info(a) for a in self._list(session, Account, site_id, limit, offset)]

    # -- the network: transformers and service points --------------------------------------------------------

    def create_transformer(
        self, session: Session, *, site_id: int, code: str, rating_kva: int, check_meter_id: int | None = None
    ) -> TransformerInfo:
        """A transformer, optionally with its check meter (role check, same site, checking no other)."""
        new = clean_transformer(code=code, rating_kva=rating_kva)
        site = self._site_for_new(session, site_id)
        if check_meter_id is not None:
            meter = self._referenced(session, Meter, check_meter_id, "check_meter_id", site_id)
            valid_check_meter_role(meter.role, meter.serial)
            other = session.scalar(
                select(Transformer.code).where(Transformer.check_meter_id == check_meter_id)
            )
            if other is not None:
                raise ConflictError(
                    f"meter {meter.serial!r} is already the check meter of transformer {other!r}"
                )
        if session.scalar(
            select(exists().where(Transformer.site_id == site_id, Transformer.code == new.code))
        ):
            raise ConflictError(f"transformer code {new.code!r} already exists in site {site.code!r}")
        transformer = Transformer(
            site_id=site_id, code=new.code, rating_kva=new.rating_kva, check_meter_id=check_meter_id
        )
        self._insert(session, transformer, f"transformer {new.code!r}")
        return transformer_info(transformer)

    def get_transformer(self, session: Session, transformer_id: int) -> TransformerInfo:
        return transformer_info(self._get(session, Transformer, transformer_id, "transformer"))

    def list_transformers(
        self, session: Session, *, site_id: int | None = None, limit: int | None = None, offset: int = 0
    ) -> list[TransformerInfo]:
        return [transformer_info(t) for t in self._list(session, Transformer, site_id, limit, offset)]

    def create_service_point(
        self,
        session: Session,
        *,
        site_id: int,
        code: str,
        rated_current_a: int,
        phases: int = 1,
        address: str = "",
        account_id: int | None = None,
        transformer_id: int | None = None,
    ) -> ServicePointInfo:
        new = clean_service_point(code=code, rated_current_a=rated_current_a, phases=phases, address=address)
        site = self._site_for_new(session, site_id)
        if account_id is not None:
            self._referenced(session, Account, account_id, "account_id", site_id)
        if transformer_id is not None:
            self._referenced(session, Transformer, transformer_id, "transformer_id", site_id)
        if session.scalar(
            select(exists().where(ServicePoint.site_id == site_id, ServicePoint.code == new.code))
        ):
            raise ConflictError(f"service point code {new.code!r} already exists in site {site.code!r}")
        point = ServicePoint(
            site_id=site_id,
            code=new.code,
            account_id=account_id,
            transformer_id=transformer_id,
            address=new.address,
            phases=new.phases,
            rated_current_a=new.rated_current_a,
        )
        self._insert(session, point, f"service point {new.code!r}")
        return service_point_info(point)

    def get_service_point(self, session: Session, service_point_id: int) -> ServicePointInfo:
        return service_point_info(self._get(session, ServicePoint, service_point_id, "service point"))

    def list_service_points(
        self, session: Session, *, site_id: int | None = None, limit: int | None = None, offset: int = 0
    ) -> list[ServicePointInfo]:
        return [service_point_info(p) for p in self._list(session, ServicePoint, site_id, limit, offset)]

    # -- meters ----------------------------------------------------------------------------------------------

    def create_meter(
        self,
        session: Session,
        *,
        site_id: int,
        serial: str,
        model: str,
        rated_current_a: int,
        auth_key: bytes | str,
        phases: int = 1,
        protocol: str = "senml-mqtt",
        role: MeterRole | str = MeterRole.CUSTOMER,
        load_profile_interval_s: int = 900,
        service_point_id: int | None = None,
        installed_at: datetime | None = None,
    ) -> MeterInfo:
        """A meter. `auth_key` is 32 bytes or 64 hex characters; `installed_at` (UTC) is not in the future.

        A customer meter may sit at one service point (one meter per point); a check meter sits at none,
        because it measures a transformer's total (see `create_transformer`).
        """
        new = clean_meter(
            serial=serial,
            model=model,
            rated_current_a=rated_current_a,
            auth_key=auth_key,
            phases=phases,
            protocol=protocol,
            role=role,
            load_profile_interval_s=load_profile_interval_s,
            installed_at=installed_at,
        )
        self._site_for_new(session, site_id)
        valid_installed_at(new.installed_at, self.clock.now())
        valid_meter_placement(new.role, at_service_point=service_point_id is not None)
        if service_point_id is not None:
            point = self._referenced(session, ServicePoint, service_point_id, "service_point_id", site_id)
            occupant = session.scalar(select(Meter.serial).where(Meter.service_point_id == service_point_id))
            if occupant is not None:
                raise ConflictError(f"service point {point.code!r} already has meter {occupant!r}")
        if session.scalar(select(exists().where(Meter.serial == new.serial))):
            raise ConflictError(f"meter serial {new.serial!r} already exists")
        meter = Meter(
            site_id=site_id,
            serial=new.serial,
            model=new.model,
            phases=new.phases,
            rated_current_a=new.rated_current_a,
            protocol=new.protocol,
            role=new.role,
            auth_key=new.auth_key,
            load_profile_interval_s=new.load_profile_interval_s,
            service_point_id=service_point_id,
            installed_at=new.installed_at,
        )
        self._insert(session, meter, f"meter {new.serial!r}")
        return self.meter_info(session, meter.id)

    def meter_info(self, session: Session, meter_id: int) -> MeterInfo:
        row = session.execute(_meter_info_query().where(Meter.id == meter_id)).first()
        if row is None:
            raise NotFoundError(f"no meter with id {meter_id}")
        return _meter_info_from_row(row)

    def meter_by_serial(self, session: Session, serial: str) -> MeterInfo:
        row = session.execute(_meter_info_query().where(Meter.serial == serial)).first()
        if row is None:
            raise NotFoundError(f"no meter with serial {serial!r}")
        return _meter_info_from_row(row)

    def meters_by_serial(self, session: Session, serials: Iterable[str]) -> dict[str, MeterInfo]:
        """The registered meters among `serials`, by serial (unknown ones left out); a query per thousand."""
        wanted = sorted(set(serials))
        found: dict[str, MeterInfo] = {}
        for at in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[at : at + LOOKUP_CHUNK]
            for row in session.execute(_meter_info_query().where(Meter.serial.in_(chunk))):
                info = _meter_info_from_row(row)
                found[info.serial] = info
        return found

    def meters_by_id(self, session: Session, meter_ids: Iterable[int]) -> dict[int, MeterInfo]:
        """The meters among `meter_ids`, by id (unknown ones left out); a query per thousand."""
        wanted = sorted(set(meter_ids))
        found: dict[int, MeterInfo] = {}
        for at in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[at : at + LOOKUP_CHUNK]
            for row in session.execute(_meter_info_query().where(Meter.id.in_(chunk))):
                info = _meter_info_from_row(row)
                found[info.id] = info
        return found

    def meter_infos(
        self, session: Session, site_id: int | None = None, *, limit: int | None = None, offset: int = 0
    ) -> list[MeterInfo]:
        """Every meter (of one site when `site_id` is given), by id; `limit`/`offset` page through them."""
        stmt = _meter_info_query()
        if site_id is not None:
            stmt = stmt.where(Meter.site_id == site_id)
        return [_meter_info_from_row(row) for row in session.execute(_page(stmt, limit, offset))]

    def meters_for_account(self, session: Session, site_code: str, account_number: str) -> list[MeterInfo]:
        """The meters at the service points of one account, by id."""
        site = self.site_by_code(session, site_code)
        account_id = session.scalar(
            select(Account.id).where(Account.site_id == site.id, Account.number == account_number)
        )
        if account_id is None:
            raise NotFoundError(f"no account {account_number!r} in site {site_code!r}")
        stmt = _meter_info_query().where(ServicePoint.account_id == account_id)
        return [_meter_info_from_row(row) for row in session.execute(stmt)]
