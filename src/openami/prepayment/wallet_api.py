"""Prepaid wallets over HTTP under /api/v1: an account's wallet as a customer's phone shows it, and a site's
credit rules.

`wallets:read` covers the wallet (a customer: their own accounts') and the credit rules of the sites the caller
is on (a customer too: friendly hours and thresholds are the site's published terms, not anybody's data).
`credit-rules:write` replaces a site's rules; WalletService writes the change to the operation log, committed here.
Money is Decimal in the site's currency at this edge, integer minor units inside.
"""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from openami.api.auth import Access, require
from openami.api.deps import ContainerDep, RowId, SessionDep
from openami.bootstrap import Container
from openami.common.errors import NotFoundError, ValidationError
from openami.prepayment import credit
from openami.prepayment.credit import CreditAction, CreditRules, FriendlyHours
from openami.prepayment.payments import money
from openami.registry.interfaces import SiteInfo
from openami.security.permissions import Permission
from openami.tariffs.model import minor_digits

router = APIRouter(prefix="/api/v1", tags=["prepayment"])
WalletsRead = Annotated[Access, require(Permission.WALLETS_READ)]
Amount = Annotated[Decimal, Field(description="in the site's currency, e.g. 50.00", allow_inf_nan=False)]


class FriendlyHoursOut(BaseModel):
    daily_from: str | None = Field(description="local HH:MM; null with daily_to: no daily window")
    daily_to: str | None
    weekdays: list[int] = Field(description="whole days with no cut-off: 0 Monday ... 6 Sunday")
    holidays: bool = Field(description="no cut-off on the site's public holidays")


class CreditRulesOut(BaseModel):
    site_id: int
    currency: str
    low_credit: Decimal = Field(description="customers are warned below it")
    disconnect_below: Decimal = Field(description="credit is exhausted below it")
    reconnect_at: Decimal = Field(description="a cut-off account is reconnected at or above it")
    emergency_credit: Decimal = Field(
        description="how far below the disconnect threshold credit may run, once"
    )
    debt_recovery_bp: int = Field(description="share of each top-up repaying debt, in 1/10,000")
    friendly_hours: FriendlyHoursOut


class FriendlyHoursIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    daily_from: time | None = Field(default=time(16, 0), description="local time; null with daily_to: none")
    daily_to: time | None = time(8, 0)
    weekdays: list[int] = Field(default=[5, 6], max_length=7)
    holidays: bool = True


class CreditRulesIn(BaseModel):
    """The site's whole rules (what is left out takes its default)."""

    model_config = ConfigDict(extra="forbid")
    low_credit: Amount
    disconnect_below: Amount
    reconnect_at: Amount | None = Field(default=None, description="default: the disconnect threshold")
    emergency_credit: Amount = Decimal(0)
    debt_recovery_bp: int = Field(default=0, ge=0, le=10_000)
    friendly_hours: FriendlyHoursIn = Field(default_factory=FriendlyHoursIn)


class CreditStateOut(BaseModel):
    action: CreditAction = Field(
        description="ok, warn_low, disconnect_due, reconnect_due or awaiting_payment, as of now"
    )
    reason: str


class EmergencyCreditOut(BaseModel):
    amount: Decimal = Field(description="the site's emergency credit")
    in_use: bool = Field(description="granted since the last top-up that repaid it")


class WalletOut(BaseModel):
    account_id: int
    currency: str
    balance: Decimal = Field(description="credit left; below zero: in emergency credit or owing")
    debt: Decimal = Field(description="owed on the account, recovered from top-ups")
    days_left: Decimal | None = Field(description="at recent daily consumption; null when not predictable")
    credit_state: CreditStateOut
    emergency_credit: EmergencyCreditOut
    friendly_hours_now: bool = Field(description="nobody is cut off now")
    friendly_until: datetime | None = Field(description="when the friendly hours now in force end")
    supply_connected: bool
    supply_changed_at: datetime
    charged_until: datetime | None = Field(description="consumption is charged up to this instant")
    as_of: datetime


def _minor(amount: Decimal, currency: str, where: str) -> int:
    try:
        scaled = amount.scaleb(minor_digits(currency))
        if scaled != scaled.to_integral_value():
            raise ValidationError(f"{amount} has more decimals than {currency} has", where)
        return int(scaled)
    except InvalidOperation as exc:
        raise ValidationError(f"not an amount: {amount}", where) from exc


def _rules_out(site: SiteInfo, rules: CreditRules) -> CreditRulesOut:
    friendly = rules.friendly
    return CreditRulesOut(
        site_id=site.id,
        currency=site.currency,
        low_credit=money(rules.low_credit_minor, site.currency),
        disconnect_below=money(rules.disconnect_below_minor, site.currency),
        reconnect_at=money(rules.reconnect_minor, site.currency),
        emergency_credit=money(rules.emergency_credit_minor, site.currency),
        debt_recovery_bp=rules.debt_recovery_bp,
        friendly_hours=FriendlyHoursOut(
            daily_from=None if friendly.daily_from is None else friendly.daily_from.strftime("%H:%M"),
            daily_to=None if friendly.daily_to is None else friendly.daily_to.strftime("%H:%M"),
            weekdays=sorted(friendly.weekdays),
            holidays=friendly.holidays,
        ),
    )


def _site_terms(session: Session, container: Container, access: Access, site_id: int) -> SiteInfo:
    """The site, if the caller is on it (a customer too: the rules are the site's published terms)."""
    if not (access.reach.whole_site(site_id) or site_id in access.reach.own_site_ids):
        raise NotFoundError(f"no site with id {site_id}")
    return container.registry.get_site(session, site_id)


@router.get("/accounts/{account_id}/wallet", response_model=WalletOut)
def get_wallet(account_id: RowId, access: WalletsRead, session: SessionDep, container: ContainerDep) -> Any:
    """The prepaid account's credit now: balance, days left, what the credit rules make of it, and whether
    friendly hours hold off any cut-off."""
    try:
        account = container.registry.get_account(session, account_id)
    except NotFoundError:
        account = None
    if account is None or not access.sees_account(account.site_id, account.id):
        raise NotFoundError(f"no account with id {account_id}")
    wallets = container.wallets
    wallet = wallets.get_wallet(session, account_id)  # NotFoundError: not a prepaid account with a wallet
    site = container.registry.get_site(session, wallet.site_id)
    rules = wallets.credit_rules(session, site.id)
    now = container.clock.now()
    year = now.astimezone(ZoneInfo(site.timezone)).year
    holidays = credit.public_holidays(site.holiday_country, site.holiday_subdivision, [year, year + 1])
    decision = credit.decide(
        wallet.balance_minor,
        now,
        rules,
        timezone=site.timezone,
        holiday_dates=holidays,
        connected=wallet.supply_connected,
        emergency_granted=wallet.emergency_granted,
    )
    friendly_until = credit.friendly_until(now, rules.friendly, site.timezone, holidays)
    return WalletOut(
        account_id=account_id,
        currency=wallet.currency,
        balance=money(wallet.balance_minor, wallet.currency),
        debt=money(wallet.debt_minor, wallet.currency),
        days_left=wallets.days_left(session, account_id, now),
        credit_state=CreditStateOut(action=decision.action, reason=decision.reason),
        emergency_credit=EmergencyCreditOut(
            amount=money(rules.emergency_credit_minor, wallet.currency),
            in_use=decision.emergency_granted,
        ),
        friendly_hours_now=friendly_until is not None,
        friendly_until=friendly_until,
        supply_connected=wallet.supply_connected,
        supply_changed_at=wallet.supply_changed_at,
        charged_until=wallet.charged_until,
        as_of=now,
    )


@router.get("/sites/{site_id}/credit-rules", response_model=CreditRulesOut)
def get_credit_rules(
    site_id: RowId, access: WalletsRead, session: SessionDep, container: ContainerDep
) -> Any:
    """When prepaid customers are warned, cut off and reconnected, and the friendly hours with no cut-off."""
    site = _site_terms(session, container, access, site_id)
    return _rules_out(site, container.wallets.credit_rules(session, site.id))


@router.put("/sites/{site_id}/credit-rules", response_model=CreditRulesOut)
def set_credit_rules(
    site_id: RowId,
    body: CreditRulesIn,
    access: Annotated[Access, require(Permission.CREDIT_RULES_WRITE)],
    session: SessionDep,
    container: ContainerDep,
) -> Any:
    """Replace the site's credit rules (in the operation log, before and after)."""
    if not access.reach.whole_site(site_id):
        raise NotFoundError(f"no site with id {site_id}")
    site = container.registry.get_site(session, site_id)
    currency = site.currency
    friendly = body.friendly_hours
    rules = CreditRules(
        low_credit_minor=_minor(body.low_credit, currency, "low_credit"),
        disconnect_below_minor=_minor(body.disconnect_below, currency, "disconnect_below"),
        reconnect_at_minor=None
        if body.reconnect_at is None
        else _minor(body.reconnect_at, currency, "reconnect_at"),
        emergency_credit_minor=_minor(body.emergency_credit, currency, "emergency_credit"),
        debt_recovery_bp=body.debt_recovery_bp,
        friendly=FriendlyHours(
            daily_from=friendly.daily_from,
            daily_to=friendly.daily_to,
            weekdays=frozenset(friendly.weekdays),
            holidays=friendly.holidays,
        ),
    )
    stored = container.wallets.set_credit_rules(session, site_id, rules, actor=access.actor, role=access.role)
    session.commit()
    return _rules_out(site, stored)
