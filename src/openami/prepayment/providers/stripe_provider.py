"""Stripe, through the `stripe` library: Checkout Sessions to pay, webhooks verified by `stripe.WebhookSignature`.

The payment reference goes out as `metadata.openami_reference` on the Checkout Session and on its PaymentIntent
(`payment_intent_data.metadata`), so PaymentIntent and Charge events carry it back; a dispute carries only its
PaymentIntent id, which the payment service knows from the success. Amounts are Stripe's "smallest currency unit",
which is openami's minor unit for the currencies openami bills in (Stripe's few exceptions, such as ISK, are
not handled here).

Webhooks: `stripe.WebhookSignature.verify_header` checks the `Stripe-Signature` header as Stripe documents
(HMAC-SHA256 of "<timestamp>.<body>" with the endpoint secret; any `v1` signature may match). Its own timestamp
check is turned off (`tolerance=None`) because it reads the machine's wall clock when the delivery is processed;
this adapter refuses, as that check would, a timestamp more than `tolerance_s` older than the delivery's arrival
(`received_at`), so a delivery applied late by a worker is judged as it arrived. Like the library, it does not
refuse a timestamp ahead of the arrival (Stripe's clock ahead of ours).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import stripe

from openami.common.errors import ConflictError, ValidationError
from openami.prepayment.providers import (
    Checkout,
    CheckoutRequest,
    EventKind,
    PaymentEvent,
    WebhookRefused,
    header,
    signed_age_s,
)

REFERENCE_KEY = "openami_reference"

# The Stripe event types that move money, and what each means here.
_KINDS = {
    "payment_intent.succeeded": EventKind.SUCCEEDED,
    "payment_intent.payment_failed": EventKind.FAILED,
    "charge.refunded": EventKind.REFUNDED,
    "charge.dispute.created": EventKind.CHARGEBACK,
}


class StripeProvider:
    """Stripe Checkout and webhooks. `http_client` replaces the library's HTTP client (tests pass a fake)."""

    name = "stripe"

    def __init__(
        self,
        api_key: str,
        webhook_secret: str,
        *,
        success_url: str,
        cancel_url: str,
        tolerance_s: int = 300,
        http_client: stripe.HTTPClient | None = None,
    ) -> None:
        if not webhook_secret.startswith("whsec_"):
            raise ValidationError("must be a Stripe endpoint secret (whsec_...)", "stripe webhook secret")
        self._client = stripe.StripeClient(api_key, http_client=http_client, max_network_retries=2)
        self._webhook_secret = webhook_secret
        self._success_url = success_url
        self._cancel_url = cancel_url
        self._tolerance_s = tolerance_s

    def start_checkout(self, request: CheckoutRequest) -> Checkout:
        metadata = {REFERENCE_KEY: request.reference, "account_id": str(request.account_id)}
        params: Any = {
            "mode": "payment",
            "client_reference_id": request.reference,
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": request.currency.lower(),
                        "unit_amount": request.amount_minor,
                        "product_data": {"name": request.description},
                    },
                }
            ],
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "success_url": self._success_url,
            "cancel_url": self._cancel_url,
        }
        try:
            session = self._client.v1.checkout.sessions.create(params=params)
        except stripe.StripeError as exc:
            raise ConflictError(f"stripe refused the checkout for {request.reference}: {exc}") from exc
        if not session.url:
            raise ConflictError(f"stripe opened checkout {session.id} for {request.reference} without a URL")
        payment_intent = session.payment_intent
        intent_id = payment_intent if isinstance(payment_intent, str) or payment_intent is None else None
        return Checkout(session.url, session.id, intent_id)

    def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, *, received_at: datetime
    ) -> PaymentEvent | None:
        signature = header(headers, "Stripe-Signature")
        if not signature:
            raise WebhookRefused("missing_signature", "no Stripe-Signature header")
        signed_at_s = _signed_at(signature)
        try:
            stripe.WebhookSignature.verify_header(body, signature, self._webhook_secret, tolerance=None)
        except stripe.SignatureVerificationError as exc:
            raise WebhookRefused(
                "bad_signature", f"stripe signature refused: {exc.user_message or exc}"
            ) from exc
        except ValueError as exc:  # a body that is not UTF-8 (the signature covers its text)
            raise WebhookRefused("malformed", f"not a stripe event: {exc}") from exc
        age_s = signed_age_s(signed_at_s, received_at)
        if age_s > self._tolerance_s:
            raise WebhookRefused(
                "stale_timestamp",
                f"stripe signed it {age_s:.0f} s before it was received at {received_at.isoformat()}, "
                f"more than {self._tolerance_s} s",
            )
        kind: EventKind | None = None
        try:
            event = json.loads(body)
            kind = _KINDS.get(event["type"])
            if kind is None:
                return None
            return _normalise(event["id"], kind, event["data"]["object"])
        except (ValueError, KeyError, TypeError) as exc:
            raise WebhookRefused("malformed", f"stripe {kind or 'unknown'} event without {exc}") from exc


def _signed_at(signature: str) -> int:
    """The `t=` Unix timestamp of a Stripe-Signature header, read as the library reads it (the first `t`)."""
    for item in signature.split(","):
        name, _, value = item.partition("=")
        if name == "t":
            try:
                return int(value)
            except ValueError:
                break
    raise WebhookRefused("malformed_signature", "Stripe-Signature must carry 't=<unix seconds>'")


def _normalise(event_id: str, kind: EventKind, obj: dict[str, Any]) -> PaymentEvent:
    """One Stripe object (PaymentIntent, Charge or Dispute) as a PaymentEvent."""
    metadata = obj.get("metadata") or {}
    reference = metadata.get(REFERENCE_KEY)
    detail = ""
    if kind is EventKind.SUCCEEDED:
        payment_id, amount = obj["id"], obj["amount_received"]
    elif kind is EventKind.FAILED:
        payment_id, amount = obj["id"], obj["amount"]
        detail = ((obj.get("last_payment_error") or {}).get("message")) or "payment failed"
    elif kind is EventKind.REFUNDED:
        payment_id, amount = obj["payment_intent"], obj["amount_refunded"]
    else:
        payment_id, amount = obj["payment_intent"], obj["amount"]
        detail = f"dispute {obj['id']}: {obj.get('reason') or 'no reason given'}"
    if not isinstance(payment_id, str) or not isinstance(amount, int) or isinstance(amount, bool):
        raise TypeError(f"a payment_intent id and an integer amount, got {payment_id!r} and {amount!r}")
    return PaymentEvent(
        provider_event_id=event_id,
        kind=kind,
        provider_payment_id=payment_id,
        reference=None if reference is None else str(reference),
        amount_minor=amount,
        currency=str(obj["currency"]).upper(),
        detail=detail,
    )
