"""The registry service: create, find and list the physical and commercial tree.

Methods take the caller's `Session` first and never commit: the caller's unit of work decides, so a CSV
import or an API request writes everything or nothing. Values are validated by `registry.records`;
duplicates raise ConflictError, references to missing or foreign-site objects raise ValidationError naming
the field. Results are the plain values of `registry.interfaces`, never the tables.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar, TypeVarTuple, cast

import structlog
from sqlalchemy import CursorResult, Select, Table, bindparam, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from openami.common.clock import Clock
from openami.common.errors import ConfigurationError, ConflictError, NotFoundError, ValidationError
from openami.config import Settings, get_settings
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
    AUTH_KEY_BYTES,
    valid_auth_key,
    valid_check_meter_role,
    valid_installed_at,
    valid_key_grace,
    valid_meter_placement,
)
from openami.security.meter_keys import MeterKeyCipher, MeterKeyError, is_legacy_plaintext
from openami.storage.base import Base

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=Base)
Ts = TypeVarTuple("Ts")
# The tables that belong to a site through their own `site_id`.
SiteOwned = TypeVar("SiteOwned", Customer, Account, Transformer, ServicePoint, Meter)
MAX_PAGE = 1000
# Lists take one site's id, several sites' ids, or None for every site.
SiteScope = int | Collection[int] | None
# Meters looked up per query by `meters_by_serial` / `meters_by_id` (keeps the IN list to a sane size).
LOOKUP_CHUNK = 1000
# Meters re-sealed per statement by `seal_legacy_keys` / `rewrap_keys`.
RESEAL_CHUNK = 1000
_METER_TABLE = cast(Table, Meter.__table__)


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


@dataclass(frozen=True, slots=True)
class _OpenedKeys:
    """A meter's keys in plaintext, as MeterInfo carries them (never in repr)."""

    current: bytes = field(repr=False)
    previous: bytes | None = field(default=None, repr=False)
    previous_until: datetime | None = None


def _meter_info_from_row(row: Any, keys: _OpenedKeys) -> MeterInfo:
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
        auth_key=keys.current,
        installed_at=meter.installed_at,
        account_id=account_id,
        transformer_id=point_transformer_id if point_transformer_id is not None else checked_transformer_id,
        model=meter.model,
        protocol=meter.protocol,
        role=MeterRole(meter.role).value,
        service_point_id=meter.service_point_id,
        previous_auth_key=keys.previous,
        previous_key_until=keys.previous_until,
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


def _expire_meters(session: Session, meter_ids: set[int]) -> None:
    """Make `session` reload the keys of these meters: they were updated past the ORM."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Meter) and obj.id in meter_ids:
            session.expire(obj, ["auth_key", "previous_auth_key", "previous_key_until"])


class RegistryService:
    """Sites, customers, accounts, transformers, service points and meters. Reads time only from `clock`.

    Meter keys are stored sealed by `cipher` (security.meter_keys) and handed out in plaintext in `MeterInfo`.
    Without a cipher the registry serves everything but sealed keys: legacy plaintext keys (from before
    migration 0004) are read as they are, and sealing or opening a key raises ConfigurationError.
    """

    def __init__(self, clock: Clock, cipher: MeterKeyCipher | None = None) -> None:
        self.clock = clock
        self.cipher = cipher

    @classmethod
    def from_settings(cls, clock: Clock, settings: Settings | None = None) -> RegistryService:
        """A registry with the cipher `settings` configure (default: the environment's), as bootstrap() makes it.

        For services built on their own outside bootstrap(); raises ConfigurationError without a master key in
        the server mode (see security.meter_keys.load_master_keys).
        """
        return cls(clock, MeterKeyCipher.from_settings(settings or get_settings()))

    # -- meter keys ------------------------------------------------------------------------------------------

    def _require_cipher(self, what: str) -> MeterKeyCipher:
        if self.cipher is None:
            raise ConfigurationError(
                f"{what}: this RegistryService has no MeterKeyCipher, so it can neither seal nor open meter keys; "
                "build it with one (openami.bootstrap.bootstrap() makes it from the master key settings)"
            )
        return self.cipher

    def _seal(self, serial: str, key: bytes) -> bytes:
        return self._require_cipher(f"meter {serial!r}").seal(serial, key)

    def _open(self, serial: str, stored: bytes) -> bytes:
        """The plaintext of a stored key: sealed, or legacy plaintext from before migration 0004."""
        stored = bytes(stored)
        if is_legacy_plaintext(stored):
            return stored
        return self._require_cipher(f"meter {serial!r}").open(serial, stored)

    def _opened_keys(self, meter: Meter) -> _OpenedKeys:
        current = self._open(meter.serial, meter.auth_key)
        until = meter.previous_key_until
        # The clock is read only for a meter that has a previous key.
        if meter.previous_auth_key is None or until is None or until <= self.clock.now():
            return _OpenedKeys(current)
        return _OpenedKeys(current, self._open(meter.serial, meter.previous_auth_key), until)

    def _meter_info(self, row: Any) -> MeterInfo:
        return _meter_info_from_row(row, self._opened_keys(row[0]))

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
        if found is None or found.site_id != site_id:
            # One message for both: whether an object exists in another site is that site's business.
            raise ValidationError(f"no {what} with id {object_id} in site {site_id}", location=field)
        return found

    def _site_for_new(self, session: Session, site_id: int) -> Site:
        site = session.get(Site, site_id)
        if site is None:
            raise ValidationError(f"no site with id {site_id}", location="site_id")
        return site

    @staticmethod
    def _list(
        session: Session, model: type[SiteOwned], site_id: SiteScope, limit: int | None, offset: int
    ) -> list[SiteOwned]:
        stmt = select(model).order_by(model.id)
        if isinstance(site_id, int):
            stmt = stmt.where(model.site_id == site_id)
        elif site_id is not None:
            stmt = stmt.where(model.site_id.in_(list(site_id)))
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

    def list_sites(
        self,
        session: Session,
        *,
        site_ids: Collection[int] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[SiteInfo]:
        """Every site, or those of `site_ids`, by id."""
        stmt = select(Site).order_by(Site.id)
        if site_ids is not None:
            stmt = stmt.where(Site.id.in_(list(site_ids)))
        return [site_info(s) for s in session.scalars(_page(stmt, limit, offset))]

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
        self, session: Session, *, site_id: SiteScope = None, limit: int | None = None, offset: int = 0
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

    def site_named_by_input(self, session: Session, site_id: int) -> SiteInfo:
        """The site a caller's input names: ValidationError at `site_id` (not NotFoundError) when there is none,
        for services whose callers pass the id as an argument rather than a path."""
        try:
            return self.get_site(session, site_id)
        except NotFoundError:
            raise ValidationError(f"no site with id {site_id}", "site_id") from None

    def account_named_by_input(self, session: Session, account_id: int) -> AccountInfo:
        """As `site_named_by_input`, for an account id."""
        try:
            return self.get_account(session, account_id)
        except NotFoundError:
            raise ValidationError(f"no account with id {account_id}", "account_id") from None

    def accounts_in_site(self, session: Session, site_id: int, account_ids: Collection[int]) -> set[int]:
        """Which of `account_ids` are accounts of the site: one query per thousand ids."""
        wanted = sorted(set(account_ids))
        found: set[int] = set()
        for at in range(0, len(wanted), 1000):
            found.update(
                session.scalars(
                    select(Account.id).where(
                        Account.site_id == site_id, Account.id.in_(wanted[at : at + 1000])
                    )
                )
            )
        return found

    def list_accounts(
        self, session: Session, *, site_id: SiteScope = None, limit: int | None = None, offset: int = 0
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
        self, session: Session, *, site_id: SiteScope = None, limit: int | None = None, offset: int = 0
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
        self, session: Session, *, site_id: SiteScope = None, limit: int | None = None, offset: int = 0
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
            auth_key=self._seal(new.serial, new.auth_key),
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
        return self._meter_info(row)

    def meter_by_serial(self, session: Session, serial: str) -> MeterInfo:
        row = session.execute(_meter_info_query().where(Meter.serial == serial)).first()
        if row is None:
            raise NotFoundError(f"no meter with serial {serial!r}")
        return self._meter_info(row)

    def meters_by_serial(self, session: Session, serials: Iterable[str]) -> dict[str, MeterInfo]:
        """The registered meters among `serials`, by serial (unknown ones left out); a query per thousand."""
        wanted = sorted(set(serials))
        found: dict[str, MeterInfo] = {}
        for at in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[at : at + LOOKUP_CHUNK]
            for row in session.execute(_meter_info_query().where(Meter.serial.in_(chunk))):
                info = self._meter_info(row)
                found[info.serial] = info
        return found

    def meters_by_id(self, session: Session, meter_ids: Iterable[int]) -> dict[int, MeterInfo]:
        """The meters among `meter_ids`, by id (unknown ones left out); a query per thousand."""
        wanted = sorted(set(meter_ids))
        found: dict[int, MeterInfo] = {}
        for at in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[at : at + LOOKUP_CHUNK]
            for row in session.execute(_meter_info_query().where(Meter.id.in_(chunk))):
                info = self._meter_info(row)
                found[info.id] = info
        return found

    def meter_infos(
        self, session: Session, site_id: SiteScope = None, *, limit: int | None = None, offset: int = 0
    ) -> list[MeterInfo]:
        """Every meter (of one site, or of several, when `site_id` is given), by id; `limit`/`offset` page."""
        stmt = _meter_info_query()
        if isinstance(site_id, int):
            stmt = stmt.where(Meter.site_id == site_id)
        elif site_id is not None:
            stmt = stmt.where(Meter.site_id.in_(list(site_id)))
        return [self._meter_info(row) for row in session.execute(_page(stmt, limit, offset))]

    def meters_for_account(self, session: Session, site_code: str, account_number: str) -> list[MeterInfo]:
        """The meters at the service points of one account, by id."""
        site = self.site_by_code(session, site_code)
        account_id = session.scalar(
            select(Account.id).where(Account.site_id == site.id, Account.number == account_number)
        )
        if account_id is None:
            raise NotFoundError(f"no account {account_number!r} in site {site_code!r}")
        stmt = _meter_info_query().where(ServicePoint.account_id == account_id)
        return [self._meter_info(row) for row in session.execute(stmt)]

    # -- key rotation ----------------------------------------------------------------------------------------

    def rotate_meter_key(
        self, session: Session, serial: str, new_key: bytes | str, grace: timedelta
    ) -> MeterInfo:
        """Give meter `serial` the key `new_key` (32 bytes or 64 hex characters), stored sealed.

        Its current key becomes the previous one, still accepted until now + `grace` (0 to 90 days), so frames in
        flight and a meter not yet re-keyed in the field are not refused; only the new key is accepted after. A
        previous key still in its grace period is replaced: a meter has one previous key at most. With a grace
        of 0 the current key is dropped at once, which also replaces a stored key that no longer opens.
        """
        key = valid_auth_key(new_key, field="new_key")
        grace = valid_key_grace(grace)
        meter = session.scalar(select(Meter).where(Meter.serial == serial).with_for_update())
        if meter is None:
            raise NotFoundError(f"no meter with serial {serial!r}")
        try:
            current: bytes | None = self._open(meter.serial, meter.auth_key)
        except MeterKeyError as exc:
            if grace:
                raise MeterKeyError(
                    serial, f"{exc.detail}; to replace it without a grace period, rotate with a grace of 0"
                ) from exc
            current = None  # a key that does not open authenticates nothing: nothing to keep
        if current is not None and hmac.compare_digest(current, key):
            raise ValidationError("is the meter's current key; a rotation needs a different one", "new_key")
        now = self.clock.now()
        meter.auth_key = self._seal(meter.serial, key)
        if current is None or not grace:
            meter.previous_auth_key, meter.previous_key_until = None, None
        else:
            meter.previous_auth_key = self._seal(meter.serial, current)
            meter.previous_key_until = now + grace
        with _translated_integrity_errors(f"meter {serial!r}"):
            session.flush()
        log.info("meter_key_rotated", serial=serial, previous_key_until=meter.previous_key_until)
        return self.meter_info(session, meter.id)

    def seal_legacy_keys(self, session: Session) -> int:
        """Seal every legacy plaintext key (from before migration 0004); returns how many meters had one."""
        return self._reseal(session, rewrap=False)

    def rewrap_keys(self, session: Session) -> int:
        """Re-seal every meter key not sealed under the newest master key (legacy plaintext ones included), and
        drop previous keys whose grace period is over; returns how many meters changed.

        Afterwards an older master key opens nothing and may be removed from the configuration.
        """
        return self._reseal(session, rewrap=True)

    def _reseal(self, session: Session, *, rewrap: bool) -> int:
        cipher = self._require_cipher("re-sealing meter keys")
        newest = cipher.newest_key_id
        now = self.clock.now()

        def stale(serial: str, stored: bytes | None) -> bool:
            if stored is None:
                return False
            stored = bytes(stored)
            return is_legacy_plaintext(stored) or (rewrap and cipher.key_id_of(serial, stored) != newest)

        columns = select(
            Meter.id, Meter.serial, Meter.auth_key, Meter.previous_auth_key, Meter.previous_key_until
        )
        if not rewrap:
            columns = columns.where(
                or_(
                    func.length(Meter.auth_key) == AUTH_KEY_BYTES,
                    func.length(Meter.previous_auth_key) == AUTH_KEY_BYTES,
                )
            )
        table = _METER_TABLE
        # Conditional on the key read, so a rotation committed meanwhile is never overwritten.
        stmt = (
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.auth_key == bindparam("b_old_key"))
            .values(
                auth_key=bindparam("b_key"),
                previous_auth_key=bindparam("b_previous"),
                previous_key_until=bindparam("b_until", type_=table.c.previous_key_until.type),
            )
        )
        changed, after_id = 0, 0
        while rows := session.execute(
            columns.where(Meter.id > after_id).order_by(Meter.id).limit(RESEAL_CHUNK)
        ).all():
            after_id = rows[-1].id
            params = []
            for row in rows:
                previous, until = row.previous_auth_key, row.previous_key_until
                # A previous key whose grace is over is dropped unopened: its master key may be gone already.
                retired = rewrap and previous is not None and (until is None or until <= now)
                previous_stale = not retired and stale(row.serial, previous)
                key_stale = stale(row.serial, row.auth_key)
                if not (key_stale or previous_stale or retired):
                    continue
                if retired:
                    previous, until = None, None
                elif previous_stale:
                    previous = cipher.seal(row.serial, self._open(row.serial, previous))
                key = (
                    cipher.seal(row.serial, self._open(row.serial, row.auth_key))
                    if key_stale
                    else row.auth_key
                )
                params.append(
                    {
                        "b_id": row.id,
                        "b_old_key": row.auth_key,
                        "b_key": key,
                        "b_previous": previous,
                        "b_until": until,
                    }
                )
            if params:
                updated = cast(CursorResult[Any], session.execute(stmt, params)).rowcount
                if updated != len(params):
                    raise ConflictError(
                        "meter keys changed while they were being re-sealed (a rotation at the same time); "
                        "nothing was changed, run it again"
                    )
                changed += updated
                _expire_meters(session, {p["b_id"] for p in params})
        log.info("meter_keys_resealed", meters=changed, newest_master_key=newest, rewrap=rewrap)
        return changed
