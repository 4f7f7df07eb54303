"""Online payment tables: a payment per checkout, every webhook delivery received, and a receipt per payment credited.

A payment is credited to the ledger at most once: `provider_payment_id` is unique per provider (NULL until the
provider names it: WeChat Pay gives its transaction id only in the notification), the journal's external reference
`payment:{provider}:{id}` is unique per site, and the service locks the payment row while it applies an event.
Money is integer minor units (`*_minor`). Rows are never deleted: a refund or chargeback keeps the payment and
links the ledger reversal.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from openami.storage.base import Base, UTCDateTime

BigIntId = BigInteger().with_variant(Integer(), "sqlite")

PAYMENT_STATUSES = ("pending", "succeeded", "failed", "refunded", "charged_back")
EVENT_OUTCOMES = ("applied", "duplicate", "ignored", "refused")


class PaymentRecord(Base):
    """One online payment of one prepaid account, from the checkout we started to its last known state."""

    __tablename__ = "payment"
    __table_args__ = (
        UniqueConstraint("provider", "provider_payment_id"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'refunded', 'charged_back')", name="status"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    provider: Mapped[str] = mapped_column(String(20))
    reference: Mapped[str] = mapped_column(String(40), unique=True)  # ours, sent to the provider at checkout
    provider_payment_id: Mapped[str | None] = mapped_column(String(100))
    checkout_id: Mapped[str | None] = mapped_column(String(200))  # the provider's checkout session, if any
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reversed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # refunded or charged back
    journal_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("journal.id"))
    reversal_journal_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("journal.id"))


class PaymentEventRecord(Base):
    """One webhook delivery as received and what it did: applied, duplicate, ignored or refused (with why)."""

    __tablename__ = "payment_event"
    __table_args__ = (
        CheckConstraint("outcome IN ('applied', 'duplicate', 'ignored', 'refused')", name="outcome"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    provider_event_id: Mapped[str | None] = mapped_column(String(200))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payment.id"), index=True)
    kind: Mapped[str | None] = mapped_column(String(16))
    provider_payment_id: Mapped[str | None] = mapped_column(String(100))
    reference: Mapped[str | None] = mapped_column(String(40))
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    outcome: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str] = mapped_column(String(500))
    body_sha256: Mapped[str] = mapped_column(String(64))


class PaymentReceiptRecord(Base):
    """The receipt of a credited payment: numbered once, when the payment is first credited."""

    __tablename__ = "payment_receipt"

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payment.id"), unique=True)
    number: Mapped[str] = mapped_column(String(40), unique=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
