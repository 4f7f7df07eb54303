"""Stripe and WeChat Pay adapters against deliveries signed locally exactly as each provider documents."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openami.common.clock import ManualClock
from openami.common.errors import ConflictError
from openami.prepayment.providers import CheckoutRequest, EventKind, WebhookRefused
from openami.prepayment.providers.stripe_provider import StripeProvider
from openami.prepayment.providers.wechatpay import WeChatPayProvider

WHSEC = "whsec_test_0123456789abcdef"
APIV3_KEY = "0123456789abcdef0123456789abcdef"
SERIAL = "5157F09EFDC096DE15EBE81A47057A72"


# -- Stripe -----------------------------------------------------------------------------------------------------


def stripe_signed(
    payload: dict[str, Any], secret: str = WHSEC, at: int | None = None
) -> tuple[dict[str, str], bytes]:
    """Stripe's scheme: v1 = hex HMAC-SHA256(secret, "<t>.<body>"), header "t=<t>,v1=<sig>"."""
    body = json.dumps(payload).encode()
    t = int(time.time()) if at is None else at
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={sig}"}, body


def stripe_event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": "evt_1", "object": "event", "type": kind, "data": {"object": obj}}


class FakeStripeHTTP(stripe.HTTPClient):
    """Answers the Checkout Session create call as Stripe would; records what was sent."""

    name = "fake"

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status = status
        self.sent: list[tuple[str, str, Any]] = []

    def request(
        self, method: str, url: str, headers: Any, post_data: Any = None, *, _usage: Any = None
    ) -> Any:
        self.sent.append((method, url, post_data))
        if self.status != 200:
            return (
                json.dumps({"error": {"message": "Invalid currency", "type": "invalid_request_error"}}),
                400,
                {},
            )
        answer = {
            "id": "cs_test_1",
            "object": "checkout.session",
            "url": "https://checkout.stripe.test/cs_test_1",
            "payment_intent": None,
        }
        return json.dumps(answer), 200, {}

    def close(self) -> None:
        return None


def _stripe(http: FakeStripeHTTP | None = None) -> StripeProvider:
    return StripeProvider(
        "sk_test_x", WHSEC, success_url="https://u.test/ok", cancel_url="https://u.test/no", http_client=http
    )


def test_stripe_events_are_verified_and_normalised() -> None:
    provider = _stripe()
    intent = {
        "id": "pi_1",
        "amount": 2500,
        "amount_received": 2500,
        "currency": "kes",
        "metadata": {"openami_reference": "pay-1"},
    }
    event = provider.parse_webhook(*stripe_signed(stripe_event("payment_intent.succeeded", intent)))
    assert event is not None
    assert (event.kind, event.provider_payment_id, event.reference, event.amount_minor, event.currency) == (
        EventKind.SUCCEEDED,
        "pi_1",
        "pay-1",
        2500,
        "KES",
    )
    charge = {
        "id": "ch_1",
        "payment_intent": "pi_1",
        "amount_refunded": 2500,
        "currency": "kes",
        "metadata": {"openami_reference": "pay-1"},
    }
    refund = provider.parse_webhook(*stripe_signed(stripe_event("charge.refunded", charge)))
    assert refund is not None
    assert refund.kind is EventKind.REFUNDED
    dispute = {
        "id": "dp_1",
        "payment_intent": "pi_1",
        "amount": 2500,
        "currency": "kes",
        "reason": "fraudulent",
    }
    chargeback = provider.parse_webhook(*stripe_signed(stripe_event("charge.dispute.created", dispute)))
    assert chargeback is not None
    assert (chargeback.kind, chargeback.reference) == (EventKind.CHARGEBACK, None)
    assert provider.parse_webhook(*stripe_signed(stripe_event("customer.created", {"id": "cus_1"}))) is None


def test_stripe_refuses_forged_stale_and_unsigned_deliveries() -> None:
    provider = _stripe()
    payload = stripe_event("payment_intent.succeeded", {"id": "pi_1"})
    with pytest.raises(WebhookRefused) as forged:
        provider.parse_webhook(*stripe_signed(payload, secret="whsec_other"))
    assert forged.value.reason == "bad_signature"
    with pytest.raises(WebhookRefused) as stale:
        provider.parse_webhook(*stripe_signed(payload, at=int(time.time()) - 3600))
    assert stale.value.reason == "stale_timestamp"
    headers, body = stripe_signed(payload)
    with pytest.raises(WebhookRefused) as altered:
        provider.parse_webhook(headers, body.replace(b"pi_1", b"pi_2"))
    assert altered.value.reason == "bad_signature"
    with pytest.raises(WebhookRefused) as unsigned:
        provider.parse_webhook({}, body)
    assert unsigned.value.reason == "missing_signature"


def test_stripe_checkout_sends_the_reference_and_translates_errors() -> None:
    http = FakeStripeHTTP()
    checkout = _stripe(http).start_checkout(CheckoutRequest(2500, "KES", 7, "pay-1", "top-up"))
    assert checkout.redirect_url == "https://checkout.stripe.test/cs_test_1"
    assert checkout.checkout_id == "cs_test_1"
    ((_, url, sent),) = http.sent
    assert url.endswith("/v1/checkout/sessions")
    assert "payment_intent_data[metadata][openami_reference]=pay-1" in str(sent).replace("%5B", "[").replace(
        "%5D", "]"
    )
    with pytest.raises(ConflictError, match="stripe refused the checkout for pay-1"):
        _stripe(FakeStripeHTTP(400)).start_checkout(CheckoutRequest(2500, "KES", 7, "pay-1", "top-up"))


# -- WeChat Pay -------------------------------------------------------------------------------------------------

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def platform_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def wechat_signed(
    key: rsa.RSAPrivateKey,
    event_type: str,
    resource: dict[str, Any],
    *,
    at: datetime = NOW,
    apiv3_key: str = APIV3_KEY,
    serial: str = SERIAL,
) -> tuple[dict[str, str], bytes]:
    """WeChat Pay's scheme: resource AES-256-GCM with the API v3 key; RSA-SHA256 over "ts\\nnonce\\nbody\\n"."""
    nonce = os.urandom(6).hex()  # 12 characters, used as bytes
    sealed = AESGCM(apiv3_key.encode()).encrypt(nonce.encode(), json.dumps(resource).encode(), b"transaction")
    body = json.dumps(
        {
            "id": "EV-1",
            "create_time": "2026-03-02T17:00:00+08:00",
            "event_type": event_type,
            "resource_type": "encrypt-resource",
            "summary": "ok",
            "resource": {
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode(),
                "associated_data": "transaction",
                "nonce": nonce,
                "original_type": "transaction",
            },
        }
    ).encode()
    ts, header_nonce = str(int(at.timestamp())), "n0nce42"
    signature = key.sign(
        f"{ts}\n{header_nonce}\n{body.decode()}\n".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    headers = {
        "Wechatpay-Timestamp": ts,
        "Wechatpay-Nonce": header_nonce,
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature": base64.b64encode(signature).decode(),
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }
    return headers, body


def _wechat(key: rsa.RSAPrivateKey, client: Any = None) -> WeChatPayProvider:
    return WeChatPayProvider(
        apiv3_key=APIV3_KEY,
        platform_public_key=_public_pem(key),
        platform_serial=SERIAL,
        clock=ManualClock(NOW),
        notify_url="https://u.test/api/v1/payments/webhooks/wechatpay",
        client=client,
    )


PAID = {
    "out_trade_no": "pay-9",
    "transaction_id": "4200000001",
    "trade_state": "SUCCESS",
    "amount": {"total": 1000, "payer_total": 1000, "currency": "CNY", "payer_currency": "CNY"},
}


def test_wechat_notifications_are_verified_decrypted_and_normalised(platform_key: rsa.RSAPrivateKey) -> None:
    provider = _wechat(platform_key)
    event = provider.parse_webhook(*wechat_signed(platform_key, "TRANSACTION.SUCCESS", PAID))
    assert event is not None
    assert (event.kind, event.provider_payment_id, event.reference, event.amount_minor, event.currency) == (
        EventKind.SUCCEEDED,
        "4200000001",
        "pay-9",
        1000,
        "CNY",
    )
    refund = {
        "out_trade_no": "pay-9",
        "transaction_id": "4200000001",
        "refund_id": "5030",
        "refund_status": "SUCCESS",
        "amount": {"total": 1000, "refund": 1000, "payer_total": 1000, "payer_refund": 1000},
    }
    refunded = provider.parse_webhook(*wechat_signed(platform_key, "REFUND.SUCCESS", refund))
    assert refunded is not None
    assert (refunded.kind, refunded.amount_minor, refunded.currency) == (EventKind.REFUNDED, 1000, "CNY")
    closed = {**refund, "refund_status": "CLOSED"}
    assert provider.parse_webhook(*wechat_signed(platform_key, "REFUND.CLOSED", closed)) is None


def test_wechat_refuses_forged_stale_foreign_and_undecryptable_notices(
    platform_key: rsa.RSAPrivateKey,
) -> None:
    provider = _wechat(platform_key)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "bad_signature": wechat_signed(other, "TRANSACTION.SUCCESS", PAID),
        "stale_timestamp": wechat_signed(platform_key, "TRANSACTION.SUCCESS", PAID, at=NOW.replace(hour=8)),
        "unknown_key": wechat_signed(platform_key, "TRANSACTION.SUCCESS", PAID, serial="00AA"),
        "undecryptable": wechat_signed(platform_key, "TRANSACTION.SUCCESS", PAID, apiv3_key="f" * 32),
    }
    for reason, (headers, body) in cases.items():
        with pytest.raises(WebhookRefused) as refused:
            provider.parse_webhook(headers, body)
        assert refused.value.reason == reason
    headers, body = wechat_signed(platform_key, "TRANSACTION.SUCCESS", PAID)
    with pytest.raises(WebhookRefused) as altered:
        provider.parse_webhook(headers, body.replace(b"ok", b"OK"))
    assert altered.value.reason == "bad_signature"
    with pytest.raises(WebhookRefused) as missing:
        provider.parse_webhook({k: v for k, v in headers.items() if k != "Wechatpay-Signature"}, body)
    assert missing.value.reason == "missing_signature"


class FakeNative:
    def __init__(self, code: int, text: str) -> None:
        self.answer = (code, text)
        self.calls: list[dict[str, Any]] = []

    def pay(
        self, description: str, out_trade_no: str, amount: dict[str, Any], **kwargs: Any
    ) -> tuple[int, str]:
        self.calls.append({"out_trade_no": out_trade_no, "amount": amount, **kwargs})
        return self.answer


def test_wechat_checkout_opens_a_native_code_and_translates_refusals(platform_key: rsa.RSAPrivateKey) -> None:
    client = FakeNative(200, json.dumps({"code_url": "weixin://wxpay/bizpayurl?pr=abc"}))
    checkout = _wechat(platform_key, client).start_checkout(
        CheckoutRequest(1000, "CNY", 3, "pay-9", "top-up")
    )
    assert checkout.redirect_url == "weixin://wxpay/bizpayurl?pr=abc"
    assert client.calls[0]["out_trade_no"] == "pay-9"
    assert client.calls[0]["amount"] == {"total": 1000, "currency": "CNY"}
    refusing = FakeNative(400, '{"code":"PARAM_ERROR","message":"bad amount"}')
    with pytest.raises(ConflictError, match="wechat pay refused the checkout for pay-9: 400"):
        _wechat(platform_key, refusing).start_checkout(CheckoutRequest(1000, "CNY", 3, "pay-9", "top-up"))
