"""Online payments: open a checkout with a provider, apply its webhooks, credit the ledger exactly once, receipts.

Methods take the caller's `Session` first and never commit. `handle_webhook` never raises for a delivery it
refuses (bad signature, unknown payment, amount or currency unlike the checkout's): it records the delivery and
why, so the caller commits the record and answers the provider with the refusal.

Exactly once. A payment row is created at checkout with our reference; the provider's payment id is unique per
provider. Each webhook locks its payment row (`SELECT ... FOR UPDATE`; SQLite has one writer anyway) and moves it
by facts, not by arrival order: a success posts the credit journal once (`payment:{provider}:{id}`, also unique in
the ledger), a refund or chargeback posts its reversal once, and a refund that arrives before its success is kept
and reversed as soon as the success arrives. A failure after a success, a second success, a replay: recorded,
nothing changed. Everything a delivery does (payment row, journals, receipt, operation log) is in one transaction.

Order of locks, the same in every path so concurrent deliveries cannot deadlock: the payment row, the ledger's,
then the operation log's (appended last).
"""

from __future__ import annotations

import hashlib
import html
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from openami.common.clock import Clock
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.ledger.interfaces import AccountPurpose, JournalKind, NewPosting
from openami.ledger.service import LedgerService
from openami.prepayment.payments_models import PaymentEventRecord, PaymentReceiptRecord, PaymentRecord
from openami.prepayment.providers import (
    CheckoutRequest,
    EventKind,
    PaymentEvent,
    PaymentProvider,
    WebhookRefused,
)
from openami.registry.service import RegistryService
from openami.security.audit import AuditLog
from openami.tariffs.model import minor_digits

MAX_PAYMENT_MINOR = 10**12  # far above any top-up; keeps sums far inside the ledger's 64-bit limits
SYSTEM_ACTOR = "system:payments"  # the operation log's actor for what providers' webhooks do


@dataclass(frozen=True, slots=True)
class PaymentInfo:
    id: int
    site_id: int
    account_id: int
    provider: str
    reference: str  # ours, unique
    provider_payment_id: str | None
    amount_minor: int
    currency: str
    status: str  # pending, succeeded, failed, refunded, charged_back
    created_at: datetime
    succeeded_at: datetime | None
    reversed_at: datetime | None
    journal_id: int | None  # the credit
    reversal_journal_id: int | None  # its reversal (refund or chargeback)
    failure_reason: str | None

    @property
    def credited(self) -> bool:
        """True while the payment's money counts on the account: credited and not reversed."""
        return self.journal_id is not None and self.reversal_journal_id is None


@dataclass(frozen=True, slots=True)
class CheckoutStarted:
    payment: PaymentInfo
    redirect_url: str  # where to send the payer


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """What one delivery did. `outcome`: applied, duplicate, ignored or refused; `reason` says why."""

    provider: str
    outcome: str
    reason: str
    event_kind: EventKind | None
    payment: PaymentInfo | None
    event_record_id: int

    @property
    def refused(self) -> bool:
        return self.outcome == "refused"


@dataclass(frozen=True, slots=True)
class Receipt:
    """A payment's receipt: the plain record behind the HTML one (amount as Decimal in the currency)."""

    number: str
    issued_at: datetime
    site_name: str
    customer_name: str
    account_number: str
    provider: str
    reference: str
    provider_payment_id: str
    amount: Decimal
    currency: str
    paid_at: datetime
    status: str  # "credited", or "refunded" / "charged back" after a reversal


@dataclass(frozen=True, slots=True)
class _Delivery:
    """One webhook delivery as received: the provider's name, the body's SHA-256 (hex), when it arrived."""

    provider: str
    body_sha256: str
    received_at: datetime


class PaymentObserver(Protocol):
    """Told, inside the transaction, when a payment's credit is posted or reversed (the wallet, notifications)."""

    def payment_credited(self, session: Session, payment: PaymentInfo) -> None: ...

    def payment_reversed(self, session: Session, payment: PaymentInfo) -> None: ...


def _info(row: PaymentRecord) -> PaymentInfo:
    return PaymentInfo(
        id=row.id,
        site_id=row.site_id,
        account_id=row.account_id,
        provider=row.provider,
        reference=row.reference,
        provider_payment_id=row.provider_payment_id,
        amount_minor=row.amount_minor,
        currency=row.currency,
        status=row.status,
        created_at=row.created_at,
        succeeded_at=row.succeeded_at,
        reversed_at=row.reversed_at,
        journal_id=row.journal_id,
        reversal_journal_id=row.reversal_journal_id,
        failure_reason=row.failure_reason,
    )


def money(amount_minor: int, currency: str) -> Decimal:
    """Minor units as a Decimal of the currency (2500 KES -> 25.00)."""
    return Decimal(amount_minor).scaleb(-minor_digits(currency))


class PaymentService:
    """Checkouts, webhooks and receipts of online payments. Never commits."""

    def __init__(
        self,
        clock: Clock,
        registry: RegistryService,
        ledger: LedgerService,
        providers: Mapping[str, PaymentProvider] | Sequence[PaymentProvider],
        *,
        audit_log: AuditLog | None = None,
        observers: Sequence[PaymentObserver] = (),
    ) -> None:
        self.clock = clock
        self.registry = registry
        self.ledger = ledger
        items = providers.values() if isinstance(providers, Mapping) else providers
        self.providers: dict[str, PaymentProvider] = {p.name: p for p in items}
        self.audit_log = audit_log or AuditLog(clock)
        self.observers = tuple(observers)

    def provider(self, name: str) -> PaymentProvider:
        try:
            return self.providers[name]
        except KeyError:
            known = ", ".join(sorted(self.providers)) or "none"
            raise NotFoundError(f"no payment provider {name!r} (configured: {known})") from None

    # -- checkout ------------------------------------------------------------------------------------------------

    def start_checkout(
        self,
        session: Session,
        *,
        account_id: int,
        amount_minor: int,
        provider: str,
        actor: str,
        role: str,
        currency: str | None = None,
        address: str | None = None,
    ) -> CheckoutStarted:
        """Open a checkout of `amount_minor` for registry account `account_id` with `provider`, and record it.

        The currency is the account's site's (`currency`, if given, must be it): the prepayment ledger account
        is in it. The provider is called inside the caller's transaction; if it refuses (ConflictError) nothing
        is written. Raises ValidationError for a bad amount or currency, NotFoundError for an unknown account
        or provider.
        """
        if not isinstance(amount_minor, int) or isinstance(amount_minor, bool):
            raise ValidationError(f"must be an integer number of minor units, got {amount_minor!r}", "amount")
        if not 0 < amount_minor <= MAX_PAYMENT_MINOR:
            raise ValidationError(f"must be between 1 and {MAX_PAYMENT_MINOR} minor units", "amount")
        chosen = self.provider(provider)
        account = self.registry.get_account(session, account_id)
        site = self.registry.get_site(session, account.site_id)
        if currency is not None and currency != site.currency:
            raise ValidationError(
                f"account {account.number} of site {site.code!r} is paid in {site.currency}, not {currency!r}",
                "currency",
            )
        # Opened now, so that a webhook never races to open them (both are idempotent anyway).
        self.ledger.open_account(
            session, site_id=site.id, purpose=AccountPurpose.PREPAYMENT, customer_account_id=account.id
        )
        self.ledger.open_account(session, site_id=site.id, purpose=AccountPurpose.CASH, name=chosen.name)
        reference = f"pay-{secrets.token_hex(12)}"
        checkout = chosen.start_checkout(
            CheckoutRequest(
                amount_minor=amount_minor,
                currency=site.currency,
                account_id=account.id,
                reference=reference,
                description=f"{site.name}: prepaid credit for account {account.number}",
            )
        )
        row = PaymentRecord(
            site_id=site.id,
            account_id=account.id,
            provider=chosen.name,
            reference=reference,
            provider_payment_id=checkout.provider_payment_id,
            checkout_id=checkout.checkout_id,
            amount_minor=amount_minor,
            currency=site.currency,
            status="pending",
            created_at=self.clock.now(),
        )
        session.add(row)
        session.flush()
        self.audit_log.append(
            session,
            actor=actor,
            role=role,
            action="payment.checkout_started",
            object_type="payment",
            object_id=reference,
            after={
                "account_id": account.id,
                "amount_minor": amount_minor,
                "currency": site.currency,
                "provider": chosen.name,
            },
            address=address,
            site_id=site.id,
        )
        return CheckoutStarted(_info(row), checkout.redirect_url)

    # -- webhooks ------------------------------------------------------------------------------------------------

    def handle_webhook(
        self,
        session: Session,
        provider: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        received_at: datetime | None = None,
    ) -> WebhookResult:
        """Verify, record and apply one webhook delivery of `provider` (headers, raw body as received).

        `received_at` is when openami received the delivery (default: now, for a delivery handled as it
        arrives); the provider judges the signature's timestamp against it, so a delivery stored on arrival and
        applied later by a worker is not refused as stale, and it is the delivery's `received_at` on record.
        Raises ValidationError for a naive `received_at` and NotFoundError for an unknown provider name; every
        delivery to a known provider is recorded in `payment_event` with its outcome, whatever it is.
        """
        chosen = self.provider(provider)
        if received_at is None:
            arrived = self.clock.now()
        elif received_at.tzinfo is None or received_at.utcoffset() is None:
            raise ValidationError(f"must be timezone-aware, got {received_at.isoformat()}", "received_at")
        else:
            arrived = received_at.astimezone(UTC)
        digest = hashlib.sha256(body).hexdigest()
        delivery = _Delivery(chosen.name, digest, arrived)
        try:
            event = chosen.parse_webhook(headers, body, received_at=arrived)
        except WebhookRefused as refusal:
            return self._refuse(session, delivery, None, None, f"{refusal.reason}: {refusal.message}")
        if event is None:
            return self._record(session, delivery, None, None, "ignored", "not a payment event")
        row = self._locked_payment(session, chosen.name, event)
        if isinstance(row, str):
            return self._refuse(session, delivery, event, None, row)
        if (event.amount_minor, event.currency) != (row.amount_minor, row.currency):
            return self._refuse(
                session,
                delivery,
                event,
                row,
                f"amount_mismatch: {event.kind.value} of {event.amount_minor} {event.currency} for payment "
                f"{row.reference} of {row.amount_minor} {row.currency}",
            )
        if row.provider_payment_id is None:
            row.provider_payment_id = event.provider_payment_id
        outcome, reason = self._apply(session, row, event)
        result = self._record(session, delivery, event, row, outcome, reason)
        if outcome == "applied":
            self.audit_log.append(
                session,
                actor=SYSTEM_ACTOR,
                role="system",
                action=f"payment.{event.kind.value}",
                object_type="payment",
                object_id=row.reference,
                after={
                    "status": row.status,
                    "provider_payment_id": row.provider_payment_id,
                    "amount_minor": row.amount_minor,
                    "currency": row.currency,
                    "journal_id": row.journal_id,
                    "reversal_journal_id": row.reversal_journal_id,
                },
                reason=reason,
                site_id=row.site_id,
            )
        return result

    def _locked_payment(self, session: Session, provider: str, event: PaymentEvent) -> PaymentRecord | str:
        """The event's payment, locked; or why there is none."""
        query = select(PaymentRecord).with_for_update().execution_options(populate_existing=True)
        row = session.scalar(
            query.where(
                PaymentRecord.provider == provider,
                PaymentRecord.provider_payment_id == event.provider_payment_id,
            )
        )
        if row is None and event.reference is not None:
            row = session.scalar(query.where(PaymentRecord.reference == event.reference))
        if row is None or row.provider != provider:
            return (
                f"unknown_payment: {provider} payment {event.provider_payment_id!r} (reference "
                f"{event.reference!r}) matches no checkout of ours"
            )
        if event.reference is not None and event.reference != row.reference:
            return (
                f"reference_mismatch: {provider} payment {event.provider_payment_id!r} is our {row.reference}, "
                f"the event says {event.reference}"
            )
        if row.provider_payment_id not in (None, event.provider_payment_id):
            return (
                f"payment_id_mismatch: our {row.reference} is {provider} payment {row.provider_payment_id!r}, "
                f"the event names {event.provider_payment_id!r}"
            )
        return row

    def _apply(self, session: Session, row: PaymentRecord, event: PaymentEvent) -> tuple[str, str]:
        """Move the locked payment by one event's fact. Returns (outcome, reason)."""
        now = self.clock.now()
        if event.kind is EventKind.SUCCEEDED:
            if row.succeeded_at is not None:
                return "duplicate", f"payment {row.reference} already succeeded"
            row.succeeded_at = now
            if row.status in ("pending", "failed"):
                row.status = "succeeded"
                row.failure_reason = None
            self._credit(session, row)
            if row.reversed_at is not None:
                self._reverse(session, row)
                return "applied", f"credited, and reversed at once: it was {row.status} before it succeeded"
            return "applied", "credited"
        if event.kind is EventKind.FAILED:
            if row.status == "failed":
                return "duplicate", f"payment {row.reference} already failed"
            if row.status != "pending":
                return "ignored", f"payment {row.reference} is {row.status}: a failed attempt changes nothing"
            row.status, row.failed_at, row.failure_reason = "failed", now, (event.detail or "failed")[:500]
            return "applied", "failed"
        status = "refunded" if event.kind is EventKind.REFUNDED else "charged_back"
        if row.reversed_at is not None:
            same = row.status == status
            return ("duplicate" if same else "ignored"), f"payment {row.reference} is already {row.status}"
        row.reversed_at, row.status = now, status
        if row.journal_id is None:
            return "applied", f"{status} before its success arrived: the credit is reversed when it does"
        self._reverse(session, row)
        return "applied", f"{status}: credit reversed"

    def _credit(self, session: Session, row: PaymentRecord) -> None:
        prepayment = self.ledger.open_account(
            session,
            site_id=row.site_id,
            purpose=AccountPurpose.PREPAYMENT,
            customer_account_id=row.account_id,
        )
        cash = self.ledger.open_account(
            session,
            site_id=row.site_id,
            purpose=AccountPurpose.CASH,
            name=row.provider,
            currency=row.currency,
        )
        journal = self.ledger.post(
            session,
            site_id=row.site_id,
            kind=JournalKind.PAYMENT,
            currency=row.currency,
            occurred_at=row.succeeded_at or self.clock.now(),
            postings=[NewPosting(cash.id, row.amount_minor), NewPosting(prepayment.id, -row.amount_minor)],
            external_reference=f"payment:{row.provider}:{row.provider_payment_id}",
            memo=f"online payment {row.reference}",
        )
        row.journal_id = journal.id
        session.flush()
        if (
            session.scalar(select(PaymentReceiptRecord.id).where(PaymentReceiptRecord.payment_id == row.id))
            is None
        ):
            site = self.registry.get_site(session, row.site_id)
            session.add(
                PaymentReceiptRecord(
                    payment_id=row.id, number=f"R-{site.code}-{row.id:08d}", issued_at=self.clock.now()
                )
            )
            session.flush()
        for observer in self.observers:
            observer.payment_credited(session, _info(row))

    def _reverse(self, session: Session, row: PaymentRecord) -> None:
        if row.journal_id is None or row.reversal_journal_id is not None:
            raise ConflictError(f"payment {row.reference} has no credit to reverse")  # _apply never gets here
        reversal = self.ledger.reverse(
            session,
            row.journal_id,
            occurred_at=row.reversed_at,
            memo=f"online payment {row.reference} {row.status.replace('_', ' ')}",
        )
        row.reversal_journal_id = reversal.id
        session.flush()
        for observer in self.observers:
            observer.payment_reversed(session, _info(row))

    def _refuse(
        self,
        session: Session,
        delivery: _Delivery,
        event: PaymentEvent | None,
        row: PaymentRecord | None,
        reason: str,
    ) -> WebhookResult:
        result = self._record(session, delivery, event, row, "refused", reason)
        provider, digest = delivery.provider, delivery.body_sha256
        self.audit_log.append(
            session,
            actor=SYSTEM_ACTOR,
            role="system",
            action="payment.webhook_refused",
            object_type="payment" if row is not None else "payment_event",
            object_id=row.reference if row is not None else str(result.event_record_id),
            after={"provider": provider, "body_sha256": digest},
            reason=reason[:1000],
            site_id=row.site_id if row is not None else None,
        )
        return result

    def _record(
        self,
        session: Session,
        delivery: _Delivery,
        event: PaymentEvent | None,
        row: PaymentRecord | None,
        outcome: str,
        reason: str,
    ) -> WebhookResult:
        provider, digest = delivery.provider, delivery.body_sha256
        record = PaymentEventRecord(
            provider=provider,
            received_at=delivery.received_at,
            provider_event_id=None
            if event is None or event.provider_event_id is None
            else event.provider_event_id[:200],
            payment_id=None if row is None else row.id,
            kind=None if event is None else event.kind.value,
            provider_payment_id=None if event is None else event.provider_payment_id[:100],
            reference=None if event is None or event.reference is None else event.reference[:40],
            amount_minor=None if event is None else event.amount_minor,
            currency=None if event is None else event.currency[:3],
            outcome=outcome,
            reason=reason[:500],
            body_sha256=digest,
        )
        session.add(record)
        session.flush()
        return WebhookResult(
            provider,
            outcome,
            reason,
            None if event is None else event.kind,
            None if row is None else _info(row),
            record.id,
        )

    # -- reading -------------------------------------------------------------------------------------------------

    def get_payment(self, session: Session, payment_id: int) -> PaymentInfo:
        row = session.get(PaymentRecord, payment_id)
        if row is None:
            raise NotFoundError(f"no payment with id {payment_id}")
        return _info(row)

    def payment_by_reference(self, session: Session, reference: str) -> PaymentInfo:
        row = session.scalar(select(PaymentRecord).where(PaymentRecord.reference == reference))
        if row is None:
            raise NotFoundError(f"no payment with reference {reference!r}")
        return _info(row)

    def payments_for_account(self, session: Session, account_id: int) -> list[PaymentInfo]:
        """The account's payments, newest first."""
        rows = session.scalars(
            select(PaymentRecord)
            .where(PaymentRecord.account_id == account_id)
            .order_by(PaymentRecord.created_at.desc(), PaymentRecord.id.desc())
        )
        return [_info(r) for r in rows]

    def receipt(self, session: Session, payment_id: int) -> Receipt:
        """The receipt of a credited (or since reversed) payment; NotFoundError if it was never credited."""
        payment = self.get_payment(session, payment_id)
        record = session.scalar(
            select(PaymentReceiptRecord).where(PaymentReceiptRecord.payment_id == payment_id)
        )
        if record is None or payment.succeeded_at is None or payment.provider_payment_id is None:
            raise NotFoundError(f"payment {payment.reference} has no receipt: it has not been credited")
        account = self.registry.get_account(session, payment.account_id)
        customer = self.registry.get_customer(session, account.customer_id)
        site = self.registry.get_site(session, payment.site_id)
        return Receipt(
            number=record.number,
            issued_at=record.issued_at,
            site_name=site.name,
            customer_name=customer.name,
            account_number=account.number,
            provider=payment.provider,
            reference=payment.reference,
            provider_payment_id=payment.provider_payment_id,
            amount=money(payment.amount_minor, payment.currency),
            currency=payment.currency,
            paid_at=payment.succeeded_at,
            status="credited" if payment.credited else payment.status.replace("_", " "),
        )


def receipt_html(receipt: Receipt) -> str:
    """The receipt as a small printable HTML page (every value escaped)."""
    e = html.escape
    rows = [
        ("Receipt", receipt.number),
        ("Issued", receipt.issued_at.strftime("%Y-%m-%d %H:%M UTC")),
        ("Customer", receipt.customer_name),
        ("Account", receipt.account_number),
        ("Amount", f"{receipt.amount} {receipt.currency}"),
        ("Paid", receipt.paid_at.strftime("%Y-%m-%d %H:%M UTC")),
        ("Paid with", receipt.provider),
        ("Payment reference", receipt.reference),
        ("Provider payment id", receipt.provider_payment_id),
        ("Status", receipt.status),
    ]
    body = "\n".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Receipt {e(receipt.number)}</title>"
        "<style>body{font-family:sans-serif;max-width:32em;margin:2em auto}th{text-align:left;padding-right:1em}"
        "</style></head>\n"
        f"<body><h1>{e(receipt.site_name)}</h1><p>Payment receipt</p>\n<table>\n{body}\n</table></body></html>\n"
    )
