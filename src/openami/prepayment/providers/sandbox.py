"""The built-in sandbox provider: a local checkout page and HMAC-SHA256 signed webhooks, no outside service.

It behaves like a real provider so the whole payment path runs in the demo and in tests: the checkout URL carries a
signed checkout token (so the page cannot be edited into paying another amount or account), the page completes or
fails the payment, and the outcome comes back as a webhook that the payment service verifies like any other.

Signature: header `X-Openami-Sandbox-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`,
refused when the timestamp is more than `tolerance_s` away from the delivery's arrival (a captured delivery cannot be
replayed later; a replay inside the window is harmless, the payment service applies each event once).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from openami.common.clock import Clock
from openami.common.errors import ValidationError
from openami.prepayment.providers import (
    Checkout,
    CheckoutRequest,
    EventKind,
    PaymentEvent,
    WebhookRefused,
    header,
    signed_age_s,
)

SIGNATURE_HEADER = "X-Openami-Sandbox-Signature"
CHECKOUT_PATH = "/api/v1/payments/sandbox/checkout"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SandboxProvider:
    """Payments that complete on a local page; webhooks signed with `secret` (at least 16 bytes)."""

    name = "sandbox"

    def __init__(self, secret: bytes, clock: Clock, *, base_url: str = "", tolerance_s: int = 300) -> None:
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ValidationError("must be at least 16 bytes", "sandbox payment secret")
        self._secret = secret
        self._clock = clock
        self._base_url = base_url.rstrip("/")
        self._tolerance_s = tolerance_s

    # -- checkout ------------------------------------------------------------------------------------------------

    def start_checkout(self, request: CheckoutRequest) -> Checkout:
        payment_id = f"sbx_{secrets.token_hex(12)}"
        token = self.checkout_token(payment_id, request.reference, request.amount_minor, request.currency)
        return Checkout(f"{self._base_url}{CHECKOUT_PATH}/{token}", None, payment_id)

    def checkout_token(self, payment_id: str, reference: str, amount_minor: int, currency: str) -> str:
        """The page's token: what is being paid, signed so that it cannot be altered."""
        claims = _b64(json.dumps([payment_id, reference, amount_minor, currency]).encode())
        mac = hmac.new(self._secret, b"checkout." + claims.encode(), hashlib.sha256).digest()
        return f"{claims}.{_b64(mac)}"

    def read_checkout_token(self, token: str) -> tuple[str, str, int, str]:
        """(provider payment id, our reference, amount in minor units, currency) of a token this sandbox made."""
        claims, _, mac = token.partition(".")
        try:
            expected = hmac.new(self._secret, b"checkout." + claims.encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(mac)):
                raise ValueError("wrong signature")
            payment_id, reference, amount_minor, currency = json.loads(_unb64(claims))
        except (ValueError, TypeError) as exc:
            raise ValidationError(
                "not a checkout of this sandbox (altered or foreign token)", "checkout"
            ) from exc
        return str(payment_id), str(reference), int(amount_minor), str(currency)

    # -- webhooks ------------------------------------------------------------------------------------------------

    def event_body(
        self,
        kind: EventKind,
        payment_id: str,
        reference: str | None,
        amount_minor: int,
        currency: str,
        *,
        event_id: str | None = None,
        detail: str = "",
    ) -> bytes:
        """The JSON body of a sandbox webhook (what the checkout page, refunds and tests send)."""
        document: dict[str, Any] = {
            "id": event_id or f"evt_{secrets.token_hex(12)}",
            "type": f"payment.{kind.value}",
            "payment": {
                "id": payment_id,
                "reference": reference,
                "amount_minor": amount_minor,
                "currency": currency,
            },
            "detail": detail,
        }
        return json.dumps(document, separators=(",", ":")).encode()

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The headers of a delivery of `body`, signed now (or at `timestamp`, in Unix seconds)."""
        when = int(self._clock.now().timestamp()) if timestamp is None else timestamp
        mac = hmac.new(self._secret, f"{when}.".encode() + body, hashlib.sha256).hexdigest()
        return {SIGNATURE_HEADER: f"t={when},v1={mac}", "Content-Type": "application/json"}

    def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, *, received_at: datetime
    ) -> PaymentEvent | None:
        signature = header(headers, SIGNATURE_HEADER)
        if not signature:
            raise WebhookRefused("missing_signature", f"no {SIGNATURE_HEADER} header")
        parts = dict(p.split("=", 1) for p in signature.split(",") if "=" in p)
        if "t" not in parts or "v1" not in parts or not parts["t"].isdigit():
            raise WebhookRefused("malformed_signature", f"{SIGNATURE_HEADER} must be 't=<seconds>,v1=<hex>'")
        expected = hmac.new(self._secret, f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, parts["v1"]):
            raise WebhookRefused("bad_signature", "the signature does not match the body")
        age_s = signed_age_s(int(parts["t"]), received_at)
        if abs(age_s) > self._tolerance_s:
            raise WebhookRefused(
                "stale_timestamp",
                f"signed {abs(age_s):.0f} s {'before' if age_s > 0 else 'after'} it was received at "
                f"{received_at.isoformat()}, more than {self._tolerance_s} s",
            )
        try:
            document = json.loads(body)
            kind = EventKind(str(document["type"]).removeprefix("payment."))
            payment = document["payment"]
            amount_minor = payment["amount_minor"]
            if not isinstance(amount_minor, int) or isinstance(amount_minor, bool):
                raise TypeError(f"amount_minor must be an integer, got {amount_minor!r}")
            return PaymentEvent(
                provider_event_id=str(document["id"]),
                kind=kind,
                provider_payment_id=str(payment["id"]),
                reference=None if payment.get("reference") is None else str(payment["reference"]),
                amount_minor=amount_minor,
                currency=str(payment["currency"]),
                detail=str(document.get("detail") or ""),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WebhookRefused("malformed", f"not a sandbox payment event: {exc}") from exc
