"""OpenPAYGo offline tokens over HTTP under /api/v1: a site's token unit, provisioning a meter, issuing tokens and
listing them.

Permissions: `tokens:issue` sets a site's token unit and issues add, set and disable tokens; provisioning a meter
needs `meter-keys:write`, because its answer is the meter's token key, and whoever holds that key can mint credit
without the platform; `wallets:read` reads a site's token unit (staff of the site) and a meter's issued tokens (a
customer: their own meters'). The digits of an issued token are worth its credit until typed, so a list shows
them only to the meter's customer and to those who may issue tokens on the site; auditors see everything else.
TokenService writes every change to the operation log (the caller as actor) in the route's transaction,
committed here. Money is Decimal in the site's currency at this edge, integer minor units inside.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from openami.api.auth import Access, require
from openami.api.deps import ContainerDep, RowId, SessionDep
from openami.billing.charges import minor_units
from openami.bootstrap import Container
from openami.common.errors import NotFoundError, ValidationError
from openami.device.tokens import MAX_TOKEN_VALUE
from openami.prepayment.payments import money
from openami.prepayment.tokens import CreditKind, IssuedToken, TokenKind, TokenSiteSettings
from openami.prepayment.tokens_models import PAYMENT_REFERENCE_MAX_LEN
from openami.registry.interfaces import MeterInfo
from openami.security.permissions import Permission, reach
from openami.tariffs.model import minor_digits

router = APIRouter(prefix="/api/v1", tags=["offline tokens"])
TokensIssue = Annotated[Access, require(Permission.TOKENS_ISSUE)]
WalletsRead = Annotated[Access, require(Permission.WALLETS_READ)]
# One token holds at most 995 units; no unit larger than this makes sense (1 GWh, or 10 million currency units).
MAX_UNIT_SIZE = 10**9


class SiteTokensIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    credit_kind: CreditKind = Field(description="what the site's tokens carry: energy or money")
    unit_size: int = Field(
        ge=1,
        le=MAX_UNIT_SIZE,
        description="Wh (energy) or minor units (money) per token unit; a token holds up to 995 units",
    )


class SiteTokensOut(BaseModel):
    site_id: int
    credit_kind: CreditKind
    unit_size: int = Field(description="Wh (energy) or minor units of the site's currency (money) per unit")
    max_per_token: int = Field(description="the most one token carries, in Wh or minor units")
    updated_at: datetime


class DeviceConfigOut(BaseModel):
    """What to load into the meter. Shown once: no other answer carries the key."""

    serial: str
    secret_key: str = Field(description="the meter's OpenPAYGo key, 32 hex digits")
    starting_code: int
    starting_count: int
    credit_kind: CreditKind
    unit_size: int


class IssueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["add", "set", "disable"] = Field(
        description="add credit; set the meter's credit to the amount (prepayment back on); disable prepayment"
    )
    energy_wh: int | None = Field(default=None, description="for a meter whose tokens carry energy")
    amount: Decimal | None = Field(
        default=None,
        allow_inf_nan=False,
        description="in the site's currency, for a meter whose tokens carry money, e.g. 50.00",
    )
    payment_reference: str | None = Field(
        default=None,
        min_length=1,
        max_length=PAYMENT_REFERENCE_MAX_LEN,
        description="what paid for the credit (an add token only)",
    )


class TokenOut(BaseModel):
    id: int
    serial: str
    count: int = Field(description="the token's count: the meter accepts each count once")
    kind: TokenKind
    token: str | None = Field(
        description="the digits to type, in groups of three; null for who may not see them (they are credit)"
    )
    credit_kind: CreditKind
    energy_wh: int | None = Field(description="energy credit (add) or credit set (set)")
    amount: Decimal | None = Field(description="money credit (add) or credit set (set), site currency")
    currency: str | None = Field(description="of `amount`")
    issued_at: datetime
    issued_by: str
    payment_reference: str | None


def readable(token: str) -> str:
    """The digits in groups of three, as read out over the phone: '123456789' -> '123 456 789'."""
    return " ".join(token[i : i + 3] for i in range(0, len(token), 3))


def _settings_out(settings: TokenSiteSettings) -> SiteTokensOut:
    return SiteTokensOut(
        site_id=settings.site_id,
        credit_kind=settings.credit_kind,
        unit_size=settings.unit_size,
        max_per_token=settings.unit_size * MAX_TOKEN_VALUE,
        updated_at=settings.updated_at,
    )


def _token_out(issued: IssuedToken, serial: str, currency: str, *, show_digits: bool) -> TokenOut:
    energy = issued.credit_kind is CreditKind.ENERGY
    credit = issued.credit_amount
    return TokenOut(
        id=issued.id,
        serial=serial,
        count=issued.count,
        kind=issued.kind,
        token=readable(issued.token) if show_digits else None,
        credit_kind=issued.credit_kind,
        energy_wh=credit if energy else None,
        amount=None if energy or credit is None else money(credit, currency),
        currency=None if energy else currency,
        issued_at=issued.issued_at,
        issued_by=issued.issued_by,
        payment_reference=issued.payment_reference,
    )


def _site(access: Access, site_id: int) -> None:
    if not access.reach.whole_site(site_id):
        raise NotFoundError(f"no site with id {site_id}")


def _meter(session: Session, container: Container, access: Access, serial: str) -> MeterInfo:
    try:
        meter = container.registry.meter_by_serial(session, serial)
    except NotFoundError:
        meter = None
    if meter is None or not access.sees_meter(meter):
        raise NotFoundError(f"no meter with serial {serial!r}")  # as for a meter that does not exist
    return meter


def _amount_minor(body: IssueIn, currency: str) -> int | None:
    if body.amount is None:
        return None
    return minor_units(body.amount, minor_digits(currency), "amount")


def _at_this_edge(exc: ValidationError) -> ValidationError:
    """The service's error in this API's words: it names the amount in minor units, this API in currency."""
    location = "amount" if exc.location == "amount_minor" else exc.location
    return ValidationError(exc.message.replace("amount_minor", "amount"), location)


@router.put("/sites/{site_id}/offline-tokens", response_model=SiteTokensOut)
def configure_site(
    site_id: RowId, body: SiteTokensIn, access: TokensIssue, session: SessionDep, container: ContainerDep
) -> Any:
    """Choose what the site's tokens carry. Meters keep the unit they were provisioned with: a change applies
    to meters provisioned after it."""
    _site(access, site_id)
    settings = container.tokens.configure_site(
        session,
        site_id=site_id,
        credit_kind=body.credit_kind,
        unit_size=body.unit_size,
        actor=access.actor,
        role=access.role,
    )
    session.commit()
    return _settings_out(settings)


@router.get("/sites/{site_id}/offline-tokens", response_model=SiteTokensOut)
def get_site_settings(
    site_id: RowId, access: WalletsRead, session: SessionDep, container: ContainerDep
) -> Any:
    """What the site's tokens carry (404 until configured)."""
    _site(access, site_id)
    return _settings_out(container.tokens.site_settings(session, site_id))


@router.post(
    "/meters/{serial}/offline-tokens/provision",
    response_model=DeviceConfigOut,
    status_code=201,
)
def provision_meter(
    serial: str,
    access: Annotated[Access, require(Permission.METER_KEYS_WRITE)],
    session: SessionDep,
    container: ContainerDep,
) -> Any:
    """Give the meter a fresh token key and starting code, answered this once; 409 if it already has them
    (a second key would stop its tokens working)."""
    meter = _meter(session, container, access, serial)
    config = container.tokens.provision_meter(
        session, meter_id=meter.id, actor=access.actor, role=access.role
    )
    session.commit()
    out = DeviceConfigOut(
        serial=config.serial,
        secret_key=config.secret_key.hex(),
        starting_code=config.starting_code,
        starting_count=config.starting_count,
        credit_kind=config.credit_kind,
        unit_size=config.unit_size,
    )
    # No cache on the way may keep the key.
    return JSONResponse(out.model_dump(mode="json"), status_code=201, headers={"Cache-Control": "no-store"})


@router.post("/meters/{serial}/offline-tokens", response_model=TokenOut, status_code=201)
def issue_token(
    serial: str, body: IssueIn, access: TokensIssue, session: SessionDep, container: ContainerDep
) -> Any:
    """Issue the meter's next token: its digits, to read out or send to the customer, and its count."""
    meter = _meter(session, container, access, serial)
    currency = container.registry.get_site(session, meter.site_id).currency
    if body.kind == "disable":
        for name in ("energy_wh", "amount"):
            if getattr(body, name) is not None:
                raise ValidationError("a disable token carries no credit: leave it out", name)
    if body.kind != "add" and body.payment_reference is not None:
        raise ValidationError("only an add token is paid for: leave it out", "payment_reference")
    tokens, actor, role = container.tokens, access.actor, access.role
    try:
        if body.kind == "disable":
            issued = tokens.issue_disable(session, meter_id=meter.id, actor=actor, role=role)
        elif body.kind == "add":
            issued = tokens.issue_credit(
                session,
                meter_id=meter.id,
                actor=actor,
                role=role,
                energy_wh=body.energy_wh,
                amount_minor=_amount_minor(body, currency),
                payment_reference=body.payment_reference,
            )
        else:
            issued = tokens.issue_set(
                session,
                meter_id=meter.id,
                actor=actor,
                role=role,
                energy_wh=body.energy_wh,
                amount_minor=_amount_minor(body, currency),
            )
    except ValidationError as exc:
        raise _at_this_edge(exc) from None
    session.commit()
    return _token_out(issued, meter.serial, currency, show_digits=True)


@router.get("/meters/{serial}/offline-tokens", response_model=list[TokenOut])
def list_tokens(serial: str, access: WalletsRead, session: SessionDep, container: ContainerDep) -> Any:
    """Every token issued for the meter, in count order. The digits show to the meter's customer and to those
    who may issue tokens on its site; to others (auditors) they are null."""
    meter = _meter(session, container, access, serial)
    grants = frozenset((g.role, g.site_id) for g in access.principal.grants)
    show = reach(grants, Permission.TOKENS_ISSUE).whole_site(meter.site_id) or not access.reach.whole_site(
        meter.site_id
    )  # a caller who sees the meter without reaching its whole site is its customer
    currency = container.registry.get_site(session, meter.site_id).currency
    return [
        _token_out(issued, meter.serial, currency, show_digits=show)
        for issued in container.tokens.tokens_for_meter(session, meter.id)
    ]
