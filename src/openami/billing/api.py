"""Bills over HTTP under /api/v1: an account's bills, one bill, the cost of the current cycle so far and its
projection, and a site's billing run. Customers see only their own accounts'; runs are for billing staff and admins,
and each is in the operation log."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from openami.api.auth import Access, require
from openami.api.deps import ContainerDep, RowId, SessionDep
from openami.billing.interfaces import AccountOutcome, BillInfo, BillLineInfo, CostEstimate, Outcome
from openami.billing.invoice import InvoiceData, invoice_html, invoice_pdf
from openami.billing.service import BillingService
from openami.bootstrap import Container
from openami.common.errors import NotFoundError, ValidationError
from openami.ledger.service import LedgerService
from openami.registry.models import Account
from openami.security.permissions import Permission
from openami.tariffs.model import minor_digits

router = APIRouter(prefix="/api/v1", tags=["billing"])
BillsRead = Annotated[Access, require(Permission.BILLS_READ)]
_MONTH = re.compile(r"(\d{4})-(\d{2})")


class LineOut(BaseModel):
    component: str
    description: str
    period: str | None
    tier: int | None
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal


class BillOut(BaseModel):
    id: int
    account_id: int
    period_start: date
    period_end: date = Field(description="the day after the last day billed")
    currency: str
    total: Decimal
    import_kwh: Decimal
    export_kwh: Decimal
    intervals_estimated: int = Field(
        description="estimated intervals among those billed (flagged on the lines)"
    )
    status: str
    replaces_bill_id: int | None
    created_at: datetime
    lines: list[LineOut]


class CostOut(BaseModel):
    account_id: int
    cycle_start: date
    cycle_end: date
    as_of: datetime
    currency: str
    total: Decimal
    import_kwh: Decimal
    intervals_estimated: int
    lines: list[LineOut]


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    month: str = Field(description="YYYY-MM: each account is billed for its cycle that ends in this month")


class RunOut(BaseModel):
    site_id: int
    month: str
    billed: int
    already_billed: int
    not_billed: list[dict[str, str]]


def _service(container: Container) -> BillingService:
    return BillingService(
        container.clock, container.registry, LedgerService(container.clock, container.registry)
    )


def _money(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-minor_digits(currency))


def _lines(lines: tuple[BillLineInfo, ...], currency: str) -> list[LineOut]:
    return [
        LineOut(
            component=line.component,
            description=line.description,
            period=line.period,
            tier=line.tier,
            quantity=line.quantity,
            unit=line.unit,
            unit_price=line.unit_price,
            amount=_money(line.amount_minor, currency),
        )
        for line in lines
    ]


def _bill_out(bill: BillInfo) -> BillOut:
    return BillOut(
        id=bill.id,
        account_id=bill.account_id,
        period_start=bill.period_start,
        period_end=bill.period_end,
        currency=bill.currency,
        total=_money(bill.total_minor, bill.currency),
        import_kwh=Decimal(bill.import_wh) / 1000,
        export_kwh=Decimal(bill.export_wh) / 1000,
        intervals_estimated=bill.intervals_estimated,
        status=bill.status.value,
        replaces_bill_id=bill.replaces_bill_id,
        created_at=bill.created_at,
        lines=_lines(bill.lines, bill.currency),
    )


def _cost_out(cost: CostEstimate) -> CostOut:
    return CostOut(
        account_id=cost.account_id,
        cycle_start=cost.cycle_start,
        cycle_end=cost.cycle_end,
        as_of=cost.as_of,
        currency=cost.currency,
        total=_money(cost.total_minor, cost.currency),
        import_kwh=Decimal(cost.import_wh) / 1000,
        intervals_estimated=cost.intervals_estimated,
        lines=_lines(cost.lines, cost.currency),
    )


def _visible_account(session: Session, access: Access, account_id: int) -> None:
    site_id = session.scalar(select(Account.site_id).where(Account.id == account_id))
    if site_id is None or not access.sees_account(site_id, account_id):
        raise NotFoundError(f"no account with id {account_id}")


@router.get("/accounts/{account_id}/bills", response_model=list[BillOut])
def account_bills(account_id: RowId, access: BillsRead, session: SessionDep, container: ContainerDep) -> Any:
    """The account's bills, newest first, with their lines."""
    _visible_account(session, access, account_id)
    return [_bill_out(b) for b in _service(container).bills_for_account(session, account_id)]


@router.get("/bills/{bill_id}", response_model=BillOut)
def get_bill(bill_id: RowId, access: BillsRead, session: SessionDep, container: ContainerDep) -> Any:
    try:
        bill = _service(container).get_bill(session, bill_id)
    except NotFoundError:
        raise NotFoundError(f"no bill with id {bill_id}") from None
    if not access.sees_account(bill.site_id, bill.account_id):
        raise NotFoundError(f"no bill with id {bill_id}")
    return _bill_out(bill)


def _invoice(session: Session, access: Access, container: Container, bill_id: int) -> InvoiceData:
    bill = get_bill(bill_id, access, session, container)  # the same visibility: 404 when not the caller's
    full = _service(container).get_bill(session, bill.id)
    account = container.registry.get_account(session, full.account_id)
    return InvoiceData(
        full,
        container.registry.get_site(session, full.site_id),
        account,
        container.registry.get_customer(session, account.customer_id),
    )


@router.get("/bills/{bill_id}/invoice.html", response_class=HTMLResponse)
def invoice_as_html(
    bill_id: RowId, access: BillsRead, session: SessionDep, container: ContainerDep
) -> HTMLResponse:
    """The bill as a printable HTML page."""
    return HTMLResponse(invoice_html(_invoice(session, access, container, bill_id)))


@router.get("/bills/{bill_id}/invoice.pdf", response_class=Response)
def invoice_as_pdf(
    bill_id: RowId, access: BillsRead, session: SessionDep, container: ContainerDep
) -> Response:
    """The bill as an A4 PDF."""
    data = _invoice(session, access, container, bill_id)
    headers = {"Content-Disposition": f'inline; filename="{data.title.replace(" ", "-")}.pdf"'}
    return Response(invoice_pdf(data), media_type="application/pdf", headers=headers)


@router.get("/accounts/{account_id}/cost-so-far", response_model=CostOut)
def cost_so_far(account_id: RowId, access: BillsRead, session: SessionDep, container: ContainerDep) -> Any:
    """The current bill cycle priced up to now: what the account owes so far."""
    _visible_account(session, access, account_id)
    return _cost_out(_service(container).cost_so_far(session, account_id, container.clock.now()))


@router.get("/accounts/{account_id}/projected-bill", response_model=CostOut)
def projected_bill(account_id: RowId, access: BillsRead, session: SessionDep, container: ContainerDep) -> Any:
    """What the current cycle's bill will come to if consumption goes on as it has so far."""
    _visible_account(session, access, account_id)
    return _cost_out(_service(container).projected_bill(session, account_id, container.clock.now()))


@router.post("/sites/{site_id}/billing-runs", response_model=RunOut)
def run_billing(
    site_id: RowId,
    body: RunIn,
    access: Annotated[Access, require(Permission.BILLS_RUN)],
    session: SessionDep,
    container: ContainerDep,
) -> Any:
    """Bill every account of the site for its cycle ending in `month`; running it again bills nobody twice."""
    if not access.reach.whole_site(site_id):
        raise NotFoundError(f"no site with id {site_id}")
    found = _MONTH.fullmatch(body.month)
    if found is None or not 1 <= int(found[2]) <= 12:
        raise ValidationError(f"must be YYYY-MM, got {body.month!r}", "month")

    def commit_batch(outcomes: Sequence[AccountOutcome]) -> None:
        # Each batch of bills is committed with its own operation-log entry (see BillingService.run_billing).
        access.record(
            session,
            action="billing.run",
            object_type="site",
            object_id=str(site_id),
            after={
                "month": body.month,
                "billed": [o.bill.id for o in outcomes if o.bill is not None],
                "not_billed": sum(1 for o in outcomes if o.outcome is Outcome.NOT_BILLED),
            },
            site_id=site_id,
        )
        session.commit()

    reports = _service(container).run_month(
        session, site_id, int(found[1]), int(found[2]), after_batch=commit_batch
    )
    outcomes = [o for r in reports for o in r.accounts]
    billed = [o for o in outcomes if o.bill is not None]
    not_billed = [
        {"account": o.account_number, "reason": o.reason}
        for o in outcomes
        if o.bill is None and o.outcome is Outcome.NOT_BILLED
    ]
    return RunOut(
        site_id=site_id,
        month=body.month,
        billed=len(billed),
        already_billed=sum(1 for o in outcomes if o.outcome is Outcome.ALREADY_BILLED),
        not_billed=not_billed,
    )
