"""Online payments over HTTP under /api/v1: start a checkout, the sandbox's checkout page, providers' webhooks,
an account's payments and a payment's receipt.

Webhooks and the sandbox page are public: a webhook proves itself by its provider's signature (checked by the
provider adapter), the sandbox page by the signed token in its URL. Starting a checkout and reading payments and
receipts need `bills:read` on the account (a customer: their own accounts'), until payments get a permission of
their own. The app must carry the PaymentService as `app.state.payments` (bootstrap wiring).
"""

from __future__ import annotations

import html
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from openami.api.auth import PUBLIC, Access, require
from openami.api.deps import RowId, SessionDep
from openami.common.errors import ConfigurationError, NotFoundError, ValidationError
from openami.prepayment.payments import PaymentInfo, PaymentService, money, receipt_html
from openami.prepayment.providers import EventKind
from openami.prepayment.providers.sandbox import SandboxProvider
from openami.registry.models import Account
from openami.security.permissions import Permission
from openami.tariffs.model import minor_digits

router = APIRouter(prefix="/api/v1", tags=["payments"])
BillsRead = Annotated[Access, require(Permission.BILLS_READ)]


def get_payment_service(request: Request) -> PaymentService:
    service = getattr(request.app.state, "payments", None)
    if not isinstance(service, PaymentService):
        raise ConfigurationError("the app has no payment service (app.state.payments)")
    return service


PaymentsDep = Annotated[PaymentService, Depends(get_payment_service)]


class CheckoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Decimal = Field(description="in the site's currency, e.g. 25.00", gt=0)
    provider: str = Field(default="sandbox", max_length=20)


class CheckoutOut(BaseModel):
    payment_id: int
    reference: str
    provider: str
    amount: Decimal
    currency: str
    redirect_url: str


class PaymentOut(BaseModel):
    id: int
    account_id: int
    provider: str
    reference: str
    provider_payment_id: str | None
    amount: Decimal
    currency: str
    status: str
    credited: bool
    created_at: datetime
    succeeded_at: datetime | None
    reversed_at: datetime | None


class ReceiptOut(BaseModel):
    number: str
    issued_at: datetime
    customer_name: str
    account_number: str
    provider: str
    reference: str
    provider_payment_id: str
    amount: Decimal
    currency: str
    paid_at: datetime
    status: str


def _payment_out(p: PaymentInfo) -> PaymentOut:
    return PaymentOut(
        id=p.id,
        account_id=p.account_id,
        provider=p.provider,
        reference=p.reference,
        provider_payment_id=p.provider_payment_id,
        amount=money(p.amount_minor, p.currency),
        currency=p.currency,
        status=p.status,
        credited=p.credited,
        created_at=p.created_at,
        succeeded_at=p.succeeded_at,
        reversed_at=p.reversed_at,
    )


def _visible_account(session: Session, access: Access, account_id: int) -> int:
    site_id = session.scalar(select(Account.site_id).where(Account.id == account_id))
    if site_id is None or not access.sees_account(site_id, account_id):
        raise NotFoundError(f"no account with id {account_id}")
    return site_id


def _visible_payment(
    session: Session, access: Access, payments: PaymentService, payment_id: int
) -> PaymentInfo:
    try:
        payment = payments.get_payment(session, payment_id)
    except NotFoundError:
        payment = None
    if payment is None or not access.sees_account(payment.site_id, payment.account_id):
        raise NotFoundError(f"no payment with id {payment_id}")
    return payment


def _minor(amount: Decimal, currency: str) -> int:
    try:
        scaled = amount.scaleb(minor_digits(currency))
        if scaled != scaled.to_integral_value():
            raise ValidationError(f"{amount} has more decimals than {currency} has", "amount")
        return int(scaled)
    except InvalidOperation as exc:
        raise ValidationError(f"not an amount: {amount}", "amount") from exc


@router.post("/accounts/{account_id}/payments/checkout", response_model=CheckoutOut)
def start_checkout(
    account_id: RowId, body: CheckoutIn, access: BillsRead, session: SessionDep, payments: PaymentsDep
) -> Any:
    """Open a checkout to top up the account's prepaid credit; send the payer to `redirect_url`."""
    site_id = _visible_account(session, access, account_id)
    currency = payments.registry.get_site(session, site_id).currency
    started = payments.start_checkout(
        session,
        account_id=account_id,
        amount_minor=_minor(body.amount, currency),
        provider=body.provider,
        actor=access.actor,
        role=access.role,
        address=access.caller.address,
    )
    session.commit()
    p = started.payment
    return CheckoutOut(
        payment_id=p.id,
        reference=p.reference,
        provider=p.provider,
        amount=money(p.amount_minor, p.currency),
        currency=p.currency,
        redirect_url=started.redirect_url,
    )


async def raw_body(request: Request) -> bytes:
    """The body exactly as sent: signatures cover the bytes, not a parsed form of them."""
    return await request.body()


@router.post("/payments/webhooks/{provider}", dependencies=[PUBLIC])
def webhook(
    provider: str,
    request: Request,
    body: Annotated[bytes, Depends(raw_body)],
    session: SessionDep,
    payments: PaymentsDep,
) -> JSONResponse:
    """A provider's notification: verified by its signature, applied once. 400 when refused (recorded)."""
    received_at = payments.clock.now()  # the signature's timestamp is judged against the arrival
    result = payments.handle_webhook(session, provider, request.headers, body, received_at=received_at)
    session.commit()
    status = 400 if result.refused else 200
    return JSONResponse({"outcome": result.outcome, "reason": result.reason}, status_code=status)


def _sandbox(payments: PaymentService) -> SandboxProvider:
    provider = payments.providers.get("sandbox")
    if not isinstance(provider, SandboxProvider):
        raise NotFoundError("the sandbox payment provider is not configured")
    return provider


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sandbox checkout</title>
<style>body{{font-family:sans-serif;max-width:30em;margin:2em auto}}button{{margin-right:1em}}</style></head>
<body><h1>Sandbox checkout</h1><p>{message}</p>{forms}</body></html>
"""


@router.get("/payments/sandbox/checkout/{token}", response_class=HTMLResponse, dependencies=[PUBLIC])
def sandbox_page(token: str, payments: PaymentsDep) -> HTMLResponse:
    """The sandbox provider's checkout page: pay, or fail, the payment its token names (no real money)."""
    _, reference, amount_minor, currency = _sandbox(payments).read_checkout_token(token)
    action = f"/api/v1/payments/sandbox/checkout/{html.escape(token)}"
    forms = (
        f'<form method="post" action="{action}/succeeded"><button>Pay</button></form>'
        f'<form method="post" action="{action}/failed"><button>Fail the payment</button></form>'
    )
    message = f"Pay {money(amount_minor, currency)} {html.escape(currency)} for {html.escape(reference)}"
    return HTMLResponse(_PAGE.format(message=message, forms=forms))


@router.post(
    "/payments/sandbox/checkout/{token}/{outcome}", response_class=HTMLResponse, dependencies=[PUBLIC]
)
def sandbox_finish(token: str, outcome: str, session: SessionDep, payments: PaymentsDep) -> HTMLResponse:
    """Complete or fail the sandbox payment: the sandbox sends its signed webhook, which is applied as any other."""
    if outcome not in (EventKind.SUCCEEDED.value, EventKind.FAILED.value):
        raise ValidationError("must be 'succeeded' or 'failed'", "outcome")
    sandbox = _sandbox(payments)
    payment_id, reference, amount_minor, currency = sandbox.read_checkout_token(token)
    body = sandbox.event_body(EventKind(outcome), payment_id, reference, amount_minor, currency)
    result = payments.handle_webhook(session, sandbox.name, sandbox.sign(body), body)
    session.commit()
    message = f"{html.escape(reference)}: {html.escape(result.outcome)} ({html.escape(result.reason)})"
    return HTMLResponse(_PAGE.format(message=message, forms=""), status_code=400 if result.refused else 200)


@router.get("/accounts/{account_id}/payments", response_model=list[PaymentOut])
def account_payments(account_id: RowId, access: BillsRead, session: SessionDep, payments: PaymentsDep) -> Any:
    """The account's online payments, newest first."""
    _visible_account(session, access, account_id)
    return [_payment_out(p) for p in payments.payments_for_account(session, account_id)]


@router.get("/payments/{payment_id}/receipt", response_model=ReceiptOut)
def receipt(payment_id: RowId, access: BillsRead, session: SessionDep, payments: PaymentsDep) -> Any:
    payment = _visible_payment(session, access, payments, payment_id)
    r = payments.receipt(session, payment.id)
    return ReceiptOut(
        number=r.number,
        issued_at=r.issued_at,
        customer_name=r.customer_name,
        account_number=r.account_number,
        provider=r.provider,
        reference=r.reference,
        provider_payment_id=r.provider_payment_id,
        amount=r.amount,
        currency=r.currency,
        paid_at=r.paid_at,
        status=r.status,
    )


@router.get("/payments/{payment_id}/receipt.html", response_class=HTMLResponse)
def receipt_page(
    payment_id: RowId, access: BillsRead, session: SessionDep, payments: PaymentsDep
) -> HTMLResponse:
    """The receipt as a printable HTML page."""
    payment = _visible_payment(session, access, payments, payment_id)
    return HTMLResponse(receipt_html(payments.receipt(session, payment.id)))
