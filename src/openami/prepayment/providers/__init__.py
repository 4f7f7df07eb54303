"""Payment providers behind one Protocol: start a checkout, and verify and read a webhook.

A provider knows its own wire format only. It turns a checkout request into the provider's redirect URL and ids,
and a webhook delivery (headers and the raw body, exactly as received: signatures cover the bytes) into one
normalised `PaymentEvent`, or raises `WebhookRefused` with a short stable `reason` code and a message saying what
is wrong. Third-party errors stop here: a provider raises only openami errors. What an event does to a payment
and to the ledger is decided by `prepayment.payments.PaymentService`, never by a provider.

A delivery's signed timestamp is judged against `received_at`, the instant openami received it, not the instant it
is processed: a delivery stored on arrival and applied later by a worker (after a crashed worker's lease ran out,
say) is as fresh as when it arrived, and a captured one replayed later is stale however quickly it is processed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from openami.common.clock import ensure_aware
from openami.common.errors import OpenAMIError


class EventKind(enum.StrEnum):
    SUCCEEDED = "succeeded"  # the money is ours: credit the account
    FAILED = "failed"  # this attempt failed; a later attempt of the same payment may still succeed
    REFUNDED = "refunded"  # the money went back to the payer: reverse the credit
    CHARGEBACK = "chargeback"  # the payer's bank took it back: reverse the credit


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """What we ask a provider for: `amount_minor` of `currency` for registry account `account_id`, under our
    payment `reference` (the provider sends it back in its webhooks)."""

    amount_minor: int
    currency: str  # ISO 4217
    account_id: int
    reference: str
    description: str


@dataclass(frozen=True, slots=True)
class Checkout:
    """Where to send the payer, and the provider's ids for what it opened."""

    redirect_url: str  # the page (or, for WeChat Pay Native, the weixin:// code URL) the payer opens
    checkout_id: str | None  # the provider's checkout session id, if it has one
    provider_payment_id: (
        str | None
    )  # the provider's payment id when it is already known (None: from the webhook)


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """One webhook, normalised. `reference` is ours (None when the provider does not send it back, as with a
    Stripe dispute); `provider_payment_id` is the provider's id of the payment."""

    provider_event_id: str | None  # the provider's id of this notification, when it has one
    kind: EventKind
    provider_payment_id: str
    reference: str | None
    amount_minor: int
    currency: str
    detail: str = ""  # the provider's words (failure message, dispute reason), for the record


class WebhookRefused(OpenAMIError):  # noqa: N818  (names the outcome, like FrameRejected)
    """A webhook delivery that cannot be trusted or read. `reason` is a short stable code (bad_signature,
    stale_timestamp, malformed, ...) for logs and metrics; the message says what is wrong."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class PaymentProvider(Protocol):
    """A payment provider: a name (the ledger's cash account is `cash/{name}`), checkouts, webhooks."""

    @property
    def name(self) -> str: ...

    def start_checkout(self, request: CheckoutRequest) -> Checkout:
        """Open a checkout for `request`. Raises ValidationError (bad request) or ConflictError (the provider
        refused or could not be reached), naming the provider."""
        ...

    def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, *, received_at: datetime
    ) -> PaymentEvent | None:
        """Verify a webhook delivery received at `received_at` (timezone-aware) and read it. None: authentic, but
        not about a payment's money (an event type we do not act on). Raises WebhookRefused when it is not
        authentic, was signed too long before (or after) `received_at`, or cannot be read."""
        ...


def signed_age_s(signed_at_s: int, received_at: datetime) -> float:
    """Seconds from a signature's Unix timestamp to the delivery's arrival (negative: signed after it arrived,
    a clock ahead of ours). Raises ValueError for a naive `received_at`."""
    return ensure_aware(received_at, "received_at").timestamp() - signed_at_s


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, whatever its case (a Starlette Headers is case-insensitive, a plain dict is not)."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, found in headers.items():
        if key.lower() == lowered:
            return found
    return None


__all__ = [
    "Checkout",
    "CheckoutRequest",
    "EventKind",
    "PaymentEvent",
    "PaymentProvider",
    "WebhookRefused",
    "header",
    "signed_age_s",
]
