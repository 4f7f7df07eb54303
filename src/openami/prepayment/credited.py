"""Telling the wallet of each payment credited, through the transactional outbox: `PaymentCreditedEmitter` is a
payment observer that emits `payment.credited` in the transaction that posts the credit; the worker's handler
(`worker_jobs.top_up_handler`) then records the top-up on the wallet (debt recovery, emergency credit re-armed)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from openami.outbox.service import OutboxService
from openami.prepayment.payments import PaymentInfo

CREDITED_TOPIC = "payment.credited"


class PaymentCreditedEmitter:
    """A PaymentObserver: emits `payment.credited` in the transaction that posts a payment's credit, keyed by
    the payment's reference, so the wallet hears of each credit once."""

    def __init__(self, outbox: OutboxService) -> None:
        self._outbox = outbox

    def payment_credited(self, session: Session, payment: PaymentInfo) -> None:
        succeeded_at = payment.succeeded_at or payment.created_at
        self._outbox.emit(
            session,
            topic=CREDITED_TOPIC,
            key=payment.reference,
            payload={
                "account_id": payment.account_id,
                "reference": payment.reference,
                "amount_minor": payment.amount_minor,
                "currency": payment.currency,
                "succeeded_at": succeeded_at.isoformat(),
            },
            site_id=payment.site_id,
        )

    def payment_reversed(self, session: Session, payment: PaymentInfo) -> None:
        """Nothing for the wallet to do: the reversal journal takes the credit back from the same ledger
        account, and debt already recovered from the top-up stays repaid (as it would from a cash top-up)."""
